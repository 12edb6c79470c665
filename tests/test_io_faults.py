"""Readers under faults (issue 15): broken OME-Zarr metadata.

Each is a problem of the data: one image is skipped with a reason that
names the file (or chunk) and the run finishes with exit code 0; broken
metadata of the input itself is a configuration problem (exit code 2).
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

import scip
from conftest import make_blobs
from scip import cli
from scip.config import ConfigError, load_config
from scip.io import InputError, open_dataset, read_images
from scip.slide import open_slide


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
