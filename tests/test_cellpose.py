"""The ``cellpose`` segmentation method: a local Cellpose 3 model file, scip's post-processing.

No model ships with scip or Cellpose's wheel, and nothing may be downloaded,
so the end-to-end test builds a Cellpose network with random weights and
saves it to a temporary file: it exercises loading, the network and the
post-processing, not the quality of the masks. Cellpose (``cellpose<4``) is
an optional test dependency (the tests that need it skip without it, and fail where
SCIP_REQUIRE_REFERENCES is set, as in CI).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import scip
from scip.config import ConfigError, load_config
from scip.metrics import match_labels
from scip.segment import METHODS, flows, segment
from scip.segment._flows_synthetic import cell_labels
from scip.segment.cellpose import CellposeModelError, check_model, require_cellpose

from conftest import require


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A Cellpose 3 network with random weights; its output layer scaled up so that its flows move pixels."""
    torch = require("torch")
    models = require("cellpose.models")
    path = tmp_path_factory.mktemp("cellpose") / "random_cp3"
    torch.manual_seed(0)
    net = models.CellposeModel(pretrained_model=False, device=torch.device("cpu")).net
    with torch.no_grad():
        net.output[2].weight *= 100
    net.save_model(str(path))
    return path


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return (cell_labels((64, 80), 6, seed=1) > 0) * 100.0 + rng.normal(10, 2, (64, 80))


def test_registered():
    assert "cellpose" in METHODS


def test_end_to_end_with_a_random_network(model_file, image):
    from scip.segment.cellpose import _device, _load

    model = _load(check_model(model_file), _device("cpu"))
    _, out, _ = model.eval(image.astype(np.float32), channels=[0, 0], compute_masks=False)
    threshold = float(np.median(out[2]))  # half the pixels are "cells"
    kw = {"cellprob_threshold": threshold, "flow_threshold": 0.0}
    labels = segment(image, "cellpose", pretrained_model=model_file, device="cpu", **kw)
    assert labels.dtype == np.int32 and labels.shape == image.shape and labels.max() > 3
    # The method is the network's outputs through scip's post-processing...
    niter = int(1 / (model.diam_mean / model.diam_labels) * 200)
    np.testing.assert_array_equal(labels, flows.compute_masks(out[1], out[2], niter=niter, **kw))
    # ...and, followed exactly, these outputs give Cellpose's own masks up to
    # a few pixels: this network's flows make many seeds of equal counts,
    # whose order Cellpose leaves to torch's unstable sort (scip: raster
    # order). (The default, shared trajectories, is not compared here: random
    # flows neither converge nor resemble a trained network's.)
    masks, _, _ = model.eval(image.astype(np.float32), channels=[0, 0], niter=niter, **kw)
    exact = flows.compute_masks(out[1], out[2], niter=niter, jump=None, **kw)
    m = match_labels(masks, exact, 0.5)
    assert m.n_true == m.n_pred and m.tp >= m.n_true - 1
    assert m.ious.mean() >= 0.95


def test_norm_range_stands_in_for_cellposes_own_normalization(model_file, image):
    """A window of a slide gets the slide's percentiles: given this image's own, the result is unchanged."""
    kw = {"pretrained_model": model_file, "device": "cpu", "flow_threshold": 0.0, "cellprob_threshold": -1.0}
    own = segment(image, "cellpose", **kw)
    lo, hi = np.percentile(image.astype(np.float32), [1, 99])
    np.testing.assert_array_equal(own, segment(image, "cellpose", norm_range=[[lo, hi]], **kw))
    assert not np.array_equal(own, segment(image, "cellpose", norm_range=[[lo, 10 * hi]], **kw))
    with pytest.raises(ValueError, match="norm_range gives 2 channel range"):
        segment(image, "cellpose", norm_range=[[lo, hi], [lo, hi]], **kw)


class _Stub:
    """Stands in for the network: returns the flows of known labels, records how it was called."""

    diam_mean = np.float32(30.0)
    diam_labels = np.float32(30.0)

    def __init__(self, labels):
        self.labels = labels
        self.calls = []

    def eval(self, x, **kw):
        self.calls.append((x.shape, kw))
        dP = 5 * flows.masks_to_flows(self.labels)
        return np.zeros(0), [None, dP.astype(np.float32), np.where(self.labels > 0, 3.0, -3.0)], None


@pytest.fixture
def stub(monkeypatch, model_file):
    """The method with the network replaced by a _Stub (the model file is still checked)."""
    module = sys.modules["scip.segment.cellpose"]  # the function shadows the module on the package
    net = _Stub(cell_labels((64, 80), 6, seed=1))
    net.model_path = model_file
    monkeypatch.setattr(module, "_load", lambda info, device: net)
    return net


def test_parameters_reach_network_and_post_processing(stub, image, monkeypatch):
    seen = {}
    original = flows.compute_masks

    def spy(dP, cellprob, **kw):
        seen.update(kw)
        return original(dP, cellprob, **kw)

    monkeypatch.setattr(flows, "compute_masks", spy)
    labels = segment(image, "cellpose", pretrained_model=stub.model_path, diameter=45.0, flow_threshold=0.3,
                     cellprob_threshold=0.5, min_size=5, batch_size=2)
    assert match_labels(stub.labels, labels, 0.9).tp == stub.labels.max()
    shape, kw = stub.calls[-1]
    assert shape == image.shape and kw["channels"] == [0, 0] and kw["diameter"] == 45.0 and kw["batch_size"] == 2
    # niter: Cellpose's 200 * diameter / diam_mean.
    assert seen == {"niter": 300, "cellprob_threshold": 0.5, "flow_threshold": 0.3, "min_size": 5}
    segment(image, "cellpose", pretrained_model=stub.model_path, niter=17)
    assert seen["niter"] == 17


def test_two_channels_and_constant_images(stub, image):
    two = np.stack([image, image[::-1]])
    METHODS["cellpose"](two, pretrained_model=stub.model_path)
    shape, kw = stub.calls[-1]
    assert shape == two.shape and kw["channels"] == [1, 2] and kw["channel_axis"] == 0
    n = len(stub.calls)
    for constant in (np.zeros((40, 40)), np.full((2, 40, 40), 3.0)):
        out = METHODS["cellpose"](constant, pretrained_model=stub.model_path)
        assert out.dtype == np.int32 and out.shape == (40, 40) and out.max() == 0
    assert len(stub.calls) == n  # the network did not run
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        METHODS["cellpose"](np.zeros((3, 8, 8)), pretrained_model=stub.model_path)


def test_bad_model_files_are_named(tmp_path, model_file):
    torch = require("torch")
    with pytest.raises(ValueError, match="pretrained_model"):
        METHODS["cellpose"](np.zeros((8, 8)))
    missing = tmp_path / "cyto3"
    with pytest.raises(CellposeModelError, match=f"{missing}: not found.*nothing is downloaded"):
        METHODS["cellpose"](np.ones((8, 8)), pretrained_model=missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(model_file.read_bytes()[:1000])
    with pytest.raises(CellposeModelError, match=f"{corrupt} cannot be read"):
        check_model(corrupt)
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(CellposeModelError, match=f"{other} is not a Cellpose 3 model"):
        check_model(other)
    # Loading the config finds the file; reading it is prepare's (scip check's) part.
    config = load_config({"input": {"path": str(tmp_path)}, "segment": {"method": "cellpose",
                                                                        "pretrained_model": "corrupt.pth"}},
                         base_dir=tmp_path)
    assert config.segment.pretrained_model == str(corrupt)
    with pytest.raises(ConfigError, match="segment.pretrained_model: Cellpose model file .*corrupt.pth"):
        scip.prepare(config)
    with pytest.raises(ConfigError, match="segment.pretrained_model: Cellpose model file .*absent.pth: not found"):
        load_config({"input": {"path": str(tmp_path)}, "segment": {"method": "cellpose",
                                                                   "pretrained_model": "absent.pth"}},
                    base_dir=tmp_path)


def test_config(tmp_path, model_file):
    cfg = load_config({"input": {"path": str(tmp_path)},
                       "segment": {"method": "cellpose", "pretrained_model": str(model_file), "channel": [0, 1],
                                   "diameter": 20}})
    assert cfg.segment.method_params()["pretrained_model"] == str(model_file)
    with pytest.raises(ConfigError, match="one channel or two"):
        load_config({"input": {"path": str(tmp_path)},
                     "segment": {"method": "cellpose", "pretrained_model": str(model_file), "channel": [0, 1, 2]}})


def test_missing_cellpose_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "cellpose", None)
    with pytest.raises(ImportError, match=r"pip install 'cellpose<4'"):
        require_cellpose()


def test_config_defaults_are_the_functions():
    """As tests/test_config.py checks for the other methods (which need no model file to load a config)."""
    import inspect

    from scip.config import CellposeConfig

    signature = inspect.signature(METHODS["cellpose"])
    for key, field in CellposeConfig.model_fields.items():
        if key in ("method", "channel", "name", "remove_border", "stitch_threshold", "min_planes"):
            continue  # not the function's: the pipeline's (stitch_threshold, min_planes: input.z stitch)
        default = None if field.is_required() else field.default  # pretrained_model: required in both
        assert signature.parameters[key].default == default, key


def test_tiny_and_sparse_images(model_file):
    rng = np.random.default_rng(1)
    one_pixel = np.zeros((30, 30))
    one_pixel[12, 17] = 100.0
    few = np.zeros((30, 30), dtype=np.uint8)
    few[3:5, 3:5] = 200
    for image in (rng.random((5, 5)), one_pixel, few, rng.random((1, 1))):
        labels = segment(image, "cellpose", pretrained_model=model_file, device="cpu", min_size=1)
        assert labels.dtype == np.int32 and labels.shape == image.shape
        ids = np.unique(labels)
        assert ids.tolist() == list(range(ids.size))
