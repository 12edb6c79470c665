"""Label images out: NGFF 0.4 label images written by ``scip.io.labels``, checked by ome-zarr-models and ome-zarr."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import zarr

from scip.io import labels
from scip.io.ngff import mode_downsample
from conftest import require


def _objects_2d(shape=(300, 200)) -> np.ndarray:
    m = np.zeros(shape, np.int32)
    m[10:50, 20:80] = 3
    m[100:200, 100:150] = 7
    m[250:290, 5:30] = 12
    return m


def _objects_3d() -> np.ndarray:
    m = np.zeros((4, 90, 70), np.uint16)
    m[1:4, 10:40, 10:40] = 2
    m[0:2, 50:80, 30:60] = 5
    return m


def _validate(root, image_id: str, name: str):
    """The label image as ome-zarr-models' NGFF 0.4 ``ImageLabel`` and the ``labels`` group as ``Labels``."""
    image_label = require("ome_zarr_models.v04.image_label")
    labels_group = require("ome_zarr_models.v04.labels")
    group = zarr.open_group(str(root), mode="r")
    key = labels.image_key(image_id)
    listed = labels_group.Labels.from_zarr(group[f"{key}/labels"])
    assert name in listed.attributes.labels
    return image_label.ImageLabel.from_zarr(group[f"{key}/labels/{name}"])


def _read_with_ome_zarr(path) -> list[np.ndarray]:
    """The pyramid of the label image at ``path``, as ome-zarr's reader returns it."""
    require("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path)))())
    assert nodes and any(isinstance(s, Label) for s in nodes[0].specs)
    return [np.asarray(level) for level in nodes[0].data]


@pytest.mark.parametrize("chunk, levels", [(512, 1), (64, 4)], ids=["one-level", "multiscale"])
def test_2d_label_image_is_valid_ngff_and_reads_back(tmp_path, chunk, levels):
    root = tmp_path / "labels.zarr"
    cell = _objects_2d()
    key = labels.write_labels(root, "plate 1/A01.tif", {"cell": cell, "inside": cell > 0}, scale=(0.5, 0.25),
                              units=("micrometer", "micrometer"), chunk=chunk)
    assert key == labels.image_key("plate 1/A01.tif") and "/" not in key and " " not in key
    model = _validate(root, "plate 1/A01.tif", "cell")
    multiscale = model.attributes.multiscales[0]
    assert [a.name for a in multiscale.axes] == ["y", "x"]
    assert len(multiscale.datasets) == levels
    assert multiscale.datasets[0].coordinateTransformations[0].scale == [0.5, 0.25]
    assert multiscale.datasets[-1].coordinateTransformations[0].scale == [0.5 * 2 ** (levels - 1),
                                                                          0.25 * 2 ** (levels - 1)]
    _validate(root, "plate 1/A01.tif", "inside")
    assert labels.label_names(root, "plate 1/A01.tif") == ["cell", "inside"]
    pyramid = _read_with_ome_zarr(root / key / "labels" / "cell")
    assert len(pyramid) == levels
    np.testing.assert_array_equal(pyramid[0], cell)
    assert pyramid[0].dtype == np.uint32
    for k in range(1, levels):
        np.testing.assert_array_equal(pyramid[k], mode_downsample(pyramid[k - 1]))
        np.testing.assert_array_equal(labels.read_labels(root, "plate 1/A01.tif", "cell", k), pyramid[k])
    # Downsampling picks labels, never averages them into ids that do not exist.
    assert set(np.unique(pyramid[-1])) <= set(np.unique(cell))
    np.testing.assert_array_equal(labels.read_labels(root, "plate 1/A01.tif", "inside"), (cell > 0).astype(np.uint32))
    assert max(pyramid[-1].shape) <= chunk


@pytest.mark.parametrize("chunk, levels", [(128, 1), (32, 3)], ids=["one-level", "multiscale"])
def test_3d_label_image_keeps_its_planes(tmp_path, chunk, levels):
    root = tmp_path / "labels.zarr"
    stack = _objects_3d()
    labels.write_labels(root, "stack", {"cell": stack}, scale=(2.0, 0.5, 0.5), chunk=chunk)
    multiscale = _validate(root, "stack", "cell").attributes.multiscales[0]
    assert [a.name for a in multiscale.axes] == ["z", "y", "x"]
    # Levels halve y and x; a z-stack keeps every plane.
    assert [d.coordinateTransformations[0].scale for d in multiscale.datasets] == \
        [[2.0, 0.5 * 2 ** k, 0.5 * 2 ** k] for k in range(levels)]
    pyramid = _read_with_ome_zarr(root / "stack" / "labels" / "cell")
    assert [p.shape[0] for p in pyramid] == [4] * levels
    np.testing.assert_array_equal(pyramid[0], stack)
    for k in range(1, levels):
        for z in range(4):
            np.testing.assert_array_equal(pyramid[k][z], mode_downsample(pyramid[k - 1][z]))
    chunks = zarr.open_array(str(root / "stack" / "labels" / "cell" / "0"), mode="r").chunks
    assert chunks[0] == 1


def test_root_is_marked_and_foreign_zarr_is_not(tmp_path):
    root = tmp_path / "labels.zarr"
    labels.write_labels(root, "a", {"cell": _objects_2d()})
    assert labels.is_scip_labels(root)
    foreign = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=2)
    foreign.attrs["labels"] = ["cell"]
    assert not labels.is_scip_labels(tmp_path / "other.zarr")
    (tmp_path / "plain").mkdir()
    assert not labels.is_scip_labels(tmp_path / "plain")
    assert not labels.is_scip_labels(tmp_path / "missing")


def test_writing_an_image_again_replaces_it(tmp_path):
    root = tmp_path / "labels.zarr"
    first = _objects_2d()
    labels.write_labels(root, "a", {"cell": first}, chunk=64)
    labels.write_labels(root, "b", {"cell": first}, chunk=64)
    second = np.zeros_like(first)
    second[5:20, 5:20] = 1
    labels.write_labels(root, "a", {"cell": second}, chunk=64)
    np.testing.assert_array_equal(labels.read_labels(root, "a", "cell"), second)
    np.testing.assert_array_equal(labels.read_labels(root, "b", "cell"), first)
    assert labels.label_names(root, "a") == ["cell"]


def test_large_label_values_are_kept_in_uint64(tmp_path):
    m = np.zeros((8, 8), np.uint64)
    m[2:4, 2:4] = 2 ** 40
    labels.write_labels(tmp_path / "labels.zarr", "big", {"cell": m})
    back = labels.read_labels(tmp_path / "labels.zarr", "big", "cell")
    assert back.dtype == np.uint64 and back.max() == 2 ** 40


def test_image_keys_are_safe_and_distinct():
    assert labels.image_key("field_01") == "field_01"
    ids = ["a/b", "a_b", "a b", "a:b", ".hidden", "..", "x" * 300, "x" * 301, "é"]
    keys = [labels.image_key(i) for i in ids]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert key and not key.startswith(".") and len(key) <= 110
        assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in key)


@pytest.mark.parametrize("masks, message", [
    ({"cell": np.zeros((4, 4)), "n": np.zeros((4, 5))}, "differ in shape"),
    ({"cell": np.zeros(4, np.int32)}, "expected (y, x) or (z, y, x)"),
    ({"cell": np.zeros((4, 4), np.float32)}, "integers or booleans"),
    ({"cell": -np.ones((4, 4), np.int32)}, "negative labels"),
])
def test_bad_masks_are_refused_with_a_reason(tmp_path, masks, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        labels.write_labels(tmp_path / "labels.zarr", "img", masks)


def test_reading_a_missing_label_image_names_it(tmp_path):
    labels.write_labels(tmp_path / "labels.zarr", "img", {"cell": _objects_2d()})
    with pytest.raises(KeyError, match="nucleus"):
        labels.read_labels(tmp_path / "labels.zarr", "img", "nucleus")
    assert labels.label_names(tmp_path / "labels.zarr", "other") == []


# --- output.labels in scip run -------------------------------------------------------------------------------

def _fields_config(tmp_path, **output) -> dict:
    from scip.datasets import write_example

    paths = write_example(tmp_path / "data", n_events=2, n_fields=2, seed=1)
    return {
        "input": {"path": str(paths["fields"]), "pattern": r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff",
                  "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "masks": [{"name": "nucleus", "channel": "DNA"}],
        "features": {"families": ["shape", "bbox"]},
        "output": {"path": str(tmp_path / "out"), "labels": True, **output},
        "cluster": {"scheduler": "synchronous"},
    }


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    import scip

    tmp_path = tmp_path_factory.mktemp("labelled")
    result = scip.run(_fields_config(tmp_path, polygons=True, pyramid_levels=2,
                                     formats=["parquet", "csv", "anndata"]), progress=False)
    return result, scip.read(result.output)


def test_every_row_joins_exactly_its_pixels(labelled_run):
    from skimage.measure import regionprops

    result, table = labelled_run
    root = result.output / labels.LABELS
    assert len(table) > 10 and table["meta_image_id"].nunique() == 2
    for image_id, rows in table.groupby("meta_image_id"):
        cell = labels.read_labels(root, image_id, "cell")
        nucleus = labels.read_labels(root, image_id, "nucleus")
        regions = {r.label: r for r in regionprops(cell.astype(np.int64))}
        for row in rows.itertuples():
            region = regions[row.meta_label]
            assert region.area == row.feat_cell_shape_area
            assert region.bbox == (row.feat_cell_bbox_min_row, row.feat_cell_bbox_min_col,
                                   row.feat_cell_bbox_max_row, row.feat_cell_bbox_max_col)
            inside = nucleus == row.meta_label
            assert inside.sum() == (row.feat_nucleus_shape_area if not np.isnan(row.feat_nucleus_shape_area) else 0)
            # A nucleus lies inside its own cell.
            assert (cell[inside] == row.meta_label).all()
        # The nucleus image holds the exported cells' nuclei and nothing else.
        assert set(np.unique(nucleus)) - {0} <= set(rows["meta_label"])


def test_run_labels_are_valid_ngff_with_a_pyramid(labelled_run):
    result, table = labelled_run
    root = result.output / labels.LABELS
    assert labels.is_scip_labels(root)
    for image_id in table["meta_image_id"].unique():
        assert labels.label_names(root, image_id) == ["cell", "nucleus"]
        for name in ("cell", "nucleus"):
            multiscale = _validate(root, image_id, name).attributes.multiscales[0]
            assert len(multiscale.datasets) == 3  # output.pyramid_levels: 2
        pyramid = _read_with_ome_zarr(root / labels.image_key(image_id) / "labels" / "cell")
        np.testing.assert_array_equal(pyramid[0], labels.read_labels(root, image_id, "cell"))
        assert [p.shape for p in pyramid] == [(256, 256), (128, 128), (64, 64)]
    manifest = json.loads((result.output / "manifest.json").read_text())
    assert labels.LABELS in manifest["files"]


def test_polygons_outline_each_cell(labelled_run):
    shapely = require("shapely")
    import pyarrow.parquet as pq

    result, table = labelled_run
    areas = np.array([shapely.from_wkb(g).area for g in table["geometry"]])
    pixels = table["feat_cell_shape_area"].to_numpy()
    # The outline runs through the boundary pixels' edge midpoints: half a pixel inside the pixel area.
    rel = np.abs(areas - pixels) / pixels
    assert np.median(rel) < 0.1 and rel.max() < 0.25
    assert all(shapely.from_wkb(g).geom_type in ("Polygon", "MultiPolygon") for g in table["geometry"])
    for part in sorted((result.output / "cells").glob("part-*.parquet")):
        geo = json.loads(pq.read_schema(part).metadata[b"geo"])
        assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"


def test_polygons_are_wkt_text_in_csv_and_h5ad(labelled_run):
    shapely = require("shapely")
    require("anndata")
    import scip

    result, table = labelled_run
    expected = [shapely.to_wkt(shapely.from_wkb(g)) for g in table["geometry"]]
    for fmt in ("csv", "anndata"):
        other = scip.read(result.output, format=fmt)
        assert isinstance(other["geometry"].dtype, pd.StringDtype), fmt
        assert list(other["geometry"]) == expected, fmt


def test_polygon_column_is_in_an_empty_table(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scip.io.parquet import arrow_schema, write_part
    from scip.steps.export import cells_frame, table_columns

    columns = table_columns(("a",), (), ("cell",), ("shape",), evaluated=False, polygons=True)
    write_part(cells_frame([], columns), tmp_path / "part-00000.parquet", arrow_schema(columns))
    schema = pq.read_schema(tmp_path / "part-00000.parquet")
    assert schema.field("geometry").type == pa.binary() and b"geo" in schema.metadata


# --- labels.zarr in the output folder's bookkeeping ------------------------------------------------------------

def _mark(root, image_id: str) -> None:
    """Put a label value no segmentation gives into an image's label image: gone if the image is written again."""
    array = zarr.open_array(str(root / labels.image_key(image_id) / "labels" / "cell" / "0"), mode="r+")
    array[0, 0] = 999_999


def _marked(root, image_id: str) -> bool:
    return labels.read_labels(root, image_id, "cell")[0, 0] == 999_999


def test_overwrite_removes_only_a_labels_tree_scip_wrote(tmp_path):
    import shutil

    import scip
    from scip.config import ConfigError

    config = _fields_config(tmp_path)
    first = scip.run(config, progress=False)
    root = first.output / labels.LABELS
    image = scip.read(first.output)["meta_image_id"].iloc[0]
    _mark(root, image)
    with pytest.raises(ConfigError, match="already holds results"):
        scip.run(config, progress=False)
    scip.run({**config, "output": {**config["output"], "overwrite": True}}, progress=False)
    assert not _marked(root, image)
    # A labels.zarr of someone else's (no scip marker) at the name scip writes: refused and left alone.
    shutil.rmtree(root)
    foreign = zarr.open_group(str(root), mode="w", zarr_format=2)
    foreign.attrs["labels"] = ["mine"]
    with pytest.raises(ConfigError, match=r"labels\.zarr.*no scip run recorded"):
        scip.run({**config, "output": {**config["output"], "overwrite": True}}, progress=False)
    assert zarr.open_group(str(root), mode="r").attrs["labels"] == ["mine"]
    assert not labels.is_scip_labels(root)


def test_labels_zarr_without_a_manifest_is_refused(tmp_path):
    import scip
    from scip.config import ConfigError

    config = _fields_config(tmp_path)
    labels.create_root(tmp_path / "out" / labels.LABELS)
    # Even scip's marker does not make it this folder's: no manifest recorded writing it.
    with pytest.raises(ConfigError, match=r"labels\.zarr.*no scip run recorded"):
        scip.run({**config, "output": {**config["output"], "overwrite": True}}, progress=False)
    assert labels.is_scip_labels(tmp_path / "out" / labels.LABELS)


def test_resume_keeps_the_labels_of_partitions_done(tmp_path):
    import scip
    from scip.config import ConfigError

    config = _fields_config(tmp_path)
    config["input"]["images_per_partition"] = 1
    first = scip.run(config, progress=False)
    out, root = first.output, first.output / labels.LABELS
    done, redo = sorted(scip.read(out)["meta_image_id"].unique())
    expected = labels.read_labels(root, redo, "nucleus")
    _mark(root, done)
    # Partition 1 as if killed before its summary, with its image's labels half written.
    (out / "progress" / "part-00001.json").unlink()
    zarr.open_array(str(root / labels.image_key(redo) / "labels" / "nucleus" / "0"), mode="r+")[...] = 0
    resumed = scip.run(config, progress=False, resume=True)
    assert resumed.summary["partitions"]["computed"] == 1
    assert _marked(root, done)
    np.testing.assert_array_equal(labels.read_labels(root, redo, "nucleus"), expected)
    # A done partition whose label images went missing since is computed again.
    import shutil

    shutil.rmtree(root / labels.image_key(done))
    again = scip.run(config, progress=False, resume=True)
    assert again.summary["partitions"]["computed"] == 1
    assert labels.label_names(root, done) == ["cell", "nucleus"] and not _marked(root, done)
    # Label images bind a resumption: partitions with and without them would mix.
    without = {**config, "output": {**config["output"], "labels": False}}
    with pytest.raises(ConfigError, match="output.labels: True -> False"):
        scip.run(without, progress=False, resume=True)


def test_ome_zarr_input_gives_its_pixel_size(tmp_path):
    import scip
    from scip.datasets import make_fields

    field = make_fields(1, seed=2).images[0]
    path = tmp_path / "field.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=field.shape, chunks=field.shape, dtype=field.dtype)[...] = field
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    group.attrs.update({"multiscales": [{"version": "0.4", "axes": axes, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.25]}]}]}]})
    result = scip.run({"input": {"path": str(path), "channels": ["DNA", "cyto", "marker"]},
                       "segment": {"method": "watershed", "channel": "cyto"}, "features": {"families": ["shape"]},
                       "output": {"path": str(tmp_path / "out"), "labels": True},
                       "cluster": {"scheduler": "synchronous"}}, progress=False)
    image_id = scip.read(result.output)["meta_image_id"].iloc[0]
    multiscale = _validate(result.output / labels.LABELS, image_id, "cell").attributes.multiscales[0]
    assert multiscale.datasets[0].coordinateTransformations[0].scale == [0.5, 0.25]
    assert [a.unit for a in multiscale.axes] == ["micrometer", "micrometer"]


def test_mode_downsample_against_a_plain_loop():
    """Most frequent of each 2 x 2 block, ties to the first in raster order, odd sides by edge repetition."""
    rng = np.random.default_rng(4)
    for shape in [(6, 8), (7, 5), (3, 9, 11)]:
        block = rng.integers(0, 3, shape).astype(np.uint32)  # three labels: ties of every kind
        padded = np.pad(block, [(0, 0)] * (block.ndim - 2) + [(0, shape[-2] % 2), (0, shape[-1] % 2)], mode="edge")
        expected = np.zeros(padded.shape[:-2] + (padded.shape[-2] // 2, padded.shape[-1] // 2), np.uint32)
        for index in np.ndindex(expected.shape):
            *lead, r, c = index
            four = padded[(*lead, slice(2 * r, 2 * r + 2), slice(2 * c, 2 * c + 2))].ravel().tolist()
            expected[index] = max(four, key=lambda x: (four.count(x), -four.index(x)))
        np.testing.assert_array_equal(mode_downsample(block), expected)


def test_one_labels_task_per_partition_on_a_cpu_worker(tmp_path):
    from dask.base import collections_to_expr
    from dask.utils import key_split

    from scip.engine import graph
    from scip.engine.cluster import CPU, GPU, Routing
    from scip.run import prepare

    config = _fields_config(tmp_path)
    config["input"]["images_per_partition"] = 1
    p = prepare(config)
    routing = Routing({GPU: 1}, {CPU: 1})
    expr = collections_to_expr(graph.build_cells(p, routing=routing).to_delayed(optimize_graph=False),
                               optimize_graph=False)
    resources = expr.__dask_annotations__()["resources"]
    tasks = _writing_labels(expr.__dask_graph__())
    # The labels are written in the partition's cells task (with the masks), on a CPU worker.
    assert len(tasks) == len(graph.partitions(p)) == 2
    assert all(graph.STEPS.get(key_split(key)) == "cells" and resources.get(key) == {CPU: 1} for key in tasks)
    # Without output.labels no task writes them.
    config["output"]["labels"] = False
    plain = graph.build_cells(prepare(config)).to_delayed(optimize_graph=False)
    assert not _writing_labels(collections_to_expr(plain).__dask_graph__())


def _writing_labels(tasks: dict) -> list:
    """The keys of the tasks that call ``scip.engine.graph._labels`` (a step function among their arguments)."""
    return [key for key, task in tasks.items() if any("function _labels " in repr(a) for a in getattr(task, "args", ()))]
