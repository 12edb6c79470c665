"""Bounding box and centroid of each object, in image coordinates.

Coordinates are (row, column) of the full image: the pipeline computes
features on crops, and passes each crop's origin as the objects' offset.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._objects import FeatureParams, Objects

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


def describe(channel_names: Sequence[str], params: FeatureParams) -> list[tuple[str, str | None, str, str]]:
    """Features of this family: ``(feature, channel, definition, unit)``."""
    return [(f, None, d, u) for f, d, u in _FEATURES]


def compute(objects: Objects, params: FeatureParams) -> dict[tuple[str, str | None], np.ndarray]:
    """Bounding box and centroid of every object, offset into image coordinates."""
    groups = objects.groups
    rows, cols = objects.rows, objects.cols
    min_row = np.minimum.reduceat(rows, groups.starts)
    max_row = np.maximum.reduceat(rows, groups.starts) + 1
    min_col = np.minimum.reduceat(cols, groups.starts)
    max_col = np.maximum.reduceat(cols, groups.starts) + 1
    cen_row = np.add.reduceat(rows.astype(np.float64), groups.starts) / groups.counts
    cen_col = np.add.reduceat(cols.astype(np.float64), groups.starts) / groups.counts
    row0, col0 = objects.row_offset, objects.col_offset
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
    return {(f, None): v for f, v in values.items()}
