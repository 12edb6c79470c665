"""Before/after: ``compute_masks`` of two checkouts, loaded side by side, alternated on the same flows.

Each ``--inputs`` file is an ``.npz`` with ``dP`` and ``cellprob`` (``bench_flows.py``'s inputs,
saved). The masks of both are checked equal first; then ``--n`` alternated runs (A, B, A, B, ...)
on one thread, medians of wall time and of the thread's CPU time printed.

    python benchmarks/ab_flows.py --a /work/main --b . --inputs synth2048.npz model2048.npz --n 5
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _timing import load_module


def _load(name: str, checkout: Path):
    return load_module(name, checkout / "scip" / "segment" / "flows.py")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (before)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (after)")
    parser.add_argument("--inputs", type=Path, nargs="+", required=True)
    parser.add_argument("--n", type=int, default=5)
    args = parser.parse_args(argv)
    # Modules loaded under other names than their own must not share numba's cache with them.
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="ab_flows_numba_")
    a, b = _load("flows_a", args.a.resolve()), _load("flows_b", args.b.resolve())
    print("load average", os.getloadavg())
    for path in args.inputs:
        data = np.load(path)
        dP, cellprob = data["dP"], data["cellprob"]
        if not np.array_equal(a.compute_masks(dP, cellprob), b.compute_masks(dP, cellprob)):
            raise SystemExit(f"{path}: the masks differ")
        times = {"a": [], "b": []}
        cpu = {"a": [], "b": []}
        for _ in range(args.n):
            for key, module in (("a", a), ("b", b)):
                start, start_cpu = time.perf_counter(), time.thread_time()
                module.compute_masks(dP, cellprob)
                cpu[key].append(time.thread_time() - start_cpu)
                times[key].append(time.perf_counter() - start)
        ma, mb = np.median(times["a"]), np.median(times["b"])
        print(f"{path}: A {ma:.4f} s, B {mb:.4f} s, A/B {ma / mb:.2f}, masks identical; runs "
              f"A {[round(t, 4) for t in times['a']]} B {[round(t, 4) for t in times['b']]}")
        # CPU time of this (the only) thread: on a shared host it moves less with the other jobs' load.
        ca, cb = np.median(cpu["a"]), np.median(cpu["b"])
        print(f"  CPU: A {ca:.4f} s, B {cb:.4f} s, A/B {ca / cb:.2f}; runs "
              f"A {[round(t, 4) for t in cpu['a']]} B {[round(t, 4) for t in cpu['b']]}")
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
