"""Images read in tiles: window reads of a run's images, the tiling decision, a tile's records (scip.steps.tiles)."""

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi

from scip.accounting import summarize
from scip.config import InputConfig, TilesConfig
from scip.io import open_dataset, read_images
from scip.io.limits import ImageBudget
from scip.records import CellRecord, ImageRecord, Source
from scip.segment.tiling import Tiling, segment_window
from scip.steps.cells import split_cells
from scip.steps.tiles import (NOT_EVALUATED, WindowError, choose_tiled, tile_partitions, tile_records,
                              tiled_image_record, window_reader)


def _blobs(shape=(300, 260), seed=0):
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for _ in range(60):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(3, 8)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1000 + rng.integers(0, 500)
    return image


def _whole(dataset, source):
    (record,) = read_images(dataset, [source])
    assert record.status, record.status.reason
    return record.pixels


def test_window_reads_equal_whole_image_reads_for_every_format(tmp_path):
    a, b = _blobs(seed=1) + 1, _blobs(seed=2) + 2  # no chunk of zeros: zarr would not store it
    # A multi-channel TIFF (tiled), one TIFF per channel, a zarr (N, C, H, W) array, an OME-Zarr z stack.
    (tmp_path / "multi").mkdir()
    tifffile.imwrite(tmp_path / "multi" / "img.tif", np.stack([a, b]), tile=(64, 64))
    (tmp_path / "per").mkdir()
    tifffile.imwrite(tmp_path / "per" / "f1_DNA.tif", a)
    tifffile.imwrite(tmp_path / "per" / "f1_GFP.tif", b)
    plain = zarr.open_array(str(tmp_path / "n.zarr"), mode="w", shape=(2, 2, *a.shape), chunks=(1, 1, 64, 64),
                            dtype="uint16")
    plain[0], plain[1] = np.stack([a, b]), np.stack([b, a])
    ome = zarr.open_group(str(tmp_path / "z.ome.zarr"), mode="w", zarr_format=2)
    ome.create_array("0", shape=(2, 3, *a.shape), chunks=(1, 1, 64, 64), dtype="uint16")[:] = \
        np.stack([np.stack([a, b, a // 2 + 1]), np.stack([b, a, b // 3 + 1])])
    ome.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in "czyx"],
                                 "datasets": [{"path": "0"}]}]
    cases = [
        ({"path": tmp_path / "multi", "channels": ["DNA", "GFP"], "use_channels": ["GFP"]}, None),
        ({"path": tmp_path / "per", "pattern": r"f(?P<id>\d)_(?P<channel>\w+)\.tif"}, None),
        ({"path": tmp_path / "n.zarr", "use_channels": ["ch1"]}, None),
        ({"path": tmp_path / "z.ome.zarr", "z": "max"}, "max"),
        ({"path": tmp_path / "z.ome.zarr", "z": "mean"}, "mean"),
    ]
    for cfg, z in cases:
        dataset = open_dataset(InputConfig(**cfg))
        for source in dataset.sources:
            reader = window_reader(dataset, source, z)
            whole = _whole(dataset, source)
            if whole.ndim == 4:
                whole = whole.max(axis=1) if z == "max" else whole.mean(axis=1, dtype=np.float64).astype(np.float32)
            assert reader.shape == a.shape
            np.testing.assert_array_equal(reader.read(0, a.shape[0], 0, a.shape[1]), whole, err_msg=str(cfg))
            np.testing.assert_array_equal(reader.read(50, 170, 30, 99), whole[:, 50:170, 30:99], err_msg=str(cfg))
    # The declared size is what reading the image whole decodes: both channels of the 2-D TIFF series.
    dataset = open_dataset(InputConfig(path=tmp_path / "multi", channels=["DNA", "GFP"], use_channels=["GFP"]))
    assert window_reader(dataset, dataset.sources[0]).declared_bytes == 2 * a.size * 2
    dataset = open_dataset(InputConfig(path=tmp_path / "z.ome.zarr", z="max"))
    assert window_reader(dataset, dataset.sources[0], "max").declared_bytes == 2 * 3 * a.size * 2
    with pytest.raises(WindowError, match=r"z stack of 3 planes; set input\.z"):
        window_reader(dataset, dataset.sources[0], None)
    one_plane = window_reader(dataset, dataset.sources[0], 1)
    np.testing.assert_array_equal(one_plane.read(0, 10, 0, 10), np.stack([b, a])[:, :10, :10])


def test_choose_tiled_by_mode_and_budget(tmp_path):
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "large.tif", np.zeros((512, 512), np.uint16), tile=(128, 128))
    dataset = open_dataset(InputConfig(path=tmp_path))
    index = {s.image_id: s.index for s in dataset.sources}
    budget = ImageBudget(100_000, "test")
    assert choose_tiled(dataset, TilesConfig(mode="never"), budget) == ()
    assert choose_tiled(dataset, TilesConfig(mode="auto"), None) == ()
    readers = {}
    assert choose_tiled(dataset, TilesConfig(mode="auto"), budget, readers=readers) == (index["large"],)
    assert readers[index["large"]].declared_bytes == 512 * 512 * 2
    assert choose_tiled(dataset, TilesConfig(mode="always"), None) == tuple(sorted(index.values()))
    assert choose_tiled(dataset, TilesConfig(mode="always"), None, z="stitch") == ()


def _threshold(window):
    return ndi.label(window > 500)[0]


def test_tile_records_are_the_whole_image_cells():
    """Tiles with margins give the cell records split_cells makes on the whole image: bbox, crop, masks, others."""
    image = _blobs((300, 260), seed=4)
    pixels = np.stack([image, image // 2])
    source = Source("big", 0, ("big.tif",))
    channels = ("DNA", "GFP")
    whole_labels = _threshold(image)
    whole = split_cells(ImageRecord(source, channels, pixels=pixels, labels={"cell": whole_labels}), "cell", 5, True)
    tiling = Tiling(image.shape, 100, 30)
    results = {}
    for r, c in tiling.tiles():
        y0, y1, x0, x1 = tiling.window(r, c)
        results[(r, c)] = segment_window(image[y0:y1, x0:x1], tiling, r, c, _threshold, remove_border=False)
    offsets, total = {}, 0
    for t in tiling.tiles():
        offsets[t], total = total, total + results[t].owned
    cells = []
    for t in tiling.tiles():
        y0, y1, x0, x1 = tiling.window(*t)
        cells += tile_records(source, channels, pixels[:, y0:y1, x0:x1], results[t].labels, results[t].owned,
                              (y0, y1, x0, x1), image.shape, offsets[t], "cell", 5, True)
    assert total == whole_labels.max() and len(cells) == total
    assert len({c.label for c in cells}) == total and min(c.label for c in cells) == 1
    by_bbox = {c.bbox: c for c in cells}
    for expected in whole[1:]:
        got = by_bbox[expected.bbox]
        assert bool(got.status) == bool(expected.status)
        assert got.status.reason == expected.status.reason
        if not expected.status:
            continue
        assert got.origin == expected.origin
        np.testing.assert_array_equal(got.pixels, expected.pixels)
        np.testing.assert_array_equal(got.masks["cell"], expected.masks["cell"])
        np.testing.assert_array_equal(got.others, expected.others)
    # Counted once: one image record for the whole image, then the cells of every tile.
    image_record = tiled_image_record(source, channels, total, "otsu", {"segment": 1.5})
    s, w = summarize([image_record, *cells]), summarize(whole)
    assert (s.images, s.images_with_cells, s.cells_found, s.cells_exported) == \
        (w.images, w.images_with_cells, w.cells_found, w.cells_exported) == (1, 1, total, w.cells_exported)
    assert s.cells_found == s.cells_exported + len(s.skipped) and s.timings["segment"] == 1.5


def test_tiled_image_record_without_objects_or_with_evaluation():
    source = Source("big", 3, ("big.tif",))
    empty = tiled_image_record(source, ("DNA",), 0, "otsu")
    assert not empty.status and empty.status.kind == "no cells found" and empty.pixels is None
    evaluated = tiled_image_record(source, ("DNA",), 4, "otsu", evaluated=True)
    assert evaluated.status and NOT_EVALUATED in evaluated.evaluation.error
    assert summarize([evaluated]).evaluation_errors == [evaluated.evaluation.error]
    assert tile_records(source, ("DNA",), np.zeros((1, 8, 8)), np.zeros((8, 8), int), 0, (0, 8, 0, 8), (8, 8), 0,
                        "cell") == []
    assert not isinstance(empty, CellRecord)


def test_tile_partitions_group_tiles_in_raster_order():
    tiles = Tiling((1000, 700), 256, 10).tiles()
    groups = tile_partitions(tiles, 5)
    assert [t for g in groups for t in g] == tiles and [len(g) for g in groups] == [5, 5, 2]
