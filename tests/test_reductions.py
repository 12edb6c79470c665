"""Dataset-wide reductions through the pipeline: filters, normalization, illumination, passes over the input."""

from __future__ import annotations

import json
from pathlib import Path

import dask
import dask.bag as db
import numpy as np
import pandas as pd
import pytest

import scip
from scip.engine import graph
from scip.datasets import write_example
from scip.records import CellRecord
from scip.reduce.filters import decide
from scip.engine.reduce import _filter_bounds, _normalization
from scip.run import prepare

SIGNAL_FILTER = {"measure": "signal", "channel": "cyto", "min": "otsu"}


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> dict[str, Path]:
    return write_example(tmp_path_factory.mktemp("example"), n_events=240, n_fields=3, seed=3)


def _ifc_config(example, out: Path, **extra) -> dict:
    config = {
        "input": {"path": str(example["ifc"]), "channels": ["DNA", "cyto", "marker"],
                  "images_per_partition": 64},  # 240 events: partitions of 64, 64, 64 and 48
        "segment": {"method": "watershed", "channel": "cyto", "min_distance": 5},
        "evaluate": {"labels": str(example["ifc_labels"])},
        "features": {"families": ["bbox"]},
        "output": {"path": str(out), "overwrite": True},
        "cluster": {"scheduler": "synchronous"},
    }
    config.update(extra)
    return config


def _fields_config(example, out: Path, **extra) -> dict:
    config = {
        "input": {"path": str(example["fields"]), "pattern": r"field(?P<field>\d+)_(?P<channel>\w+)\.tiff",
                  "channels": ["DNA", "cyto", "marker"], "images_per_partition": 2},
        "segment": {"method": "watershed", "channel": "cyto", "min_distance": 5},
        "features": {"families": ["bbox", "texture"], "distances": [1]},
        "output": {"path": str(out), "overwrite": True},
        "cluster": {"scheduler": "synchronous"},
    }
    config.update(extra)
    return config


def test_signal_filter_drops_dim_and_dead_cells(example, tmp_path):
    """Acceptance: the low-signal filter removes the generator's dim and dead cells and reports each."""
    result = scip.run(_ifc_config(example, tmp_path / "out", filters=[SIGNAL_FILTER]), progress=False)
    truth = pd.read_csv(example["ifc_cells"]).set_index(["image", "label"])["cell_class"]
    skipped = pd.read_csv(result.output / "skipped.csv")
    dropped = skipped[skipped["step"] == "filter"]
    table = result.read()

    def classes(index, truth_label):
        return [truth.get((int(i), int(t))) if t == t and t != 0 else None for i, t in zip(index, truth_label)]

    dropped_classes = classes(dropped["index"], dropped["truth_label"])
    kept_classes = classes(table["meta_index"], table["meta_truth_label"])
    known_dropped = [c for c in dropped_classes if c is not None]
    bad_dropped = sum(c in ("dim", "dead") for c in known_dropped)
    bad_total = bad_dropped + sum(c in ("dim", "dead") for c in kept_classes if c is not None)
    precision, recall = bad_dropped / len(known_dropped), bad_dropped / bad_total
    assert bad_total >= 30  # enough dim/dead cells for the figures to mean something
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)

    # every dropped cell names the filter, its value and the threshold, which run.json reports
    summary = json.loads((result.output / "run.json").read_text())
    (report,) = summary["reductions"]["filters"]
    assert report["filter"] == "signal(cyto)" and report["min"] == "otsu"
    assert (dropped["filter"] == "signal(cyto)").all()
    assert (dropped["value"] < report["min_threshold"]).all()
    assert np.allclose(dropped["threshold"], report["min_threshold"])
    assert report["cells_dropped"] == len(dropped) == summary["counts"]["cells"]["skipped_by_step"]["filter"]
    assert summary["counts"]["cells"]["found"] == len(table) + len(skipped[skipped["kind"] == "cell"])
    assert summary["timings_s"]["steps"]["filter"] > 0


def test_filter_threshold_equals_numpy_on_all_cells_at_once(example, tmp_path):
    """The threshold decided over 4 partitions equals the one from all cells in one array."""
    config = _ifc_config(example, tmp_path / "out", filters=[SIGNAL_FILTER, {"measure": "area", "max": {"quantile": 0.9}}])
    result = scip.run(config, progress=False)
    reports = json.loads((result.output / "run.json").read_text())["reductions"]["filters"]
    one = dict(config, input={**config["input"], "images_per_partition": 1000})
    with dask.config.set(scheduler="synchronous"):
        (cells,) = dask.compute(graph.build_cells(prepare(one)))
    measures = pd.DataFrame([c.measures for c in cells if isinstance(c, CellRecord) and c.status])
    assert reports[0]["min_threshold"] == decide(measures["signal(cyto)"].to_numpy(), "otsu", "signal")
    assert reports[1]["max_threshold"] == np.quantile(measures["area"].to_numpy(), 0.9)
    assert reports[0]["cells_measured"] == len(measures)


def test_normalization_quantiles_exact_over_unequal_and_empty_partitions(example):
    config = _ifc_config(example, Path("unused"), normalize={"lower": 0.02, "upper": 0.98})
    p = prepare(config)
    with dask.config.set(scheduler="synchronous"):
        (records,) = dask.compute(graph.build_cells(p))
    cells = [r for r in records if isinstance(r, CellRecord) and r.status]
    # partitions of very unequal size, one of them empty, image records mixed in
    parts = [records[:5], [], records[5:len(records) - 3], records[len(records) - 3:]]
    bag = db.from_delayed([dask.delayed(list)(part) for part in parts])
    with dask.config.set(scheduler="synchronous"):
        ranges, report = _normalization(p, bag, None)
    for c, channel in enumerate(p.dataset.channels):
        pixels = np.concatenate([cell.pixels[c][cell.masks["cell"]] for cell in cells]).astype(np.float64)
        assert ranges[()][c] == (np.quantile(pixels, 0.02), np.quantile(pixels, 0.98))
        assert report["ranges"]["all"][channel] == list(ranges[()][c])
    assert report["exact"] and report["rounds_over_cells"] >= 2


def test_filter_bounds_over_unequal_and_empty_partitions(example):
    filters = [SIGNAL_FILTER, {"measure": "area", "min": {"quantile": 0.05}, "max": {"mad": 4}},
               {"measure": "focus", "channel": "DNA", "min": {"mad": 3}}]
    p = prepare(_ifc_config(example, Path("unused"), filters=filters))
    with dask.config.set(scheduler="synchronous"):
        (records,) = dask.compute(graph.build_cells(p))
    parts = [records[:3], [], records[3:len(records) - 2], records[len(records) - 2:]]
    bag = db.from_delayed([dask.delayed(list)(part) for part in parts])
    with dask.config.set(scheduler="synchronous"):
        bounds, report, _ = _filter_bounds(p, bag, None)
    measures = pd.DataFrame([r.measures for r in records if isinstance(r, CellRecord) and r.status])
    signal, area, focus = (measures[n].to_numpy() for n in ("signal(cyto)", "area", "focus(DNA)"))
    assert bounds[0][0] == decide(signal, "otsu", "signal")
    assert bounds[1][0] == np.quantile(area, 0.05)
    med = np.median(area)
    assert bounds[1][1] == pytest.approx(med + 4 * 1.4826 * np.median(np.abs(area - med)), rel=1e-12)
    logs = np.log(focus)
    assert bounds[2][0] == pytest.approx(np.exp(np.median(logs) - 3 * 1.4826 * np.median(np.abs(logs - np.median(logs)))),
                                         rel=1e-12)
    assert [r["cells_measured"] for r in report] == [len(measures)] * 3


def test_normalization_sets_texture_quantization(example, tmp_path):
    base = _fields_config(example, tmp_path / "a")
    plain = scip.run(base, progress=False).read()
    normalized = scip.run(_fields_config(example, tmp_path / "b", normalize={}), progress=False)
    summary = json.loads((normalized.output / "run.json").read_text())
    ranges = summary["reductions"]["normalize"]["ranges"]["all"]
    assert set(ranges) == {"DNA", "cyto", "marker"} and all(lo < hi for lo, hi in ranges.values())
    table = normalized.read()
    assert len(table) == len(plain)
    # same cells, different gray levels: texture changes, geometry does not
    assert np.array_equal(table["feat_cell_bbox_min_row"], plain["feat_cell_bbox_min_row"])
    assert not np.allclose(table["feat_cell_texture_contrast_1_0_cyto"], plain["feat_cell_texture_contrast_1_0_cyto"])


def _count_reads(monkeypatch) -> list[int]:
    calls: list[int] = []
    read = graph.read_images

    def counting(reader, sources):
        calls.append(len(sources))
        return read(reader, sources)

    monkeypatch.setattr(graph, "read_images", counting)
    return calls


def test_input_is_read_at_most_twice(example, tmp_path, monkeypatch):
    """Illumination + normalization + filter: two passes over the input; one with a reused correction."""
    reads = _count_reads(monkeypatch)
    config = _fields_config(example, tmp_path / "out", illumination={"size": 20}, normalize={},
                            filters=[SIGNAL_FILTER, {"measure": "area", "min": 30}])
    result = scip.run(config, progress=False)
    n_images = 3
    assert sum(reads) == 2 * n_images
    summary = json.loads((result.output / "run.json").read_text())
    assert summary["reductions"]["input_passes"] == 2
    assert summary["reductions"]["illumination"]["groups"] == {"all": 3}
    saved = result.output / "illumination.npz"
    assert saved.is_file()

    reads.clear()
    again = dict(config, illumination={"size": 20, "reuse": str(saved)}, output={"path": str(tmp_path / "again")})
    reused = scip.run(again, progress=False)
    assert sum(reads) == n_images
    assert json.loads((reused.output / "run.json").read_text())["reductions"]["input_passes"] == 1
    pd.testing.assert_frame_equal(reused.read(), result.read())

    reads.clear()
    scip.run(_fields_config(example, tmp_path / "plain"), progress=False)
    assert sum(reads) == n_images


def test_illumination_correction_changes_intensities(example, tmp_path):
    plain = scip.run(_fields_config(example, tmp_path / "a", features={"families": ["intensity"]}), progress=False).read()
    corrected = scip.run(_fields_config(example, tmp_path / "b", features={"families": ["intensity"]},
                                        illumination={"size": 30}), progress=False).read()
    assert len(corrected) > 0
    assert not np.allclose(corrected["feat_cell_intensity_mean_cyto"].mean(), plain["feat_cell_intensity_mean_cyto"].mean(),
                           rtol=1e-9)


def test_lazy_api_refuses_filters_without_thresholds(example):
    p = prepare(_ifc_config(example, Path("unused"), filters=[SIGNAL_FILTER]))
    with pytest.raises(ValueError, match="thresholds decided over the whole dataset"):
        graph.build_dataframe(p)


def test_config_problems_are_caught_before_reading_pixels(example, tmp_path):
    with pytest.raises(scip.ConfigError, match="illumination correction needs fields of view of one size"):
        prepare(_ifc_config(example, tmp_path, illumination={}))
    import tifffile

    stack = tmp_path / "stacks"
    stack.mkdir()
    tifffile.imwrite(stack / "a.tif", np.zeros((4, 2, 32, 32), np.uint16), imagej=True, metadata={"axes": "ZCYX"})
    config = {"input": {"path": str(stack)}, "output": {"path": str(tmp_path / "o")}}
    with pytest.raises(scip.ConfigError, match=r"input.z: the images are z stacks \(4 planes in the first one, a\).*"
                                               r"stitch for 3-D objects, or a plane number"):
        prepare(config)
    assert prepare({**config, "input": {"path": str(stack), "z_projection": "max"}}).dataset.z_planes == 4


def test_z_stacks_are_projected_before_segmentation(tmp_path):
    import tifffile

    from scip.datasets import make_fields

    fields = make_fields(2, size=(96, 96), cells_per_field=4, seed=5)
    (tmp_path / "stacks").mkdir()
    (tmp_path / "flat").mkdir()
    for i, image in enumerate(fields.images):
        # three planes, the middle one in focus: a max projection gives back the image
        planes = np.stack([image // 3, image, image // 2]).astype(np.uint16)
        tifffile.imwrite(tmp_path / "stacks" / f"f{i}.tif", planes, imagej=True, metadata={"axes": "ZCYX"})
        tifffile.imwrite(tmp_path / "flat" / f"f{i}.tif", image.astype(np.uint16), photometric="minisblack")
    common = {"segment": {"channel": 1}, "features": {"families": ["intensity"]}, "cluster": {"scheduler": "synchronous"}}
    stacked = scip.run({**common, "input": {"path": str(tmp_path / "stacks"), "z_projection": "max"},
                        "output": {"path": str(tmp_path / "o1")}}, progress=False).read()
    flat = scip.run({**common, "input": {"path": str(tmp_path / "flat")}, "output": {"path": str(tmp_path / "o2")}},
                    progress=False).read()
    assert len(stacked) == len(flat) > 0
    features = [c for c in flat if c.startswith("feat_")]
    pd.testing.assert_frame_equal(stacked[features], flat[features])


def test_illumination_sums_over_partitions_equal_numpy(example):
    import tifffile

    from scip.reduce.illumination import merge_groups

    p = prepare(_fields_config(example, Path("unused"), illumination={}))  # 3 fields, partitions of 2 and 1
    with dask.config.set(scheduler="synchronous"):
        parts = dask.compute(*graph.build_illumination_sums(p))
    assert len(parts) == 2
    total = {}
    for part in parts:
        total = merge_groups(total, part)
    images = [np.stack([tifffile.imread(example["fields"] / f"field{i}_{c}.tiff") for c in ("DNA", "cyto", "marker")])
              for i in range(3)]
    assert np.array_equal(total[()].sum, np.sum(images, axis=0, dtype=np.float64))
    assert total[()].count == 3
