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
    # Image coordinates of the box corner are exact integers, and the centroid
    # is taken inside the box: neither depends on where in the label image the
    # object lies (crops packed side by side land anywhere).
    min_row = objects.box_min_row + objects.row_shift
    min_col = objects.box_min_col + objects.col_shift
    height = objects.box_height
    width = objects.box_width
    cen_row, cen_col = objects.local_centroid
    values = {
        "min_row": min_row,
        "min_col": min_col,
        "max_row": min_row + height,
        "max_col": min_col + width,
        "height": height,
        "width": width,
        "centroid_row": cen_row + min_row,
        "centroid_col": cen_col + min_col,
    }
    return {(f, None): v for f, v in values.items()}
