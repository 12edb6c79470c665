"""Where the time of a one-thread ``stitch3d`` goes: its stages timed apart.

One stack of ``bench_stitch.py --small`` (20 slices of 2048², ``--depth``
12: few new objects per slice, where Cellpose is fastest), one thread, the
median of ``--repeats`` alternated runs of each stage over the whole stack: validating
the slices (the pass that also gives each slice's label count), counting the
overlaps of each pair of slices, resolving the labels slice by slice, writing
the relabelled slices (into another array: each run reads the input
labels), and the whole call in place.

    python benchmarks/profile_stitch.py --depth 12
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import alternate  # noqa: E402

from scip.segment import stitch  # noqa: E402
from scip.segment._flows_synthetic import cell_stack  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    stack = cell_stack((20, 2048, 2048), 1500, seed=0, depth=args.depth)
    nz = stack.shape[0]
    counts = [stitch._read(stack, z)[1] for z in range(nz)]
    pairs = stitch._measure(stack, 0, nz)

    def resolve() -> list[np.ndarray]:
        luts, label = [], 1
        prev_global, prev_areas = np.zeros(1, np.int64), np.zeros(1, np.int64)
        for pair in pairs:
            lut, label = stitch._resolve(prev_global, prev_areas, pair, 0.25, label)
            luts.append(lut.astype(stack.dtype))
            prev_global, prev_areas = lut, pair.areas
        return luts

    luts = resolve()
    work = stack.copy()

    def whole() -> None:
        work[:] = stack  # the copy is not timed below: only the call
        t = time.perf_counter()
        stitch.stitch3d(work, 0.25, out=work, threads=1)
        whole.times.append(time.perf_counter() - t)

    whole.times = []
    whole()  # compiles
    whole.times = []
    load = os.getloadavg()
    stages = {
        "validate": lambda: [stitch._read(stack, z) for z in range(nz)],
        "overlaps": lambda: [stitch._pair_counts(stack[z], stack[z - 1], counts[z], counts[z - 1])
                             for z in range(1, nz)],
        "resolve": resolve,
        "write": lambda: [stitch._apply(stack[z], luts[z], work[z]) for z in range(nz)],
    }
    for name, timing in alternate(stages, args.repeats).items():
        print(f"{name:9s} {timing.median:.3f} s")
    for _ in range(args.repeats):
        whole()
    print(f"{'in place':9s} {np.median(whole.times):.3f} s  (whole call; runs {np.round(whole.times, 3).tolist()})")
    print(f"load average before {load}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
