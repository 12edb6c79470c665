"""Before/after: the order statistics (``_stats._run_stats``) of two checkouts, loaded side by side, alternated.

Inputs: the runs ``extract`` gives ``stats_by_run`` on the synthetic mosaic of
``bench_features.py`` (object pixels, edge ring and Sobel gradient of channel
0, and the background band's pixels), then runs of 1,100 values drawn from
distributions that are hard on selection (heavy-tailed, constant,
two-valued, few distinct values, sorted, reverse-sorted, lognormal). Each
set is first checked bit for bit equal between A and B (every statistic,
NaN included), then timed A, B, A, B, ... (``--rounds``); the ratio is A's
median over B's. Then the same for the background median
(``intensity._run_median``), which uses ``_stats``' selection: each
checkout's ``intensity.py`` is loaded with its ``_stats`` import pointed at
that checkout's ``_stats`` (rewritten into a temporary copy).

    python benchmarks/ab_stats.py --a /work/main --b . [--n 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from _timing import alternate, load_module


def _inputs(n: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from bench_features import synthetic_mosaic
    from scip.features import FeatureParams, _check_inputs, intensity
    from scip.features._glcm import sobel_runs
    from scip.features._objects import Objects
    from scip.features._stats import run_bounds

    px, lab = synthetic_mosaic(n, seed=0)
    pxc, labc, names, bg = _check_inputs(px, lab, None, None)
    o = Objects(pxc, labc, bg, tuple(names))
    at = np.empty(o.groups.index.size, np.int64)
    n_edge = intensity._edge_pixels(o.labels, o.groups.index, 1, np.zeros((1, 1), bool), False,
                                    np.empty(0, np.uint8), at)
    edge = at[:n_edge]  # positions: indexing by them picks what the mask did
    values = np.ravel(pxc[0])[o.groups.index].astype(np.float64)
    starts, counts = run_bounds(o.seg, len(o))
    edge_starts, edge_counts = run_bounds(o.seg[edge], len(o))
    band, band_seg = intensity._background_band(o, FeatureParams().background_width)
    band_starts, band_counts = run_bounds(band_seg, len(o))
    grad = np.empty(o.rows.shape[0])
    sobel_runs(np.ascontiguousarray(pxc[0], dtype=np.float64), o.rows, o.cols, grad)
    sets = {
        "object pixels": (values, starts, counts),
        "edge pixels": (values[edge], edge_starts, edge_counts),
        "Sobel gradient": (grad, starts, counts),
        "background band": (np.ravel(pxc[0])[band].astype(np.float64), band_starts, band_counts),
    }
    rng = np.random.default_rng(3)
    length, runs = 1100, 1500
    draws = {
        "normal": lambda: rng.normal(size=length),
        "cauchy": lambda: rng.standard_cauchy(length),
        "lognormal": lambda: rng.lognormal(0.0, 3.0, length),
        "constant": lambda: np.full(length, 3.25),
        "two-valued": lambda: rng.integers(0, 2, length).astype(np.float64),
        "four values": lambda: rng.integers(0, 4, length).astype(np.float64),
        "sorted": lambda: np.sort(rng.normal(size=length)),
        "reverse-sorted": lambda: np.sort(rng.normal(size=length))[::-1],
    }
    run_counts = np.full(runs, length, np.intp)
    run_starts = np.arange(runs, dtype=np.intp) * length
    for name, draw in draws.items():
        sets[name] = (np.concatenate([draw() for _ in range(runs)]), run_starts, run_counts)
    return sets


def _compare(fa, fb, sets: dict, rounds: int) -> None:
    """Per set: A's and B's results checked bit for bit equal, then timed alternated; one line each."""
    for name, (values, starts, counts) in sets.items():
        values = np.ascontiguousarray(values, dtype=np.float64)
        starts, counts = starts.astype(np.int64), counts.astype(np.int64)
        out_a, out_b = fa(values, starts, counts), fb(values, starts, counts)
        if not np.array_equal(out_a.view(np.int64), out_b.view(np.int64)):
            raise SystemExit(f"{name}: A's and B's results differ")
        t = alternate({"a": lambda: fa(values, starts, counts), "b": lambda: fb(values, starts, counts)}, rounds)
        ma, mb = t["a"].median, t["b"].median
        print(f"{name:18s} {values.size:9d} {ma * 1e3:8.2f} {mb * 1e3:8.2f} {ma / mb:6.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (before)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (after)")
    parser.add_argument("--n", type=int, default=5000, help="cells of the mosaic")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    # Modules loaded under other names than their own must not share numba's cache with them.
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="ab_stats_numba_")
    # Both import scip.features._jit (the decorators) relatively: from the scip on the path.
    a = load_module("scip.features._stats_a", args.a.resolve() / "scip" / "features" / "_stats.py")
    b = load_module("scip.features._stats_b", args.b.resolve() / "scip" / "features" / "_stats.py")
    print("load average", os.getloadavg())
    print(f"{'runs':18s} {'values':>9s} {'A ms':>8s} {'B ms':>8s} {'A/B':>6s}")
    sets = _inputs(args.n)
    _compare(a._run_stats, b._run_stats, sets, args.rounds)
    medians = {}
    for key, checkout in (("a", args.a), ("b", args.b)):
        source = (checkout.resolve() / "scip" / "features" / "intensity.py").read_text()
        copy = Path(os.environ["NUMBA_CACHE_DIR"]) / f"intensity_{key}.py"
        copy.write_text(source.replace("from ._stats import", f"from scip.features._stats_{key} import"))
        medians[key] = load_module(f"scip.features._intensity_{key}", copy)._run_median
    print("background median (intensity._run_median)")
    _compare(medians["a"], medians["b"], sets, args.rounds)
    print("bit for bit equal: every set; load average", os.getloadavg())


if __name__ == "__main__":
    main()
