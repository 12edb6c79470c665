"""`scip run --resume`: an interrupted run finishes with the table an uninterrupted run gives."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

import scip
from scip.config import ConfigError
from scip.datasets import write_example

FIELDS_PATTERN = r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff"
N_FIELDS = 24


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    return write_example(tmp_path_factory.mktemp("data"), n_events=4, n_fields=N_FIELDS, seed=7)["fields"]


def config(folder, out, **extra) -> dict:
    return {
        "input": {"path": str(folder), "pattern": FIELDS_PATTERN, "channels": ["DNA", "cyto", "marker"],
                  "images_per_partition": 1},
        "segment": {"method": "watershed", "channel": "cyto"},
        "filters": [{"measure": "signal", "channel": "cyto", "min": "otsu"}],
        "normalize": {"lower": 0.01, "upper": 0.99},
        "output": {"path": str(out)},
        "cluster": {"scheduler": "synchronous"},
        **extra,
    }


def table(out) -> pd.DataFrame:
    return pd.read_parquet(out / "cells").sort_values(["meta_image_id", "meta_label"]).reset_index(drop=True)


def scip_run(cfg_path, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scip", "run", str(cfg_path), "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kw)


def test_killed_run_resumes_to_the_same_table(fields, tmp_path):
    """Acceptance 3: kill the whole run (SIGKILL) after some partitions, resume, compare with an uninterrupted run."""
    reference = scip.run(config(fields, tmp_path / "reference"), progress=False)
    out = tmp_path / "interrupted"
    cfg_path = tmp_path / "run.yml"
    cfg_path.write_text(yaml.safe_dump(config(fields, out)))

    proc = scip_run(cfg_path)
    deadline = time.time() + 180
    written: list = []
    while time.time() < deadline and proc.poll() is None:
        written = sorted((out / "progress").glob("part-*.json"))
        if len(written) >= 3:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["reductions"] is not None
    done_before = len(list((out / "progress").glob("part-*.json")))
    assert 3 <= done_before < N_FIELDS
    # The table of the killed run is refused, or read partially when asked for.
    with pytest.raises(scip.IncompleteRunError, match=rf"of {N_FIELDS} partitions are missing.*--resume"):
        scip.read(out)
    with pytest.warns(UserWarning, match="partitions that verify"):
        partial = scip.read(out, partial=True)
    assert 0 < len(partial) < len(reference.read())

    resumed = scip_run(cfg_path, "--resume")
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, output
    assert f"resuming: {done_before} of {N_FIELDS} partitions are complete" in output
    summary = json.loads((out / "run.json").read_text())
    assert summary["partitions"] == {"total": N_FIELDS, "computed": N_FIELDS - done_before, "reused": done_before,
                                     "resumed": True}
    pd.testing.assert_frame_equal(table(reference.output), table(out))
    assert summary["counts"] == reference.summary["counts"]
    assert summary["reductions"]["filters"][0]["min_threshold"] == \
        reference.summary["reductions"]["filters"][0]["min_threshold"]
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped.equals(pd.read_csv(reference.output / "skipped.csv"))
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_a_stale_part_without_summary_is_recomputed(fields, tmp_path):
    """A part whose summary is missing (killed between the two writes) counts as not done."""
    out = tmp_path / "out"
    reference = scip.run(config(fields, out), progress=False)
    expected = table(out)
    (out / "progress" / "part-00002.json").unlink()
    (out / "cells" / "part-00005.parquet").unlink()
    result = scip.run(config(fields, out), progress=False, resume=True)
    assert result.summary["partitions"]["computed"] == 2
    pd.testing.assert_frame_equal(expected, table(out))
    assert result.summary["counts"] == reference.summary["counts"]


def test_resume_refuses_a_different_run(fields, tmp_path):
    out = tmp_path / "out"
    # Results without a manifest (not a scip run's, or damaged): refuse rather than guess.
    out.mkdir()
    (out / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match="manifest.json does not exist"):
        scip.run(config(fields, out), progress=False, resume=True)
    (out / "run.json").unlink()
    # An empty folder: the first attempt starts (what a requeued batch job needs).
    first = scip.run(config(fields, out), progress=False, resume=True)
    assert first.summary["partitions"]["computed"] == N_FIELDS
    changed = config(fields, out, segment={"method": "watershed", "channel": "cyto", "min_distance": 9})
    with pytest.raises(ConfigError, match=r"segment.min_distance: 5 -> 9"):
        scip.run(changed, progress=False, resume=True)
    # cluster and output settings may change between attempts
    again = scip.run({**config(fields, out), "cluster": {"workers": 1, "dashboard_address": ":0"}}, progress=False,
                     resume=True)
    assert again.summary["partitions"]["computed"] == 0
