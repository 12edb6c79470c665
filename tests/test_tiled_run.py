"""Images read in tiles inside `scip run`: seams, a mixed folder, kill -9 and --resume (issue 16, acceptance 1-3)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
import zarr

import scip
from scip.config import ConfigError
from scip.segment import segment
from conftest import require
from scip.datasets.slides import NucleiLattice, render, write_synthetic_slide
from scip.io.labels import images as label_images
from scip.io.labels import read_labels
from scip.segment.compare import compare_segmentations

SIZE = 1024
TILE = 256
BBOX = ["feat_cell_bbox_min_row", "feat_cell_bbox_min_col", "feat_cell_bbox_max_row", "feat_cell_bbox_max_col"]


def _config(path, out, mode, **sections):
    config = {"input": {"path": str(path)}, "segment": {"method": "watershed", "channel": "DNA"},
              "tiles": {"mode": mode, "size": TILE, "diameter": 24},
              "features": {"families": ["shape", "intensity", "bbox"]},
              "output": {"path": str(out), "labels": True}, "cluster": {"scheduler": "synchronous"}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def _labels(out, image_id="slide", name="cell"):
    return np.asarray(zarr.open_array(str(out / "labels.zarr" / image_id / "labels" / name / "0"), mode="r")[...])


def _by_bbox(table):
    return table.sort_values(BBOX, ignore_index=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 1024 x 1024 synthetic slide (about 550 nuclei) run in 16 tiles and whole, once for the module."""
    root = tmp_path_factory.mktemp("tiled")
    path = write_synthetic_slide(root / "slide.zarr", SIZE, chunk=256, seed=3)
    tiled = scip.run(_config(path, root / "tiled", "always"), progress=False)
    whole = scip.run(_config(path, root / "whole", "never"), progress=False)
    return path, tiled, whole


def test_seam_tiled_run_equals_whole_image_run(runs):
    """Acceptance 1 at 1024 x 1024 (4096 x 4096 in benchmarks/bench_wholeslide.py --parts seam)."""
    path, tiled, whole = runs
    image = np.asarray(zarr.open_array(str(path / "0"), mode="r")[0])
    reference = segment(image.astype(np.float32), "watershed")
    c = compare_segmentations(reference, _labels(tiled.output), iou=0.95)
    assert c["reference"] > 500
    assert c["matched"] == c["reference"] == c["tiled"], c
    assert c["split"] == c["merged"] == c["missing"] == c["extra"] == 0, c
    # The same cells, with the same features, as the whole-image run: only the label numbers differ.
    assert tiled.summary["counts"] == whole.summary["counts"]
    a, b = _by_bbox(tiled.read()), _by_bbox(whole.read())
    assert len(a) == len(b) == tiled.summary["counts"]["cells"]["exported"] > 500
    features = [c for c in a.columns if c.startswith("feat_")]
    np.testing.assert_allclose(a[features].to_numpy(), b[features].to_numpy(), rtol=1e-9, atol=1e-9)
    assert (a.meta_image_id == "slide").all()


def test_tiled_rows_join_to_their_pixels_with_global_labels(runs):
    _, tiled, _ = runs
    labels = _labels(tiled.output)
    table = tiled.read()
    assert table.meta_label.is_unique
    area = np.bincount(labels.ravel())
    np.testing.assert_array_equal(area[table.meta_label.to_numpy()], table.feat_cell_shape_area.to_numpy())
    for row in table.sample(40, random_state=0).itertuples():
        rows, cols = np.nonzero(labels == row.meta_label)
        assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (
            row.feat_cell_bbox_min_row, row.feat_cell_bbox_min_col, row.feat_cell_bbox_max_row,
            row.feat_cell_bbox_max_col)
    # Objects at the image border are in the label image (as skipped rows in skipped.csv), like a whole image's.
    skipped = pd.read_csv(tiled.output / "skipped.csv")
    assert set(skipped.reason) == {"touches the image border"}
    assert labels.max() == len(table) + len(skipped)
    # The pyramid, built after the last partition.
    group = zarr.open_group(str(tiled.output / "labels.zarr" / "slide" / "labels" / "cell"), mode="r")
    assert [d["path"] for d in group.attrs["multiscales"][0]["datasets"]] == ["0", "1", "2"]
    assert group["2"].shape == (256, 256) and np.asarray(group["2"]).max() > 0
    assert not (tiled.output / ".tiles").exists()


def test_run_json_and_manifest_record_the_tiling(runs):
    _, tiled, whole = runs
    (image,) = tiled.summary["tiles"]["images"]
    assert image["image_id"] == "slide" and image["tiles"] == 16 and image["grid"] == [4, 4]
    assert image["statistics"]["statistic"] == "otsu" and image["cut"] == 0
    assert whole.summary["tiles"]["images"] == []
    manifest = json.loads((tiled.output / "manifest.json").read_text())
    assert manifest["tiles"]["images"][0]["owned"] and sum(manifest["tiles"]["images"][0]["owned"]) == image["objects"]
    assert len(manifest["partitions"]) == image["partitions"] == len(list((tiled.output / "cells").glob("*.parquet")))


def _field(shape, seed):
    pixels, _ = render(NucleiLattice(shape, seed=seed), 0, shape[0], 0, shape[1])
    return pixels


def test_mixed_folder_tiles_only_the_large_image(tmp_path):
    """Acceptance 2: small fields and one image over the budget in one run: one table, report, labels.zarr."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        tifffile.imwrite(folder / f"field{i}.tif", _field((160, 160), seed=i))
    tifffile.imwrite(folder / "large.tif", _field((768, 640), seed=9), tile=(128, 128))
    config = {"input": {"path": str(folder), "channels": ["DNA"], "max_image_bytes": "200KB",
                        "images_per_partition": 2},
              "segment": {"method": "otsu"}, "tiles": {"size": 256, "diameter": 20},
              "features": {"families": ["shape", "bbox"]},
              "output": {"path": str(tmp_path / "out"), "labels": True}, "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    (large,) = result.summary["tiles"]["images"]
    assert large["image_id"] == "large" and large["tiles"] == 9 and large["shape"] == [768, 640]
    assert result.summary["counts"]["images"]["total"] == 5 and result.summary["counts"]["images"]["skipped"] == 0
    table = result.read()
    assert set(table.meta_image_id) == {"field0", "field1", "field2", "field3", "large"}
    assert (table.meta_image_id == "large").sum() > 100
    # The report shows the tiled image: its label overview and its tile count (acceptance 4).
    html = (result.output / "report.html").read_text()
    assert 'data-label-image="large"' in html and 'data-label-tiles="large"' in html
    labels = _labels(result.output, "large")
    assert labels.shape == (768, 640)
    large_rows = table[table.meta_image_id == "large"]
    area = np.bincount(labels.ravel())
    np.testing.assert_array_equal(area[large_rows.meta_label.to_numpy()], large_rows.feat_cell_shape_area.to_numpy())
    # One labels.zarr: the fields' label images (written whole) next to the tiled image's, every row joins its pixels.
    root = result.output / "labels.zarr"
    assert set(label_images(root)) == {"field0", "field1", "field2", "field3", "large"}
    for image_id, rows in table.groupby("meta_image_id"):
        area = np.bincount(read_labels(root, image_id, "cell").ravel())
        np.testing.assert_array_equal(area[rows.meta_label.to_numpy()], rows.feat_cell_shape_area.to_numpy())
    # The tiled image's label image is valid NGFF 0.4 (ome-zarr-models) with its pyramid, as a whole image's.
    image_label = require("ome_zarr_models.v04.image_label")
    tiled = image_label.ImageLabel.from_zarr(zarr.open_group(str(root / "large" / "labels" / "cell"), mode="r"))
    assert [d.path for d in tiled.attributes.multiscales[0].datasets] == ["0", "1", "2"]


def test_illumination_with_a_tiled_image_names_it(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "big.tif", _field((300, 300), seed=1))
    config = {"input": {"path": str(folder), "channels": ["DNA"]}, "segment": {"method": "otsu"},
              "tiles": {"mode": "always", "size": 128, "diameter": 10}, "illumination": {},
              "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"}}
    with pytest.raises(ConfigError, match=r"illumination: image big \(.*big\.tif\) is read in tiles"):
        scip.run(config, progress=False)
    assert not (tmp_path / "out").exists()


def test_evaluate_counts_a_tiled_image_as_not_evaluated(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pixels, truth = render(NucleiLattice((300, 300), seed=2), 0, 300, 0, 300)
    tifffile.imwrite(folder / "big.tif", pixels)
    tifffile.imwrite(tmp_path / "truth.tif", truth.astype(np.uint32))
    config = {"input": {"path": str(folder), "channels": ["DNA"]}, "segment": {"method": "otsu"},
              "tiles": {"mode": "always", "size": 128, "diameter": 10},
              "evaluate": {"labels": str(tmp_path / "truth.tif")},
              "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    evaluation = result.summary["evaluation"]
    assert evaluation["images_without_truth"] == 1 and "read in tiles: not evaluated" in evaluation["errors"][0]
    assert result.summary["counts"]["cells"]["exported"] > 20


def test_killed_tiled_run_resumes_to_the_same_table_and_labels(tmp_path):
    """Acceptance 3: kill -9 a tiled run with many tile partitions, --resume, compare with an uninterrupted run."""
    path = write_synthetic_slide(tmp_path / "slide.zarr", (768, 1024), chunk=256, seed=4)
    reference = scip.run(_config(path, tmp_path / "reference", "always", tiles={"size": 128}), progress=False)
    n_parts = len(list((reference.output / "cells").glob("part-*.parquet")))
    assert n_parts == 12
    out = tmp_path / "interrupted"
    cfg_path = tmp_path / "run.yml"
    cfg_path.write_text(yaml.safe_dump(_config(path, out, "always", tiles={"size": 128})))
    command = [sys.executable, "-m", "scip", "run", str(cfg_path), "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "progress").glob("part-*.json"))) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    done_before = len(list((out / "progress").glob("part-*.json")))
    assert 2 <= done_before < n_parts
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming: {done_before} of {n_parts} partitions are complete" in resumed.stderr + resumed.stdout
    key = ["meta_image_id", "meta_label"]
    pd.testing.assert_frame_equal(reference.read().sort_values(key, ignore_index=True),
                                  scip.read(out).sort_values(key, ignore_index=True))
    for level in ("0", "1"):
        np.testing.assert_array_equal(
            np.asarray(zarr.open_array(str(out / "labels.zarr/slide/labels/cell" / level), mode="r")),
            np.asarray(zarr.open_array(str(reference.output / "labels.zarr/slide/labels/cell" / level), mode="r")))
    summary = json.loads((out / "run.json").read_text())
    assert summary["counts"] == reference.summary["counts"]
    assert summary["partitions"]["reused"] == done_before


def test_a_method_failing_on_one_tile_makes_the_image_an_error_not_a_crash(tmp_path, monkeypatch):
    """Pass 1 catches a bug of the method on one window: the image is an error record, the other images go on."""
    from scip import segment as methods

    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "big.tif", _field((300, 300), seed=1))
    tifffile.imwrite(folder / "small.tif", _field((100, 100), seed=2))
    otsu = methods.METHODS["otsu"]

    def broken(image, **params):
        if image.shape[0] > 150:
            raise TypeError("a bug in the method")
        return otsu(image, **params)

    monkeypatch.setitem(methods.METHODS, "otsu", broken)
    config = {"input": {"path": str(folder), "channels": ["DNA"], "max_image_bytes": "100KB"},
              "segment": {"method": "otsu"}, "tiles": {"size": 128, "diameter": 10},
              "features": {"families": ["bbox"]}, "output": {"path": str(tmp_path / "out")},
              "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    assert result.summary["status"] == "finished_with_errors"
    (error,) = result.summary["errors"]
    assert error["image_id"] == "big" and "a bug in the method" in error["message"]
    assert "TypeError" in error["traceback"]
    assert set(result.read().meta_image_id) == {"small"}
    assert result.summary["counts"]["images"] == {**result.summary["counts"]["images"], "total": 2, "skipped": 1}


def _otsu_dies_on_a_corner_window(image, **params):
    from scip.segment.threshold import otsu

    if image.shape == (64, 64):
        os._exit(1)
    return otsu(image, **params)


def test_a_tile_that_kills_its_workers_skips_its_image_not_the_run(tmp_path):
    """A window whose segmentation kills the worker process: its image is skipped naming the file and tile."""
    import dask
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import WorkerPlugin

    class Faulty(WorkerPlugin):
        def setup(self, worker):
            import scip.segment as segment

            segment.METHODS["otsu"] = _otsu_dies_on_a_corner_window

    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "big.tif", _field((300, 300), seed=1))
    tifffile.imwrite(folder / "small.tif", _field((100, 100), seed=2))
    config = {"input": {"path": str(folder), "channels": ["DNA"], "max_image_bytes": "100KB"},
              "segment": {"method": "otsu"}, "tiles": {"size": 128, "diameter": 10},
              "features": {"families": ["bbox"]}, "output": {"path": str(tmp_path / "out")}}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
                         dashboard_address=None) as cluster, Client(cluster) as client:
        client.register_plugin(Faulty())
        result = scip.run(config, client=client, progress=False)
    assert result.summary["status"] == "ok"
    skipped = pd.read_csv(result.output / "skipped.csv", keep_default_na=False)
    (row,) = skipped[skipped.image_id == "big"].itertuples()
    assert row.kind == "image" and row.reason_kind == "killed the worker"
    # The killer's tile, or one that died with it on the same worker (allowed-failures is 0 here).
    assert re.match(re.escape(str(folder / "big.tif")) + r" tile \(\d, \d\) killed the worker 1 time", row.reason)
    assert set(result.read().meta_image_id) == {"small"}


def test_the_tiles_example_runs_on_the_example_data(tmp_path):
    """examples/tiles.yml, as the README's user runs it: example data beside it, label images out."""
    from scip.datasets import write_example

    example = Path(__file__).parent.parent / "examples" / "tiles.yml"
    (tmp_path / "tiles.yml").write_text(example.read_text())
    write_example(tmp_path / "data")
    result = scip.run(scip.load_config(tmp_path / "tiles.yml", overrides={"cluster": {"scheduler": "synchronous"}}),
                      progress=False)
    images = result.summary["tiles"]["images"]
    assert len(images) == 4 and all(i["tiles"] == 4 for i in images)  # 256² fields in 128-px tiles
    table = result.read()
    assert len(table) > 0 and table["geometry"].notna().all()
    root = result.output / "labels.zarr"
    for image_id, rows in table.groupby("meta_image_id"):
        area = np.bincount(read_labels(root, image_id, "cell").ravel())
        np.testing.assert_array_equal(area[rows.meta_label.to_numpy()], rows.feat_cell_shape_area.to_numpy())


_NO_COMPILER_RUN = """
import sys
import scip
config = {{"input": {{"path": {slide!r}}}, "segment": {{"method": "otsu", "channel": 0}},
          "tiles": {{"mode": "always", "size": 256, "diameter": 24}}, "features": {{"families": {families!r}}},
          "output": {{"path": {out!r}, "labels": True}}, "cluster": {{"scheduler": "synchronous"}}}}
result = scip.run(config, progress=False)
print(result.summary["counts"]["cells"]["exported"], "numba" in sys.modules)
"""


def test_a_bbox_only_tiled_run_never_loads_numba(tmp_path):
    # Loading numba adds ~120 MiB of resident memory to every process (issue 16's 32768² budget):
    # a slide run measuring bounding boxes must not pay it, one measuring intensity must.
    slide = tmp_path / "slide.zarr"
    write_synthetic_slide(slide, 512, chunk=256, seed=0, truth=False, workers=1)
    seen = {}
    for families in (["bbox"], ["bbox", "intensity"]):
        code = _NO_COMPILER_RUN.format(slide=str(slide), out=str(tmp_path / "+".join(families)), families=families)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        exported, loaded = out.split()[-2:]
        seen[tuple(families)] = (int(exported), loaded == "True")
    assert seen[("bbox",)][1] is False and seen[("bbox", "intensity")][1] is True
    assert seen[("bbox",)][0] == seen[("bbox", "intensity")][0] > 0


@pytest.mark.parametrize("missing_chunks", ["skip", "fill"])
def test_a_tiled_image_with_a_chunk_missing_from_its_store_is_skipped_naming_the_chunk(tmp_path, missing_chunks):
    # zarr reads a missing chunk as its fill value (zeros): windows of a tiled image must not pass that off as data.
    slide = tmp_path / "slide.zarr"
    write_synthetic_slide(slide, 512, chunk=256, seed=0, truth=False, workers=1)
    chunk = slide / "0" / "0" / "1" / "0"
    assert chunk.is_file()
    chunk.unlink()
    config = {"input": {"path": str(slide), "missing_chunks": missing_chunks},
              "segment": {"method": "otsu", "channel": 0}, "tiles": {"mode": "always", "size": 256, "diameter": 24},
              "features": {"families": ["bbox"]}, "output": {"path": str(tmp_path / "out"), "labels": True},
              "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    missing = skipped[skipped["reason"].str.startswith("chunk missing", na=False)]
    (image,) = result.summary["tiles"]["images"]
    if missing_chunks == "skip":
        assert len(missing) == 1 and missing["step"].iloc[0] == "load"
        assert str(chunk) in missing["reason"].iloc[0] and "input.missing_chunks: fill" in missing["reason"].iloc[0]
        assert result.summary["counts"]["cells"]["exported"] == 0 and image["objects"] == 0
        assert image["failure"].startswith("chunk missing")
    else:  # the user accepted zeros there: the rest of the image is measured
        assert missing.empty and "failure" not in image
        assert result.summary["counts"]["cells"]["exported"] > 0


def test_extra_masks_of_a_tiled_image_are_label_images_equal_to_the_whole_images(tmp_path):
    # A cell's extra mask may cross into a neighbour tile's chunk, which another task writes.
    path = write_synthetic_slide(tmp_path / "slide.zarr", SIZE, chunk=256, seed=3)
    masks = [{"name": "bright", "channel": "DNA", "method": "otsu"}]
    runs = {}
    for mode in ("always", "never"):
        config = _config(path, tmp_path / mode, mode, features={"families": ["bbox"]})
        runs[mode] = scip.run({**config, "masks": masks}, progress=False)
    tiled, whole = runs["always"], runs["never"]
    cells_t, cells_w = _labels(tiled.output), _labels(whole.output)
    mask_t, mask_w = _labels(tiled.output, name="bright"), _labels(whole.output, name="bright")
    # The tiled run's label numbers, turned into the whole run's through the cell label images (the same objects).
    fg = cells_t > 0
    lut = np.zeros(cells_t.max() + 1, np.int64)
    lut[cells_t[fg]] = cells_w[fg]
    assert np.array_equal(lut[cells_t], cells_w)
    assert mask_w.max() > 0 and np.array_equal(lut[mask_t], mask_w)
    assert np.all(cells_t[mask_t > 0] == mask_t[mask_t > 0])  # each mask lies in its own cell
    # Some masks cross a tile edge: the case a per-partition write would lose.
    edge = TILE
    crossing = set(np.unique(mask_t[:, edge - 1])) & set(np.unique(mask_t[:, edge])) - {0}
    assert crossing
    group = zarr.open_group(str(tiled.output / "labels.zarr" / "slide" / "labels" / "bright"), mode="r")
    assert [d["path"] for d in group.attrs["multiscales"][0]["datasets"]] == ["0", "1", "2"]
    assert not (tiled.output / ".tiles").exists()
