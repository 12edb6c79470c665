"""Shape features of each object's mask, from :func:`skimage.measure.regionprops`.

All features are computed on the binary mask of the object alone, with pixel
spacing 1; definitions and conventions are scikit-image's. Moments are indexed
``[p, q]`` with ``p`` the order along rows and ``q`` along columns.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from skimage.measure import regionprops

from ._groups import group_pixels, reindex

__all__ = ["NAME", "describe", "compute"]

NAME = "shape"

# (feature, definition, unit); each feature is also the regionprops attribute.
_SCALARS: tuple[tuple[str, str, str], ...] = (
    ("area", "Number of pixels of the object.", "px^2"),
    ("area_convex", "Number of pixels of the convex hull of the object.", "px^2"),
    ("area_filled", "Number of pixels of the object with its holes filled.", "px^2"),
    ("perimeter", "Perimeter length, approximating the contour by a line through the centers of border pixels (4-connectivity).", "px"),
    ("perimeter_crofton", "Perimeter length estimated with the Crofton formula over 4 directions.", "px"),
    ("eccentricity", "Eccentricity of the ellipse with the same second moments: focal distance over major axis length (0 is a circle).", "1"),
    ("solidity", "Ratio of the object's area to the area of its convex hull.", "1"),
    ("extent", "Ratio of the object's area to the area of its bounding box.", "1"),
    ("axis_major_length", "Major axis length of the ellipse with the same normalized second central moments.", "px"),
    ("axis_minor_length", "Minor axis length of the ellipse with the same normalized second central moments.", "px"),
    ("orientation", "Angle between the row axis and the major axis of the same-moments ellipse, in [-pi/2, pi/2].", "rad"),
    ("euler_number", "Euler characteristic: number of connected components minus number of holes (8-connectivity).", "1"),
    ("equivalent_diameter_area", "Diameter of the circle with the same area as the object.", "px"),
    ("feret_diameter_max", "Maximum Feret diameter: longest distance between points of the convex hull contour.", "px"),
)

_N_HU = 7
# Orders 2 and 3 only: order 0 is the area and order 1 central/normalized
# moments are zero by construction.
_PQ: tuple[tuple[int, int], ...] = tuple((p, order - p) for order in (2, 3) for p in range(order, -1, -1))


def describe(channel_names: Sequence[str]) -> list[tuple[str, str | None, str, str]]:
    """Features of this family: ``(feature, channel, definition, unit)``.

    Shape features do not depend on a channel, so ``channel`` is always None.
    """
    out: list[tuple[str, str | None, str, str]] = [(f, None, d, u) for f, d, u in _SCALARS]
    out += [
        (f"moments_hu_{k}", None, f"Hu moment invariant {k} (invariant to translation, scale and rotation).", "1")
        for k in range(_N_HU)
    ]
    out += [
        (f"moments_normalized_{p}{q}", None, f"Scale-invariant normalized central moment of order ({p}, {q}) (rows, columns).", "1")
        for p, q in _PQ
    ]
    out += [
        (f"moments_central_{p}{q}", None, f"Central moment of order ({p}, {q}) (rows, columns) of the mask, about its centroid.", f"px^{p + q + 2}")
        for p, q in _PQ
    ]
    return out


def compute(
    pixels: np.ndarray,
    labels: np.ndarray,
    label_ids: np.ndarray,
    channel_names: Sequence[str],
    offset: tuple[int, int] = (0, 0),
) -> dict[tuple[str, str | None], np.ndarray]:
    """Compute shape features of every object.

    Parameters
    ----------
    pixels : ndarray, shape (C, H, W)
        Unused; shape features depend on the mask only.
    labels : ndarray of int, shape (H, W)
        Label image, 0 is background.
    label_ids : ndarray of int
        Labels to report, in output order.
    channel_names : sequence of str
        Unused.
    offset : tuple of int
        Unused; shape features are translation invariant.

    Returns
    -------
    dict
        ``(feature, None) -> float64 array`` aligned with ``label_ids``.
    """
    groups = group_pixels(labels)
    # regionprops indexes objects by label value through find_objects, whose
    # cost grows with the largest label; relabeling 1..n keeps it tied to the
    # number of objects, which matters for crops of a large labeled image.
    dense = np.zeros(np.size(labels), dtype=np.int32 if len(groups) < 2**31 - 1 else np.int64)
    dense[groups.index] = np.repeat(np.arange(1, len(groups) + 1), groups.counts)
    props = regionprops(dense.reshape(np.shape(labels)))

    n = len(props)
    values: dict[str, np.ndarray] = {f: np.empty(n) for f, _, _, _ in describe(())}
    for i, rp in enumerate(props):
        for feature, _, _ in _SCALARS:
            values[feature][i] = getattr(rp, feature)
        hu = rp.moments_hu
        for k in range(_N_HU):
            values[f"moments_hu_{k}"][i] = hu[k]
        nu = rp.moments_normalized
        mu = rp.moments_central
        for p, q in _PQ:
            values[f"moments_normalized_{p}{q}"][i] = nu[p, q]
            values[f"moments_central_{p}{q}"][i] = mu[p, q]

    return {(f, None): reindex(v, groups.ids, label_ids) for f, v in values.items()}
