"""Cell filters: a per-cell measure, a dataset-wide threshold, then a map.

A filter is decided in three pure steps, so the decision can depend on every
cell of the dataset while no cell's pixels are needed twice:

1. :func:`measure_cell` adds the filters' measures to each cell record
   (a few floats; the pipeline runs it before features, on the crops).
2. :func:`decide` turns all cells' values of one measure into a threshold,
   on the driver: a fixed number, a quantile, a robust tail (median minus
   ``k`` scaled MADs) or Otsu's threshold between two populations.
3. :func:`apply_filters` marks the cells outside ``[min, max]`` as skipped,
   with the filter, the value and the threshold, before any feature is
   computed for them.

Thresholds are decided from the values of all cells that reach the filter
step, before any filter removes one, so the order of the filters in the
config does not change what each one decides.

Measures (``channel`` is a name or position, as elsewhere in the config):

``area``
    Number of pixels of the cell mask.
``signal``
    Mean intensity of the cell minus the median of the crop's background
    pixels (outside every cell): the cell's signal above local background.
    Without background pixels in the crop, the plain mean.
``focus``
    Variance of the Laplacian (``scipy.ndimage.laplace``, float64) over the
    cell's pixels: low for blurred, out-of-focus cells.
``saturation``
    Fraction of the cell's pixels at or above ``level`` (default: the
    largest value of the pixels' integer dtype; float pixels, e.g. after
    illumination correction, need an explicit ``level``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from scip.config import FilterConfig, MadRule, QuantileRule
from scip.records import CellRecord, ImageRecord, skipped
from scip.steps.segment import channel_position

__all__ = ["measure_cell", "decide", "apply_filters", "rule_text", "LOG_MEASURES"]

#: Measures whose dataset-wide rules (quantile aside) work on log values:
#: their populations are skewed and differ by factors, not offsets.
LOG_MEASURES = frozenset({"signal", "focus"})

# 1.4826 * MAD estimates the standard deviation of a normal population.
_MAD_SCALE = 1.4826


def _value(record: CellRecord, f: FilterConfig, cell_mask: str) -> float:
    mask = record.masks[cell_mask]
    if f.measure == "area":
        return float(mask.sum())
    channel = record.pixels[channel_position(record.channels, f.channel, key="filters.channel")]
    inside = channel[mask]
    if f.measure == "signal":
        outside = ~mask if record.others is None else ~mask & ~record.others
        background = channel[outside]
        return float(inside.mean() - (np.median(background) if background.size else 0.0))
    if f.measure == "focus":
        return float(ndi.laplace(channel.astype(np.float64))[mask].var())
    level = f.level
    if level is None:
        level = np.iinfo(channel.dtype).max if np.issubdtype(channel.dtype, np.integer) else math.inf
    return float((inside >= level).mean())


def measure_cell(record: ImageRecord | CellRecord, filters: Sequence[FilterConfig], cell_mask: str) -> ImageRecord | CellRecord:
    """Add the measure of every filter to an ok cell record (``record.measures``)."""
    if not isinstance(record, CellRecord) or not record.status or not filters:
        return record
    measures = dict(record.measures)
    for f in filters:
        measures[f.name] = _value(record, f, cell_mask)
    return record.with_(measures=measures)


def _transform(values: np.ndarray, measure: str) -> np.ndarray:
    if measure not in LOG_MEASURES:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        # A cell with no signal at all sits below every threshold on the log scale.
        return np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), -np.inf)


def _untransform(value: float, measure: str) -> float:
    return float(np.exp(value)) if measure in LOG_MEASURES else float(value)


def decide(values: np.ndarray, rule: float | str | QuantileRule | MadRule, measure: str) -> float:
    """The threshold a rule gives on the values of all cells.

    Parameters
    ----------
    values : ndarray
        One value per cell, over the whole dataset (NaN ignored).
    rule : float, "otsu", QuantileRule or MadRule
        A number is the threshold itself. ``{quantile: q}``: numpy's
        ``quantile`` of the values. ``{mad: k}``: median minus/plus ``k``
        times 1.4826 MAD (the caller picks the side). ``"otsu"``: Otsu's
        threshold between two populations. For ``signal`` and ``focus`` the
        MAD and Otsu rules work on log values (cells at or below zero count
        as lowest) and the threshold is returned on the original scale.
    measure : str
        The filter's measure.

    Returns
    -------
    float
        NaN when there are no values to decide from.
    """
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        return float(rule)
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan
    if isinstance(rule, QuantileRule):
        return float(np.quantile(values, rule.quantile))
    scaled = _transform(values, measure)
    finite = scaled[np.isfinite(scaled)]
    if finite.size == 0:
        return math.nan
    if rule == "otsu":
        if np.ptp(finite) == 0:
            return _untransform(finite[0], measure)
        return _untransform(threshold_otsu(finite), measure)
    if isinstance(rule, MadRule):
        median = np.median(finite)
        mad = np.median(np.abs(finite - median))
        return _untransform(median - rule.mad * _MAD_SCALE * mad, measure)
    raise ValueError(f"unknown filter rule {rule!r}")


def decide_mad_upper(values: np.ndarray, rule: MadRule, measure: str) -> float:
    """Upper tail of the MAD rule: median plus ``k`` scaled MADs."""
    values = np.asarray(values, dtype=np.float64)
    scaled = _transform(values[~np.isnan(values)], measure)
    finite = scaled[np.isfinite(scaled)]
    if finite.size == 0:
        return math.nan
    median = np.median(finite)
    mad = np.median(np.abs(finite - median))
    return _untransform(median + rule.mad * _MAD_SCALE * mad, measure)


def rule_text(rule: float | str | QuantileRule | MadRule | None) -> str:
    """How a rule is written in reports: ``250``, ``otsu``, ``quantile 0.05``, ``mad 3``."""
    if isinstance(rule, QuantileRule):
        return f"quantile {rule.quantile:g}"
    if isinstance(rule, MadRule):
        return f"mad {rule.mad:g}"
    return f"{rule:g}" if isinstance(rule, (int, float)) else str(rule)


def thresholds(filters: Sequence[FilterConfig], values: dict[str, np.ndarray]) -> list[tuple[float, float]]:
    """``(min, max)`` threshold of every filter from all cells' values (NaN: no bound)."""
    out = []
    for f in filters:
        v = values.get(f.name, np.empty(0))
        lo = decide(v, f.min, f.measure) if f.min is not None else math.nan
        if isinstance(f.max, MadRule):
            hi = decide_mad_upper(v, f.max, f.measure)
        else:
            hi = decide(v, f.max, f.measure) if f.max is not None else math.nan
        out.append((lo, hi))
    return out


def apply_filters(record: ImageRecord | CellRecord, filters: Sequence[FilterConfig],
                  bounds: Sequence[tuple[float, float]]) -> ImageRecord | CellRecord:
    """Skip an ok cell whose measure is below a filter's min or above its max.

    The first filter (in config order) that drops the cell is recorded: its
    name, the cell's value and the threshold, in the status detail that
    ``skipped.csv`` carries. The crop is released: a filtered cell costs no
    feature time and no memory afterwards.
    """
    if not isinstance(record, CellRecord) or not record.status:
        return record
    for f, (lo, hi) in zip(filters, bounds):
        value = record.measures[f.name]
        for side, threshold, rule, drop in (("min", lo, f.min, value < lo), ("max", hi, f.max, value > hi)):
            if drop or (math.isnan(value) and not math.isnan(threshold)):
                word = "below" if side == "min" else "above"
                reason = f"{f.name} = {value:.6g} {word} {side} {threshold:.6g} ({rule_text(rule)})"
                return record.with_(pixels=None, masks={}, others=None,
                                    status=skipped("filter", reason, filter=f.name, value=value, threshold=threshold,
                                                   kind=f"{f.name} {word} {side} ({rule_text(rule)})"))
    return record
