"""Statistics a segmentation method takes over the whole image, computed from windows and shared by them.

Every method of :data:`scip.segment.METHODS` reads one number (or a few)
from the whole image before it labels anything: ``otsu``, ``li`` and
``watershed`` a global threshold of the smoothed image, ``spot`` a threshold
of its top-hat, ``unet`` and ``cellpose`` percentiles that normalize the
intensities. A large image segmented window by window would compute each of
these per window, so neighbouring windows disagree wherever staining is
uneven and the tiled result differs from the whole image's. Here the
statistic is computed once, from every window's *core* (its part of a
partition of the image), and handed to each window as a fixed parameter
(``level`` or ``norm_range``), so that a tiled segmentation sees what a
whole-image one sees.

The computation is a reduction in two rounds, each a pure function of one
window plus an associative merge:

1. :meth:`ImageStatistic.summarize_range`: per channel, min, max, count, sum,
   sum of squares and whether every value is an integer;
2. :meth:`ImageStatistic.summarize_histogram` (not needed for a mean + k·std
   threshold): histograms over the image-wide range, merged by addition.

:meth:`ImageStatistic.finish` turns the merged summaries into the parameter.
How exact each statistic is:

- Otsu: **exact**. scikit-image computes it from a 256-bin histogram over the
  image's ``[min, max]``; the same bins are summed over the windows.
- percentiles (``unet``, ``cellpose``): exact for integer-valued intensities
  spanning at most 2**20 values (one bin per value; e.g. ``uint16`` without
  ``smooth``), otherwise within one of 65,536 bins of the range.
- Li: Li's iteration on a 65,536-bin histogram holding each bin's count and
  sum, within about one bin of scikit-image's value.
- mean + k·std (``spot``): exact up to floating-point summation order.

A window's core values equal the whole image's when the margin around the
core is at least :attr:`ImageStatistic.reach` (the Gaussian's truncation
radius, plus the top-hat's for ``spot``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ImageStatistic", "RangeSummary", "HistogramSummary", "image_statistic", "whole_image_parameters"]

#: Bins of the fine histogram (Li, float percentiles).
FINE_BINS = 65536
#: Integer-valued intensities spanning at most this many values get one bin per value (exact percentiles).
MAX_INTEGER_BINS = 2**20
#: scikit-image's ``threshold_otsu`` bin count.
OTSU_BINS = 256


@dataclass
class RangeSummary:
    """Per channel: ``min``, ``max``, ``n``, ``sum``, ``sumsq`` and whether all values are integers."""

    min: np.ndarray
    max: np.ndarray
    n: int
    sum: np.ndarray
    sumsq: np.ndarray
    integral: np.ndarray

    def merge(self, other: "RangeSummary") -> "RangeSummary":
        """The summary of both windows' values."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        return RangeSummary(np.minimum(self.min, other.min), np.maximum(self.max, other.max), self.n + other.n,
                            self.sum + other.sum, self.sumsq + other.sumsq, self.integral & other.integral)


@dataclass
class HistogramSummary:
    """Per channel, histogram counts (and for Li, the sum of the values in each bin)."""

    counts: list[np.ndarray]
    sums: list[np.ndarray] | None = None

    def merge(self, other: "HistogramSummary") -> "HistogramSummary":
        """The histograms of both windows' values."""
        counts = [a + b for a, b in zip(self.counts, other.counts)]
        sums = None if self.sums is None else [a + b for a, b in zip(self.sums, other.sums)]
        return HistogramSummary(counts, sums)


def _gaussian_reach(sigma: float) -> int:
    # scipy.ndimage.gaussian_filter's kernel radius with its default truncate=4.0.
    return int(4.0 * float(sigma) + 0.5) if sigma > 0 else 0


@dataclass(frozen=True)
class ImageStatistic:
    """What one method needs from the whole image, and how to compute it from windows.

    Attributes
    ----------
    method : str
        The segmentation method.
    kind : {"otsu", "li", "mean_std", "percentiles"}
        The statistic.
    param : str
        The method's keyword that takes the result: ``level`` or ``norm_range``.
    smooth : float
        Gaussian blur applied before the statistic, as the method does.
    tophat_radius : int
        ``spot``: the top-hat disk radius (0 for the others).
    k : float
        ``mean_std``: the number of standard deviations.
    percentiles : (float, float)
        ``percentiles``: the low and high percentile.
    """

    method: str
    kind: str
    param: str
    smooth: float = 0.0
    tophat_radius: int = 0
    k: float = 3.0
    percentiles: tuple[float, float] = (1.0, 99.0)

    @property
    def reach(self) -> int:
        """Pixels of context around a pixel that its transformed value depends on."""
        # An opening (erosion, then dilation) reaches twice its disk's radius.
        return _gaussian_reach(self.smooth) + 2 * self.tophat_radius

    @property
    def needs_histogram(self) -> bool:
        """Whether a second round (histograms) is needed after the range."""
        return self.kind != "mean_std"

    def transform(self, window: np.ndarray) -> np.ndarray:
        """The values the statistic is taken over, ``(C, h, w)`` float64, as the method computes them."""
        from scipy import ndimage as ndi

        pixels = np.asarray(window, dtype=np.float64)
        if pixels.ndim == 2:
            pixels = pixels[None]
        if self.smooth > 0:
            pixels = np.stack([ndi.gaussian_filter(ch, self.smooth, mode="nearest") for ch in pixels])
        if self.tophat_radius:
            from skimage import morphology

            disk = morphology.disk(self.tophat_radius)
            pixels = np.stack([morphology.white_tophat(ch, disk) for ch in pixels])
        return pixels

    def summarize_range(self, values: np.ndarray) -> RangeSummary:
        """Round 1 on one window's core values ``(C, h, w)`` (from :meth:`transform`)."""
        flat = values.reshape(values.shape[0], -1)
        if flat.shape[1] == 0:
            c = flat.shape[0]
            return RangeSummary(np.full(c, np.inf), np.full(c, -np.inf), 0, np.zeros(c), np.zeros(c), np.ones(c, bool))
        return RangeSummary(flat.min(axis=1), flat.max(axis=1), flat.shape[1], flat.sum(axis=1),
                            np.einsum("ij,ij->i", flat, flat), np.all(flat == np.round(flat), axis=1))

    def summarize_histogram(self, values: np.ndarray, ranges: RangeSummary) -> HistogramSummary:
        """Round 2 on one window's core values, with the image-wide range from round 1."""
        counts, sums = [], []
        for c, channel in enumerate(values.reshape(values.shape[0], -1)):
            edges = self._edges(ranges, c)
            n_bins = len(edges) - 1
            if self.kind == "li":
                # Counts and sums from one bin index (Li is approximate to a bin anyway).
                index = np.clip(((channel - edges[0]) * (n_bins / (edges[-1] - edges[0]))).astype(np.int64),
                                0, n_bins - 1)
                counts.append(np.bincount(index, minlength=n_bins).astype(np.int64))
                sums.append(np.bincount(index, weights=channel, minlength=n_bins))
            else:
                # Equal bins given as a count and a range: numpy's fast path, and for Otsu the very call
                # scikit-image makes, so the bins match its own.
                count, _ = np.histogram(channel, bins=n_bins, range=(edges[0], edges[-1]))
                counts.append(count.astype(np.int64))
        return HistogramSummary(counts, sums if self.kind == "li" else None)

    def _integer_bins(self, ranges: RangeSummary, c: int) -> bool:
        return (self.kind != "otsu" and bool(ranges.integral[c])
                and ranges.max[c] - ranges.min[c] + 1 <= MAX_INTEGER_BINS)

    def _edges(self, ranges: RangeSummary, c: int) -> np.ndarray:
        lo, hi = float(ranges.min[c]), float(ranges.max[c])
        if self.kind == "otsu":
            # As scikit-image's histogram: 256 equal bins over [min, max], widened when the image is constant.
            if lo == hi:
                lo, hi = lo - 0.5, hi + 0.5
            return np.histogram_bin_edges(np.empty(0), bins=OTSU_BINS, range=(lo, hi))
        if self._integer_bins(ranges, c):
            return np.arange(lo - 0.5, hi + 1.0, 1.0)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        return np.linspace(lo, hi, FINE_BINS + 1)

    def finish(self, ranges: RangeSummary, histograms: HistogramSummary | None = None) -> dict[str, Any]:
        """The method's keyword arguments that fix the statistic, e.g. ``{"level": 812.4}``."""
        if ranges.n == 0:
            raise ValueError("no pixels were summarized")
        if self.kind == "mean_std":
            mean = ranges.sum[0] / ranges.n
            var = max(ranges.sumsq[0] / ranges.n - mean * mean, 0.0)
            return {self.param: float(mean + self.k * math.sqrt(var))}
        if histograms is None:
            raise ValueError(f"the {self.kind} statistic needs the histogram round")
        if self.kind == "otsu":
            return {self.param: _otsu(histograms.counts[0], self._edges(ranges, 0), ranges)}
        if self.kind == "li":
            return {self.param: _li(histograms.counts[0], histograms.sums[0], self._edges(ranges, 0), ranges)}
        return {self.param: [[_percentile(counts, self._edges(ranges, c), q, self._integer_bins(ranges, c))
                              for q in self.percentiles] for c, counts in enumerate(histograms.counts)]}


def _otsu(counts: np.ndarray, edges: np.ndarray, ranges: RangeSummary) -> float:
    from skimage.filters import threshold_otsu

    if ranges.min[0] == ranges.max[0]:
        return float(ranges.min[0])
    centers = (edges[:-1] + edges[1:]) / 2.0
    return float(threshold_otsu(hist=(counts, centers)))


def _li(counts: np.ndarray, sums: np.ndarray, edges: np.ndarray, ranges: RangeSummary) -> float:
    """Li's minimum cross-entropy iteration, as scikit-image runs it, on binned counts and sums."""
    low = float(ranges.min[0])
    if low == float(ranges.max[0]):
        return low
    # Li needs positive values (it takes logs of means): shift by the minimum, as scikit-image does.
    counts = counts.astype(np.float64)
    shifted = sums - counts * low
    centers = (edges[:-1] + edges[1:]) / 2.0 - low
    total_n, total_s = counts.sum(), shifted.sum()
    cum_n, cum_s = np.cumsum(counts), np.cumsum(shifted)
    tolerance = 0.5 if ranges.integral[0] else (edges[1] - edges[0]) / 2.0
    t_next = total_s / total_n
    t_curr = -2 * tolerance
    for _ in range(10_000):
        if abs(t_next - t_curr) <= tolerance:
            break
        t_curr = t_next
        # Bins whose centre is at or below the threshold are background.
        k = int(np.searchsorted(centers, t_curr, side="right"))
        n_back, s_back = (cum_n[k - 1], cum_s[k - 1]) if k else (0.0, 0.0)
        n_fore, s_fore = total_n - n_back, total_s - s_back
        if n_back == 0 or n_fore == 0:
            break
        mean_back, mean_fore = s_back / n_back, s_fore / n_fore
        if mean_back <= 0:
            break
        t_next = (mean_back - mean_fore) / (math.log(mean_back) - math.log(mean_fore))
    return float(t_next + low)


def _percentile(counts: np.ndarray, edges: np.ndarray, q: float, integer_bins: bool) -> float:
    """numpy's (linear) percentile from a histogram, taking each bin's values as evenly spread in it.

    With ``integer_bins`` (one bin per integer value) the order statistics, and so the percentile, are exact.
    """
    n = int(counts.sum())
    rank = q / 100.0 * (n - 1)
    cum = np.cumsum(counts)

    def order_statistic(i: int) -> float:
        b = int(np.searchsorted(cum, i, side="right"))
        before = cum[b - 1] if b else 0
        if integer_bins:
            return float(edges[b] + 0.5)
        return float(edges[b] + (i - before + 0.5) / counts[b] * (edges[b + 1] - edges[b]))

    lo = math.floor(rank)
    a = order_statistic(lo)
    if rank == lo:
        return a
    return a + (rank - lo) * (order_statistic(lo + 1) - a)


def image_statistic(method: str, params: dict[str, Any]) -> ImageStatistic | None:
    """What ``method`` with ``params`` computes over the whole image, or ``None`` if nothing.

    Parameters
    ----------
    method : str
        A key of :data:`scip.segment.METHODS`.
    params : dict
        Its keyword parameters (as the config's ``method_params()`` gives).

    Returns
    -------
    ImageStatistic or None
        ``None`` when the parameters already fix the statistic (``level`` or
        ``norm_range`` given) or the method has none.
    """
    smooth = float(params.get("smooth", 0.0) or 0.0)
    if params.get("level") is not None or params.get("norm_range") is not None:
        return None
    if method in ("otsu", "li"):
        return ImageStatistic(method, method, "level", smooth=float(params.get("smooth", 1.0)))
    if method == "watershed":
        return ImageStatistic(method, params.get("threshold", "otsu"), "level", smooth=float(params.get("smooth", 1.0)))
    if method == "spot":
        kind = "otsu" if params.get("threshold", "std") == "otsu" else "mean_std"
        return ImageStatistic(method, kind, "level", smooth=smooth, tophat_radius=int(params.get("radius", 3)),
                              k=float(params.get("k", 3.0)))
    if method == "unet":
        from .unet.modelfile import load

        norm = load(params.get("model", "nuclei")).meta.get("normalization", {})
        return ImageStatistic(method, "percentiles", "norm_range", smooth=smooth,
                              percentiles=(float(norm.get("low", 1.0)), float(norm.get("high", 99.8))))
    if method == "cellpose":
        # Cellpose's own default normalization: the 1st and 99th percentiles of each channel.
        return ImageStatistic(method, "percentiles", "norm_range", smooth=smooth, percentiles=(1.0, 99.0))
    return None


def whole_image_parameters(image: np.ndarray, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The statistic of one in-memory image, through the same rounds as windows use (for checks and tests)."""
    stat = image_statistic(method, params)
    if stat is None:
        return {}
    values = stat.transform(image)
    ranges = stat.summarize_range(values)
    return stat.finish(ranges, stat.summarize_histogram(values, ranges) if stat.needs_histogram else None)
