"""Fault suite: ``scip run`` under the faults a real user meets, each compared with an uninterrupted run.

Each case runs the ``scip`` command in a subprocess on synthetic fields of view
(``scip.datasets.write_example``), does something bad to it, and then checks
one of two outcomes:

- the table, sorted by image id and label, equals the table of an
  uninterrupted run of the same config (``pandas.testing.assert_frame_equal``),
  and ``skipped.csv`` accounts for everything else; or
- scip refuses with a clear message and the documented exit code.

Cases:

``kill -9 worker``
    A local cluster of 2 worker processes; one worker is SIGKILLed once a part
    is written. The run must finish by itself (rc 0).
``kill -9 run``
    The whole run (process group) is SIGKILLed after 3 parts; ``--resume``
    finishes it (rc 0).
``full disk``
    The output folder is a tmpfs too small for the run (needs root to mount;
    the row says so where it could not be run). The run must stop with rc 1
    and a message naming the folder; after the tmpfs is enlarged,
    ``--resume`` finishes it.
``corrupt part``
    A finished run's part is truncated to 0 bytes, another has bytes flipped in
    place (same size); ``--resume`` recomputes exactly those two.
``oversized image``
    A 3-channel 20000 × 20000 uint16 field (tiled, zlib: a few MB on disk,
    2.2 GiB decoded) among the fields, workers with a 1 GiB memory limit,
    ``tiles.mode: never`` (by default such an image is read in tiles). The
    run must finish, list the image in ``skipped.csv`` with a reason naming
    its size, and give the table of the run without it.
``worker-killing image``
    The same field with the size check turned off (``input.max_image_bytes: 0``):
    decoding it kills every worker that tries, during the pass that persists
    the cells for the filter and normalization. The run must finish with the
    image in ``skipped.csv`` and the table of the run without it.
``changed input``
    A run is killed, one image is rewritten under the same name; ``--resume``
    must refuse (rc 2) naming the file.

Usage::

    .venv/bin/python benchmarks/fault_suite.py [--fields 24] [--out benchmarks/results]

Writes ``faults.md`` and ``faults.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scip.datasets import write_example  # noqa: E402

PATTERN = r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff"
CHANNELS = ["DNA", "cyto", "marker"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "DASK_LOGGING__DISTRIBUTED": "critical"}


def config(data: Path, out: Path, **cluster) -> dict:
    return {
        "input": {"path": str(data), "pattern": PATTERN, "channels": CHANNELS, "images_per_partition": 1},
        "segment": {"method": "watershed", "channel": "cyto"},
        "filters": [{"measure": "signal", "channel": "cyto", "min": "otsu"}],
        "normalize": {"lower": 0.01, "upper": 0.99},
        "output": {"path": str(out)},
        "cluster": cluster or {"scheduler": "synchronous"},
    }


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(cfg_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scip", "run", str(cfg_path), "--no-progress", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=ENV)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    out = proc.communicate(timeout=timeout)[0].decode(errors="replace")
    return proc.returncode, out


def scip_run(cfg_path: Path, *args: str) -> tuple[int, str]:
    return finish(start(cfg_path, *args))


def parts_done(out: Path) -> int:
    return len([p for p in (out / "progress").glob("part-*") if p.suffix in (".json", ".pkl")]) \
        if (out / "progress").is_dir() else 0


def kill_after(proc: subprocess.Popen, out: Path, n_parts: int, timeout: float = 600) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if parts_done(out) >= n_parts:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


def table(out: Path) -> pd.DataFrame:
    return (pd.read_parquet(out / "cells").sort_values(["meta_image_id", "meta_label"])
            .reset_index(drop=True))


def same_table(reference: Path, out: Path, moved: tuple[Path, Path] | None = None) -> str:
    """``"equal"``, or how the tables differ; ``moved``: (folder, reference's folder) of an input copied elsewhere."""
    try:
        got = table(out)
        if moved is not None:
            got["meta_path"] = got["meta_path"].str.replace(str(moved[0]), str(moved[1]), regex=False)
        pd.testing.assert_frame_equal(table(reference), got)
    except AssertionError as e:
        return f"table differs: {str(e).splitlines()[0]}"
    except Exception as e:  # noqa: BLE001 - a table that cannot be read is a failed case, reported
        return f"table unreadable: {type(e).__name__}: {e}"
    return "equal"


def image_reason(out: Path, image_id: str) -> str:
    """The reason ``skipped.csv`` gives for skipping image ``image_id``."""
    if not (out / "skipped.csv").is_file():
        return "(no skipped.csv)"
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    rows = skipped[(skipped["kind"] == "image") & (skipped["image_id"] == image_id)]
    return rows["reason"].iloc[0] if len(rows) else "(not in skipped.csv)"


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:240] if lines else ""


# The cases -----------------------------------------------------------------------------------------------


def case_kill_worker(data: Path, ref: Path, work: Path) -> dict:
    import psutil

    out = work / "kill_worker"
    cfg = write_config(work / "kill_worker.yml", config(data, out, workers=2, threads=1, dashboard_address=":0"))
    proc = start(cfg)
    killed = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and killed is None:
        if parts_done(out) >= 1:
            workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                       if "resource_tracker" not in " ".join(c.cmdline())]
            if workers:
                workers[0].send_signal(signal.SIGKILL)
                killed = workers[0].pid
        time.sleep(0.01)
    rc, text = finish(proc)
    outcome = same_table(ref, out) if rc == 0 else last_line(text)
    return {"fault": f"SIGKILL of worker process {killed} after the first part", "rc": rc, "outcome": outcome,
            "passed": killed is not None and rc == 0 and outcome == "equal"}


def case_kill_run(data: Path, ref: Path, work: Path) -> dict:
    out = work / "kill_run"
    cfg = write_config(work / "kill_run.yml", config(data, out))
    killed = kill_after(start(cfg), out, 3)
    before = parts_done(out)
    rc, text = scip_run(cfg, "--resume")
    outcome = same_table(ref, out) if rc == 0 else last_line(text)
    return {"fault": f"SIGKILL of the run after {before} parts, then --resume", "rc": rc, "outcome": outcome,
            "passed": killed and rc == 0 and outcome == "equal"}


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def case_full_disk(data: Path, ref: Path, work: Path) -> dict:
    mount = work / "disk"
    used = sum(f.stat().st_size for f in ref.rglob("*") if f.is_file())
    size = max(used // 3, 64 * 1024)
    if os.geteuid() != 0 or not _mount_tmpfs(mount, size):
        return {"fault": "output on a full tmpfs", "rc": None, "outcome": "not run: mounting a tmpfs needs root",
                "passed": None}
    try:
        out = mount / "out"
        cfg = write_config(work / "full_disk.yml", config(data, out))
        rc1, text = scip_run(cfg)
        message = last_line(text)
        subprocess.run(["mount", "-o", f"remount,size={used * 4}", str(mount)], check=True)
        rc2, text2 = scip_run(cfg, "--resume")
        outcome = same_table(ref, out) if rc2 == 0 else last_line(text2)
        clear = rc1 == 1 and "full" in message.lower() and str(out) in message and "Traceback" not in text
        return {"fault": f"output on a {size // 1024} KiB tmpfs ({used // 1024} KiB needed), then enlarged "
                         "and --resume",
                "rc": f"{rc1}, then {rc2}", "outcome": f"first: {message!r}; after --resume: {outcome}",
                "passed": clear and rc2 == 0 and outcome == "equal"}
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def case_corrupt_part(data: Path, ref: Path, work: Path) -> dict:
    out = work / "corrupt"
    shutil.copytree(ref, out)
    cfg = write_config(work / "corrupt.yml", config(data, out))
    (out / "cells" / "part-00002.parquet").write_bytes(b"")
    part = out / "cells" / "part-00005.parquet"
    raw = bytearray(part.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 16] = bytes(255 - b for b in raw[middle:middle + 16])
    part.write_bytes(bytes(raw))
    rc, text = scip_run(cfg, "--resume")
    computed = None
    if (out / "run.json").is_file():
        computed = json.loads((out / "run.json").read_text()).get("partitions", {}).get("computed")
    outcome = same_table(ref, out) if rc == 0 else last_line(text)
    return {"fault": "a finished run's part-00002 truncated to 0 bytes, part-00005 with 16 bytes flipped; --resume",
            "rc": rc, "outcome": f"{outcome}; partitions recomputed: {computed}",
            "passed": rc == 0 and outcome == "equal" and computed == 2}


def _write_oversized(folder: Path, image_id: int, side: int = 20000) -> int:
    import tifffile

    tile = np.zeros((512, 512), np.uint16)
    n_tiles = (-(-side // 512)) ** 2

    def tiles():
        for _ in range(n_tiles):
            yield tile

    on_disk = 0
    for channel in CHANNELS:
        path = folder / f"field{image_id}_{channel}.tiff"
        tifffile.imwrite(path, tiles(), shape=(side, side), dtype=np.uint16, tile=(512, 512), compression="zlib")
        on_disk += path.stat().st_size
    return on_disk


def case_oversized(data: Path, ref: Path, work: Path) -> dict:
    big = work / "oversized_data"
    shutil.copytree(data, big)
    on_disk = _write_oversized(big, 999)
    out = work / "oversized"
    cfg = config(big, out, workers=2, threads=1, memory_limit="1GiB", dashboard_address=":0")
    # The size check itself: by default (tiles.mode: auto) such an image is read in tiles instead.
    cfg["tiles"] = {"mode": "never"}
    rc, text = scip_run(write_config(work / "oversized.yml", cfg))
    reason = image_reason(out, "999")
    outcome = same_table(ref, out, moved=(big, data)) if rc == 0 else last_line(text)
    return {"fault": f"a 3 × 20000² uint16 field ({on_disk / 2**20:.1f} MiB on disk, 2.2 GiB decoded), "
                     "workers of 1 GiB",
            "rc": rc, "outcome": f"{outcome}; skipped.csv: {reason!r}",
            "passed": rc == 0 and outcome == "equal" and "field999" in reason}


def case_worker_killer(data: Path, ref: Path, work: Path) -> dict:
    big = work / "killer_data"
    shutil.copytree(data, big)
    _write_oversized(big, 999)
    out = work / "killer"
    cfg = config(big, out, workers=2, threads=1, memory_limit="1GiB", dashboard_address=":0")
    cfg["input"]["max_image_bytes"] = 0  # no size check: the image reaches the decoder and the worker dies
    cfg["tiles"] = {"mode": "never"}  # read whole (with no budget, auto would not tile it either)
    rc, text = scip_run(write_config(work / "killer.yml", cfg))
    reason = image_reason(out, "999")
    outcome = same_table(ref, out, moved=(big, data)) if rc == 0 else last_line(text)
    return {"fault": "the same field with the size check off (input.max_image_bytes: 0): it kills every worker "
                     "that decodes it, while the cells are persisted for the filter and normalization",
            "rc": rc, "outcome": f"{outcome}; skipped.csv: {reason!r}",
            "passed": rc == 0 and outcome == "equal" and "field999" in reason and "killed the worker" in reason}


def case_changed_input(data: Path, ref: Path, work: Path) -> dict:
    import tifffile

    changed = work / "changed_data"
    shutil.copytree(data, changed)
    out = work / "changed"
    cfg = write_config(work / "changed.yml", config(changed, out))
    killed = kill_after(start(cfg), out, 3)
    target = changed / "field3_cyto.tiff"
    tifffile.imwrite(target, np.fliplr(tifffile.imread(target)))
    rc, text = scip_run(cfg, "--resume")
    message = last_line(text)
    return {"fault": "run killed after 3 parts, field3_cyto.tiff rewritten (mirrored), then --resume",
            "rc": rc, "outcome": f"refused: {message!r}" if rc == 2 else message,
            "passed": killed and rc == 2 and "field3_cyto.tiff" in text}


CASES = {
    "kill -9 worker": case_kill_worker,
    "kill -9 run": case_kill_run,
    "full disk": case_full_disk,
    "corrupt part": case_corrupt_part,
    "oversized image": case_oversized,
    "worker-killing image": case_worker_killer,
    "changed input": case_changed_input,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=24)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", nargs="*", choices=list(CASES), help="run only these cases")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scip-faults-"))
    data = write_example(work / "data", n_events=4, n_fields=args.fields, seed=7)["fields"]
    ref = work / "reference"
    started = time.perf_counter()
    rc, text = scip_run(write_config(work / "reference.yml", config(data, ref)))
    if rc != 0:
        print(text)
        raise SystemExit(f"the uninterrupted reference run failed (rc {rc})")
    rows = []
    for name, case in CASES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            row = case(data, ref, work)
        except Exception as e:  # noqa: BLE001 - a case that crashes is a failed case, reported as such
            row = {"fault": name, "rc": None, "outcome": f"suite error: {type(e).__name__}: {e}", "passed": False}
        row = {"case": name, **row, "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"fields": args.fields, "cells_in_reference": len(table(ref)), "machine": platform.platform(),
            "cpus": os.cpu_count(), "seconds": round(time.perf_counter() - started, 1)}
    (args.out / "faults.json").write_text(json.dumps({"meta": meta, "cases": rows}, indent=2))
    lines = ["# Fault suite", "", f"`.venv/bin/python benchmarks/fault_suite.py --fields {args.fields}`: "
             f"{args.fields} synthetic fields (3 channels), one image per partition, "
             f"{meta['cells_in_reference']} cells in the uninterrupted run; {meta['cpus']} CPUs, "
             f"{meta['seconds']} s in all.", "",
             "| case | fault | exit code | outcome | passed |", "|---|---|---|---|---|"]
    for r in rows:
        passed = {True: "yes", False: "**no**", None: "not run"}[r["passed"]]
        lines.append(f"| {r['case']} | {r['fault']} | {r['rc']} | {str(r['outcome']).replace('|', '/')} | {passed} |")
    (args.out / "faults.md").write_text("\n".join(lines) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["passed"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
