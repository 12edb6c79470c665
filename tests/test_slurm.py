"""`scip run` on a real SLURM: workers are sbatch jobs, segmentation on the GPU job, same table as locally.

The runs keep scip's defaults for the network: scheduler and workers speak TLS with temporary
credentials (`cluster.security`), the dashboard listens on loopback.

CI starts a single-node SLURM first (`cluster/ci/slurm-up.sh`, from `.ci/run`) and sets
SCIP_REQUIRE_SLURM=1, so there a missing SLURM fails this test instead of skipping it. On a
developer machine without SLURM daemons it is skipped, with that reason.
"""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

import scip
from scip.io.tables import read as read_table
from scip.datasets import write_example

FIELDS_PATTERN = r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff"


def slurm_partition() -> str | None:
    """The default partition of a responding SLURM whose nodes can take jobs, else None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %a %T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        name, avail, state = line.split()
        if avail == "up" and state in ("idle", "mixed") and name.endswith("*"):
            return name.rstrip("*")
    return None


PARTITION = slurm_partition()
if PARTITION is None:
    if os.environ.get("SCIP_REQUIRE_SLURM"):
        raise RuntimeError("SCIP_REQUIRE_SLURM is set but no SLURM answers with an idle default partition "
                           "(cluster/ci/slurm-up.sh starts one)")
    pytestmark = pytest.mark.skip(reason="no SLURM daemons here (sinfo/sbatch missing or no idle default "
                                         "partition); CI starts one with cluster/ci/slurm-up.sh")


def has_gpu_gres() -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=20).stdout
    return "gpu" in out


def jobs_since(first_id: int) -> list[tuple[int, str, str]]:
    """(id, name, state) of the jobs submitted since ``first_id``, finished ones included (MinJobAge)."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %j %T"], capture_output=True, text=True,
                         timeout=20).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return sorted((int(i), name, state) for i, name, state in rows if i.isdigit() and int(i) >= first_id)


def next_job_id() -> int:
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i"], capture_output=True, text=True,
                         timeout=20).stdout
    ids = [int(i) for i in out.split() if i.isdigit()]
    return max(ids, default=0) + 1


def test_scip_run_on_slurm_jobs(tmp_path):
    fields = write_example(tmp_path / "data", n_events=4, n_fields=6, seed=11)["fields"]
    base = {
        "input": {"path": str(fields), "pattern": FIELDS_PATTERN, "channels": ["DNA", "cyto", "marker"],
                  "images_per_partition": 1},
        "segment": {"method": "watershed", "channel": "cyto"},
        "filters": [{"measure": "signal", "channel": "cyto", "min": "otsu"}],
    }
    local = scip.run({**base, "output": {"path": str(tmp_path / "local")}, "cluster": {"scheduler": "synchronous"}},
                     progress=False)
    gpu = has_gpu_gres()
    slurm = {"queue": PARTITION, "cores": 1, "memory": "2GiB", "walltime": "00:15:00", "jobs": 1,
             "log_directory": str(tmp_path / "logs"), "wait_timeout": 120,
             "shared_temp_directory": str(tmp_path / "tls")}
    if gpu:
        slurm["gpu"] = {"jobs": 1, "gres": "gpu:1", "memory": "2GiB", "walltime": "00:15:00"}
    cfg_path = tmp_path / "slurm.yml"
    cfg_path.write_text(yaml.safe_dump({**base, "output": {"path": str(tmp_path / "slurm")},
                                        "cluster": {"slurm": slurm, "dashboard_address": ":0"}}))
    first = next_job_id()
    proc = subprocess.run([sys.executable, "-m", "scip", "run", str(cfg_path), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    summary = json.loads((tmp_path / "slurm" / "run.json").read_text())
    assert summary["cluster"]["kind"] == "slurm"
    # TLS by default: the workers could join only with the temporary credentials written for them.
    assert summary["cluster"]["scheduler"].startswith("tls://"), summary["cluster"]
    assert summary["cluster"]["dashboard"].startswith("http://127.0.0.1:"), summary["cluster"]
    tls = tmp_path / "tls"
    assert tls.is_dir() and (tls.stat().st_mode & 0o777) == 0o700
    assert not list(tls.iterdir())  # the workers' key and certificate are deleted with the cluster
    jobs = jobs_since(first)
    names = [name for _, name, _ in jobs]
    assert names.count("scip-cpu") >= 1, jobs
    stream = summary["timings_s"]["task_stream"]
    # Every worker that ran a task was started by one of these sbatch jobs.
    workers = {w for per_step in stream["workers"].values() for w in per_step}
    assert workers and all(w.startswith(("scip-cpu", "scip-gpu")) for w in workers), workers
    if gpu:
        assert names.count("scip-gpu") == 1, jobs
        assert set(stream["workers"]["segment"]) == {"scip-gpu-0"}
        assert not any(w.startswith("scip-gpu") for w in stream["workers"]["features"])
    pd.testing.assert_frame_equal(
        local.read().sort_values(["meta_image_id", "meta_label"]).reset_index(drop=True),
        read_table(tmp_path / "slurm" / "cells").sort_values(["meta_image_id", "meta_label"])
        .reset_index(drop=True))
    # The jobs are cancelled when the run ends.
    assert not [j for j in jobs_since(first) if j[2] in ("RUNNING", "PENDING")]


def test_adaptive_slurm_scales_cpu_jobs(tmp_path):
    """adapt: true starts at least minimum_jobs sbatch jobs and finishes the run; they are cancelled after.

    ``interface: lo`` (one node here) puts the scheduler and the workers on loopback: the option reaches both.
    """
    fields = write_example(tmp_path / "data", n_events=4, n_fields=4, seed=12)["fields"]
    cfg = {
        "input": {"path": str(fields), "pattern": FIELDS_PATTERN, "channels": ["DNA", "cyto", "marker"],
                  "images_per_partition": 1},
        "segment": {"method": "watershed", "channel": "cyto"},
        "output": {"path": str(tmp_path / "out")},
        "cluster": {"dashboard_address": ":0", "slurm": {
            "queue": PARTITION, "cores": 1, "memory": "2GiB", "walltime": "00:15:00", "adapt": True,
            "minimum_jobs": 1, "maximum_jobs": 2, "log_directory": str(tmp_path / "logs"), "wait_timeout": 120,
            "interface": "lo"}},
    }
    first = next_job_id()
    result = scip.run(cfg, progress=False)
    jobs = jobs_since(first)
    assert 1 <= sum(name == "scip-cpu" for _, name, _ in jobs) <= 2, jobs
    assert result.summary["counts"]["images"]["total"] == 4
    assert result.summary["cluster"]["kind"] == "slurm"
    assert result.summary["cluster"]["scheduler"].startswith("tls://127.0.0.1:"), result.summary["cluster"]
    assert not [j for j in jobs_since(first) if j[2] in ("RUNNING", "PENDING")]


def test_jobs_that_never_start_give_a_clear_error(tmp_path):
    fields = write_example(tmp_path / "data", n_events=4, n_fields=1, seed=13)["fields"]
    cfg_path = tmp_path / "never.yml"
    cfg_path.write_text(yaml.safe_dump({
        "input": {"path": str(fields), "pattern": FIELDS_PATTERN, "channels": ["DNA", "cyto", "marker"]},
        "output": {"path": str(tmp_path / "out")},
        # More memory than the node has: SLURM keeps the job pending (or rejects it).
        "cluster": {"dashboard_address": ":0", "slurm": {"queue": PARTITION, "memory": "4000GiB", "wait_timeout": 10,
                                                         "log_directory": str(tmp_path / "logs")}},
    }))
    proc = subprocess.run([sys.executable, "-m", "scip", "run", str(cfg_path), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "cluster error: no SLURM job started a worker within cluster.slurm.wait_timeout = 10 s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "sbatch refused a worker job" in proc.stderr  # with sbatch's own reason
