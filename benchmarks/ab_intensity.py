"""Before/after timing of the intensity family's compute and its edge ring kernel, alternated in one process.

Another checkout's ``scip/features/intensity.py`` is loaded as a module of
this checkout's ``scip.features`` package (so it uses this checkout's
``_stats``, ``_objects`` and ``_jit``: compare revisions where those agree),
and both ``compute`` functions run on the same :class:`Objects` of the
synthetic mosaic of ``bench_features.py``, whose grouping, coordinates and
channel values are computed once and shared. The per-pixel object index
(``Objects.seg``) is dropped before each call of A, so a compute that reads
it pays for it as it would in ``extract``. The outputs are checked equal bit
for bit first. The edge kernels are timed with the arguments each one takes
(6: before session 15, a mask; 7: the positions).

Usage::

    python benchmarks/ab_intensity.py --a /path/to/before [--n 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scip.features import FeatureParams, _check_inputs, intensity  # noqa: E402  (before bench_features)
from scip.features._objects import Objects  # noqa: E402

from _timing import alternate, load_module  # noqa: E402
from bench_features import synthetic_mosaic  # noqa: E402


def _edge_call(module, o: Objects):
    """A no-argument call of ``module._edge_pixels`` for the width-1 ring of ``o``."""
    kernel = module._edge_pixels
    args = (o.labels, o.groups.index, 1, np.zeros((1, 1), bool), False)
    if kernel.py_func.__code__.co_argcount == 7:
        at = np.empty(o.groups.index.size, np.int64)
        return lambda: kernel(*args, np.empty(0, np.uint8), at)
    return lambda: kernel(*args, np.empty(o.labels.size, np.uint8))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout A (e.g. before)")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    old = load_module("scip.features._intensity_a", args.a / "scip" / "features" / "intensity.py")
    px, lab = synthetic_mosaic(args.n, seed=0)
    pxc, labc, names, bg = _check_inputs(px, lab, None, None)
    o = Objects(pxc, labc, bg, tuple(names))
    o.rows, o.channel_values, o.local_centroid  # shared by both, computed once
    params = FeatureParams()

    def run_a():
        o.__dict__.pop("seg", None)
        return old.compute(o, params)

    def run_b():
        return intensity.compute(o, params)

    a, b = run_a(), run_b()
    if a.keys() != b.keys():
        raise SystemExit("the two computes give different columns")
    for key in a:
        if not np.array_equal(a[key].view(np.uint64), b[key].view(np.uint64)):
            raise SystemExit(f"{key} differs")
    funcs = {"compute A": run_a, "compute B": run_b, "edge ring A": _edge_call(old, o),
             "edge ring B": _edge_call(intensity, o)}
    for name, timing in alternate(funcs, args.rounds).items():
        print(f"{name:12s} median {timing.median * 1e3:7.1f} ms   rounds "
              + " ".join(f"{t * 1e3:.0f}" for t in timing.times))
    print(f"A {old.__file__}\nB {intensity.__file__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
