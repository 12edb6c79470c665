"""The output folder under a hostile or unlucky user (issue 15, cases 1-4 and 12).

- ``--overwrite`` removes only what a scip run recorded writing, never the input or the user's files;
- ``--resume`` trusts a partition only if its part verifies against its summary;
- ``--resume`` refuses a run whose input files changed;
- ``scip.read`` refuses the table of an unfinished run unless ``partial=True``;
- no pickle is read from the output folder.
"""

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

import scip
from scip import cli
from scip.accounting import PartitionSummary, summary_from_json, summary_to_json
from scip.config import ConfigError
from scip.datasets import write_example
from scip.io import atomic
from scip.io.manifest import IncompleteRunError, record_files

PATTERN = r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff"
N_FIELDS = 4


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    return write_example(tmp_path_factory.mktemp("data"), n_events=2, n_fields=N_FIELDS, seed=3)["fields"]


@pytest.fixture
def own_fields(fields, tmp_path):
    """A copy of the fields this test may change."""
    return Path(shutil.copytree(fields, tmp_path / "images"))


def config(folder, out, **output) -> dict:
    return {"input": {"path": str(folder), "pattern": PATTERN, "channels": ["DNA", "cyto", "marker"],
                      "images_per_partition": 1},
            "segment": {"method": "watershed", "channel": "cyto"},
            "output": {"path": str(out), **output},
            "cluster": {"scheduler": "synchronous"}}


def run(folder, out, resume=False, **output):
    return scip.run(config(folder, out, **output), progress=False, resume=resume)


def table(out) -> pd.DataFrame:
    return scip.read(out).sort_values(["meta_image_id", "meta_label"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(fields, tmp_path_factory):
    """An uninterrupted run's table."""
    out = tmp_path_factory.mktemp("reference") / "out"
    run(fields, out)
    return table(out)


# ---------------------------------------------------------------------------------------------- case 1: --overwrite


def test_an_input_folder_named_like_our_output_is_refused_and_survives(fields, tmp_path):
    out = tmp_path / "out"
    images = Path(shutil.copytree(fields, out / "classification"))
    before = sorted(p.name for p in images.iterdir())
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"input.path: .*classification.* lies in the output folder"):
            run(images, out, overwrite=overwrite)
    assert sorted(p.name for p in images.iterdir()) == before
    # The input folder itself as output: refused too.
    with pytest.raises(ConfigError, match="is also input.path"):
        run(images, images, overwrite=True)
    assert sorted(p.name for p in images.iterdir()) == before


def test_an_input_inside_the_output_under_another_name_is_fine(fields, tmp_path):
    """Output above the input: our names do not collide with 'images', so the run goes ahead."""
    images = Path(shutil.copytree(fields, tmp_path / "out" / "images"))
    run(images, tmp_path / "out")
    run(images, tmp_path / "out", overwrite=True)
    assert len(list(images.iterdir())) == 3 * N_FIELDS


def test_overwrite_keeps_the_users_files_and_removes_the_old_parts(fields, tmp_path, reference):
    out = tmp_path / "out"
    run(fields, out)
    (out / "cells.csv").write_text("mine\n")
    (out / "notes.txt").write_text("mine\n")
    (out / "cells" / "README").write_text("mine\n")
    # Fewer partitions this time: the old parts 1-3 must go, or they would be read as part of the new table.
    cfg = config(fields, out, overwrite=True)
    cfg["input"]["images_per_partition"] = N_FIELDS
    scip.run(cfg, progress=False)
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["README", "part-00000.parquet"]
    assert sorted(p.name for p in (out / "progress").iterdir()) == ["part-00000.json", "part-00000.samples.npz"]
    assert (out / "cells.csv").read_text() == (out / "notes.txt").read_text() == "mine\n"
    keys = ["meta_image_id", "meta_label"]
    pd.testing.assert_frame_equal(table(out)[keys], reference[keys])


def test_overwrite_refuses_to_replace_an_unrecorded_file(fields, tmp_path):
    out = tmp_path / "out"
    run(fields, out)
    (out / "cells.csv").write_text("mine\n")
    with pytest.raises(ConfigError, match=r"holds cells.csv, which no scip run recorded"):
        run(fields, out, overwrite=True, formats=["csv"])
    assert (out / "cells.csv").read_text() == "mine\n"


def test_overwrite_without_a_manifest_removes_nothing(fields, tmp_path):
    out = tmp_path / "out"
    (out / "cells").mkdir(parents=True)
    (out / "cells" / "part-00000.parquet").write_bytes(b"someone's")
    (out / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"holds run.json, cells/part-00000.parquet, which no scip run recorded "
                                          r"writing \(there is no manifest.json\)"):
        run(fields, out, overwrite=True)
    assert (out / "run.json").read_text() == "{}"
    assert (out / "cells" / "part-00000.parquet").read_bytes() == b"someone's"


def test_a_crafted_manifest_cannot_remove_files_elsewhere(fields, tmp_path):
    out = tmp_path / "out"
    run(fields, out)
    victim, inside = tmp_path / "victim.txt", out / "notes.txt"
    victim.write_text("keep")
    inside.write_text("keep")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"] += ["../victim.txt", str(victim), "notes.txt", "cells/../../victim.txt"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    run(fields, out, overwrite=True)
    assert victim.read_text() == inside.read_text() == "keep"


def test_reusing_the_output_folders_own_correction_is_refused(fields, tmp_path):
    """Overwrite would remove the illumination.npz the run is told to reuse (and not write it again)."""
    out = tmp_path / "out"
    cfg = config(fields, out)
    cfg["illumination"] = {"size": 20}
    scip.run(cfg, progress=False)
    saved = (out / "illumination.npz").read_bytes()
    cfg["illumination"] = {"size": 20, "reuse": str(out / "illumination.npz")}
    cfg["output"]["overwrite"] = True
    with pytest.raises(ConfigError, match=r"illumination.reuse: .*illumination.npz lies in the output folder"):
        scip.run(cfg, progress=False)
    assert (out / "illumination.npz").read_bytes() == saved


def test_ground_truth_under_a_name_we_write_is_refused_and_survives(fields, tmp_path):
    out = tmp_path / "out"
    labels = Path(shutil.copytree(fields.parent / "fields_labels", out / "progress"))
    before = sorted(p.name for p in labels.iterdir())
    cfg = config(fields, out, overwrite=True)
    cfg["evaluate"] = {"labels": str(labels / "field{id}.tiff")}
    with pytest.raises(ConfigError, match=r"evaluate.labels: .*field0.tiff lies in the output folder"):
        scip.run(cfg, progress=False)
    assert sorted(p.name for p in labels.iterdir()) == before


def test_classification_files_are_recorded_and_removed_but_not_the_users(fields, tmp_path):
    out = tmp_path / "out"
    run(fields, out)
    from scip.classify import _record_in_run

    names = ["classification.json", "model.json"]
    _record_in_run(out / "classification", [f"classification/{n}" for n in names])
    (out / "classification").mkdir()
    for n in [*names, "mine.txt"]:
        (out / "classification" / n).write_text("{}")
    assert {"classification/classification.json", "classification/model.json"} <= \
        set(json.loads((out / "manifest.json").read_text())["files"])
    run(fields, out, overwrite=True)
    assert sorted(p.name for p in (out / "classification").iterdir()) == ["mine.txt"]


def test_cli_overwrite_refusal_exits_2(fields, tmp_path, capsys):
    out = tmp_path / "out"
    images = Path(shutil.copytree(fields, out / "cells"))
    cfg = tmp_path / "c.yml"
    cfg.write_text(json.dumps(config(images, out)))
    assert cli.main(["run", str(cfg), "--no-progress", "--overwrite"]) == 2
    assert "lies in the output folder" in capsys.readouterr().err
    assert len(list(images.iterdir())) == 3 * N_FIELDS


# ---------------------------------------------------------------------------------------------- case 2: verified parts


@pytest.mark.parametrize("damage", ["empty", "truncated", "corrupted"])
def test_resume_recomputes_a_part_that_does_not_verify(fields, tmp_path, reference, damage, caplog):
    out = tmp_path / "out"
    run(fields, out)
    part = out / "cells" / "part-00002.parquet"
    data = part.read_bytes()
    if damage == "empty":
        part.write_bytes(b"")
    elif damage == "truncated":
        part.write_bytes(data[: len(data) // 2])
    else:  # same size, one byte flipped in the middle: only the checksum sees it
        middle = len(data) // 2
        part.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("INFO", logger="scip"):
        result = run(fields, out, resume=True)
    assert result.summary["partitions"]["computed"] == 1
    assert "part-00002" in caplog.text and "computed again" in caplog.text
    pd.testing.assert_frame_equal(table(out), reference)


# ---------------------------------------------------------------------------------------------- case 3: fingerprint


def test_resume_refuses_changed_input_files(own_fields, tmp_path):
    out = tmp_path / "out"
    run(own_fields, out)
    image = own_fields / "field1_cyto.tiff"
    pixels = tifffile.imread(image)
    tifffile.imwrite(image, pixels[:, ::-1][:, :-1].copy())  # other content, other size
    with pytest.raises(ConfigError, match=r"1 input file\(s\) changed .*field1_cyto.tiff \(size"):
        run(own_fields, out, resume=True)
    cfg = tmp_path / "c.yml"
    cfg.write_text(json.dumps(config(own_fields, out)))
    assert cli.main(["run", str(cfg), "--no-progress", "--resume"]) == 2


def test_resume_names_at_most_ten_changed_files(own_fields, tmp_path):
    out = tmp_path / "out"
    run(own_fields, out)
    for f in own_fields.iterdir():
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    with pytest.raises(ConfigError) as e:
        run(own_fields, out, resume=True)
    assert "12 input file(s) changed" in str(e.value) and "and 2 more" in str(e.value)
    assert len(re.findall(r"\(modified\)", str(e.value))) == 10


def test_content_verification_catches_a_change_that_keeps_size_and_mtime(own_fields, tmp_path):
    by_stat, by_content = tmp_path / "stat", tmp_path / "content"
    run(own_fields, by_stat)
    run(own_fields, by_content, verify="content")
    image = own_fields / "field2_DNA.tiff"
    st = image.stat()
    data = bytearray(image.read_bytes())
    data[-1] ^= 0xFF
    image.write_bytes(bytes(data))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image.stat().st_size == st.st_size and image.stat().st_mtime_ns == st.st_mtime_ns
    # By size and mtime alone the change is invisible (the documented limit of the default)...
    assert run(own_fields, by_stat, resume=True).summary["partitions"]["computed"] == 0
    # ...the content hash sees it.
    with pytest.raises(ConfigError, match=r"field2_DNA.tiff \(content differs\)"):
        run(own_fields, by_content, resume=True, verify="content")


def test_resume_refuses_another_scip_version(fields, tmp_path):
    out = tmp_path / "out"
    run(fields, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["fingerprint"]["scip"] = "0.0.1"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"scip version \(0.0.1 then"):
        run(fields, out, resume=True)


# ---------------------------------------------------------------------------------------------- case 4: scip.read


def _interrupt(out: Path, index: int) -> None:
    """What a killed run leaves: a partition missing, the manifest not complete."""
    (out / "cells" / f"part-{index:05d}.parquet").unlink()
    (out / "progress" / f"part-{index:05d}.json").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_read_refuses_an_incomplete_run(fields, tmp_path, reference):
    out = tmp_path / "out"
    result = run(fields, out)
    _interrupt(out, 1)
    for reader in (lambda **k: scip.read(out, **k), lambda **k: scip.read(out / "cells", **k), result.read,
                   lambda **k: scip.read(out, lazy=True, **k).compute()):
        with pytest.raises(IncompleteRunError, match=rf"1 of {N_FIELDS} partitions are missing.*--resume"):
            reader()
        with pytest.warns(UserWarning, match="reading the 3 partitions that verify"):
            partial = reader(partial=True)
        expected = reference[reference["meta_image_id"] != "1"]
        assert len(partial) == len(expected) < len(reference)
    assert issubclass(IncompleteRunError, ValueError)


def test_read_refuses_a_finished_run_whose_part_was_truncated(fields, tmp_path):
    out = tmp_path / "out"
    run(fields, out)
    part = out / "cells" / "part-00003.parquet"
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(IncompleteRunError,
                       match=r"finished, but 1 of 4 partitions .*part-00003 \(part is 100 bytes, the manifest recorded"):
        scip.read(out)


def test_a_plain_parquet_folder_reads_as_before(fields, tmp_path, reference):
    out = tmp_path / "out"
    run(fields, out)
    plain = Path(shutil.copytree(out / "cells", tmp_path / "plain"))
    frame = scip.read(plain).sort_values(["meta_image_id", "meta_label"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, reference)


# ---------------------------------------------------------------------------------------------- case 12: no pickle


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_crafted_pickle_in_the_output_folder_is_never_loaded(fields, tmp_path, reference):
    import pickle

    out = tmp_path / "out"
    run(fields, out)
    marker = tmp_path / "pwned"
    (out / "progress" / "part-00000.json").unlink()
    (out / "progress" / "part-00000.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    result = run(fields, out, resume=True)
    assert not marker.exists()
    assert result.summary["partitions"]["computed"] == 1
    pd.testing.assert_frame_equal(table(out), reference)


@pytest.mark.parametrize("field, value", [("images", "many"), ("timings", {"load": "slow"}), ("skipped", {"a": 1}),
                                          ("cells_found", True), ("unknown", 1), (None, [1, 2])])
def test_a_summary_of_the_wrong_shape_is_not_done(fields, tmp_path, reference, field, value):
    out = tmp_path / "out"
    run(fields, out)
    path = out / "progress" / "part-00001.json"
    document = json.loads(path.read_text())
    if field is None:
        document["summary"] = value
    else:
        document["summary"][field] = value
    path.write_text(json.dumps(document))
    result = run(fields, out, resume=True)
    assert result.summary["partitions"]["computed"] == 1
    pd.testing.assert_frame_equal(table(out), reference)


def test_summary_json_round_trip():
    s = PartitionSummary(images=2, images_with_cells=1, cells_found=3, cells_exported=2,
                         skipped=[{"kind": "cell", "label": np.int64(4), "value": np.float64(0.5),
                                   "threshold": float("nan")}],
                         timings=Counter({"load": 0.25}), evaluation_errors=["no truth"],
                         samples=[{"crop": np.zeros((1, 2, 2))}])
    back = summary_from_json(json.loads(json.dumps(summary_to_json(s))))
    assert back.samples == [] and isinstance(back.timings, Counter) and back.timings == s.timings
    assert back.skipped[0]["label"] == 4 and np.isnan(back.skipped[0]["threshold"])
    assert (back.images, back.cells_exported, back.evaluation_errors) == (2, 2, ["no truth"])


def test_no_pickle_is_loaded_from_disk_anywhere_in_scip():
    source = Path(scip.__file__).parent
    offenders = [f"{p.relative_to(source)}:{i}" for p in source.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"pickle\.loads?\(|allow_pickle\s*=\s*True|pd\.read_pickle|joblib\.load", line)
                 or ("torch.load(" in line and "weights_only=True" not in line)]
    assert offenders == []


# ---------------------------------------------------------------------------------------------- durable writes


def test_atomic_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: events.append(("replace", None)) or real_replace(a, b))
    with atomic.atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("{}")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]
    assert (tmp_path / "x.json").read_text() == "{}"


def test_record_files_ignores_folders_without_a_manifest(tmp_path):
    assert record_files(tmp_path, ["classification/model.json"]) is None
    assert not (tmp_path / "manifest.json").exists()
