"""The superpixel graph network: superpixels, graph, training, tiles, the method, the pipeline, errors."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import assert_held_out, data_source, require

torch = require("torch")

import scip  # noqa: E402
from scip import cli  # noqa: E402
from scip.config import ConfigError, load_config  # noqa: E402
from scip.metrics import match_labels  # noqa: E402
from scip.segment import METHODS, segment  # noqa: E402
from scip.segment.superpixel_gnn import graph as gr  # noqa: E402
from scip.segment.superpixel_gnn import modelfile  # noqa: E402
from scip.segment.superpixel_gnn.predict import foreground_mask, foreground_probability  # noqa: E402
from scip.segment.superpixel_gnn.superpixels import normalize_image, superpixels, tiles  # noqa: E402
from scip.segment.superpixel_gnn.train import dice_of, fit, sample_of  # noqa: E402

#: Training data of the small models these tests train (cut from a training image of the shipped model).
CROP = "mnfinder/rpe1_3_crop.tif"
#: Images neither the shipped model nor the small models saw (tests/data/sources.csv), with F1 floors a little
#: below what the shipped model scores on them (0.857 and 0.875 measured with the model shipped in November 2026).
HELD_OUT = {"mnfinder/rpe1_2198_crop.tif": 0.82, "mnfinder/misc_4.tif": 0.82}
SIZE, COMPACTNESS = 32, 0.05


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small graphs train fastest on one thread (two threads on busy cores are many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disks_image(seed: int, shape=(128, 128), n: int = 9, radius=(6, 11)) -> tuple[np.ndarray, np.ndarray]:
    """Bright noisy disks (labels 1..n) on a dark noisy background."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, n + 1):
        cy, cx = rng.uniform(12, shape[0] - 12), rng.uniform(12, shape[1] - 12)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(*radius) ** 2) & (labels == 0)] = i
    image = 100 + 400 * (labels > 0) * rng.uniform(0.6, 1.0) + rng.normal(0, 40, shape)
    return image.astype(np.float32), labels


def train_toy(samples, epochs=40):
    meta = {"channels": ["DNA"], "superpixels": {"size": SIZE, "compactness": COMPACTNESS}}
    model, history, best = fit(samples, [], hidden=16, layers=2, epochs=epochs, patience=epochs, lr=1e-2, meta=meta)
    return model


@pytest.fixture(scope="module")
def crop_model(tmp_path_factory):
    """A small model trained on the test crop (and its mirror image), saved to a file."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    image = tifffile.imread(data / CROP).astype(np.float32)
    labels = tifffile.imread(data / CROP.replace(".tif", "_nuclei.tif"))
    samples = [sample_of(f"crop{k}", np.ascontiguousarray(np.rot90(image, k))[None], np.rot90(labels, k),
                         size=SIZE, compactness=COMPACTNESS) for k in range(2)]
    model = train_toy(samples, epochs=30)
    return modelfile.save(model, tmp_path_factory.mktemp("gnn") / "crop.gnn")


# --- graph -----------------------------------------------------------------------------------------------

HAND = np.array([[0, 0, 1, 1, 2, 2],
                 [0, 0, 1, 1, 2, 2],
                 [3, 3, 3, 4, 4, 4],
                 [3, 3, 3, 4, 4, 4]])


def test_graph_of_a_hand_built_superpixel_map():
    image = HAND.astype(np.float32)[None] * 0.25
    g = gr.build_graph(image, HAND, size=4, tile=100)
    assert g.n_nodes == 5
    assert g.area.tolist() == [4, 4, 4, 6, 6]
    expected = {(0, 1): 2, (1, 2): 2, (0, 3): 2, (1, 3): 1, (1, 4): 1, (2, 4): 2, (3, 4): 2}
    assert {tuple(e): b for e, b in zip(g.edges.tolist(), gr.adjacency(HAND)[1].tolist())} == expected
    assert g.edges.tolist() == [list(e) for e in sorted(expected)]  # sorted, i < j, each edge once
    names = gr.node_feature_names(1)
    assert g.nodes.shape == (5, len(names)) and g.edge_features.shape == (7, len(gr.edge_feature_names(1)))
    np.testing.assert_allclose(g.nodes[:, names.index("mean_0")], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(g.nodes[:, names.index("std_0")], 0, atol=1e-6)
    np.testing.assert_allclose(g.nodes[:, names.index("log_area")], np.log([1, 1, 1, 1.5, 1.5]), rtol=1e-6)
    np.testing.assert_allclose(g.nodes[0, -2:], [0.5 / 4, 0.5 / 6])  # centroid row/col as fractions
    contrast = g.edge_features[:, gr.edge_feature_names(1).index("contrast_0")]
    np.testing.assert_allclose(contrast, [0.25, 0.75, 0.25, 0.5, 0.75, 0.5, 0.25])
    # A superpixel that crosses a tile border is refused, never split into two nodes.
    with pytest.raises(ValueError, match="crosses a tile border"):
        gr.build_graph(image, HAND, size=4, tile=3)


def test_graph_edges_match_skimage_rag():
    from skimage import graph as skgraph

    image, _ = disks_image(0, (64, 80))
    sp = superpixels(normalize_image(image[None]), size=SIZE, compactness=COMPACTNESS, tile=1000)
    rag = skgraph.RAG(sp, connectivity=1)
    edges, _ = gr.adjacency(sp)
    assert {tuple(sorted(e)) for e in rag.edges} == {tuple(e) for e in edges.tolist()}


def test_tile_wise_superpixels_make_one_consistent_graph():
    image, _ = disks_image(1, (150, 170))
    scaled = normalize_image(image[None])
    tile = 64
    sp = superpixels(scaled, size=SIZE, compactness=COMPACTNESS, tile=tile)
    n = int(sp.max()) + 1
    assert np.array_equal(np.unique(sp), np.arange(n))  # unique ids 0..n-1 over the whole image
    tile_of = np.zeros(sp.shape, np.int64)
    for k, (rows, cols) in enumerate(tiles(sp.shape, tile)):
        tile_of[rows, cols] = k
    owner = np.full(n, -1)
    owner[sp.ravel()] = tile_of.ravel()
    assert np.array_equal(owner[sp], tile_of)  # no superpixel straddles two tiles
    tiled = gr.build_graph(scaled, sp, size=SIZE, tile=tile)
    whole = gr.build_graph(scaled, sp, size=SIZE, tile=10_000)  # same map, visited as one tile
    assert np.array_equal(tiled.edges, whole.edges) and np.array_equal(tiled.area, whole.area)
    np.testing.assert_allclose(tiled.nodes, whole.nodes, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tiled.edge_features, whole.edge_features, rtol=1e-5, atol=1e-6)
    # The graph is the union of the per-tile graphs plus the edges across tile borders.
    within = set()
    for rows, cols in tiles(sp.shape, tile):
        within |= {tuple(e) for e in gr.adjacency(sp[rows, cols])[0].tolist()}
    across = {tuple(e) for e in tiled.edges.tolist() if owner[e[0]] != owner[e[1]]}
    assert len(across) > 20
    assert within | across == {tuple(e) for e in tiled.edges.tolist()} and not within & across


def test_upper_bound_is_the_majority_vote():
    image, labels = disks_image(2)
    sample = sample_of("a", image[None], labels, size=SIZE, compactness=COMPACTNESS)
    assert 0.85 < sample.upper_bound() <= 1.0
    painted = (sample.fraction > 0.5)[superpixels(normalize_image(image[None]), size=SIZE, compactness=COMPACTNESS)]
    fg = labels > 0
    assert sample.upper_bound() == pytest.approx(2 * (painted & fg).sum() / (painted.sum() + fg.sum()))
    # Superpixels that are the objects themselves: a perfect bound.
    exact = gr.superpixel_fraction(labels, fg)
    assert set(np.unique(exact)) <= {0.0, 1.0}


# --- training and inference -------------------------------------------------------------------------------

def test_training_separates_two_classes():
    samples = [sample_of(str(s), *(lambda im, lab: (im[None], lab))(*disks_image(s)), size=SIZE,
                         compactness=COMPACTNESS) for s in range(3)]
    model = train_toy(samples[:2])
    image, labels = disks_image(3)
    test = sample_of("test", image[None], labels, size=SIZE, compactness=COMPACTNESS)
    from scip.segment.superpixel_gnn.predict import node_probabilities

    pred = node_probabilities(test.graph, model) > 0.5
    accuracy = float(np.mean(pred == (test.fraction > 0.5)))
    assert accuracy >= 0.95
    assert dice_of(test, pred) >= 0.9 * test.upper_bound()
    # The same model through the pixel functions: the probability map and the region-of-interest mask.
    prob = foreground_probability(image, model)
    assert prob.shape == image.shape and prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    mask = foreground_mask(image, model)
    fg = labels > 0
    assert 2 * (mask & fg).sum() / (mask.sum() + fg.sum()) > 0.85


def test_shipped_model_segments_nuclei():
    assert "superpixel_gnn" in METHODS and "nuclei" in modelfile.builtin_models()
    assert modelfile.resolve("nuclei").stat().st_size < 2_000_000
    assert not segment(np.full((40, 40), 3.0), "superpixel_gnn").any()


@pytest.mark.parametrize("file", HELD_OUT)
def test_shipped_model_finds_the_nuclei_of_held_out_images(file, data_dir):
    assert_held_out(file, modelfile.load("nuclei").meta["training"])
    image = tifffile.imread(data_dir / file)
    truth = tifffile.imread(data_dir / file.replace(".tif", "_nuclei.tif"))
    labels = segment(image, "superpixel_gnn")
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))
    assert match_labels(truth, labels).f1 >= HELD_OUT[file]


def test_held_out_check_catches_a_training_image():
    with pytest.raises(AssertionError, match="2022-03-18_RPE1/3.tif"):
        assert_held_out(CROP, modelfile.load("nuclei").meta["training"])


def test_method_runs_through_the_pipeline(crop_model, tmp_path, data_dir):
    test_image = "mnfinder/rpe1_2198_crop.tif"
    assert data_source(test_image)["image"] != data_source(CROP)["image"]  # not what crop_model was trained on
    folder, truth = tmp_path / "images", tmp_path / "truth"
    folder.mkdir()
    truth.mkdir()
    shutil.copy(data_dir / test_image, folder / "rpe1.tif")
    shutil.copy(data_dir / test_image.replace(".tif", "_nuclei.tif"), truth / "rpe1.tif")
    config = {"input": {"path": str(folder), "channels": ["DNA"]},
              "segment": {"method": "superpixel_gnn", "channel": "DNA", "model": str(crop_model)},
              "evaluate": {"labels": str(truth / "{image_id}.tif")},
              "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    table = pd.read_parquet(result.table)
    summary = result.summary
    assert summary["config"]["segment"]["method"] == "superpixel_gnn"
    assert len(table) == summary["counts"]["cells"]["exported"] > 10
    # Measured: recall 0.885, precision 0.575 (40 found, 26 true) from a model trained on one other crop.
    assert summary["evaluation"]["recall"] >= 0.8 and summary["evaluation"]["precision"] >= 0.5


# --- errors -----------------------------------------------------------------------------------------------

def test_missing_corrupt_and_mismatched_model_files_name_the_file(crop_model, tmp_path, data_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(data_dir / CROP, folder / "rpe1.tif")
    base = {"input": {"path": str(folder)}}
    with pytest.raises(ConfigError) as info:
        load_config({**base, "segment": {"method": "superpixel_gnn", "model": "models/missing.gnn"}}, base_dir=tmp_path)
    msg = str(info.value)
    assert "segment.model" in msg and str(tmp_path / "models" / "missing.gnn") in msg and "not found" in msg
    bad = tmp_path / "corrupt.gnn"
    bad.write_bytes(b"PK\x03\x04 not weights")
    with pytest.raises(ConfigError, match="segment.model: .*not a readable superpixel_gnn model file") as info:
        scip.prepare(load_config({**base, "segment": {"method": "superpixel_gnn", "model": "corrupt.gnn"}},
                                 base_dir=tmp_path))
    assert str(bad) in str(info.value)
    # A U-Net model file is not a superpixel_gnn model.
    from scip.segment.unet.modelfile import resolve as unet_resolve

    with pytest.raises(ConfigError, match="not a superpixel_gnn model file"):
        scip.prepare({**base, "segment": {"method": "superpixel_gnn", "model": str(unet_resolve("nuclei"))}})
    # Two channels for a one-channel model: a config error naming the model file.
    with pytest.raises(ConfigError) as info:
        scip.prepare({**base, "segment": {"method": "superpixel_gnn", "model": str(crop_model), "channel": [0, 1]}})
    assert str(crop_model) in str(info.value) and "takes 1" in str(info.value)
    # And from the function itself.
    with pytest.raises(modelfile.ModelFileError, match="not found") as info:
        segment(np.ones((8, 8)), "superpixel_gnn", model=tmp_path / "nope.gnn")
    assert str(tmp_path / "nope.gnn") in str(info.value)
    with pytest.raises(modelfile.ModelFileError) as info:
        segment(np.ones((3, 16, 16)), "superpixel_gnn", model=crop_model)
    assert str(crop_model) in str(info.value) and "the image has 3" in str(info.value)


def test_scip_train_dispatches_by_kind(tmp_path, data_dir, capsys):
    folder = tmp_path / "pairs"
    folder.mkdir()
    image = tifffile.imread(data_dir / CROP)
    labels = tifffile.imread(data_dir / CROP.replace(".tif", "_nuclei.tif"))
    for k in range(3):
        tifffile.imwrite(folder / f"{k}.tif", np.ascontiguousarray(np.rot90(image, k)))
        tifffile.imwrite(folder / f"{k}_nuclei.tif", np.ascontiguousarray(np.rot90(labels, k)))
    config = tmp_path / "train.yml"
    config.write_text(f"kind: superpixel_gnn\ndata: [{{path: {folder}, labels: '{{stem}}_nuclei'}}]\n"
                      f"validation: ['2.tif']\nsuperpixel_size: {SIZE}\nhidden: 8\nlayers: 1\nepochs: 3\n"
                      f"output: {tmp_path / 'out'}\n")
    assert cli.main(["train", str(config)]) == 0
    assert "validation pixel Dice" in capsys.readouterr().out
    loaded = modelfile.load(tmp_path / "out" / "model.gnn")
    assert loaded.meta["superpixels"] == {"size": SIZE, "compactness": COMPACTNESS}
    assert loaded.meta["training"]["validation_images"] == ["2.tif"]
    assert (tmp_path / "out" / "report.md").is_file()
    # Errors exit with 2 and name the problem.
    assert cli.main(["train", str(config), "--freeze", "encoder"]) == 2
    assert "U-Net training options" in capsys.readouterr().err
    config.write_text(f"kind: superpixel_gnn\ndata: [{{path: {tmp_path / 'nowhere'}}}]\n")
    assert cli.main(["train", str(config)]) == 2
    assert "nowhere" in capsys.readouterr().err
    config.write_text(f"kind: superpixel-gnn\ndata: [{{path: {folder}}}]\n")
    assert cli.main(["train", str(config)]) == 2
    assert "did you mean 'superpixel_gnn'" in capsys.readouterr().err


def test_import_scip_does_not_import_torch_and_missing_torch_is_explained(tmp_path):
    code = ("import sys; import scip; assert 'torch' not in sys.modules\n"
            "sys.modules['torch'] = None\n"
            "from scip.segment import segment\n"
            "import numpy as np\n"
            "try:\n    segment(np.zeros((8, 8)), 'superpixel_gnn')\nexcept ImportError as e:\n    print('E1', e)\n"
            "try:\n"
            f"    scip.prepare({{'input': {{'path': {str(tmp_path)!r}}}, 'segment': {{'method': 'superpixel_gnn'}}}})\n"
            "except scip.ConfigError as e:\n    print('E2', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "E1 the superpixel_gnn method needs PyTorch: install torch (pip install 'scip[unet]')" in out
    assert "E2" in out and "pip install 'scip[unet]'" in out
