"""Group the foreground pixels of a label image by label, once.

Sorting the foreground pixels by label turns every per-object statistic into
a segmented reduction (``np.ufunc.reduceat``) over contiguous runs, which is
vectorized across objects instead of looping over them in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Groups", "group_pixels", "reindex", "segment_ids", "sort_within"]


@dataclass(frozen=True)
class Groups:
    """Foreground pixels of a label image, sorted by label.

    Attributes
    ----------
    ids : ndarray
        Labels present (non-zero), ascending.
    starts : ndarray of intp
        Start of each label's run in ``index``.
    counts : ndarray of intp
        Number of pixels of each label.
    index : ndarray of intp
        Flat (raveled) pixel indices, grouped by label; within a label, in
        raster order.
    """

    ids: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def group_pixels(labels: np.ndarray) -> Groups:
    """Group the non-zero pixels of ``labels`` by label value."""
    flat = np.ravel(labels)
    fg = np.flatnonzero(flat)
    lab = flat[fg]
    # A stable sort keeps raster order within a label, which makes results
    # reproducible and independent of the sort algorithm.
    order = np.argsort(lab, kind="stable")
    index = fg[order]
    ids, starts, counts = np.unique(lab[order], return_index=True, return_counts=True)
    return Groups(ids=ids, starts=starts.astype(np.intp), counts=counts.astype(np.intp), index=index)


def segment_ids(groups: Groups) -> np.ndarray:
    """Position (0 .. n-1) of each grouped pixel's label in ``groups.ids``."""
    return np.repeat(np.arange(len(groups), dtype=np.intp), groups.counts)


def sort_within(values: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Sort ``values`` within each run of equal ``seg`` (runs stay in place)."""
    return values[np.lexsort((values, seg))]


def reindex(values: np.ndarray, ids: np.ndarray, label_ids: np.ndarray) -> np.ndarray:
    """Align per-``ids`` values to ``label_ids``; NaN for labels not in ``ids``."""
    values = np.asarray(values, dtype=np.float64)
    label_ids = np.asarray(label_ids)
    if len(ids) == len(label_ids) and np.array_equal(ids, label_ids):
        return values
    out = np.full(len(label_ids), np.nan)
    if len(ids) == 0:
        return out
    pos = np.searchsorted(ids, label_ids)
    pos_clipped = np.minimum(pos, len(ids) - 1)
    found = (pos < len(ids)) & (ids[pos_clipped] == label_ids)
    out[found] = values[pos_clipped[found]]
    return out
