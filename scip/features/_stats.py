"""Summary statistics of many runs of values at once.

The intensity views (object, edge ring, background-corrected) and the Sobel
gradient of the texture family share one set of statistics; this module
computes them for every object in a few vectorized passes. Values arrive
grouped by object (``seg`` non-decreasing), as :class:`~._objects.Objects`
lists them.
"""

from __future__ import annotations

import numpy as np

from ._jit import helper, kernel

__all__ = ["STATISTICS", "run_bounds", "run_stats", "stats_by_run"]

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


@helper
def _quantile_sorted(x, q):  # pragma: no cover - compiled
    virtual = q * (len(x) - 1)
    below = int(np.floor(virtual))
    frac = virtual - below
    above = below + 1 if below + 1 < len(x) - 1 else len(x) - 1
    return x[below] + (x[above] - x[below]) * frac


@helper
def _first_not_before(x, m):  # pragma: no cover - compiled
    # np.searchsorted(x, m) for sorted x (NaN last), without compiling numba's searchsorted.
    lo = 0
    hi = len(x)
    while lo < hi:
        mid = (lo + hi) >> 1
        xm = x[mid]
        if xm < m or (m != m and xm == xm):  # xm before m in numpy's sort order (NaN after every number)
            lo = mid + 1
        else:
            hi = mid
    return lo


@helper
def _kth_abs_dev(x, m, k):  # pragma: no cover - compiled
    # |x - m| for sorted x is the merge of two sorted sequences (walking left
    # from the median and right from it); its k-th smallest needs no sort.
    n = len(x)
    right = _first_not_before(x, m)
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


@helper
def _heapsort(a, lo, hi):  # pragma: no cover - compiled
    # Sorts a[lo:hi] (no NaN) in place. Ours rather than ndarray.sort: numba
    # compiles its quicksort anew in every process, about 1.5 CPU seconds of
    # a fresh cache, for a path that only ties and NaN reach.
    n = hi - lo
    start = n // 2 - 1
    end = n
    while end > 1:
        if start >= 0:
            root = start
            start -= 1
        else:
            end -= 1
            v = a[lo]
            a[lo] = a[lo + end]
            a[lo + end] = v
            root = 0
        while 2 * root + 1 < end:
            child = 2 * root + 1
            if child + 1 < end and a[lo + child] < a[lo + child + 1]:
                child += 1
            if a[lo + root] < a[lo + child]:
                v = a[lo + root]
                a[lo + root] = a[lo + child]
                a[lo + child] = v
                root = child
            else:
                break


@helper
def _holds_nan(a, c):  # pragma: no cover - compiled
    for j in range(c):
        if np.isnan(a[j]):
            return True
    return False


@helper
def _sort_nan_last(a, c):  # pragma: no cover - compiled
    """Sort a[:c] in place as np.sort does (NaN last); the number of values that are not NaN."""
    k = np.intp(0)  # a literal 0 costs one more compiled specialization of _heapsort
    for j in range(c):
        v = a[j]
        if v == v:
            a[j] = a[k]
            a[k] = v
            k += 1
    _heapsort(a, np.intp(0), k)
    return k


@helper
def _pivot(a, lo, hi):  # pragma: no cover - compiled
    # Median of the values at a quarter, half and three quarters of a[lo:hi],
    # not at its ends: a run lists an object's pixels row by row, so both ends
    # are rim pixels (dim for intensities, bright for the gradient) and end
    # pivots split it unevenly; and the deviations from the median of a sorted
    # run are V-shaped, where the ends give a pivot near the maximum (session
    # 14, in _select: 1.09x on the object pixels, 1.39x on the Sobel gradient,
    # 1.6x sorted, 2.8x reverse-sorted).
    q = (hi - lo) >> 2
    x0 = a[lo + q]
    x1 = a[(lo + hi) >> 1]
    x2 = a[hi - 1 - q]
    if x1 < x0:
        x0, x1 = x1, x0
    if x2 < x1:
        x1 = x2
        if x1 < x0:
            x1 = x0
    return x1


@helper
def _select(a, lo, hi, k):  # pragma: no cover - compiled
    # Rearrange a[lo:hi] so that a[k] holds the value it would have in sorted
    # order, everything before it in the range no larger and everything after
    # it no smaller. Branch-free Lomuto partitions around a median-of-three
    # pivot; values equal to the pivot are split off when the pivot is the
    # range's minimum, so ties cannot stall it. A range that keeps
    # partitioning badly is finished with a sort.
    # The three values are _pivot's, inside the range rather than at its ends.
    budget = 8
    t = hi - lo
    while t > 1:
        budget += 2
        t >>= 1
    while hi - lo > 16:
        if budget == 0:
            _heapsort(a, lo, hi)
            return
        budget -= 1
        pivot = _pivot(a, lo, hi)
        i = lo
        for j in range(lo, hi):
            v = a[j]
            a[j] = a[i]
            a[i] = v
            i += v < pivot
        if k < i:
            hi = i
        elif i > lo:
            lo = i
        else:
            # the pivot is the minimum: move the values equal to it first
            for j in range(lo, hi):
                v = a[j]
                a[j] = a[i]
                a[i] = v
                i += v <= pivot
            if k < i:
                return
            lo = i
    for i in range(lo + 1, hi):
        v = a[i]
        j = i - 1
        while j >= lo and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@helper
def _range_max(a, lo, hi):  # pragma: no cover - compiled
    m = a[lo]
    for j in range(lo + 1, hi):
        if a[j] > m:
            m = a[j]
    return m


@helper
def _select_many(a, k, pos, vals):  # pragma: no cover - compiled
    """vals[t] = the order statistic pos[t] of a[:k], for non-decreasing pos; reorders a[:k].

    Left to right: each position is selected among the values after the
    last one placed (a partition leaves them there; before the first, all of
    them); a position just after it is their least value, found by one scan.
    """
    prev = -1
    for t in range(len(pos)):
        p = pos[t]
        if p != prev:
            if p == prev + 1:
                best = p
                for j in range(p + 1, k):
                    if a[j] < a[best]:
                        best = j
                v = a[p]
                a[p] = a[best]
                a[best] = v
            else:
                _select(a, np.intp(prev + 1), k, p)
            prev = p
        vals[t] = a[p]


#: Most buckets of the histogram that narrows :func:`_run_stats`' ranks
#: (256, 1,024, or one bucket a value instead of one per two: within 2 % on
#: the benchmark's object pixels and Sobel gradient, session 16).
_BUCKETS = 512


@helper
def _run_stats_sorted(x, out, i):  # pragma: no cover - compiled
    # The reference path on a sorted copy; used for runs holding a NaN, whose
    # order statistics follow numpy's sort (NaN last).
    c = len(x)
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
    _shape_moments(out, i, mean, m2, m3, m4)


# A module constant, which numba freezes into the code: np.finfo inside a
# compiled function is two more numba overloads to compile on an empty cache.
_EPS = float(np.finfo(np.float64).eps)


@helper
def _shape_moments(out, i, mean, m2, m3, m4):  # pragma: no cover - compiled
    # scipy.stats' test for "all values equal" (current scipy uses eps;
    # older releases used the coarser finfo resolution, 1e-15).
    if m2 > (_EPS * mean) ** 2:
        out[i, 9] = m3 / m2**1.5
        out[i, 10] = m4 / m2**2 - 3.0


@kernel
def _run_stats(values, starts, counts):  # pragma: no cover - compiled
    n = len(starts)
    out = np.empty((n, 11), np.float64)
    out[:] = np.nan
    longest = 0
    for i in range(n):
        if counts[i] > longest:
            longest = counts[i]
    buf = np.empty(longest, np.float64)
    dev = np.empty(longest, np.float64)
    cnt = np.empty(_BUCKETS + 1, np.intp)
    ranks = np.empty(6, np.intp)
    pos = np.empty(6, np.intp)
    vals = np.empty(6, np.float64)
    for i in range(n):
        c = counts[i]
        if c == 0:
            continue
        s = starts[i]
        total = 0.0
        lo = values[s]
        hi = values[s]
        for j in range(c):
            v = values[s + j]
            buf[j] = v
            total += v
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        if np.isnan(total) and _holds_nan(buf, c):  # a NaN sum can also be inf - inf
            _sort_nan_last(buf, c)
            _run_stats_sorted(buf[:c], out, i)
            continue
        mean = total / c
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        # The order statistics' histogram: about one bucket per two values,
        # at most _BUCKETS; none for ties only, a short run, or an infinite
        # or subnormal range (no finite scale).
        nb = 0
        scale = 0.0
        if c > 16 and lo < hi:
            nb = 16
            while nb < _BUCKETS and 2 * nb <= c:
                nb <<= 1
            scale = nb / (hi - lo)
            if not 0.0 < scale < np.inf:
                nb = 0
        if nb:
            for b in range(nb + 1):
                cnt[b] = 0
            # The histogram in the moments' pass: its increments fill the time
            # the moments' chains of additions wait. Bucket nb: hi's, when
            # rounding puts it there (a clamp here is a branch that two-valued
            # data mispredicts).
            for j in range(c):
                v = buf[j]
                d = v - mean
                d2 = d * d
                m2 += d2
                m3 += d2 * d
                m4 += d2 * d2
                cnt[np.intp((v - lo) * scale)] += 1
            cnt[nb - 1] += cnt[nb]
        else:
            for j in range(c):
                d = buf[j] - mean
                d2 = d * d
                m2 += d2
                m3 += d2 * d
                m4 += d2 * d2
        m2 /= c
        m3 /= c
        m4 /= c
        v_l = 0.25 * (c - 1)
        v_m = 0.5 * (c - 1)
        v_u = 0.75 * (c - 1)
        bl = int(np.floor(v_l))
        bm = int(np.floor(v_m))
        bu = int(np.floor(v_u))
        last = c - 1
        ranks[0] = bl
        ranks[1] = bl + 1 if bl < last else last
        ranks[2] = bm
        ranks[3] = bm + 1 if bm < last else last
        ranks[4] = bu
        ranks[5] = bu + 1 if bu < last else last
        if not lo < hi:  # ties only: every order statistic is the one value
            for t in range(6):
                vals[t] = lo
        elif c <= 16:  # _select sorts a range this short outright (and ranks[1] > ranks[2] for c = 2)
            for j in range(c):
                dev[j] = buf[j]
            _select(dev, np.intp(0), c, np.intp(0))
            for t in range(6):
                vals[t] = dev[ranks[t]]
        else:
            # The ranks' buckets of the histogram (nb > 0) keep a few dozen
            # of ~1,100 values for a benchmark cell; the ranks are selected
            # among those alone. A value's bucket is a monotone function of
            # it, so the buckets in order hold the values in order. Quickselect
            # over the whole run took ~3 partition passes whose every step
            # waits on the last one's write position: the object pixels of
            # one channel of the 5,000-cell mosaic, 47.8 -> 26.5 ms for all
            # statistics (benchmarks/ab_stats.py, session 16).
            kept = c
            if nb:
                # marks the ranks' buckets by a negative count; pos[t], the
                # rank's place among the values kept (their buckets in order)
                below = 0
                kept = 0
                t = 0
                for b in range(nb):
                    n_b = cnt[b]
                    if ranks[t] < below + n_b:
                        while t < 6 and ranks[t] < below + n_b:
                            pos[t] = ranks[t] - below + kept
                            t += 1
                        kept += n_b
                        cnt[b] = -1
                        if t == 6:
                            break
                    below += n_b
                cnt[nb] = cnt[nb - 1]
            if kept > c >> 2:
                # No histogram (an infinite range), or ties or a heavy tail
                # crowd the ranks' buckets (two-valued data, a hot pixel far
                # from the rest): select among all values.
                kept = c
                for j in range(c):
                    dev[j] = buf[j]
                for t in range(6):
                    pos[t] = ranks[t]
            else:
                k = 0
                for j in range(c):
                    v = buf[j]
                    dev[k] = v
                    k += cnt[np.intp((v - lo) * scale)] < 0
            _select_many(dev, kept, pos, vals)
        # linear interpolation below + (above - below) * fraction, as numpy
        lq = vals[0] + (vals[1] - vals[0]) * (v_l - bl)
        median = vals[2] + (vals[3] - vals[2]) * (v_m - bm)
        uq = vals[4] + (vals[5] - vals[4]) * (v_u - bu)
        # numpy's linear median of the absolute deviations: the mean of the
        # two middle ones for an even count (order statistics half - 1 and
        # half). The order statistics between the quartile positions (more
        # than half of the values) all lie within ``reach`` of the median, so
        # the deviations up to the middle one are no larger than ``reach``.
        # And fewer than half of the values lie strictly between the two
        # quartile order statistics, where every deviation smaller than
        # ``inner`` (the nearer quartile's) must lie: so the middle ones are
        # no smaller than ``inner``. Only the deviations in [inner, reach]
        # need selecting; for a symmetric run that is a few values instead of
        # over half of them.
        half = c // 2
        lower = median - vals[0]
        upper = vals[4] - median
        reach = lower
        inner = upper
        if upper > reach:  # as max(): the second only when it is greater
            reach = upper
            inner = lower
        if not np.isfinite(total):
            # an inf among the values: deviations can be NaN; no lower end, as before
            inner = -np.inf
        m = 0
        below = 0
        for j in range(c):
            d = abs(buf[j] - median)
            dev[m] = d
            m += (d >= inner) & (d <= reach)
            below += d < inner
        k = half - below  # the rank of the middle one among those kept
        if m <= k or k < (c % 2 == 0):  # not kept after all (NaN): select among all
            m = c
            k = half
            inner = -np.inf  # and no shortcut below
            for j in range(c):
                dev[j] = abs(buf[j] - median)
        if inner == reach:  # every deviation kept equals reach (a constant run, say): nothing to select
            mad = reach if c % 2 == 1 else 0.5 * (reach + reach)
        else:
            _select(dev, np.intp(0), m, k)
            if c % 2 == 1:
                mad = dev[k]
            else:
                mad = 0.5 * (_range_max(dev, np.intp(0), k) + dev[k])
        out[i, 0] = mean
        out[i, 1] = median
        out[i, 2] = np.sqrt(m2)
        out[i, 3] = lo
        out[i, 4] = hi
        out[i, 5] = lq
        out[i, 6] = uq
        out[i, 7] = total
        out[i, 8] = mad
        _shape_moments(out, i, mean, m2, m3, m4)
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
    return stats_by_run(values, *run_bounds(np.asarray(seg, dtype=np.intp), n))


def stats_by_run(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """As :func:`run_stats`, for runs given by their ``starts`` and ``counts`` (intp).

    For callers that know the runs already (the objects' pixel groups): no
    count of a per-value run index, a pass over every value, each call.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    table = _run_stats(values, starts, counts)
    return {name: table[:, k] for k, (name, _, _) in enumerate(STATISTICS)}
