"""Readers under faults (issue 15): missing zarr chunks, images too large to decode, broken OME-Zarr metadata.

Each is a problem of the data: one image is skipped with a reason that
names the file (or chunk) and the run finishes with exit code 0; broken
metadata of the input itself is a configuration problem (exit code 2).
"""

import csv
import json
import shutil
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import scip
from conftest import make_blobs
from scip import cli
from scip.engine import cluster
from scip.config import ConfigError, load_config
from scip.io import InputError, open_dataset, read_images
from scip.io.limits import ImageBudget, check_size, format_bytes, image_budget
from scip.slide import open_slide

GiB = 2**30


def _run(tmp_path, input_cfg: dict, **extra) -> tuple[dict, list[dict]]:
    config = {"input": input_cfg, "segment": {"method": "watershed", "channel": 0},
              "features": {"families": ["shape"]}, "output": {"path": str(tmp_path / "out")},
              "cluster": {"scheduler": "synchronous"}, **extra}
    path = tmp_path / "config.yml"
    path.write_text(json.dumps(config))
    # Through the command line, for its exit code: skips are data problems, the run succeeds.
    assert cli.main(["run", str(path), "--no-progress"]) == 0
    with open(tmp_path / "out" / "skipped.csv") as f:
        skipped = list(csv.DictReader(f))
    table = scip.read(tmp_path / "out")
    return {"table": table, "run": json.loads((tmp_path / "out" / "run.json").read_text())}, skipped


def _image_skips(skipped: list[dict]) -> dict[str, str]:
    return {row["image_id"]: row["reason"] for row in skipped if row["kind"] == "image"}


def _blobs_stack(n: int = 3) -> np.ndarray:
    return np.stack([make_blobs(seed=i) for i in range(n)])  # (N, 2, 96, 96)


# --- case 5: a chunk missing from a Zarr / OME-Zarr store is a skipped image, not zeros -------------


def _chunk_file(store: Path, key: str) -> Path:
    path = store / key
    assert path.is_file(), sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_missing_chunk_of_a_plain_zarr_skips_that_image(tmp_path, zarr_format):
    data = _blobs_stack()
    store = tmp_path / "stack.zarr"
    zarr.open_array(store, mode="w", shape=data.shape, chunks=(1, 1, 48, 48), dtype="uint16",
                    zarr_format=zarr_format)[:] = data
    key = "1.1.0.1" if zarr_format == 2 else "c/1/1/0/1"
    _chunk_file(store, key).unlink()
    result, skipped = _run(tmp_path, {"path": str(store)})
    skips = _image_skips(skipped)
    assert skips == {"1": skips["1"]}
    assert skips["1"].startswith(f"chunk missing: {store}/{key}")
    assert sorted(result["table"]["meta_image_id"].unique()) == ["0", "2"]
    assert result["run"]["counts"]["images"]["skipped_by_step"] == {"load": 1}


def _ome_zarr(path: Path, data: np.ndarray, version: str, levels: int = 1) -> zarr.Group:
    """An OME-Zarr image ``(t, c, z, y, x)`` with ``levels`` resolution levels."""
    group = zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)
    for k in range(levels):
        level = data[..., :: 2**k, :: 2**k]
        group.create_array(str(k), shape=level.shape, chunks=(1, 1, 1, 48, 48), dtype=level.dtype)[:] = level
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}, {"name": "z", "type": "space"},
            {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    meta = {"multiscales": [{"version": version, "axes": axes,
                             "datasets": [{"path": str(k)} for k in range(levels)]}],
            "omero": {"channels": [{"label": "DNA"}, {"label": "GFP"}]}}
    group.attrs.update(meta if version == "0.4" else {"ome": {"version": version, **meta}})
    return group


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_missing_chunk_of_an_ome_zarr_level_skips_that_time_point(tmp_path, version):
    store = tmp_path / "img.ome.zarr"
    _ome_zarr(store, _blobs_stack()[:, :, None], version)
    key = "0/2.0.0.1.0" if version == "0.4" else "0/c/2/0/0/1/0"
    _chunk_file(store, key).unlink()
    result, skipped = _run(tmp_path, {"path": str(store)})
    skips = _image_skips(skipped)
    assert list(skips) == ["2"] and skips["2"].startswith(f"chunk missing: {store}/{key}")
    assert sorted(result["table"]["meta_image_id"].unique()) == ["0", "1"]


def test_missing_chunk_of_an_unread_channel_or_level_does_not_matter(tmp_path):
    store = tmp_path / "img.ome.zarr"
    data = _blobs_stack()[:, :, None]
    _ome_zarr(store, data, "0.5", levels=2)
    _chunk_file(store, "0/c/0/1/0/0/0").unlink()  # GFP of t=0 at full resolution
    _chunk_file(store, "1/c/1/0/0/0/0").unlink()  # DNA of t=1 at level 1
    d = open_dataset(load_config({"input": {"path": str(store), "use_channels": ["DNA"]}}).input)
    records = read_images(d.reader, d.sources)
    assert all(r.status for r in records), [r.status.reason for r in records]
    np.testing.assert_array_equal(records[0].pixels, data[0, :1, 0])


def test_missing_chunks_fill_reads_the_fill_value_when_asked(tmp_path):
    data = _blobs_stack(2)
    store = tmp_path / "stack.zarr"
    zarr.open_array(store, mode="w", shape=data.shape, chunks=(1, 1, 48, 48), dtype="uint16", zarr_format=3)[:] = data
    _chunk_file(store, "c/0/1/1/1").unlink()
    d = open_dataset(load_config({"input": {"path": str(store)}}).input)
    (record,) = read_images(d.reader, d.sources[:1])
    assert not record.status and "input.missing_chunks: fill" in record.status.reason
    (record,) = read_images(replace(d.reader, missing_chunks="fill"), d.sources[:1])
    assert record.status and (record.pixels[1, 48:, 48:] == 0).all() and record.pixels[1, :48].any()
    result, skipped = _run(tmp_path, {"path": str(store), "missing_chunks": "fill"})
    assert _image_skips(skipped) == {} and sorted(result["table"]["meta_image_id"].unique()) == ["0", "1"]


def test_missing_shard_of_a_sharded_zarr_is_a_skip(tmp_path):
    data = _blobs_stack(2)
    store = tmp_path / "sharded.zarr"
    zarr.create_array(store, shape=data.shape, chunks=(1, 1, 24, 24), shards=(1, 1, 48, 48), dtype="uint16")[:] = data
    _chunk_file(store, "c/1/0/0/0").unlink()
    d = open_dataset(load_config({"input": {"path": str(store)}}).input)
    good, bad = read_images(d.reader, d.sources)
    np.testing.assert_array_equal(good.pixels, data[0])
    assert not bad.status and bad.status.reason.startswith(f"chunk missing: {store}/c/1/0/0/0")
    assert "and 1 more missing chunk" not in bad.status.reason


# --- case 6: the declared size is checked before decoding ---------------------------------------------


def _compressed_tiff(path: Path, shape: tuple[int, ...], tile: int = 1024) -> None:
    """A tiled, zlib-compressed TIFF of zeros: a few hundred KiB on disk, ``shape`` uint16 decoded.

    The tiles are encoded once and written as they are, so making it costs no decoding or compressing.
    """
    encoded = zlib.compress(np.zeros((tile, tile), np.uint16).tobytes(), 9)
    n = int(np.prod(shape[:-2])) * -(-shape[-2] // tile) * -(-shape[-1] // tile)
    tifffile.imwrite(path, (encoded for _ in range(n)), shape=shape, dtype="uint16", tile=(tile, tile),
                     compression="zlib", photometric="minisblack")


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """The files whose pixels tifffile decodes, in this process."""
    seen: list[str] = []
    original_series, original_page = tifffile.TiffPageSeries.asarray, tifffile.TiffPage.asarray

    def series_asarray(self, *args, **kwargs):
        seen.append(str(self.parent.filehandle.path))
        return original_series(self, *args, **kwargs)

    def page_asarray(self, *args, **kwargs):
        seen.append(str(self.parent.filehandle.path))
        return original_page(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", series_asarray)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", page_asarray)
    return seen


def test_oversized_tiff_is_skipped_before_it_is_decoded(tmp_path, blobs_tiff, decoded):
    big = blobs_tiff / "huge.tif"
    _compressed_tiff(big, (2, 8000, 8000))
    assert big.stat().st_size < 2**20
    # tiles.mode: never, else an image over the budget is read in tiles (tests/test_tiled_run.py).
    result, skipped = _run(tmp_path, {"path": str(blobs_tiff), "max_image_bytes": "50MiB"}, tiles={"mode": "never"})
    reason = _image_skips(skipped)["huge"]
    assert reason == (f"{big} decodes to 244 MiB (2×8000×8000 uint16); the budget is 50 MiB per image: "
                      "input.max_image_bytes = 50 MiB (input.max_image_bytes sets it; 0: no limit)")
    assert str(big) not in decoded and str(blobs_tiff / "good.tif") in decoded
    assert list(result["table"]["meta_image_id"].unique()) == ["good"]


def test_budget_is_a_quarter_of_the_smallest_worker(tmp_path, blobs_tiff):
    """``auto``: the run asks the live cluster for its workers' memory limit; no config key needed."""
    big = blobs_tiff / "huge.tif"
    _compressed_tiff(big, (2, 8000, 8000))
    # 900 MiB, not less: a worker compiling the feature kernels on an empty numba cache reaches ~520 MiB, and
    # distributed pauses a worker past 80 % of its limit (at 600 MiB the run then waited for ever).
    _, skipped = _run(tmp_path, {"path": str(blobs_tiff)},
                      **{"cluster": {"workers": 1, "memory_limit": "900MiB", "dashboard_address": ":0"},
                         "tiles": {"mode": "never"}})
    reason = _image_skips(skipped)["huge"]
    assert reason.startswith(f"{big} decodes to 244 MiB (2×8000×8000 uint16); the budget is 225 MiB per image: "
                             "worker memory 900 MiB / 4")


def test_image_budget_and_worker_memory():
    assert image_budget("auto", 2 * GiB) == ImageBudget(GiB // 2, "worker memory 2 GiB / 4")
    assert image_budget("auto", None) is None and image_budget(0, 2 * GiB) is None
    assert image_budget(1000, None) == ImageBudget(1000, "input.max_image_bytes = 1000 B")
    assert format_bytes(int(2.2 * GiB)) == "2.2 GiB" and format_bytes(3 * 2**20) == "3 MiB"
    with pytest.raises(ValueError, match=r"x.tif decodes to 2.2 GiB \(3×20000×20000 uint16\); the budget is 512 MiB"):
        check_size("x.tif", (3, 20000, 20000), "uint16", image_budget("auto", 2 * GiB))

    class Client:
        def __init__(self, limits):
            self.limits = limits

        def scheduler_info(self, n_workers=-1):
            return {"workers": {f"tcp://w{i}": {"memory_limit": m} for i, m in enumerate(self.limits)}}

    assert cluster.worker_memory(cluster.Session(Client([4 * GiB, 2 * GiB, 0]))) == (2 * GiB, "worker memory")
    assert cluster.worker_memory(cluster.Session(Client([0]))) == (None, "")
    # SLURM jobs still in the queue: the job memory per worker process.
    cfg = load_config({"input": {"path": "."}, "cluster": {"slurm": {"memory": "8GiB", "cores": 4, "processes": 2,
                                                                      "gpu": {"memory": "3GiB"}}}}).cluster
    assert cluster.worker_memory(cluster.Session(Client([])), cfg) == (3 * GiB, "worker memory")
    memory, where = cluster.worker_memory(cluster.Session(None))
    assert memory > 0 and where == "this machine's memory"


def test_declared_size_of_zarr_and_per_channel_tiffs(tmp_path, decoded):
    # Metadata only: no chunk of this array was ever written, and none is read.
    store = tmp_path / "huge.zarr"
    zarr.open_array(store, mode="w", shape=(3, 20000, 20000), chunks=(1, 1000, 1000), dtype="uint16")
    d = open_dataset(load_config({"input": {"path": str(store), "use_channels": ["ch0", "ch2"]}}).input)
    reader = replace(d.reader, budget=ImageBudget(GiB, "test"))
    (record,) = read_images(reader, d.sources)
    assert record.status.reason.startswith(f"{store} decodes to 1.5 GiB (2×20000×20000 uint16); the budget is 1 GiB")
    for channel in ("DNA", "GFP"):
        _compressed_tiff(tmp_path / f"a_{channel}.tif", (6000, 6000))
    d = open_dataset(load_config({"input": {"path": str(tmp_path), "pattern": r"a_(?P<channel>\w+)\.tif"}}).input)
    reader = replace(d.reader, budget=ImageBudget(100 * 2**20, "test"))
    (record,) = read_images(reader, d.sources)
    assert record.status.reason.startswith(f"{tmp_path / 'a_DNA.tif'} and 1 more channel file(s) decodes to 137 MiB "
                                           "(2×6000×6000 uint16); the budget is 100 MiB per image: test")
    assert decoded == []


# --- case 8: broken OME-Zarr metadata names the file and the key --------------------------------------


BROKEN = [
    # (change to the 0.4 metadata, config key, text of the message)
    (lambda m: m.update(multiscales={"datasets": []}), "input.path", "'multiscales' must be a non-empty list"),
    (lambda m: m.update(multiscales=[]), "input.path", "'multiscales' must be a non-empty list"),
    (lambda m: m.update(multiscales=["0"]), "input.path", "'multiscales[0]' must be an object"),
    (lambda m: m["multiscales"][0].pop("datasets"), "input.path", "'multiscales[0].datasets' is missing"),
    (lambda m: m["multiscales"][0].update(datasets={"path": "0"}), "input.path",
     "'multiscales[0].datasets' must be a non-empty list"),
    (lambda m: m["multiscales"][0]["datasets"][0].pop("path"), "input.path",
     "'multiscales[0].datasets[0]' must be an object with a 'path'"),
    (lambda m: m["multiscales"][0]["datasets"][0].update(path=7), "input.path",
     "'multiscales[0].datasets[0].path' must be a non-empty string, got 7"),
    (lambda m: m["multiscales"][0]["datasets"][0].update(path="7"), "input.path",
     "'multiscales[0].datasets[0].path' is '7', which is not an array of"),
    (lambda m: m["multiscales"][0].update(axes="tczyx"), "input.path", "'multiscales[0].axes' must be a list"),
    (lambda m: m["multiscales"][0]["axes"][1].pop("name"), "input.path",
     "'multiscales[0].axes[1]' must be a name or an object with a 'name'"),
    (lambda m: m["multiscales"][0]["axes"].pop(0), "input.path", "'multiscales[0].axes' names 4 axes"),
    (lambda m: m.update(omero=["DNA", "GFP"]), "input.path", "'omero' must be an object"),
    (lambda m: m["omero"].update(channels=["DNA", "GFP"]), "input.path", "'omero.channels[0]' must be an object"),
]


@pytest.mark.parametrize("change, key, message", BROKEN)
def test_broken_ome_zarr_metadata_is_a_config_error_naming_file_and_key(tmp_path, change, key, message):
    store = tmp_path / "img.ome.zarr"
    group = _ome_zarr(store, _blobs_stack(1)[:, :, None], "0.4")
    meta = dict(group.attrs)
    change(meta)
    group.attrs.clear()
    group.attrs.update(meta)
    cfg = load_config({"input": {"path": str(store), "format": "ome_zarr"}})
    with pytest.raises(ConfigError) as e:
        scip.prepare(cfg)
    text = str(e.value)
    assert text.startswith(f"{key}: ") and str(store / ".zattrs") in text and message in text, text


def test_broken_ome_zarr_exits_2_at_check_and_run(tmp_path, capsys):
    store = tmp_path / "img.ome.zarr"
    group = _ome_zarr(store, _blobs_stack(1)[:, :, None], "0.5")
    meta = dict(group.attrs)
    meta["ome"]["multiscales"][0]["datasets"][0]["path"] = "7"  # was: KeyError: '7', exit code 1
    group.attrs.update(meta)
    config = tmp_path / "c.yml"
    config.write_text(json.dumps({"input": {"path": str(store)}, "output": {"path": str(tmp_path / "out")}}))
    for command in ("check", "run"):
        assert cli.main([command, str(config)] + (["--no-progress"] if command == "run" else [])) == 2
        err = capsys.readouterr().err
        assert f"{store / 'zarr.json'}: OME-Zarr metadata 'ome.multiscales[0].datasets[0].path' is '7'" in err, err
    assert not (tmp_path / "out" / "run.json").exists()


def test_level_out_of_range_names_input_level(tmp_path):
    store = tmp_path / "img.ome.zarr"
    _ome_zarr(store, _blobs_stack(1)[:, :, None], "0.4", levels=2)
    with pytest.raises(ConfigError, match=r"input.level: 2 is not a level of .*; it has levels 0..1"):
        scip.prepare({"input": {"path": str(store), "level": 2}})


def test_omero_labels_are_not_needed_when_channels_are_named(tmp_path):
    store = tmp_path / "img.ome.zarr"
    group = _ome_zarr(store, _blobs_stack(1)[:, :, None], "0.4")
    group.attrs.update({"omero": ["DNA", "GFP"]})
    d = open_dataset(load_config({"input": {"path": str(store), "channels": ["a", "b"]}}).input)
    assert d.channels == ("a", "b")


def test_array_gone_at_read_time_is_a_skip_naming_it(tmp_path):
    """Metadata read at prepare; if the level's array is gone when an image is read, that image is skipped."""
    store = tmp_path / "img.ome.zarr"
    _ome_zarr(store, _blobs_stack(2)[:, :, None], "0.4")
    d = open_dataset(load_config({"input": {"path": str(store)}}).input)
    shutil.rmtree(store / "0")
    records = read_images(d.reader, d.sources)
    assert [r.status.reason for r in records] == [f"{store} has no array '0'"] * 2


def test_slide_input_with_broken_metadata_names_file_and_key(tmp_path):
    store = tmp_path / "img.ome.zarr"
    group = _ome_zarr(store, _blobs_stack(1)[:, :, None], "0.4")
    meta = dict(group.attrs)
    meta["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [{"type": "scale", "scale": [1, 1]}]
    group.attrs.update(meta)
    with pytest.raises(InputError, match=r"datasets\[0\].coordinateTransformations\[0\].scale' must be 5 numbers"):
        open_slide(store)
    meta["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [{"type": "scale", "scale": [1.0] * 5}]
    meta["multiscales"][0]["datasets"][0]["path"] = "7"
    group.attrs.update(meta)
    with pytest.raises(InputError, match=r"'multiscales\[0\].datasets\[0\].path' is '7'"):
        open_slide(store)
