"""Alternated A/B of the texture kernels of two checkouts, on the synthetic mosaic of ``bench_features.py``.

Two stages, each with the inputs ``features.extract`` gives it: ``_glcm.haralick_runs`` (3 channels,
2 distances x 4 directions, 32 levels) and ``_glcm.sobel_runs`` over the row bands of
``texture._sobel_stats`` (3 channels; the float32 -> float64 conversion of each band included, the
order statistics not). Both checkouts' ``_glcm.py`` are loaded into one process (the rest of
``scip`` comes from this checkout), their outputs compared bitwise, then each (stage, checkout) runs
once per round, the order rotating from round to round; medians and the per-round ratio A/B.

Usage::

    python benchmarks/ab_texture_kernels.py --a /path/to/before [--b .] [--n 5000] [--rounds 9]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _timing import load_module  # noqa: E402
from bench_features import synthetic_mosaic  # noqa: E402
from scip.features import FeatureParams, _check_inputs, texture  # noqa: E402
from scip.features._glcm import log2_table  # noqa: E402
from scip.features._objects import Objects  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True)
    parser.add_argument("--b", type=Path, default=HERE.parent)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    mods = {"A": load_module("scip.features._glcm_a", args.a / "scip/features/_glcm.py"),
            "B": load_module("scip.features._glcm_b", args.b / "scip/features/_glcm.py")}
    px, lab = synthetic_mosaic(args.n, seed=0)
    pxc, labc, names, bg = _check_inputs(px, lab, None, None)
    objects = Objects(pxc, labc, bg, tuple(names))
    g = objects.groups
    params = FeatureParams()
    n_ch = pxc.shape[0]
    table = log2_table(min(2 * int(g.counts.max()) + 1, 1 << 22))
    hargs = (objects.channel_values, g.starts, g.counts, g.index, int(labc.shape[-1]),
             texture.offsets(params.distances), int(params.gray_levels), np.zeros(n_ch), np.zeros(n_ch), False, table)
    bands = texture._row_bands(objects)
    if bands is None:
        raise SystemExit("no row bands on this scene")
    starts, counts, rows, cols = g.starts, g.counts, objects.rows, objects.cols
    band = np.empty((max(r1 - r0 for _, _, r0, r1 in bands), pxc.shape[2]), np.float64)
    grads = {k: np.empty(rows.shape[0]) for k in mods}

    def sobel(kernel, out):
        for c in range(n_ch):
            image = pxc[c]
            for start, end, r0, r1 in bands:
                a = int(starts[start])
                b = int(starts[end - 1] + counts[end - 1])
                part = band[:r1 - r0]
                np.copyto(part, image[r0:r1])
                kernel(part, rows[a:b] - r0, cols[a:b], out[a:b])

    funcs = {}
    for k, m in mods.items():
        funcs[("haralick_runs", k)] = lambda m=m: m.haralick_runs(*hargs)
        funcs[("sobel_runs, bands", k)] = lambda m=m, k=k: sobel(m.sobel_runs, grads[k])
    results = {key: f() for key, f in funcs.items()}  # warm-up (compiles) and the outputs
    same_h = np.array_equal(results[("haralick_runs", "A")].view(np.int64), results[("haralick_runs", "B")].view(np.int64))
    same_s = np.array_equal(grads["A"].view(np.int64), grads["B"].view(np.int64))
    print(f"bitwise equal: haralick_runs {same_h}, sobel_runs {same_s}")
    keys = list(funcs)
    times: dict = {key: [] for key in keys}
    for r in range(args.rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter()
            funcs[key]()
            times[key].append(time.perf_counter() - t0)
    for stage in ("haralick_runs", "sobel_runs, bands"):
        a, b = times[(stage, "A")], times[(stage, "B")]
        ratios = [x / y for x, y in zip(a, b)]
        print(f"{stage:18s} A {statistics.median(a) * 1e3:7.1f} ms  B {statistics.median(b) * 1e3:7.1f} ms  "
              f"A/B per round: median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    return 0 if same_h and same_s else 1


if __name__ == "__main__":
    sys.exit(main())
