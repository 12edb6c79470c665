"""Exact dataset-wide quantiles of values spread over many partitions.

The result is *identical* (``==``, not approximately equal) to
``np.quantile(np.concatenate(parts), qs)`` with numpy's default ``'linear'``
method, where ``parts`` are the partitions' values converted to float64 with
NaN removed; yet the driver never holds more than ``max_values`` of the values
at once. The values can be hundreds of millions of pixels.

How it works
------------
``'linear'`` needs, for each ``q``, the order statistics of rank
``floor(q (n - 1))`` and the one after (0-based, in sorted order); the
quantile is then numpy's own interpolation between the two, done here with
the same float operations in the same order as numpy, hence the same bits.
:class:`QuantileSearch` finds those order statistics in rounds; each round is
one pass over every partition:

1. Every value is mapped to a *key*: a ``uint64`` whose unsigned order is the
   order of the float64 values (the IEEE bit pattern, sign-flipped). Keys are
   exact integers, so the bin of a value is integer arithmetic on its key
   (``(key >> shift) - (lo >> shift)``): every partition computes the very
   same bin for the same value, and the values of a bin are exactly the keys
   in a known integer range; nothing is lost at a bin edge.
2. Round 1 is a histogram over all keys from -inf to +inf with ``B = 2**12``
   bins: one bin per sign and binade (power of two) of the values. It also
   yields ``n`` (the sum of the counts), hence the ranks that are needed.
3. Each partition reports, per bin, the count and the smallest and largest key
   in the bin. The driver locates the bin of each needed rank from the
   cumulative counts. A rank that is the first or the last of its bin, or
   whose bin holds only one distinct value (ties), is known at once. Other
   ranks leave an *interval* to search: the keys from the bin's smallest to
   its largest, its count, and how many values lie below it.
4. Next round, an interval holding few enough values is *collected*: every
   partition sends its values in that interval, the driver sorts them and
   reads the ranks. Larger intervals get another ``B``-bin histogram over
   their keys, which narrows them by a factor of about ``B / 2`` per round
   (within one binade, bins are equally wide in value). Intervals are
   collected smallest first while the round's total stays within
   ``max_values``.

Typical runs: round 1 (binades), then one collect round when the binades
holding the needed ranks have at most ``max_values`` values together (e.g.
1e6 floats: 2 rounds); for larger data one more histogram round first (e.g.
1e8 floats: 3 rounds). Integer-valued data (uint16 images) usually finishes
in 2 rounds whatever its size: inside a binade ``[2**e, 2**(e+1))`` with
``e <= 12`` the second histogram has one bin per integer, so every rank lands
in a bin of a single value. A search always ends: a key range shrinks
``B / 2``-fold per histogram round and a range of one key is a single value,
so never more than about 7 rounds, even with ``max_values=0``.

Memory: the driver holds at most ``max_values`` collected values per round,
plus ``3 * B`` numbers per interval being searched (at most one interval
per needed rank, so at most ``2 * len(qs)``). A partition's summary
(:class:`Partial`) has that same size (about 100 kB per histogram interval),
whatever the partition's size, plus collected values, which are bounded by
``max_values`` summed over all partitions of the round.

Conventions
-----------
* NaN values are ignored (as :func:`numpy.nanquantile` does); ``+-inf`` are
  ordinary values (with numpy's arithmetic, a quantile interpolated between
  ``inf`` and ``inf`` is NaN, exactly as in :func:`numpy.quantile`).
* Values of any real dtype are converted to float64 first. For float64 and
  integer dtypes up to 32 bits this gives the same result as ``np.quantile``
  on the original array; for float32 or 64-bit integers the result is that of
  ``np.quantile`` on the float64 values.
* ``-0.0`` is counted as ``+0.0`` (they compare equal).
* With no values at all (every partition empty or NaN), every quantile is NaN.
* Partitions must hold the same values in every round (persist them when they
  come from a Dask graph); :meth:`QuantileSearch.update` raises when counts do
  not add up across rounds.

Everything here is pure numpy; the Dask driver loop is, in essence::

    search = QuantileSearch(qs)
    while (request := search.request()) is not None:
        partials = [delayed(QuantileSearch.partial)(request, part) for part in parts]
        search.update(tree_reduce(QuantileSearch.combine, partials).compute())
    search.result
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import numpy as np

__all__ = [
    "Interval",
    "Request",
    "Summary",
    "Partial",
    "QuantileSearch",
    "exact_quantiles",
    "to_keys",
    "from_keys",
]

_SIGN = 1 << 63
_ALL = (1 << 64) - 1
_U64_MAX = np.uint64(_ALL)


def to_keys(values: np.ndarray) -> np.ndarray:
    """``uint64`` keys ordered as the float64 ``values`` (raveled); NaN keys lie beyond ``+-inf``.

    Non-negative floats get their bit pattern with the sign bit set; negative
    ones the complement of their bit pattern. ``-0.0`` becomes ``+0.0`` first.
    """
    # One pass converts to a private float64 copy and turns -0.0 into +0.0.
    x = np.add(np.ravel(values), 0.0, dtype=np.float64)
    u = x.view(np.uint64)
    flip = (x.view(np.int64) >> 63).view(np.uint64)  # all ones where negative, else 0
    flip |= np.uint64(_SIGN)
    u ^= flip
    return u


def from_keys(keys: np.ndarray) -> np.ndarray:
    """The float64 values of ``uint64`` keys (inverse of :func:`to_keys`)."""
    k = np.asarray(keys, dtype=np.uint64)
    negative = (k >> np.uint64(63)) == 0
    bits = np.where(negative, ~k, k ^ np.uint64(_SIGN))
    return bits.view(np.float64)


def _key_of(value: float) -> int:
    return int(to_keys(np.array([value]))[0])


_KEY_NEG_INF = _key_of(-np.inf)
_KEY_POS_INF = _key_of(np.inf)


class Interval(NamedTuple):
    """A key range ``[lo, hi]`` (inclusive) that every partition summarizes.

    ``collect``: send the keys in the range. Otherwise, a histogram: a key's
    bin is ``(key >> shift) - (lo >> shift)``, out of :attr:`nbins` bins.
    """

    lo: int
    hi: int
    shift: int
    collect: bool

    @property
    def nbins(self) -> int:
        return 1 if self.collect else (self.hi >> self.shift) - (self.lo >> self.shift) + 1


@dataclass(frozen=True)
class Request:
    """What every partition computes in one round: a summary per interval.

    Small (a few integers per interval) and picklable; send the same object
    to every partition of the round.
    """

    round: int
    intervals: tuple[Interval, ...]


@dataclass(frozen=True)
class Summary:
    """One partition's (or several merged partitions') summary of one interval.

    ``counts``, ``lows``, ``highs``: per bin, the number of values and the
    smallest and largest key (``lows`` is ``2**64 - 1`` and ``highs`` 0 where
    a bin is empty). A collect interval has one bin and ``keys``: the keys of
    its values, unsorted; ``keys`` is empty for a histogram.
    """

    counts: np.ndarray
    lows: np.ndarray
    highs: np.ndarray
    keys: np.ndarray


@dataclass(frozen=True)
class Partial:
    """Summaries of one round's intervals, in the order of the request's."""

    round: int
    summaries: tuple[Summary, ...]

    @property
    def n_collected(self) -> int:
        """Number of collected values carried (what the driver gathers)."""
        return sum(int(s.keys.size) for s in self.summaries)


@dataclass
class _Search:
    """Driver state of an interval: where ranks are still unknown."""

    lo: int
    hi: int
    base: int  # number of values with a key below lo
    count: int  # number of values with a key in [lo, hi]
    ranks: tuple[int, ...]


def _histogram_shift(lo: int, hi: int, bins_log2: int) -> int:
    shift = max(0, (hi - lo).bit_length() - bins_log2)
    while (hi >> shift) - (lo >> shift) + 1 > (1 << bins_log2):
        shift += 1
    return shift


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    # numpy.lib._function_base_impl._lerp, operation for operation.
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in numpy
        diff_b_a = b - a
        result = np.add(a, diff_b_a * t)
        np.subtract(b, diff_b_a * (1 - t), out=result, where=t >= 0.5)
    return result


def _linear_indexes(n: int, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Previous and next ranks (0-based) and the weight, as numpy's 'linear' computes them."""
    virtual = (n - 1) * qs
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1
    previous[above] = -1
    following[above] = -1
    below = virtual < 0
    previous[below] = 0
    following[below] = 0
    previous = previous.astype(np.intp)
    following = following.astype(np.intp)
    gamma = np.asarray(virtual - previous, dtype=virtual.dtype)
    # numpy indexes the sorted array with -1 for the last value.
    return previous % n, following % n, gamma


class QuantileSearch:
    """Exact quantiles over partitioned data in a few rounds.

    Drive it with :meth:`request` (``None`` when done), :meth:`partial` on
    every partition, :meth:`combine` of the partials and :meth:`update`; read
    :attr:`result`. See the module docstring.

    Parameters
    ----------
    qs
        Quantiles, each in ``[0, 1]``.
    max_values
        Most values gathered at the driver in one round (in all partials of the
        round together).
    bins
        Histogram bins per searched interval, a power of two >= 4.
    """

    def __init__(self, qs: Sequence[float], max_values: int = 1_000_000, bins: int = 4096):
        qs_arr = np.asarray(qs, dtype=np.float64).ravel()
        if qs_arr.size == 0:
            raise ValueError("no quantiles requested")
        if np.isnan(qs_arr).any() or (qs_arr < 0).any() or (qs_arr > 1).any():
            raise ValueError("quantiles must be in the range [0, 1]")
        if max_values < 0:
            raise ValueError("max_values must be >= 0")
        if bins < 4 or bins & (bins - 1):
            raise ValueError("bins must be a power of two >= 4")
        self._qs = qs_arr
        self.max_values = int(max_values)
        self._bins_log2 = bins.bit_length() - 1
        self._rounds = 0
        self._n: int | None = None
        self._known: dict[int, int] = {}  # rank -> key
        self._searches: list[_Search] = []
        self._request: Request | None = Request(
            round=0,
            intervals=(Interval(_KEY_NEG_INF, _KEY_POS_INF, _histogram_shift(_KEY_NEG_INF, _KEY_POS_INF, self._bins_log2), False),),
        )
        self._result: dict[float, float] | None = None

    # -- driver ---------------------------------------------------------

    def request(self) -> Request | None:
        """This round's request for every partition; ``None`` when the result is known."""
        return self._request

    @property
    def rounds(self) -> int:
        """Rounds (passes over the partitions) done so far."""
        return self._rounds

    @property
    def done(self) -> bool:
        return self._request is None

    @property
    def n(self) -> int | None:
        """Number of (non-NaN) values, known after the first round."""
        return self._n

    @property
    def result(self) -> dict[float, float]:
        """``{q: quantile}``; NaN for every ``q`` when there are no values."""
        if self._result is None:
            raise RuntimeError("the search is not finished: call update() until request() is None")
        return dict(self._result)

    def update(self, combined: Partial) -> None:
        """Take the merged partial of all partitions for the current request."""
        request = self._request
        if request is None:
            raise RuntimeError("the search is finished")
        if combined.round != request.round or len(combined.summaries) != len(request.intervals):
            raise ValueError("partial does not answer the current request")
        if request.round == 0:
            counts = combined.summaries[0].counts
            self._n = int(counts.sum())
            if self._n == 0:
                self._rounds += 1
                self._finish()
                return
            previous, following, _ = _linear_indexes(self._n, self._qs)
            ranks = tuple(sorted(set(previous.tolist()) | set(following.tolist())))
            self._searches = [_Search(_KEY_NEG_INF, _KEY_POS_INF, 0, self._n, ranks)]
        new: list[_Search] = []
        for interval, search, summary in zip(request.intervals, self._searches, combined.summaries):
            total = int(summary.counts.sum())
            if total != search.count:
                raise ValueError(
                    f"interval holds {total} values, expected {search.count}: "
                    "partitions changed between rounds, or a partial is missing or counted twice"
                )
            if interval.collect:
                keys = np.sort(summary.keys)
                if keys.size != search.count:
                    raise ValueError("collected values do not match their count")
                for r in search.ranks:
                    self._known[r] = int(keys[r - search.base])
            else:
                new.extend(self._locate(search, summary))
        self._searches = new
        self._rounds += 1
        if self._rounds > 80:  # a key range halves at least every round: cannot happen
            raise RuntimeError("quantile search makes no progress")
        if new:
            self._plan()
        else:
            self._finish()

    def _locate(self, search: _Search, summary: Summary) -> list[_Search]:
        counts = summary.counts
        ends = np.cumsum(counts)  # ends[j]: values in bins <= j
        pending: dict[int, list[int]] = {}
        for r in search.ranks:
            local = r - search.base
            j = int(np.searchsorted(ends, local, side="right"))
            first = search.base + (int(ends[j - 1]) if j else 0)
            count = int(counts[j])
            low, high = int(summary.lows[j]), int(summary.highs[j])
            if low == high or r == first:
                self._known[r] = low
            elif r == first + count - 1:
                self._known[r] = high
            else:
                pending.setdefault(j, []).append(r)
        out = []
        for j, ranks in pending.items():
            first = search.base + (int(ends[j - 1]) if j else 0)
            out.append(_Search(int(summary.lows[j]), int(summary.highs[j]), first, int(counts[j]), tuple(ranks)))
        return out

    def _plan(self) -> None:
        budget = self.max_values
        collect = [False] * len(self._searches)
        for i in sorted(range(len(self._searches)), key=lambda i: self._searches[i].count):
            if self._searches[i].count <= budget:
                collect[i] = True
                budget -= self._searches[i].count
        intervals = tuple(
            Interval(s.lo, s.hi, 0, True) if c else Interval(s.lo, s.hi, _histogram_shift(s.lo, s.hi, self._bins_log2), False)
            for s, c in zip(self._searches, collect)
        )
        self._request = Request(round=self._rounds, intervals=intervals)

    def _finish(self) -> None:
        self._request = None
        if not self._n:
            self._result = {float(q): float("nan") for q in self._qs}
            return
        previous, following, gamma = _linear_indexes(self._n, self._qs)
        lookup = np.vectorize(lambda r: self._known[int(r)], otypes=[np.uint64])
        a = from_keys(lookup(previous))
        b = from_keys(lookup(following))
        values = _lerp(a, b, gamma)
        self._result = {float(q): float(v) for q, v in zip(self._qs, values)}

    # -- per partition ----------------------------------------------------

    @staticmethod
    def partial(request: Request, values: np.ndarray) -> Partial:
        """Summarize one partition's values (any shape, any real dtype; NaN ignored) for ``request``.

        Pure and deterministic; the result's size does not depend on the
        partition's size, except for collected values (bounded in total by
        ``max_values`` over all partitions of the round).
        """
        keys = to_keys(values)
        summaries = []
        for iv in request.intervals:
            lo, hi = np.uint64(iv.lo), np.uint64(iv.hi)
            inside = keys[(keys >= lo) & (keys <= hi)]
            if iv.collect:
                n = inside.size
                summaries.append(
                    Summary(
                        counts=np.array([n], np.int64),
                        lows=np.array([inside.min() if n else _U64_MAX], np.uint64),
                        highs=np.array([inside.max() if n else 0], np.uint64),
                        keys=inside,
                    )
                )
                continue
            shift = np.uint64(iv.shift)
            index = ((inside >> shift) - (lo >> shift)).astype(np.intp)
            nbins = iv.nbins
            lows = np.full(nbins, _U64_MAX, np.uint64)
            highs = np.zeros(nbins, np.uint64)
            np.minimum.at(lows, index, inside)
            np.maximum.at(highs, index, inside)
            summaries.append(
                Summary(
                    counts=np.bincount(index, minlength=nbins).astype(np.int64, copy=False),
                    lows=lows,
                    highs=highs,
                    keys=np.empty(0, np.uint64),
                )
            )
        return Partial(round=request.round, summaries=tuple(summaries))

    @staticmethod
    def combine(partials: Sequence[Partial]) -> Partial:
        """Merge partials of one round: sum counts, min lows, max highs, concatenate keys.

        Associative and commutative up to the order of collected keys, which
        the driver sorts; accepts merged partials again (tree reductions).
        """
        partials = list(partials)
        if not partials:
            raise ValueError("nothing to combine")
        first = partials[0]
        if any(p.round != first.round or len(p.summaries) != len(first.summaries) for p in partials):
            raise ValueError("partials of different requests")
        if len(partials) == 1:
            return first
        summaries = []
        for parts in zip(*(p.summaries for p in partials)):
            summaries.append(
                Summary(
                    counts=np.sum([s.counts for s in parts], axis=0),
                    lows=np.min([s.lows for s in parts], axis=0),
                    highs=np.max([s.highs for s in parts], axis=0),
                    keys=np.concatenate([s.keys for s in parts]),
                )
            )
        return Partial(round=first.round, summaries=tuple(summaries))


def exact_quantiles(partitions: Iterable[np.ndarray], qs: Sequence[float], max_values: int = 1_000_000, bins: int = 4096) -> dict[float, float]:
    """Run a :class:`QuantileSearch` in-process over ``partitions`` (arrays, read once per round)."""
    parts = list(partitions)
    search = QuantileSearch(qs, max_values=max_values, bins=bins)
    while (request := search.request()) is not None:
        partials = [QuantileSearch.partial(request, p) for p in parts]
        if not partials:
            partials = [QuantileSearch.partial(request, np.empty(0))]
        search.update(QuantileSearch.combine(partials))
    return search.result
