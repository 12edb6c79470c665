"""``scip.features.extract`` on a large image, in strips (the default) against all objects at once.

One process, the default families, single-threaded. Each round times one
call with ``STRIP_PIXELS`` at its default and one with the whole image's
objects at once (the order swapped every other round), and records wall,
user and system CPU seconds and minor page faults (``getrusage``). System
time is where the two differ: arrays as large as all objects' pixels are
fresh mappings the kernel zeroes on every call, and on a virtual machine
that cost varies with how the host took the freed pages back; a strip's
arrays are reused. ``--sleep`` waits between calls (other work in a real
session, e.g. the other methods of ``bench_features.py``).

With ``--memory`` it also measures the peak resident memory each way, in a
fresh process per way (the high-water mark after the call, less before it;
Linux only).

Usage::

    python benchmarks/ab_strips.py [--n 5000] [--rounds 9] [--sleep 0] [--memory] [--out FILE]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import scip.features as features  # noqa: E402
from bench_features import synthetic_mosaic  # noqa: E402

WHOLE = 1 << 62
MODES = {"strips": features.STRIP_PIXELS, "whole": WHOLE}


def _timed(pixels: np.ndarray, labels: np.ndarray, budget: int) -> dict[str, float]:
    features.STRIP_PIXELS = budget
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    features.extract(pixels, labels)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return dict(wall=t1 - t0, user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime,
                minflt=r1.ru_minflt - r0.ru_minflt)


def _peak(n: int, mode: str) -> float:
    """MiB the resident peak grows by during one call, in a fresh process (the kernels compiled before)."""
    # VmHWM, not ru_maxrss: the latter survives exec, so a child started by
    # this large process would begin at its peak.
    code = (f"import sys; sys.path[:0] = [{str(HERE.parent)!r}, {str(HERE)!r}]\n"
            "import scip.features as f\n"
            "from bench_features import synthetic_mosaic\n"
            "def hwm():\n"
            "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "f.extract(*synthetic_mosaic(4, seed=0))\n"
            f"px, lab = synthetic_mosaic({n}, seed=0)\n"
            f"f.STRIP_PIXELS = {MODES[mode]}\n"
            "before = hwm()\n"
            "f.extract(px, lab)\n"
            "print((hwm() - before) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return float(out.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="synthetic cells (default 5000)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to wait before each call (default 0)")
    parser.add_argument("--memory", action="store_true", help="also the peak resident memory, a process per way")
    parser.add_argument("--out", type=Path, help="JSON file for the raw figures")
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1 or args.sleep < 0:
        parser.error("--n and --rounds must be >= 1 and --sleep >= 0")

    pixels, labels = synthetic_mosaic(args.n, seed=0)
    objects_px = int(np.count_nonzero(labels))
    print(f"{args.n} cells, {objects_px:,} object pixels; strips of STRIP_PIXELS = {MODES['strips']:,}", flush=True)
    if objects_px <= MODES["strips"]:
        print("note: the objects fit in one strip, so both ways run the same code", flush=True)
    for budget in MODES.values():  # kernels compiled or loaded, both paths run once
        _timed(pixels, labels, budget)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        order = list(MODES) if r % 2 == 0 else list(MODES)[::-1]
        for mode in order:
            time.sleep(args.sleep)
            runs[mode].append(_timed(pixels, labels, MODES[mode]))
    features.STRIP_PIXELS = MODES["strips"]

    report = {"n": args.n, "object_pixels": objects_px, "strip_pixels": MODES["strips"], "rounds": args.rounds,
              "sleep": args.sleep, "runs": runs, "median": {}}
    for mode, rs in runs.items():
        med = {k: float(np.median([x[k] for x in rs])) for k in rs[0]}
        report["median"][mode] = med
        walls = ", ".join(f"{x['wall']:.3f}" for x in rs)
        print(f"{mode:6s}  wall {med['wall']:.3f} s  user {med['user']:.3f} s  sys {med['sys']:.3f} s  "
              f"minflt {med['minflt']:,.0f}   walls: {walls}", flush=True)
    ratios = [w["wall"] / s["wall"] for w, s in zip(runs["whole"], runs["strips"])]
    report["wall_ratio_median"] = float(np.median(ratios))
    print(f"whole over strips, wall: {report['wall_ratio_median']:.2f}x (median of the per-round ratios)")
    if args.memory:
        report["peak_mib"] = {mode: _peak(args.n, mode) for mode in MODES}
        print("peak resident memory added by the call: "
              + ", ".join(f"{m} {v:.0f} MiB" for m, v in report["peak_mib"].items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
