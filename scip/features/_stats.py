"""Summary statistics of many runs of values at once.

The intensity views (object, edge ring, background-corrected) and the Sobel
gradient of the texture family share one set of statistics; this module
computes them for every object in a few vectorized passes. Values arrive
grouped by object (``seg`` non-decreasing), as :class:`~._objects.Objects`
lists them.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["STATISTICS", "run_bounds", "run_stats"]

#: ``(name, definition template, unit)``; ``{of}`` is filled with what the values are.
STATISTICS: tuple[tuple[str, str, str], ...] = (
    ("mean", "Mean of {of}.", "intensity"),
    ("median", "Median of {of} (linear interpolation, as numpy).", "intensity"),
    ("std", "Population standard deviation (ddof=0) of {of}.", "intensity"),
    ("min", "Minimum of {of}.", "intensity"),
    ("max", "Maximum of {of}.", "intensity"),
    ("lower_quartile", "25th percentile of {of} (linear interpolation, as numpy).", "intensity"),
    ("upper_quartile", "75th percentile of {of} (linear interpolation, as numpy).", "intensity"),
    ("sum", "Sum (integrated value) of {of}.", "intensity"),
    ("mad", "Median absolute deviation of {of} from their median (unscaled).", "intensity"),
    ("skewness", "Biased sample skewness of {of} (scipy.stats.skew); NaN if all are equal.", "1"),
    ("kurtosis", "Biased excess (Fisher) kurtosis of {of} (scipy.stats.kurtosis); NaN if all are equal.", "1"),
)


def run_bounds(seg: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each of the ``n`` runs of a non-decreasing ``seg``."""
    counts = np.bincount(seg, minlength=n).astype(np.intp) if len(seg) else np.zeros(n, np.intp)
    starts = np.zeros(n, np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts, counts


@numba.njit(cache=True, nogil=True)
def _quantile_sorted(x, q):  # pragma: no cover - compiled
    virtual = q * (len(x) - 1)
    below = int(np.floor(virtual))
    frac = virtual - below
    above = min(below + 1, len(x) - 1)
    return x[below] + (x[above] - x[below]) * frac


@numba.njit(cache=True, nogil=True)
def _kth_abs_dev(x, m, k):  # pragma: no cover - compiled
    # |x - m| for sorted x is the merge of two sorted sequences (walking left
    # from the median and right from it); its k-th smallest needs no sort.
    n = len(x)
    right = np.searchsorted(x, m)
    left = right - 1
    value = 0.0
    for _ in range(k + 1):
        if left >= 0 and (right >= n or m - x[left] <= x[right] - m):
            value = m - x[left]
            left -= 1
        else:
            value = x[right] - m
            right += 1
    return value


@numba.njit(cache=True, nogil=True)
def _run_stats(values, starts, counts):  # pragma: no cover - compiled
    n = len(starts)
    out = np.full((n, 11), np.nan)
    eps = np.finfo(np.float64).eps
    for i in range(n):
        c = counts[i]
        if c == 0:
            continue
        x = np.sort(values[starts[i]:starts[i] + c])
        total = 0.0
        for v in x:
            total += v
        mean = total / c
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        for v in x:
            d = v - mean
            d2 = d * d
            m2 += d2
            m3 += d2 * d
            m4 += d2 * d2
        m2 /= c
        m3 /= c
        m4 /= c
        median = _quantile_sorted(x, 0.5)
        # numpy's linear median of the absolute deviations: the mean of the
        # two middle ones for an even count.
        if c % 2 == 1:
            mad = _kth_abs_dev(x, median, c // 2)
        else:
            mad = 0.5 * (_kth_abs_dev(x, median, c // 2 - 1) + _kth_abs_dev(x, median, c // 2))
        out[i, 0] = mean
        out[i, 1] = median
        out[i, 2] = np.sqrt(m2)
        out[i, 3] = x[0]
        out[i, 4] = x[c - 1]
        out[i, 5] = _quantile_sorted(x, 0.25)
        out[i, 6] = _quantile_sorted(x, 0.75)
        out[i, 7] = total
        out[i, 8] = mad
        # scipy.stats' test for "all values equal" (current scipy uses eps;
        # older releases used the coarser finfo resolution, 1e-15).
        if m2 > (eps * mean) ** 2:
            out[i, 9] = m3 / m2**1.5
            out[i, 10] = m4 / m2**2 - 3.0
    return out


def run_stats(values: np.ndarray, seg: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """The :data:`STATISTICS` of each run of ``values``.

    Parameters
    ----------
    values : ndarray of float
        Values grouped by run.
    seg : ndarray of intp
        Run (0 .. n-1) of each value, non-decreasing.
    n : int
        Number of runs; runs without values get NaN for every statistic
        (``sum`` included: a region without pixels has no value to report).

    Returns
    -------
    dict of str to ndarray of float64, each of length ``n``.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    starts, counts = run_bounds(np.asarray(seg, dtype=np.intp), n)
    table = _run_stats(values, starts, counts)
    return {name: table[:, k] for k, (name, _, _) in enumerate(STATISTICS)}
