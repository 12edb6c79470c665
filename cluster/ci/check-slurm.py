"""Check the single-node SLURM that cluster/ci/slurm-up.sh starts, the way CI uses it.

    .venv/bin/python cluster/ci/check-slurm.py [--partition debug] [--no-dask] [--no-gpu]

Prints what it sees (sinfo, plain and GPU sbatch jobs, whether sacct works, the environment
jobs run in, a dask-jobqueue SLURMCluster with 2 workers and one with a fake GPU) and exits
non-zero when something fails. Cleans up its clusters and jobs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAILURES: list[str] = []


def say(msg: str = "") -> None:
    print(msg, flush=True)


def fail(msg: str) -> None:
    FAILURES.append(msg)
    say(f"FAIL: {msg}")


def sh(cmd: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd!r} exited {p.returncode}: {p.stderr.strip()}")
    return p


def squeue() -> str:
    return sh("squeue -o '%.8i %.12j %.9P %.8T %.10M %.6C %.8m %.12b %R'").stdout.rstrip()


def wait_job(job_id: str, timeout: float = 60) -> str:
    """Wait until the job has left the queue; return its final state (from scontrol)."""
    deadline = time.time() + timeout
    state = "UNKNOWN"
    while time.time() < deadline:
        out = sh(f"scontrol show job {job_id}").stdout
        for tok in out.split():
            if tok.startswith("JobState="):
                state = tok.split("=", 1)[1]
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return state
        if not out:  # already purged (MinJobAge)
            return "GONE"
        time.sleep(0.2)
    return f"{state} (timed out after {timeout:.0f} s)"


def sbatch(args: str, wrap: str, workdir: Path, name: str) -> tuple[str, str, float]:
    out = workdir / f"{name}-%j.out"
    t0 = time.time()
    p = sh(f"sbatch --parsable -J {name} -o {out} {args} --wrap {shlex.quote(wrap)}")
    if p.returncode != 0:
        return "", f"sbatch failed: {p.stderr.strip()}", 0.0
    job_id = p.stdout.strip().split(";")[0]
    state = wait_job(job_id)
    dt = time.time() - t0
    text = ""
    path = Path(str(out).replace("%j", job_id))
    if path.exists():
        text = path.read_text().strip()
    return job_id, f"{state}\n{text}", dt


def check_sbatch(workdir: Path, gpu: bool) -> None:
    say("== sinfo")
    p = sh("sinfo -N -o '%N %T %c %m %G %P'")
    say(p.stdout.rstrip() or p.stderr.rstrip())
    state = sh("sinfo -h -N -o %T").stdout.split()
    if not state or state[0] not in ("idle", "mixed", "allocated"):
        fail(f"node state is {state}, expected idle (run cluster/ci/slurm-up.sh)")
        return
    gres = sh("sinfo -h -N -o %G").stdout.strip()

    say("\n== sbatch --wrap hostname (+ the job's environment)")
    wrap = (
        "hostname; echo PATH=$PATH; echo cwd=$(pwd); id -un; "
        f"{shlex.quote(sys.executable)} -c 'import sys, dask_jobqueue; print(sys.executable)'"
    )
    job_id, out, dt = sbatch("", wrap, workdir, "check-hostname")
    say(f"job {job_id}: {out}\n({dt:.1f} s submit to done)")
    if not out.startswith("COMPLETED") or sys.executable not in out:
        fail("plain sbatch job did not complete or could not run this Python")

    if gpu:
        say("\n== sbatch --gres=gpu:1 --wrap 'echo $CUDA_VISIBLE_DEVICES'")
        if "gpu" not in gres:
            fail(f"node has no GRES gpu (sinfo %G = {gres!r})")
        else:
            job_id, out, dt = sbatch(
                "--gres=gpu:1",
                "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES SLURM_JOB_GPUS=$SLURM_JOB_GPUS",
                workdir,
                "check-gpu",
            )
            say(f"job {job_id}: {out}\n({dt:.1f} s submit to done)")
            if not out.startswith("COMPLETED") or "CUDA_VISIBLE_DEVICES=0" not in out:
                fail("GPU sbatch job did not complete with CUDA_VISIBLE_DEVICES=0")

    say("\n== sacct")
    p = sh("sacct -n -X -o JobID,JobName,State -S now-1hours")
    if p.returncode == 0 and "disabled" not in (p.stdout + p.stderr):
        say(p.stdout.rstrip())
    else:
        say(f"sacct unavailable ({(p.stderr or p.stdout).strip()}); use squeue / scontrol show job "
            "(finished jobs stay visible for MinJobAge=300 s) or the jobcomp log")


def check_dask(partition: str, workdir: Path, gpu: bool) -> None:
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    say("\n== dask_jobqueue.SLURMCluster: 2 CPU workers")
    t0 = time.time()
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="2GB",
        queue=partition,
        walltime="00:10:00",
        log_directory=str(workdir / "dask-logs"),
    )
    try:
        say(cluster.job_script())
        client = Client(cluster)
        cluster.scale(2)
        client.wait_for_workers(2, timeout=120)
        say(f"2 workers up in {time.time() - t0:.1f} s")
        info = client.scheduler_info()["workers"]
        for addr, w in sorted(info.items()):
            say(f"  worker name={w['name']} addr={addr} memory_limit={w['memory_limit']}"
                f" nthreads={w['nthreads']} resources={w.get('resources')}")
        say("  jobs per worker name: "
            + ", ".join(f"{n}->{j.job_id}" for n, j in sorted(cluster.workers.items())))
        say(squeue())
        r = client.submit(lambda: 1).result(timeout=60)
        say(f"client.submit(lambda: 1).result() = {r}")
        if r != 1:
            fail(f"task returned {r!r}")

        def hold_memory(nbytes: int) -> int:
            import time as _t

            b = bytearray(nbytes)
            b[::4096] = b"\1" * len(b[::4096])
            _t.sleep(2)
            return len(b)

        n = client.submit(hold_memory, 1_000_000_000, pure=False).result(timeout=120)
        say(f"a task held {n / 1e9:.1f} GB for 2 s without the worker being killed")
        names = [w["name"] for w in client.scheduler_info()["workers"].values()]
        if len(names) != 2:
            fail(f"expected 2 workers after the memory task, have {names}")
        client.close()
    except Exception as e:  # noqa: BLE001
        fail(f"CPU SLURMCluster: {type(e).__name__}: {e}")
        say(squeue())
    finally:
        cluster.close()
    _wait_queue_empty()

    if not gpu:
        return
    say("\n== dask_jobqueue.SLURMCluster: 1 worker with --gres=gpu:1 and resources GPU=1")
    t0 = time.time()
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="2GB",
        queue=partition,
        walltime="00:10:00",
        job_extra_directives=["--gres=gpu:1"],
        worker_extra_args=["--resources", "GPU=1"],
        log_directory=str(workdir / "dask-logs"),
    )
    try:
        client = Client(cluster)
        cluster.scale(1)
        client.wait_for_workers(1, timeout=120)
        say(f"GPU worker up in {time.time() - t0:.1f} s")
        say(squeue())
        info = client.scheduler_info()["workers"]
        for addr, w in info.items():
            say(f"  worker name={w['name']} addr={addr} resources={w.get('resources')}")
        if not any(w.get("resources", {}).get("GPU") == 1 for w in info.values()):
            fail("no worker with resources GPU=1")
        cvd = client.submit(
            lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"), resources={"GPU": 1}
        ).result(timeout=60)
        say(f"task with resources={{'GPU': 1}} saw CUDA_VISIBLE_DEVICES={cvd!r}")
        if cvd != "0":
            fail(f"GPU worker has CUDA_VISIBLE_DEVICES={cvd!r}, expected '0'")
        client.close()
    except Exception as e:  # noqa: BLE001
        fail(f"GPU SLURMCluster: {type(e).__name__}: {e}")
        say(squeue())
    finally:
        cluster.close()
    _wait_queue_empty()


def _wait_queue_empty(timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not sh("squeue -h -o %i").stdout.strip():
            say("queue empty after cluster.close()")
            return
        time.sleep(0.5)
    fail("jobs still queued 60 s after cluster.close():\n" + squeue())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partition", default=os.environ.get("SCIP_SLURM_PARTITION", "debug"))
    ap.add_argument("--no-dask", action="store_true", help="only the sbatch checks")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GRES gpu checks")
    args = ap.parse_args()

    if not shutil.which("sbatch"):
        say("FAIL: sbatch not found (run cluster/ci/slurm-up.sh)")
        return 1
    t0 = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="scip-check-slurm-"))
    os.chmod(workdir, 0o755)
    try:
        check_sbatch(workdir, gpu=not args.no_gpu)
        if not args.no_dask and not FAILURES:
            check_dask(args.partition, workdir, gpu=not args.no_gpu)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"\n== {'FAILED: ' + '; '.join(FAILURES) if FAILURES else 'all SLURM checks passed'}"
        f" ({time.time() - t0:.1f} s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
