"""Before/after timing of single feature kernels between two checkouts, alternated.

One long-lived process per checkout imports scip from it, runs one default
``extract`` on the synthetic mosaic of ``bench_features.py`` while recording
the arguments of the kernels named (a wrapper around each), then times one
call of a kernel per request, on copies of the recorded arguments made before
the timer starts (so the outputs' and scratch arrays' pages are already
faulted in, unlike in ``extract``, which allocates them fresh). The parent asks A, then B, round by round, and reports medians. Both sides
see their own checkout's arguments: a kernel whose signature changed between
the checkouts is timed as each checkout calls it.

Usage::

    python benchmarks/ab_kernels.py --a /work/main --b . [--n 5000] [--rounds 7]
        [--kernels _shape_kernels.shape_kernel intensity._band_owned]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from _timing import ab_parser

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import importlib, json, os, sys, time
for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
root, here, n, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
sys.path.insert(0, root)
import numpy as np
from scip import features  # before bench_features, which puts its own checkout on sys.path
assert features.__file__.startswith(root), features.__file__
sys.path.insert(0, here)
from bench_features import synthetic_mosaic

recorded, kernels = {}, {}
for name in names:
    module_name, func_name = name.rsplit(".", 1)
    module = importlib.import_module("scip.features." + module_name)
    func = getattr(module, func_name)
    # a compiled kernel the family looks up on its module at each call (not the
    # grouping's sort, compiled lazily from a plain function)
    assert hasattr(func, "py_func"), f"{name} is not a compiled kernel"
    kernels[name] = func

    def wrapper(*args, _func=func, _name=name):
        recorded[_name] = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        return _func(*args)

    setattr(module, func_name, wrapper)
px, lab = synthetic_mosaic(n, seed=0)
features.extract(px, lab)
missing = [k for k in names if k not in recorded]
print(json.dumps(dict(missing=missing)), flush=True)
for line in sys.stdin:
    name = line.strip()
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in recorded[name]]
    t0 = time.perf_counter()
    kernels[name](*args)
    print(json.dumps(dict(seconds=time.perf_counter() - t0)), flush=True)
"""


def main(argv: list[str] | None = None) -> int:
    parser = ab_parser(__doc__.split("\n")[0])
    parser.add_argument("--kernels", nargs="+", default=["_shape_kernels.shape_kernel", "intensity._band_owned"],
                        help="compiled module.function under scip.features that a family calls through its module")
    args = parser.parse_args(argv)
    children = {}
    for side in ("a", "b"):
        root = str(getattr(args, side).resolve())
        child = subprocess.Popen([sys.executable, "-c", _CHILD, root, str(HERE), str(args.n), ",".join(args.kernels)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = json.loads(child.stdout.readline())
        if first["missing"]:
            raise SystemExit(f"{root}: extract never called {first['missing']}")
        children[side] = child
    times = {(k, side): [] for k in args.kernels for side in children}
    for _ in range(1 + max(3, args.rounds)):  # the first round warms up and is not counted
        for kernel in args.kernels:
            for side, child in children.items():
                child.stdin.write(kernel + "\n")
                child.stdin.flush()
                times[kernel, side].append(float(json.loads(child.stdout.readline())["seconds"]))
    for child in children.values():
        child.stdin.close()
        child.wait()
    for kernel in args.kernels:
        a, b = times[kernel, "a"][1:], times[kernel, "b"][1:]
        ratio = statistics.median(x / y for x, y in zip(a, b))
        print(f"{kernel}: A {statistics.median(a) * 1e3:.1f} ms, B {statistics.median(b) * 1e3:.1f} ms, "
              f"A over B {ratio:.2f}x (median of {len(a)} alternated rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
