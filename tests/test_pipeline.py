"""End-to-end runs: real SCIP files, bad inputs, accounting, laziness, a local cluster."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

import scip
from scip.engine import graph
from conftest import make_blobs


def run_sync(config: dict, tmp_path, **kw):
    config = {**config, "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"}}
    return scip.run(config, progress=False, **kw)


def check_accounting(result):
    """found = exported + skipped, table rows = exported, and skipped.csv lists every skip."""
    summary = json.loads((result.output / "run.json").read_text())
    cells, images = summary["counts"]["cells"], summary["counts"]["images"]
    table = pd.read_parquet(result.table)
    skipped = pd.read_csv(result.output / "skipped.csv")
    assert cells["found"] == cells["exported"] + cells["skipped"]
    assert len(table) == cells["exported"]
    assert (skipped["kind"] == "cell").sum() == cells["skipped"]
    assert (skipped["kind"] == "image").sum() == images["skipped"]
    assert images["total"] == images["with_cells"] + images["skipped"]
    assert sum(cells["skipped_by_step"].values()) == cells["skipped"]
    assert sum(images["skipped_by_step"].values()) == images["skipped"]
    assert skipped["reason"].notna().all()
    return summary, table, skipped


def test_scip_ifc_zarr_real_file(data_dir, tmp_path):
    """Acceptance: SCIP's own 7-channel, 10-event zarr gives a table."""
    config = {
        "input": {"path": str(data_dir / "scip-ifc" / "test.zarr"),
                  "channels": ["BF1", "Ch2", "Ch3", "Ch4", "Ch5", "Ch6", "Ch7"]},
        "segment": {"method": "otsu", "channel": "Ch7", "remove_border": False},
    }
    result = run_sync(config, tmp_path)
    summary, table, _ = check_accounting(result)
    assert summary["input"]["format"] == "ifc_zarr"
    assert summary["counts"]["images"]["total"] == 10
    assert len(table) >= 10  # every event holds at least one object
    assert set(table["meta_image_id"]) == {str(i) for i in range(10)}
    assert "meta_object_number" in table
    assert "feat_cell_intensity_mean_BF1" in table and "feat_cell_intensity_mean_Ch7" in table
    features = table.filter(like="feat_")
    assert features.drop(columns=features.filter(like="_texture_").columns).notna().all().all()
    # Texture is NaN only in directions where a small object has no pixel pair
    # at that distance (docs/features.md), e.g. 135 degrees at 5 px for a 7x8 cell.
    nan_rows = features.isna().any(axis=1)
    assert (table.loc[nan_rows, ["feat_cell_bbox_height", "feat_cell_bbox_width"]].min(axis=1) <= 10).all()


def test_scip_per_channel_tiffs_real_files(data_dir, tmp_path):
    """Acceptance: per-channel TIFFs grouped by a regex with named groups."""
    config = {
        "input": {"path": str(data_dir / "scip-ifc" / "tiffs"),
                  "pattern": r"test(?P<id>\d+)_(?P<channel>\d+)\.tiff"},
        "segment": {"method": "watershed", "channel": "1"},
    }
    summary, table, skipped = check_accounting(run_sync(config, tmp_path))
    assert summary["input"]["channels"] == ["1", "2"]
    assert set(table["meta_id"]) == {"1", "2"}
    assert len(table) > 10
    assert (skipped["reason"] == "touches the image border").all()
    # bbox columns are image coordinates, not crop coordinates
    assert table["feat_cell_bbox_max_row"].max() > 200


@pytest.fixture
def bad_folder(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    tifffile.imwrite(folder / "a_good.tif", make_blobs())
    (folder / "b_corrupt.tif").write_bytes(b"II*\x00 this is not really a tiff")
    tifffile.imwrite(folder / "c_three_channels.tif", np.concatenate([make_blobs(), make_blobs()[:1]]), photometric="minisblack")
    tifffile.imwrite(folder / "d_empty.tif", np.zeros((2, 64, 64), np.uint16))
    nan = make_blobs().astype(np.float32)
    nan[0, 5, 5] = np.nan
    tifffile.imwrite(folder / "e_nan.tif", nan)
    dot = np.full((2, 64, 64), 100, np.uint16)
    dot[:, 30, 30] = 1000
    tifffile.imwrite(folder / "f_no_cells.tif", dot)
    border = make_blobs()
    border[:, :12, 40:60] = 1000  # an object cut by the top edge
    tifffile.imwrite(folder / "g_border.tif", border)
    return folder


def test_bad_inputs_are_skipped_with_reasons(bad_folder, tmp_path):
    config = {"input": {"path": str(bad_folder), "channels": ["DNA", "GFP"], "images_per_partition": 3},
              "segment": {"method": "watershed", "channel": "DNA"}}
    summary, table, skipped = check_accounting(run_sync(config, tmp_path))
    reasons = {row.image_id: (row.step, row.reason) for row in skipped.itertuples() if row.kind == "image"}
    assert reasons["b_corrupt"][0] == "load" and "cannot read" in reasons["b_corrupt"][1]
    assert "b_corrupt.tif" in reasons["b_corrupt"][1]
    assert reasons["c_three_channels"] == ("load", reasons["c_three_channels"][1])
    assert "has 3 channels, expected 2" in reasons["c_three_channels"][1]
    assert reasons["d_empty"][0] == "check" and "empty" in reasons["d_empty"][1]
    assert reasons["e_nan"][0] == "check" and "1 NaN" in reasons["e_nan"][1]
    assert reasons["f_no_cells"][0] == "segment" and "no cells found" in reasons["f_no_cells"][1]
    assert set(reasons) == {"b_corrupt", "c_three_channels", "d_empty", "e_nan", "f_no_cells"}
    border_cells = skipped[(skipped.kind == "cell") & (skipped.image_id == "g_border")]
    assert list(border_cells["reason"]) == ["touches the image border"]
    assert summary["counts"]["images"]["total"] == 7
    assert set(table["meta_image_id"]) == {"a_good", "g_border"}
    assert (table["meta_image_id"] == "a_good").sum() == 4


def test_keeping_border_cells(bad_folder, tmp_path):
    config = {"input": {"path": str(bad_folder), "channels": ["DNA", "GFP"]},
              "segment": {"method": "otsu", "channel": "DNA", "remove_border": False}}
    _, table, skipped = check_accounting(run_sync(config, tmp_path))
    assert (table["meta_image_id"] == "g_border").sum() == 5
    assert (skipped["kind"] == "cell").sum() == 0


def test_existing_results_are_not_overwritten_silently(blobs_tiff, tmp_path):
    config = {"input": {"path": str(blobs_tiff)}}
    run_sync(config, tmp_path)
    with pytest.raises(scip.ConfigError, match="already holds results"):
        run_sync(config, tmp_path)
    overwrite = {**config, "output": {"path": str(tmp_path / "out"), "overwrite": True}}
    result = scip.run({**overwrite, "cluster": {"scheduler": "synchronous"}}, progress=False)
    assert len(result.read()) == 4


def test_building_the_graph_reads_no_pixels(blobs_tiff, monkeypatch):
    """Nothing reads pixels until the graph is computed."""
    calls = []
    real = graph.read_images
    monkeypatch.setattr(graph, "read_images", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(tifffile, "imread", lambda *a, **k: pytest.fail("pixels read while building"))
    p = scip.prepare({"input": {"path": str(blobs_tiff)}})
    frame = graph.build_dataframe(p)
    bag = graph.build_cells(p)
    assert calls == []
    assert list(frame.columns) == list(p.columns)
    monkeypatch.undo()
    computed = frame.compute(scheduler="synchronous")
    assert len(computed) == 4
    assert bag.count().compute(scheduler="synchronous") == 1 + 4  # the image record and its cells


def test_partitions_align_to_storage_chunks():
    assert graph.partition_size(16, 1) == 16
    assert graph.partition_size(16, 5) == 20
    assert graph.partition_size(3, 64) == 64


def test_the_sources_bag_is_dasks_from_sequence_with_a_cheaper_name():
    """The partitions of images are those of ``dask.bag.from_sequence``; the name follows the content."""
    import dask
    import dask.bag as db

    from scip.records import Source

    sources = [Source(str(i), i, ("a.zarr",), {"object_number": str(i)}, (i,)) for i in range(10)]
    for size in (1, 3, 4, 10, 64):
        ours, theirs = graph._source_bag(sources, size), db.from_sequence(sources, partition_size=size)
        assert ours.npartitions == theirs.npartitions
        assert [d.compute(scheduler="sync") for d in ours.to_delayed()] == \
            [d.compute(scheduler="sync") for d in theirs.to_delayed()]
    empty = graph._source_bag([], 4)
    assert empty.npartitions == 1 and dask.compute(empty, scheduler="sync")[0] == []
    assert graph._source_bag(sources, 4).name == graph._source_bag(list(sources), 4).name
    other = [*sources[:-1], Source("9", 9, ("b.zarr",), {"object_number": "9"}, (9,))]
    assert graph._source_bag(other, 4).name != graph._source_bag(sources, 4).name
    assert graph._source_bag(sources, 5).name != graph._source_bag(sources, 4).name


def test_local_cluster_gives_the_same_table(bad_folder, tmp_path):
    """Two worker processes, as `scip run` starts by default, match the in-process result."""
    config = {"input": {"path": str(bad_folder), "channels": ["DNA", "GFP"], "images_per_partition": 2},
              "segment": {"method": "watershed", "channel": "DNA"}}
    local = run_sync(config, tmp_path / "sync")
    distributed_result = scip.run(
        {**config, "output": {"path": str(tmp_path / "dist")},
         "cluster": {"workers": 2, "threads": 1, "dashboard_address": ":0"}},
        progress=False,
    )
    a = local.read().sort_values(["meta_index", "meta_label"]).reset_index(drop=True)
    b = distributed_result.read().sort_values(["meta_index", "meta_label"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    summary = json.loads((distributed_result.output / "run.json").read_text())
    assert set(summary["timings_s"]["steps"]) == {"load", "segment", "features", "export"}


def test_example_data_against_its_ground_truth(tmp_path):
    """The built-in data: the demo's config finds most true cells, and says which."""
    from scip.datasets import write_example

    paths = write_example(tmp_path / "data", n_events=60, n_fields=1, seed=3)
    config = {
        "input": {"path": str(paths["ifc"]), "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "evaluate": {"labels": str(paths["ifc_labels"])},
    }
    summary, table, _ = check_accounting(run_sync(config, tmp_path))
    ev = summary["evaluation"]
    truth = pd.read_csv(paths["ifc_cells"])
    assert ev["truth_cells"] == len(truth)
    assert ev["recall"] >= 0.85 and ev["precision"] >= 0.9
    matched = table[table["meta_truth_label"] > 0]
    assert len(matched) == ev["exported_matched"]
    # a true cell is matched by at most one exported row, and it exists in the truth table
    assert not matched.duplicated(["meta_index", "meta_truth_label"]).any()
    keys = set(zip(truth["image"], truth["label"]))
    assert all((i, t) in keys for i, t in zip(matched["meta_index"], matched["meta_truth_label"]))
    # matched rows measure the true cell: areas agree within a few pixels at the boundary
    merged = matched.merge(truth, left_on=["meta_index", "meta_truth_label"], right_on=["image", "label"])
    rel = (merged["feat_cell_shape_area"] - merged["area"]).abs() / merged["area"]
    assert rel.median() < 0.15


def test_fields_with_label_template(tmp_path):
    from scip.datasets import write_example

    paths = write_example(tmp_path / "data", n_events=2, n_fields=2, seed=1)
    config = {
        "input": {"path": str(paths["fields"]), "pattern": r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff",
                  "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "evaluate": {"labels": str(paths["fields_labels"] / "field{id}.tiff")},
    }
    summary, table, skipped = check_accounting(run_sync(config, tmp_path))
    assert summary["evaluation"]["truth_cells"] == len(pd.read_csv(paths["fields_cells"]))
    assert summary["evaluation"]["recall"] >= 0.6
    assert summary["evaluation"]["images_without_truth"] == 0


def test_missing_ground_truth_is_reported(blobs_tiff, tmp_path):
    # A template that matches no file at all is a config error (tests/test_config_safety.py); a file
    # that exists but cannot be read is this image's evaluation error.
    (tmp_path / "good_labels.tif").write_bytes(b"not a TIFF")
    config = {"input": {"path": str(blobs_tiff)}, "evaluate": {"labels": str(tmp_path / "{image_id}_labels.tif")}}
    summary, _, _ = check_accounting(run_sync(config, tmp_path))
    assert summary["evaluation"]["images_without_truth"] == 1
    assert "good_labels.tif" in summary["evaluation"]["errors"][0]


def test_extra_masks_inside_cells(tmp_path):
    """A DNA mask inside each cell: its area is smaller than the cell's, its DNA brighter."""
    from scip.datasets import write_example

    paths = write_example(tmp_path / "data", n_events=20, n_fields=1, seed=5)
    config = {
        "input": {"path": str(paths["ifc"]), "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "masks": [{"name": "nucleus", "channel": "DNA"}],
        "features": {"families": ["shape", "intensity"]},
    }
    _, table, _ = check_accounting(run_sync(config, tmp_path))
    assert (table["feat_nucleus_shape_area"] < table["feat_cell_shape_area"]).all()
    assert (table["feat_nucleus_intensity_mean_DNA"] > table["feat_cell_intensity_mean_DNA"]).all()
    assert "feat_nucleus_intensity_mean_marker" in table


def test_mask_config_errors(blobs_tiff):
    with pytest.raises(scip.ConfigError, match="mask name\\(s\\) cell used twice"):
        scip.load_config({"input": {"path": str(blobs_tiff)}, "masks": [{"name": "cell", "channel": 0}]})
    with pytest.raises(scip.ConfigError, match="masks.0.channel: 'GPF' is not a loaded channel.*did you mean 'GFP'"):
        scip.prepare({"input": {"path": str(blobs_tiff), "channels": ["DNA", "GFP"]},
                      "segment": {"channel": "DNA"}, "masks": [{"name": "gfp", "channel": "GPF"}]})


def test_dsb_nuclei_through_the_pipeline(data_dir, tmp_path):
    """Acceptance 3 end to end: the run's own evaluation on real nuclei, one label TIFF for one image."""
    dsb = data_dir / "stardist-dsb2018"
    config = {"input": {"path": str(dsb / "image.tif")},
              "segment": {"method": "watershed", "remove_border": False},
              "evaluate": {"labels": str(dsb / "labels.tif")}}
    summary, table, _ = check_accounting(run_sync(config, tmp_path))
    ev = summary["evaluation"]
    assert ev["truth_cells"] == 125
    assert ev["f1"] >= 0.73  # measured 0.762, as segment() alone in test_segment.py
    assert len(table) == ev["found_cells"]


def test_no_cells_anywhere_gives_an_empty_readable_table(blobs_tiff, tmp_path):
    config = {"input": {"path": str(blobs_tiff)}, "segment": {"method": "otsu", "min_size": 10_000}}
    summary, table, skipped = check_accounting(run_sync(config, tmp_path))
    assert len(table) == 0 and "feat_cell_shape_area" in table.columns
    assert summary["counts"]["cells"]["found"] == 0
    assert list(skipped["step"]) == ["segment"]
