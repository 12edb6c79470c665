"""Selection-based run statistics against numpy/scipy on awkward runs."""

import numba
import numpy as np
import pytest
import scipy.stats

from scip.features import _stats
from scip.features._stats import run_stats


# The helpers have no Python wrapper (scip.features._jit); these compiled calls reach them.
@numba.njit
def _run_stats_sorted(x, out, row):
    _stats._run_stats_sorted(x, out, row)


@numba.njit
def _heapsort(a, lo, hi):
    _stats._heapsort(a, lo, hi)


@numba.njit
def _sort_nan_last(a, n):
    return _stats._sort_nan_last(a, n)


@numba.njit
def _first_not_before(x, m):
    return _stats._first_not_before(x, m)



@numba.njit
def _select_many(a, pos):
    vals = np.empty(len(pos))
    _stats._select_many(a, len(a), pos, vals)
    return vals


@pytest.mark.parametrize("kind", ["floats", "ties", "two-valued"])
def test_select_many_gives_the_order_statistics(kind):
    # Positions as run_stats asks for them (pairs, repeats, both ends) and at random.
    rng = np.random.default_rng(23)
    for n in (1, 2, 5, 17, 100, 1001):
        x, _ = _runs(rng, [n], kind)
        for pos in ([0, 0, 0], [n - 1, n - 1], [0, n - 1], sorted({0, n // 4, n // 4 + 1, n // 2, n - 1}),
                    np.sort(rng.integers(0, n, 6))):
            pos = np.minimum(np.asarray(pos, np.intp), n - 1)
            a = x.copy()
            np.testing.assert_array_equal(_select_many(a, pos), np.sort(x)[pos])
            np.testing.assert_array_equal(np.sort(a), np.sort(x))  # reordered, nothing lost


def _runs(rng, lengths, kind):
    parts = []
    for n in lengths:
        if kind == "ties":
            parts.append(rng.integers(0, 4, n).astype(np.float64))
        elif kind == "counts":
            parts.append(rng.poisson(200, n).astype(np.float64))
        elif kind == "sorted":
            parts.append(np.sort(rng.normal(size=n)))
        elif kind == "reversed":
            parts.append(np.sort(rng.normal(size=n))[::-1].copy())
        elif kind == "constant":
            parts.append(np.full(n, 3.25))
        elif kind == "two-valued":
            parts.append(rng.integers(0, 2, n).astype(np.float64) * 7.5 - 2.0)
        elif kind == "cauchy":
            parts.append(rng.standard_cauchy(n))
        elif kind == "skewed":
            parts.append(rng.lognormal(0.0, 2.0, n))
        elif kind == "v-shaped":
            parts.append(np.abs(np.sort(rng.normal(size=n))))
        elif kind == "hot":  # a narrow spread and one pixel far above it (the histogram's buckets crowd)
            x = rng.normal(100.0, 3.0, n).round()
            x[:1] = 65535.0
            x = rng.permutation(x)
            parts.append(x)
        elif kind == "huge":  # a range beyond float64's: no finite bucket scale
            x = rng.normal(size=n)
            if n >= 8:  # not next to a quartile: numpy's interpolation would overflow too
                x[:2] = (-1.7e308, 1.7e308)
            parts.append(rng.permutation(x))
        elif kind == "narrow":  # values a few ulps apart: buckets narrower than the spacing
            parts.append(1e6 + rng.integers(0, 5, n) * np.spacing(1e6))
        elif kind == "blank":  # mostly the minimum, as a blank background
            parts.append(np.where(rng.random(n) < 0.7, 0.0, rng.random(n)))
        else:
            parts.append(rng.normal(size=n) * 10.0 ** rng.integers(-3, 4))
    seg = np.repeat(np.arange(len(lengths)), lengths)
    return np.concatenate(parts), seg


@pytest.mark.parametrize("kind", ["ties", "counts", "sorted", "reversed", "constant", "floats", "two-valued", "cauchy",
                                  "skewed", "v-shaped", "hot", "huge", "narrow", "blank"])
def test_order_statistics_match_numpy(kind):
    rng = np.random.default_rng(7)
    lengths = [1, 2, 3, 4, 5, 0, 16, 17, 18, 33, 64, 65, 100, 257, 1000, 1001, 4096]
    lengths += list(rng.integers(1, 3000, 40))
    values, seg = _runs(rng, lengths, kind)
    stats = run_stats(values, seg, len(lengths))
    start = 0
    for i, n in enumerate(lengths):
        x = values[start:start + n]
        start += n
        if n == 0:
            assert all(np.isnan(v[i]) for v in stats.values())
            continue
        # exact: selection returns the very order statistics a sort gives
        assert stats["min"][i] == x.min() and stats["max"][i] == x.max()
        s = np.sort(x)
        for q, name in ((0.25, "lower_quartile"), (0.5, "median"), (0.75, "upper_quartile")):
            v = q * (n - 1)
            b = int(np.floor(v))
            a = min(b + 1, n - 1)
            assert stats[name][i] == s[b] + (s[a] - s[b]) * (v - b)
            assert stats[name][i] == pytest.approx(np.quantile(x, q), rel=1e-14, abs=1e-300)
        med = stats["median"][i]
        assert stats["mad"][i] == np.median(np.abs(x - med))
        if kind in ("huge", "narrow"):
            continue  # made for the order statistics; sums in run order (numpy's pairwise) cancel differently
        assert stats["mean"][i] == pytest.approx(x.mean(), rel=1e-12)
        assert stats["sum"][i] == pytest.approx(x.sum(), rel=1e-12)
        assert stats["std"][i] == pytest.approx(x.std(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("kind", ["ties", "counts", "floats"])
def test_selection_path_matches_sorted_path(kind):
    rng = np.random.default_rng(11)
    lengths = list(rng.integers(1, 2000, 30)) + [1, 2, 3]
    values, seg = _runs(rng, lengths, kind)
    stats = run_stats(values, seg, len(lengths))
    start = 0
    for i, n in enumerate(lengths):
        ref = np.full((1, 11), np.nan)
        _run_stats_sorted(np.sort(values[start:start + n]), ref, 0)
        start += n
        for k, name in enumerate(stats):
            if name in ("median", "min", "max", "lower_quartile", "upper_quartile", "mad"):
                assert stats[name][i] == ref[0, k] or (np.isnan(ref[0, k]) and np.isnan(stats[name][i]))
            else:
                # the summation order differs (input vs sorted order): rounding only
                atol = 1e-10 if name in ("skewness", "kurtosis") else 1e-14
                np.testing.assert_allclose(stats[name][i], ref[0, k], rtol=1e-12, atol=atol)


def test_nan_runs_follow_the_sorted_path():
    values = np.array([1.0, np.nan, 3.0, 2.0, 5.0, 4.0])
    seg = np.array([0, 0, 0, 1, 1, 1])
    stats = run_stats(values, seg, 2)
    assert np.isnan(stats["mean"][0]) and np.isnan(stats["median"][0])
    assert stats["min"][0] == 1.0 and np.isnan(stats["max"][0])
    assert stats["median"][1] == 4.0 and stats["mad"][1] == 1.0
    x = np.array([2.0, 5.0, 4.0])
    assert stats["skewness"][1] == pytest.approx(scipy.stats.skew(x), rel=1e-12)


@pytest.mark.parametrize("kind", ["ties", "counts", "floats", "constant", "two-valued", "blank", "sorted", "cauchy"])
def test_own_sorts_and_searches_equal_numpys(kind):
    # The kernels sort, search and take medians with their own code (numba's
    # np.sort and np.median compile anew in every process); numpy is the reference.
    from scip.features.intensity import _run_median

    rng = np.random.default_rng(5)
    lengths = list(rng.integers(0, 300, 40)) + [0, 1, 2, 3]
    values, _ = _runs(rng, lengths, kind)
    values[rng.random(values.size) < 0.01] = np.nan
    values[rng.random(values.size) < 0.01] = np.inf
    values[rng.random(values.size) < 0.01] = -np.inf
    counts = np.array(lengths, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    medians = _run_median(values, starts, counts)
    for i, (s, c) in enumerate(zip(starts, counts)):
        run = values[s:s + c]
        expected = np.median(run) if c else np.nan
        assert medians[i] == expected or (np.isnan(expected) and np.isnan(medians[i]))
        clean = run[~np.isnan(run)].copy()
        _heapsort(clean, 0, clean.size)
        assert np.array_equal(clean, np.sort(run[~np.isnan(run)]))
        mixed = run.copy()
        assert _sort_nan_last(mixed, mixed.size) == clean.size
        assert np.array_equal(mixed, np.sort(run), equal_nan=True)
        for probe in (*run[:3], -1e9, 1e9, np.nan):
            assert _first_not_before(mixed, probe) == np.searchsorted(mixed, probe)


@pytest.mark.parametrize("kind", ["floats", "ties", "cauchy", "skewed"])
def test_runs_with_infinities_match_the_sorted_path(kind):
    # An inf makes the sum infinite (or NaN, with both signs): the MAD's
    # deviations can then be inf, and the selection keeps no lower end for
    # them. The order statistics and, with a finite median, the MAD still
    # equal those of a sort.
    rng = np.random.default_rng(17)
    lengths = [1, 2, 3, 4, 7, 8, 33, 64, 257, 1000, 1001] + list(rng.integers(1, 1500, 20))
    values, seg = _runs(rng, lengths, kind)
    values[rng.random(values.size) < 0.05] = np.inf
    values[rng.random(values.size) < 0.05] = -np.inf
    stats = run_stats(values, seg, len(lengths))
    start = 0
    for i, n in enumerate(lengths):
        x = values[start:start + n]
        start += n
        ref = np.full((1, 11), np.nan)
        _run_stats_sorted(np.sort(x), ref, 0)
        for k, name in enumerate(stats):
            if name in ("median", "min", "max", "lower_quartile", "upper_quartile") or (
                    name == "mad" and np.isfinite(ref[0, 1])):
                assert stats[name][i] == ref[0, k] or (np.isnan(ref[0, k]) and np.isnan(stats[name][i])), (n, name)
        if np.isfinite(stats["median"][i]):
            assert stats["mad"][i] == np.median(np.abs(x - stats["median"][i]))
