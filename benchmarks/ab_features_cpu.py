"""``scip.features.extract`` of two checkouts, alternated: wall, user and system CPU seconds and minor page faults per call.

As ``ab_features.py`` (one long-lived child per checkout, single-threaded,
A then B in every round), but each child also reports its own
``getrusage`` for the call: user CPU time is what the cells/s/core target
counts, and the system time and minor faults show fresh mappings of large
arrays. Each child builds the mosaic itself and makes two untimed calls
first (compilation or numba's cache, then one full call).

Usage::

    python benchmarks/ab_features_cpu.py --a /work/main --b . [--n 5000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import json, os, resource, sys, time
for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
sys.path.insert(0, sys.argv[1])
from scip import features  # before bench_features, which puts its own checkout on sys.path
sys.path.insert(1, sys.argv[2])
from bench_features import synthetic_mosaic
px, lab = synthetic_mosaic(int(sys.argv[3]), seed=0)
features.extract(px[:, :128, :128], lab[:128, :128])
features.extract(px, lab)
print(json.dumps(dict(file=features.__file__)), flush=True)
for line in sys.stdin:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    features.extract(px, lab)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps(dict(wall=t1 - t0, user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime,
                          minflt=r1.ru_minflt - r0.ru_minflt)), flush=True)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout A (e.g. before)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (e.g. after)")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    procs = {name: subprocess.Popen([sys.executable, "-c", _CHILD, str(path.resolve()), str(HERE), str(args.n)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for name, path in (("A", args.a), ("B", args.b))}
    for name, proc in procs.items():
        print(name, json.loads(proc.stdout.readline())["file"])
    rounds: dict[str, list[dict]] = {name: [] for name in procs}
    for _ in range(args.rounds):
        for name, proc in procs.items():
            proc.stdin.write("go\n")
            proc.stdin.flush()
            rounds[name].append(json.loads(proc.stdout.readline()))
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    for key in ("wall", "user", "sys", "minflt"):
        a = np.array([r[key] for r in rounds["A"]])
        b = np.array([r[key] for r in rounds["B"]])
        ratio = np.median(a / np.maximum(b, 1e-9))
        print(f"{key:6s} A median {np.median(a):9.3f}   B median {np.median(b):9.3f}   per-round A/B median {ratio:.2f}")
        print(f"       A {np.round(a, 3).tolist()}\n       B {np.round(b, 3).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
