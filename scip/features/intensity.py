"""Intensity statistics of each object's pixels, per channel.

Pixels are converted to float64. All statistics are computed for all objects
at once: pixels are sorted by label once, then reduced per contiguous run.

Skewness and kurtosis follow :func:`scipy.stats.skew` and
:func:`scipy.stats.kurtosis` defaults (biased, Fisher's excess kurtosis). They
are undefined for an object whose pixels are all equal (zero variance) and are
NaN there, as in scipy; a one-pixel object is such an object.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._groups import Groups, group_pixels, reindex, segment_ids, sort_within

__all__ = ["NAME", "describe", "compute"]

NAME = "intensity"

_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("mean", "Mean intensity of the object's pixels.", "intensity"),
    ("median", "Median intensity of the object's pixels.", "intensity"),
    ("std", "Population standard deviation (ddof=0) of the object's pixel intensities.", "intensity"),
    ("min", "Minimum intensity of the object's pixels.", "intensity"),
    ("max", "Maximum intensity of the object's pixels.", "intensity"),
    ("lower_quartile", "25th percentile of the object's pixel intensities (linear interpolation).", "intensity"),
    ("upper_quartile", "75th percentile of the object's pixel intensities (linear interpolation).", "intensity"),
    ("sum", "Integrated intensity: sum of the object's pixel intensities.", "intensity"),
    ("mad", "Median absolute deviation of the object's pixel intensities from their median (unscaled).", "intensity"),
    ("skewness", "Biased sample skewness of the object's pixel intensities; NaN if they are all equal.", "1"),
    ("kurtosis", "Biased excess (Fisher) kurtosis of the object's pixel intensities; NaN if they are all equal.", "1"),
)


def describe(channel_names: Sequence[str]) -> list[tuple[str, str | None, str, str]]:
    """Features of this family: ``(feature, channel, definition, unit)``.

    Columns are grouped by channel, in ``channel_names`` order.
    """
    return [(f, ch, d, u) for ch in channel_names for f, d, u in _FEATURES]


def _quantile(sorted_values: np.ndarray, groups: Groups, q: float) -> np.ndarray:
    """Per-run quantile of run-sorted values, numpy's default 'linear' method."""
    virtual = q * (groups.counts - 1)
    below = np.floor(virtual).astype(np.intp)
    frac = virtual - below
    lo = groups.starts + below
    hi = np.minimum(lo + 1, groups.starts + groups.counts - 1)
    a, b = sorted_values[lo], sorted_values[hi]
    return a + (b - a) * frac


def _channel_stats(values: np.ndarray, groups: Groups, seg: np.ndarray) -> dict[str, np.ndarray]:
    """All statistics of one channel; ``values`` are grouped like ``groups.index``."""
    starts, counts = groups.starts, groups.counts
    total = np.add.reduceat(values, starts)
    mean = total / counts
    dev = values - mean[seg]
    m2 = np.add.reduceat(dev**2, starts) / counts
    m3 = np.add.reduceat(dev**3, starts) / counts
    m4 = np.add.reduceat(dev**4, starts) / counts
    # scipy.stats' test for "all values equal": central moments computed in
    # floating point are rarely exactly zero for constant data.
    constant = m2 <= (np.finfo(np.float64).resolution * mean) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        skewness = np.where(constant, np.nan, m3 / m2**1.5)
        kurtosis = np.where(constant, np.nan, m4 / m2**2 - 3.0)

    ordered = sort_within(values, seg)
    median = _quantile(ordered, groups, 0.5)
    abs_dev = sort_within(np.abs(values - median[seg]), seg)

    return {
        "mean": mean,
        "median": median,
        "std": np.sqrt(m2),
        "min": ordered[starts],
        "max": ordered[starts + counts - 1],
        "lower_quartile": _quantile(ordered, groups, 0.25),
        "upper_quartile": _quantile(ordered, groups, 0.75),
        "sum": total,
        "mad": _quantile(abs_dev, groups, 0.5),
        "skewness": skewness,
        "kurtosis": kurtosis,
    }


def compute(
    pixels: np.ndarray,
    labels: np.ndarray,
    label_ids: np.ndarray,
    channel_names: Sequence[str],
    offset: tuple[int, int] = (0, 0),
) -> dict[tuple[str, str | None], np.ndarray]:
    """Compute intensity statistics of every object in every channel.

    Parameters
    ----------
    pixels : ndarray, shape (C, H, W)
        Pixel values, any numeric dtype.
    labels : ndarray of int, shape (H, W)
        Label image, 0 is background.
    label_ids : ndarray of int
        Labels to report, in output order.
    channel_names : sequence of str
        One name per channel of ``pixels``.
    offset : tuple of int
        Unused.

    Returns
    -------
    dict
        ``(feature, channel) -> float64 array`` aligned with ``label_ids``.
    """
    groups = group_pixels(labels)
    out: dict[tuple[str, str | None], np.ndarray] = {}
    if len(groups):
        seg = segment_ids(groups)
    for c, channel in enumerate(channel_names):
        if len(groups):
            values = np.ravel(pixels[c])[groups.index].astype(np.float64)
            stats = _channel_stats(values, groups, seg)
        else:
            stats = {f: np.empty(0) for f, _, _ in _FEATURES}
        for feature, _, _ in _FEATURES:
            out[(feature, channel)] = reindex(stats[feature], groups.ids, label_ids)
    return out
