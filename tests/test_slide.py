"""Whole-slide images through `scip run`: global labels, NGFF output and pyramid, large objects, no per-tile cap.

The seam acceptance (tiled = whole image) is in tests/test_tiled_run.py; `scip slide` as an alias and the input
formats in tests/test_slide_input.py.
"""

import json

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

import scip
from conftest import require
from scip.datasets.slides import write_synthetic_slide
from scip.io.ngff import mode_downsample
from scip.segment.tiling import Tiling, assemble_core, segment_window

TILE = 512
BBOX = ["feat_cell_bbox_min_row", "feat_cell_bbox_min_col", "feat_cell_bbox_max_row", "feat_cell_bbox_max_col"]


def _config(path, out, **sections):
    config = {"input": {"path": str(path)}, "segment": {"method": "watershed", "channel": "DNA"},
              "tiles": {"mode": "always", "size": TILE, "diameter": 24},
              "features": {"families": ["shape", "bbox"]},
              "output": {"path": str(out), "labels": True}, "cluster": {"scheduler": "synchronous"}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def _labels(out, image_id, level=0, name="cell"):
    return np.asarray(zarr.open_array(str(out / "labels.zarr" / image_id / "labels" / name / str(level)),
                                      mode="r")[...])


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 2048 x 2048 synthetic nuclei slide (about 2,200 nuclei), run in tiles once for the module."""
    root = tmp_path_factory.mktemp("slide")
    path = write_synthetic_slide(root / "nuclei.ome.zarr", 2048, chunk=512, seed=3, workers=2)
    result = scip.run(_config(path, root / "out", cells={"padding": 5}), progress=False)
    return path, result


def test_objects_crossing_tile_borders_are_whole(slide):
    """Objects whose bounding box crosses a core boundary are there, once, in the tiled labels."""
    _, result = slide
    table = result.read().astype({c: int for c in BBOX})
    crossing = table[(table.feat_cell_bbox_min_row // TILE != (table.feat_cell_bbox_max_row - 1) // TILE)
                     | (table.feat_cell_bbox_min_col // TILE != (table.feat_cell_bbox_max_col - 1) // TILE)]
    assert len(crossing) > 50
    tiled = _labels(result.output, "nuclei.ome")
    for row in crossing.itertuples():
        crop = tiled[row.feat_cell_bbox_min_row:row.feat_cell_bbox_max_row,
                     row.feat_cell_bbox_min_col:row.feat_cell_bbox_max_col]
        assert (crop == row.meta_label).sum() == row.feat_cell_shape_area
        # One connected piece: not cut along the tile border.
        assert ndi.label(crop == row.meta_label)[1] == 1


def test_labels_are_global_consecutive_and_match_the_table(slide):
    _, result = slide
    labels = _labels(result.output, "nuclei.ome")
    ids = np.unique(labels)[1:]
    (image,) = result.summary["tiles"]["images"]
    # Globally unique, consecutive labels from the per-tile counts; border objects are skipped rows, not table rows.
    np.testing.assert_array_equal(ids, np.arange(1, image["objects"] + 1))
    cells = result.summary["counts"]["cells"]
    assert cells["found"] == image["objects"] == cells["exported"] + cells["skipped"]
    table = result.read().sort_values("meta_label")
    np.testing.assert_array_equal(np.bincount(labels.ravel())[table.meta_label.to_numpy()],
                                  table.feat_cell_shape_area.to_numpy())


def test_label_image_is_ngff_with_a_mode_pyramid(slide):
    _, result = slide
    group = zarr.open_group(str(result.output / "labels.zarr" / "nuclei.ome" / "labels"), mode="r")
    assert group.metadata.zarr_format == 2
    assert dict(group.attrs)["labels"] == ["cell"]
    attrs = dict(group["cell"].attrs)
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4" and [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert attrs["image-label"]["version"] == "0.4"
    shapes = [group[f"cell/{d['path']}"].shape for d in ms["datasets"]]
    assert shapes == [(2048, 2048), (1024, 1024), (512, 512)]
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == [[1.0, 1.0], [2.0, 2.0],
                                                                                    [4.0, 4.0]]
    level0, level1 = _labels(result.output, "nuclei.ome", 0), _labels(result.output, "nuclei.ome", 1)
    np.testing.assert_array_equal(level1, mode_downsample(level0))
    np.testing.assert_array_equal(_labels(result.output, "nuclei.ome", 2), mode_downsample(level1))
    zarray = json.loads((result.output / "labels.zarr/nuclei.ome/labels/cell/0/.zarray").read_text())
    assert zarray["dimension_separator"] == "/" and zarray["chunks"] == [TILE, TILE] and zarray["dtype"] == "<u4"


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
                     tiles={"size": 512, "margin": 4}, features={"families": ["bbox"]})
    result = scip.run(config, progress=False)
    labels = _labels(result.output, "0")
    assert result.summary["tiles"]["images"][0]["objects"] == 256 * 512 == labels.max()
    assert len(np.unique(labels[::2, ::2])) == 256 * 512 and (labels[1::2] == 0).all()
    assert result.summary["counts"]["cells"]["exported"] == 256 * 512


def test_objects_larger_than_the_margin_are_reported(tmp_path):
    image = np.full((1024, 1024), 100, np.uint16)
    yy, xx = np.mgrid[:1024, :1024]
    image[(yy - 512) ** 2 + (xx - 500) ** 2 < 100 ** 2] = 1000  # a 200 px disk across four tiles
    image[(yy - 200) ** 2 + (xx - 200) ** 2 < 10 ** 2] = 1000
    zarr.open_array(str(tmp_path / "big.zarr"), mode="w", shape=image.shape, dtype="uint16")[:] = image
    config = _config(tmp_path / "big.zarr", tmp_path / "out", segment={"method": "otsu", "channel": 0},
                     tiles={"size": 512, "margin": 20}, features={"families": ["bbox"]})
    result = scip.run(config, progress=False)
    assert result.summary["tiles"]["images"][0]["cut"] >= 1
    small = result.read().query("feat_cell_bbox_max_row - feat_cell_bbox_min_row < 30")
    assert len(small) == 1 and small.feat_cell_bbox_min_row.iloc[0] == 191


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


def test_polygons_of_a_tiled_image_outline_its_labels(tmp_path):
    """output.polygons on an image read in tiles: each outline (image coordinates) lies on its own object's pixels."""
    shapely = require("shapely")
    path = write_synthetic_slide(tmp_path / "s.ome.zarr", (600, 700), chunk=256, seed=2)
    result = scip.run(_config(path, tmp_path / "out", tiles={"size": 256}, output={"polygons": True}),
                      progress=False)
    table = result.read()
    labels = _labels(result.output, "s.ome")
    shapes = shapely.from_wkb(table.geometry.to_numpy())
    assert len(table) > 100 and shapely.is_valid(shapes).all()
    inside = shapely.point_on_surface(shapes)
    rows = np.rint(shapely.get_y(inside)).astype(int)
    cols = np.rint(shapely.get_x(inside)).astype(int)
    assert (labels[rows, cols] == table.meta_label.to_numpy()).mean() > 0.99
    ratio = shapely.area(shapes) / table.feat_cell_shape_area.to_numpy()
    assert 0.8 < ratio.min() and ratio.max() <= 1.0
