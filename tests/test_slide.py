"""Whole-slide path: seams, global labels, NGFF output, cell table, polygons (scip.slide)."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
import zarr
from scipy import ndimage as ndi
from skimage.segmentation import clear_border

from scip.segment import segment
from scip.slide import open_slide, segment_slide, write_synthetic_slide
from scip.segment.compare import compare_segmentations
from scip.io.ngff import mode_downsample
from scip.segment.tiling import Tiling, assemble_core, segment_window

TILE = 512


def _config(path, out, **sections):
    config = {"input": {"path": str(path)}, "segment": {"method": "watershed", "channel": "DNA"},
              "tiles": {"size": TILE, "diameter": 24}, "output": {"path": str(out)},
              "cluster": {"scheduler": "synchronous"}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 2048 x 2048 synthetic nuclei slide (about 2,200 nuclei), segmented tile by tile once for the module."""
    root = tmp_path_factory.mktemp("slide")
    path = write_synthetic_slide(root / "nuclei.ome.zarr", 2048, chunk=512, seed=3, workers=2)
    result = segment_slide(_config(path, root / "out", output={"polygons": True}), progress=False)
    return path, result


def test_seam_tiled_equals_whole_image(slide):
    """Acceptance 1 (at 2048 x 2048; 4096 x 4096 in benchmarks/bench_wholeslide.py): same objects as one pass."""
    path, result = slide
    source = open_slide(path)
    image = source.read([0], 0, 2048, 0, 2048)[0]
    whole = clear_border(segment(image, "watershed"))
    tiled = result.read_labels()
    c = compare_segmentations(whole, tiled, iou=0.95)
    assert c["reference"] > 2000
    assert c["matched"] >= 0.99 * c["reference"], c
    assert c["split"] == 0 and c["merged"] == 0, c
    assert c["missing"] == 0 and c["extra"] == 0, c
    counts = result.summary["counts"]
    # None duplicated: every object is written by one tile only, so no pixel is claimed twice and
    # the table has one row per object of the label image.
    assert counts["conflict_pixels"] == 0 and counts["cut"] == 0
    assert counts["table_rows"] == counts["objects"] == c["tiled"]


def test_objects_crossing_tile_borders_are_whole(slide):
    """Objects whose bounding box crosses a core boundary are there, once, in the tiled labels."""
    _, result = slide
    table = result.read_table()
    crossing = table[(table.bbox_min_row // TILE != (table.bbox_max_row - 1) // TILE)
                     | (table.bbox_min_col // TILE != (table.bbox_max_col - 1) // TILE)]
    assert len(crossing) > 50
    tiled = result.read_labels()
    for row in crossing.itertuples():
        crop = tiled[row.bbox_min_row:row.bbox_max_row, row.bbox_min_col:row.bbox_max_col]
        assert (crop == row.label).sum() == row.area
        # One connected piece: not cut along the tile border.
        assert ndi.label(crop == row.label)[1] == 1


def test_table_rows_are_the_label_image_objects(slide):
    _, result = slide
    table = result.read_table()
    labels = result.read_labels()
    ids = np.unique(labels)[1:]
    assert len(table) == len(ids) == result.summary["counts"]["objects"]
    np.testing.assert_array_equal(table.label.to_numpy(), ids)
    # Globally unique, consecutive labels from the per-tile counts.
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    area = np.bincount(labels.ravel())[ids]
    np.testing.assert_array_equal(table.area.to_numpy(), area)
    cy = ndi.mean(np.indices(labels.shape)[0], labels, ids)
    np.testing.assert_allclose(table.centroid_y.to_numpy(), cy, atol=1e-9)
    # The tile of origin holds the centroid in its core.
    np.testing.assert_array_equal(table.tile_row.to_numpy(), np.floor(table.centroid_y.to_numpy()) // TILE)
    np.testing.assert_array_equal(table.tile_col.to_numpy(), np.floor(table.centroid_x.to_numpy()) // TILE)


def test_label_image_is_valid_ngff_with_pyramid(slide):
    path, result = slide
    root = zarr.open_group(str(result.output / "labels.zarr"), mode="r")
    assert root.metadata.zarr_format == 2
    assert dict(root["labels"].attrs)["labels"] == ["cell"]
    attrs = dict(root["labels/cell"].attrs)
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["y", "x"] and all(a["type"] == "space" for a in ms["axes"])
    assert attrs["image-label"]["version"] == "0.4"
    # The source image path is relative to the label image and leads to the intensity image.
    source = (result.labels / attrs["image-label"]["source"]["image"]).resolve()
    assert source == Path(path).resolve()
    shapes = [root[f"labels/cell/{d['path']}"].shape for d in ms["datasets"]]
    assert shapes == [(2048, 2048), (1024, 1024), (512, 512)]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    level0 = result.read_labels(0)
    level1 = result.read_labels(1)
    np.testing.assert_array_equal(level1, mode_downsample(level0))
    np.testing.assert_array_equal(result.read_labels(2), mode_downsample(level1))
    zarray = json.loads((result.labels / "0" / ".zarray").read_text())
    assert zarray["dimension_separator"] == "/" and zarray["chunks"] == [TILE, TILE]
    assert zarray["dtype"] == "<u4"


def test_polygons_round_trip_as_geoparquet(slide):
    _, result = slide
    part = sorted(result.table.glob("part-*.parquet"))[0]
    geo = json.loads(pq.read_schema(part).metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    table = result.read_table()
    shapes = shapely.from_wkb(table.geometry.to_numpy())
    assert shapely.is_valid(shapes).all()
    labels = result.read_labels()
    # A point inside each outline lies on the object's own pixels (x = column, y = row).
    inside = shapely.point_on_surface(shapes)
    rows = np.rint(shapely.get_y(inside)).astype(int)
    cols = np.rint(shapely.get_x(inside)).astype(int)
    assert (labels[rows, cols] == table.label.to_numpy()).mean() > 0.99
    # Outlines run through the boundary pixels' edge midpoints: area within half a perimeter of the pixel count.
    ratio = shapely.area(shapes) / table.area.to_numpy()
    assert 0.8 < ratio.min() and ratio.max() <= 1.0


def test_labels_have_no_per_tile_cap(tmp_path):
    """131,072 one-pixel objects in two tiles: more than a uint16 block could number, all unique."""
    image = np.zeros((512, 1024), np.uint16)
    image[::2, ::2] = 1000
    store = zarr.open_array(str(tmp_path / "dots.zarr"), mode="w", shape=image.shape, chunks=(256, 256),
                            dtype="uint16")
    store[:] = image
    config = _config(tmp_path / "dots.zarr", tmp_path / "out",
                     segment={"method": "otsu", "channel": 0, "smooth": 0, "min_size": 0, "fill_holes": False,
                              "remove_border": False},
                     tiles={"size": 512, "margin": 4})
    result = segment_slide(config, progress=False)
    labels = result.read_labels()
    assert result.summary["counts"]["objects"] == 256 * 512 == labels.max()
    assert len(np.unique(labels[::2, ::2])) == 256 * 512 and (labels[1::2] == 0).all()
    assert result.summary["counts"]["table_rows"] == 256 * 512


def test_objects_larger_than_the_margin_are_reported(tmp_path):
    image = np.full((1024, 1024), 100, np.uint16)
    yy, xx = np.mgrid[:1024, :1024]
    image[(yy - 512) ** 2 + (xx - 500) ** 2 < 100 ** 2] = 1000  # a 200 px disk across four tiles
    image[(yy - 200) ** 2 + (xx - 200) ** 2 < 10 ** 2] = 1000
    zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=image.shape, dtype="uint16")[:] = image
    config = _config(tmp_path / "big.zarr", tmp_path / "out", segment={"method": "otsu", "channel": 0},
                     tiles={"size": 512, "margin": 20}, features={"families": ["bbox"]})
    result = segment_slide(config, progress=False)
    counts = result.summary["counts"]
    assert counts["cut"] >= 1
    table = result.read_table()
    assert table.touches_margin.sum() == counts["cut"]
    small = table[table.area < 1000]
    assert len(small) == 1 and not small.touches_margin.iloc[0]
    # Tiles that own no object wrote parts with the feature columns too.
    assert small.feat_cell_bbox_min_row.iloc[0] == small.bbox_min_row.iloc[0] == 191


def test_ownership_and_assembly_on_a_tiny_grid():
    """segment_window keeps objects whose centroid is in the core; assemble_core writes each once."""
    tiling = Tiling((20, 20), size=10, margin=4)
    image = np.zeros((20, 20))
    image[8:12, 2:4] = 1  # centroid row 9.5: tile row 0
    image[9:13, 15:17] = 1  # centroid row 10.5: tile row 1

    def threshold(window):
        return ndi.label(window > 0.5)[0]

    results = {}
    for r, c in tiling.tiles():
        y0, y1, x0, x1 = tiling.window(r, c)
        results[(r, c)] = segment_window(image[y0:y1, x0:x1], tiling, r, c, threshold, remove_border=False)
    assert [results[t].owned for t in tiling.tiles()] == [1, 0, 0, 1]
    assert results[(1, 0)].found == 1  # sees the first object but leaves it to tile (0, 0)
    offsets = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 1}
    out = np.zeros((20, 20), np.uint32)
    for r, c in tiling.tiles():
        pieces = []
        for t in tiling.neighbours(r, c):
            frame = np.zeros((tiling.frame,) * 2, np.uint32)
            oy, ox = tiling.frame_origin(*t)
            y0, y1, x0, x1 = tiling.window(*t)
            frame[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = results[t].labels
            pieces.append((frame, (oy, ox), results[t].owned, offsets[t]))
        y0, y1, x0, x1 = tiling.core(r, c)
        out[y0:y1, x0:x1], conflicts = assemble_core((y0, y1, x0, x1), pieces, np.dtype(np.uint32))
        assert conflicts == 0
    expected = np.zeros((20, 20), np.uint32)
    expected[8:12, 2:4] = 1
    expected[9:13, 15:17] = 2
    np.testing.assert_array_equal(out, expected)
