"""Bounding box and centroid of each object, in image coordinates.

Coordinates are (row, column) of the full image: the pipeline computes
features on crops, and passes the crop's origin as ``offset``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._groups import group_pixels, reindex

__all__ = ["NAME", "describe", "compute"]

NAME = "bbox"

_FEATURES: tuple[tuple[str, str, str], ...] = (
    ("min_row", "First row of the bounding box (inclusive), in image coordinates.", "px"),
    ("min_col", "First column of the bounding box (inclusive), in image coordinates.", "px"),
    ("max_row", "Row after the last row of the bounding box (exclusive), in image coordinates.", "px"),
    ("max_col", "Column after the last column of the bounding box (exclusive), in image coordinates.", "px"),
    ("height", "Number of rows of the bounding box.", "px"),
    ("width", "Number of columns of the bounding box.", "px"),
    ("centroid_row", "Row of the centroid (mean row of the object's pixels), in image coordinates.", "px"),
    ("centroid_col", "Column of the centroid (mean column of the object's pixels), in image coordinates.", "px"),
)


def describe(channel_names: Sequence[str]) -> list[tuple[str, str | None, str, str]]:
    """Features of this family: ``(feature, channel, definition, unit)``."""
    return [(f, None, d, u) for f, d, u in _FEATURES]


def compute(
    pixels: np.ndarray,
    labels: np.ndarray,
    label_ids: np.ndarray,
    channel_names: Sequence[str],
    offset: tuple[int, int] = (0, 0),
) -> dict[tuple[str, str | None], np.ndarray]:
    """Compute bounding box and centroid of every object.

    Parameters
    ----------
    pixels : ndarray, shape (C, H, W)
        Unused.
    labels : ndarray of int, shape (H, W)
        Label image, 0 is background.
    label_ids : ndarray of int
        Labels to report, in output order.
    channel_names : sequence of str
        Unused.
    offset : tuple of int
        ``(row, col)`` of ``labels[0, 0]`` in the full image; added to all
        coordinates.

    Returns
    -------
    dict
        ``(feature, None) -> float64 array`` aligned with ``label_ids``.
    """
    groups = group_pixels(labels)
    row0, col0 = offset
    width_img = np.shape(labels)[1]
    rows, cols = np.divmod(groups.index, width_img)
    if len(groups):
        min_row = np.minimum.reduceat(rows, groups.starts)
        max_row = np.maximum.reduceat(rows, groups.starts) + 1
        min_col = np.minimum.reduceat(cols, groups.starts)
        max_col = np.maximum.reduceat(cols, groups.starts) + 1
        cen_row = np.add.reduceat(rows.astype(np.float64), groups.starts) / groups.counts
        cen_col = np.add.reduceat(cols.astype(np.float64), groups.starts) / groups.counts
    else:
        min_row = max_row = min_col = max_col = cen_row = cen_col = np.empty(0)

    values = {
        "min_row": min_row + row0,
        "min_col": min_col + col0,
        "max_row": max_row + row0,
        "max_col": max_col + col0,
        "height": max_row - min_row,
        "width": max_col - min_col,
        "centroid_row": cen_row + row0,
        "centroid_col": cen_col + col0,
    }
    return {(f, None): reindex(v, groups.ids, label_ids) for f, v in values.items()}
