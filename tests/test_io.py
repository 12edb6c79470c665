"""Readers: SCIP's IFC zarr, TIFF layouts, plain Zarr and OME-Zarr."""

import json
import shutil

import numpy as np
import pytest
import tifffile
import zarr

from scip.config import load_config
from scip.io import InputError, ifc_zarr, open_dataset, read_images


def dataset(path, **input_cfg):
    return open_dataset(load_config({"input": {"path": str(path), **input_cfg}}).input)


def test_ifc_header_and_events_of_the_real_file(data_dir):
    header = ifc_zarr.read_ifc_header(data_dir / "scip-ifc" / "test.zarr")
    assert header.n_events == 10 and header.chunk_size == 5
    assert header.object_numbers[:3] == (809, 3462, 7297)
    events = dict(ifc_zarr.read_ifc_events(header, [9, 0, 3]))
    assert {i: e.shape for i, e in events.items()} == {i: header.shapes[i] for i in (0, 3, 9)}
    assert events[0].dtype == np.uint16


def test_ifc_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 4000, (3, h, w), dtype=np.uint16) for h, w in [(20, 30), (41, 17), (5, 5)] * 3]
    ifc_zarr.write_ifc_zarr(tmp_path / "x.zarr", images, object_numbers=range(100, 109), chunk_size=4)
    d = dataset(tmp_path / "x.zarr")
    assert d.format == "ifc_zarr" and d.channels == ("ch0", "ch1", "ch2") and d.chunk_size == 4
    records = read_images(d.reader, d.sources[2:7])
    assert [r.source.fields["object_number"] for r in records] == [str(v) for v in range(102, 107)]
    for r, img in zip(records, images[2:7]):
        np.testing.assert_array_equal(r.pixels, img)


def test_ifc_corrupt_and_missing_chunks_fail_only_their_events(tmp_path, data_dir):
    store = tmp_path / "t.zarr"
    shutil.copytree(data_dir / "scip-ifc" / "test.zarr", store)
    (store / "0").write_bytes(b"garbage")
    d = dataset(store)
    records = read_images(d.reader, d.sources)
    assert [bool(r.status) for r in records] == [False] * 5 + [True] * 5
    assert "cannot decode chunk" in records[0].status.reason and str(store / "0") in records[0].status.reason
    (store / "1").unlink()
    records = read_images(d.reader, d.sources[5:])
    assert all("is missing" in r.status.reason for r in records)


def test_ifc_channel_selection_and_wrong_channel_count(tmp_path):
    images = [np.full((3, 8, 8), i, np.uint16) for i in range(3)] + [np.zeros((2, 8, 8), np.uint16)]
    ifc_zarr.write_ifc_zarr(tmp_path / "x.zarr", images, chunk_size=2)
    d = dataset(tmp_path / "x.zarr", channels=["a", "b", "c"], use_channels=["c", "a"])
    assert d.channels == ("c", "a")
    records = read_images(d.reader, d.sources)
    assert records[1].pixels.shape == (2, 8, 8)
    assert "has 2 channels, expected 3" in records[3].status.reason


def test_ifc_bad_attributes_are_input_errors(tmp_path, data_dir):
    store = tmp_path / "t.zarr"
    shutil.copytree(data_dir / "scip-ifc" / "test.zarr", store)
    attrs = json.loads((store / ".zattrs").read_text())
    attrs["shape"] = attrs["shape"][:3]
    (store / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(InputError, match="'shape' has 3 entries for 10 events"):
        dataset(store, format="ifc_zarr")


def test_multichannel_tiff_layouts(tmp_path):
    tifffile.imwrite(tmp_path / "cyx.tif", np.ones((3, 10, 12), np.uint16), photometric="minisblack")
    tifffile.imwrite(tmp_path / "rgb.tif", np.ones((10, 12, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(tmp_path / "gray.tif", np.ones((10, 12), np.uint16))
    d = dataset(tmp_path, channels=["r", "g", "b"])
    records = {r.source.image_id: r for r in read_images(d.reader, d.sources)}
    assert records["cyx"].pixels.shape == (3, 10, 12)
    assert records["rgb"].pixels.shape == (3, 10, 12)
    assert not records["gray"].status and "has 1 channels, expected 3" in records["gray"].status.reason


def test_per_channel_tiffs_grouped_by_regex(tmp_path):
    for plate in ("p1", "p2"):
        for i in (1, 2):
            for ch in ("DAPI", "GFP"):
                tifffile.imwrite(tmp_path / f"{plate}_img{i}_{ch}.tif", np.full((6, 7), i, np.uint16))
    (tmp_path / "p1_img1_DAPI.tif").rename(tmp_path / "p1_img1_DAPI.tiff")
    (tmp_path / "p2_img2_GFP.tif").unlink()
    (tmp_path / "notes.tif").write_bytes(b"")
    d = dataset(tmp_path, pattern=r"(?P<plate>p\d)_img(?P<id>\d)_(?P<channel>\w+)\.tiff?",
                use_channels=["GFP", "DAPI"])
    assert d.channels == ("GFP", "DAPI")
    assert [(s.fields["plate"], s.fields["id"], s.image_id) for s in d.sources][:2] == [("p1", "1", "p1_1"), ("p1", "2", "p1_2")]
    assert d.unmatched and d.unmatched[0].endswith("notes.tif")
    records = read_images(d.reader, d.sources)
    assert records[0].pixels.shape == (2, 6, 7)
    missing = [r for r in records if not r.status]
    assert len(missing) == 1 and "no file for channel(s) GFP" in missing[0].status.reason


def test_regex_ids_must_be_unique(tmp_path):
    for name in ("a_1.tif", "b_1.tif"):
        tifffile.imwrite(tmp_path / name, np.ones((4, 4), np.uint16))
    with pytest.raises(InputError, match="image id '1' is given to two images"):
        dataset(tmp_path, pattern=r"\w_(?P<id>\d)\.tif")


def test_pattern_matching_nothing(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.ones((4, 4), np.uint16))
    with pytest.raises(InputError, match="matches none of the 1 TIFF files"):
        dataset(tmp_path, pattern=r"(?P<id>\d+)\.tif")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_stack_reads_only_its_chunks(tmp_path, zarr_format):
    data = np.arange(4 * 2 * 8 * 8, dtype=np.uint16).reshape(4, 2, 8, 8)
    arr = zarr.open_array(tmp_path / "s.zarr", mode="w", shape=data.shape, chunks=(1, 1, 8, 8), dtype="uint16",
                          zarr_format=zarr_format)
    arr[:] = data
    d = dataset(tmp_path / "s.zarr", use_channels=["ch1"])
    assert d.format == "zarr" and len(d.sources) == 4
    # Remove every chunk but image 2's channel 1: reading image 2 must not need them.
    chunk_files = [p for p in (tmp_path / "s.zarr").rglob("*") if p.is_file() and not p.name.startswith((".", "zarr.json"))]
    keep = {"2.1.0.0"} if zarr_format == 2 else {str(tmp_path / "s.zarr" / "c" / "2" / "1" / "0" / "0")}
    for p in chunk_files:
        if p.name not in keep and str(p) not in keep:
            p.unlink()
    (record,) = read_images(d.reader, [d.sources[2]])
    np.testing.assert_array_equal(record.pixels, data[2, 1:2])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_level_and_channel_names(tmp_path, version):
    path = tmp_path / "img.ome.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)
    full = np.random.default_rng(0).integers(0, 1000, (2, 2, 1, 32, 32)).astype(np.uint16)
    group.create_array("0", shape=full.shape, chunks=(1, 1, 1, 16, 16), dtype="uint16")[:] = full
    group.create_array("1", shape=(2, 2, 1, 16, 16), chunks=(1, 1, 1, 16, 16), dtype="uint16")[:] = full[..., ::2, ::2]
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, {"name": "z", "type": "space"},
            {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    meta = {"multiscales": [{"version": version, "axes": axes, "datasets": [{"path": "0"}, {"path": "1"}]}],
            "omero": {"channels": [{"label": "DAPI"}, {"label": "GFP"}]}}
    group.attrs.update(meta if version == "0.4" else {"ome": {"version": version, **meta}})
    d = dataset(path, level=1, use_channels=["GFP"])
    assert d.format == "ome_zarr" and d.channels == ("GFP",) and len(d.sources) == 2
    records = read_images(d.reader, d.sources)
    np.testing.assert_array_equal(records[1].pixels, full[1, 1:2, 0, ::2, ::2])
    with pytest.raises(InputError, match="input.level: 5"):
        dataset(path, level=5)


# --- z stacks: readers keep the z axis as (C, Z, H, W) ---------------------------------------------


def _stack(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)


@pytest.mark.parametrize("axes, kwargs", [
    ("ZCYX", {"imagej": True}), ("ZCYX", {"ome": True}), ("CZYX", {"ome": True}), ("CZYX", {}),
])
def test_tiff_z_stack_reads_as_czyx(tmp_path, axes, kwargs):
    data = _stack((3, 2, 9, 11))  # in the order of ``axes``
    tifffile.imwrite(tmp_path / "s.tif", data, metadata={"axes": axes}, **kwargs)
    expected = data if axes == "CZYX" else data.transpose(1, 0, 2, 3)
    d = dataset(tmp_path)
    assert d.channels == tuple(f"ch{i}" for i in range(expected.shape[0])) and d.z_planes == expected.shape[1]
    (record,) = read_images(d.reader, d.sources)
    assert record.status, record.status.reason
    np.testing.assert_array_equal(record.pixels, expected)


@pytest.mark.parametrize("kwargs", [{"imagej": True}, {"ome": True}, {}])
def test_tiff_zyx_stack_is_one_channel(tmp_path, kwargs):
    data = _stack((4, 9, 11))
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack", metadata={"axes": "ZYX"}, **kwargs)
    d = dataset(tmp_path)
    assert d.channels == ("ch0",) and d.z_planes == 4
    (record,) = read_images(d.reader, d.sources)
    np.testing.assert_array_equal(record.pixels, data[None])


def test_tiff_z_stack_with_one_time_point_and_channel_subset(tmp_path):
    data = _stack((1, 5, 3, 8, 8))  # TZCYX, as ImageJ writes hyperstacks
    tifffile.imwrite(tmp_path / "s.tif", data, imagej=True, metadata={"axes": "TZCYX"})
    d = dataset(tmp_path, channels=["a", "b", "c"], use_channels=["c", "a"])
    (record,) = read_images(d.reader, d.sources)
    np.testing.assert_array_equal(record.pixels, data[0][:, [2, 0]].transpose(1, 0, 2, 3))
    d = dataset(tmp_path, channels=["a", "b"])
    (record,) = read_images(d.reader, d.sources)
    assert not record.status and "has 3 channels, expected 2" in record.status.reason


def test_tiff_time_series_is_not_a_z_stack(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", _stack((2, 3, 2, 8, 8)), imagej=True, metadata={"axes": "TZCYX"})
    d = dataset(tmp_path, channels=["a", "b"])
    (record,) = read_images(d.reader, d.sources)
    assert not record.status and "is a z stack with axes 'TZCYX'" in record.status.reason
    with pytest.raises(InputError, match="is a z stack with axes 'TZCYX'"):
        dataset(tmp_path)


def test_tiff_without_z_is_unchanged(tmp_path):
    cyx, yx = _stack((3, 8, 9)), _stack((8, 9), 1)
    tifffile.imwrite(tmp_path / "a_cyx.tif", cyx, photometric="minisblack")
    tifffile.imwrite(tmp_path / "b_single_z.tif", cyx[None], imagej=True, metadata={"axes": "ZCYX"})
    d = dataset(tmp_path)
    assert d.channels == ("ch0", "ch1", "ch2") and d.z_planes == 1
    for record in read_images(d.reader, d.sources):
        np.testing.assert_array_equal(record.pixels, cyx)
    (tmp_path / "yx").mkdir()
    tifffile.imwrite(tmp_path / "yx" / "yx.tif", yx)
    d = dataset(tmp_path / "yx")
    (record,) = read_images(d.reader, d.sources)
    np.testing.assert_array_equal(record.pixels, yx[None])


def test_per_channel_tiff_z_stacks(tmp_path):
    stacks = {"DAPI": _stack((4, 6, 7), 1), "GFP": _stack((4, 6, 7), 2)}
    for ch, data in stacks.items():
        tifffile.imwrite(tmp_path / f"img1_{ch}.tif", data, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "img2_DAPI.tif", stacks["DAPI"], imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "img2_GFP.tif", stacks["GFP"][0])
    d = dataset(tmp_path, pattern=r"img(?P<id>\d)_(?P<channel>\w+)\.tif", use_channels=["GFP", "DAPI"])
    assert d.z_planes == 4
    one, two = read_images(d.reader, d.sources)
    np.testing.assert_array_equal(one.pixels, np.stack([stacks["GFP"], stacks["DAPI"]]))
    assert not two.status and "different shapes" in two.status.reason


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize("with_t", [False, True])
def test_ome_zarr_z_stack_reads_as_czyx(tmp_path, version, with_t):
    path = tmp_path / "img.ome.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)
    full = _stack((2, 3, 5, 16, 16))  # t, c, z, y, x
    data = full if with_t else full[0]
    names = ["t", "c", "z", "y", "x"] if with_t else ["c", "z", "y", "x"]
    group.create_array("0", shape=data.shape, chunks=(1,) * (data.ndim - 2) + (16, 16), dtype="uint16")[:] = data
    types = {"t": "time", "c": "channel"}
    axes = [{"name": n, "type": types.get(n, "space")} for n in names]
    meta = {"multiscales": [{"version": version, "axes": axes, "datasets": [{"path": "0"}]}]}
    group.attrs.update(meta if version == "0.4" else {"ome": {"version": version, **meta}})
    d = dataset(path, use_channels=["ch2", "ch0"])
    assert d.format == "ome_zarr" and d.z_planes == 5
    records = read_images(d.reader, d.sources)
    assert len(records) == (2 if with_t else 1)
    for t, record in enumerate(records):
        np.testing.assert_array_equal(record.pixels, full[t][[2, 0]] if with_t else data[[2, 0]])


def test_ome_zarr_axes_out_of_order_are_an_input_error(tmp_path):
    group = zarr.open_group(tmp_path / "img.ome.zarr", mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 2, 8, 8), dtype="uint16")
    axes = [{"name": n} for n in ("z", "c", "y", "x")]
    group.attrs.update({"multiscales": [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]})
    with pytest.raises(InputError, match="in that order"):
        dataset(tmp_path / "img.ome.zarr")


def test_plain_zarr_4d_stays_images_of_channels(tmp_path):
    data = _stack((3, 2, 8, 8))
    zarr.open_array(tmp_path / "s.zarr", mode="w", shape=data.shape, dtype="uint16")[:] = data
    d = dataset(tmp_path / "s.zarr")
    assert len(d.sources) == 3 and d.channels == ("ch0", "ch1") and d.z_planes == 1
    np.testing.assert_array_equal(read_images(d.reader, d.sources[1:2])[0].pixels, data[1])
