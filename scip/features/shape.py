"""Shape features of each object's mask: regionprops, Feret diameters, Zernike moments.

Every feature depends on the object's own pixels only (pixels of another label
next to it count as outside), with pixel spacing 1, and is invariant to
translation, except that the Zernike moments keep CellProfiler's rounding in
image coordinates (below). All objects are computed together: one compiled pass
(:mod:`._shape_kernels`) walks each object's bounding box once, and the rest
is vectorized across objects.

Definitions
-----------
The regionprops features (``area`` ... ``moments_hu_6``) equal
:func:`skimage.measure.regionprops` on the same label image, to round-off:

* ``moments_{p}{q}`` are the raw moments ``sum r^p c^q`` with ``(r, c)`` the
  pixel position relative to the top-left corner of the object's bounding box
  (regionprops' ``moments``); ``p`` is the order along rows, ``q`` along
  columns. ``moments_central_{p}{q}`` are taken about the centroid and
  ``moments_normalized_{p}{q}`` divide them by ``area^((p + q) / 2 + 1)``.
* ``area_convex`` counts the pixel centers inside or on the convex hull of the
  midpoints of the four edges of every object pixel (skimage's
  ``convex_hull_image``); the hull and the point-in-hull test are exact here
  (integer arithmetic on doubled coordinates). A line or a single pixel is
  no special case: its hull has non-zero area, so ``area_convex == area``.
* ``feret_diameter_max`` is skimage's: the largest distance between two points
  of the 0.5-level contour of the convex image, i.e. between midpoints of
  4-adjacent pixel pairs with one pixel inside the convex image and one outside
  (1 for a single pixel).
* ``area_filled`` fills the background components that are not 8-connected to
  the outside of the bounding box (``ndi.binary_fill_holes`` with a 3x3
  structure), ``euler_number`` is skimage's with 8-connectivity.
* skimage returns no NaN and raises for none of these on 2-D masks (its hull
  of edge midpoints is never degenerate), so no value needs a substitute;
  ``eccentricity`` is 0 and ``orientation`` ``-pi/4`` for a single pixel, as
  in skimage.
* ``orientation`` is ill-defined where the inertia tensor is isotropic
  (``moments_central_20 == moments_central_02`` and ``moments_central_11 == 0``,
  e.g. one pixel, a square, a disk); it is then ``-pi/4`` as in skimage. For
  nearly isotropic objects it depends on round-off in both implementations.

The CellProfiler features (``MeasureObjectSizeShape``, as ``cp_measure``):

* ``zernike_{n}_{m}``, ``0 <= m <= n <= zernike_degree`` with ``n - m`` even:
  magnitude of the Zernike moment of the mask inside its minimum enclosing
  circle, divided by the circle's area; see :mod:`._zernike`. The circle is
  centrosome's (Chrystal's algorithm on CellProfiler's convex hull of the
  pixel centers) computed with the same floating-point operations, in image
  coordinates (the label image's plus ``Objects.row_offset/col_offset``), so
  pixels on the circle are kept or dropped exactly as CellProfiler does on the
  whole image. Which of them rounding keeps depends on the object's position
  in its image, but never on other objects or on how the pipeline packs crops
  (:mod:`.crops` passes each crop's origin). A single pixel has a circle of radius
  0 and NaN Zernike moments, as in CellProfiler. Chrystal's algorithm is
  replayed with first-in-hull-order tie breaking and the C library's
  ``acos`` (CellProfiler: numpy's ``argsort`` and ``arccos``); for
  exactly tied angles the two could end on a different defining point and a
  radius one ulp apart, which could flip a pixel lying on the circle. Not
  seen on any test image.
* ``feret_diameter_min``: smallest distance between two parallel lines that
  enclose the pixel centers (the minimum caliper width of CellProfiler's
  convex hull); 0 for objects whose pixel centers are collinear (one pixel,
  lines).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _shape_kernels as _k
from ._objects import FeatureParams, Objects
from ._zernike import monomial_index, monomial_matrix, zernike_indexes

__all__ = ["NAME", "describe", "compute"]

NAME = "shape"

_SCALARS: tuple[tuple[str, str, str], ...] = (
    ("area", "Number of pixels of the object.", "px^2"),
    ("area_convex", "Number of pixel centers inside or on the convex hull of the object's pixel squares "
     "(hull of the midpoints of their edges; equals area for lines and single pixels).", "px^2"),
    ("area_filled", "Number of pixels of the object with its holes (background not 8-connected to the "
     "outside of its bounding box) filled.", "px^2"),
    ("perimeter", "Perimeter length, approximating the contour by a line through the centers of border "
     "pixels (4-connectivity), as skimage.measure.perimeter.", "px"),
    ("perimeter_crofton", "Perimeter length estimated with the Crofton formula over 4 directions.", "px"),
    ("eccentricity", "Eccentricity of the ellipse with the same second moments: focal distance over major "
     "axis length (0 is a circle or isotropic object, 1 a line).", "1"),
    ("solidity", "Ratio of the object's area to area_convex.", "1"),
    ("extent", "Ratio of the object's area to the area of its bounding box.", "1"),
    ("axis_major_length", "Major axis length of the ellipse with the same normalized second central moments.", "px"),
    ("axis_minor_length", "Minor axis length of the ellipse with the same normalized second central moments.", "px"),
    ("orientation", "Angle between the row axis and the major axis of the same-moments ellipse, in "
     "[-pi/2, pi/2]; -pi/4 when the second moments are isotropic (e.g. a single pixel).", "rad"),
    ("euler_number", "Euler characteristic: number of connected components minus number of holes "
     "(8-connectivity).", "1"),
    ("equivalent_diameter_area", "Diameter of the circle with the same area as the object.", "px"),
    ("feret_diameter_max", "Maximum Feret diameter: longest distance between points of the 0.5-level "
     "contour of the convex hull image (1 for a single pixel).", "px"),
    ("feret_diameter_min", "Minimum Feret diameter (CellProfiler MinFeretDiameter): smallest distance "
     "between two parallel lines enclosing the pixel centers; 0 when they are collinear.", "px"),
)

_N_HU = 7
# Orders 2 and 3 only: order 0 is the area and order 1 central/normalized
# moments are zero by construction.
_PQ: tuple[tuple[int, int], ...] = tuple((p, order - p) for order in (2, 3) for p in range(order, -1, -1))
_PQ_RAW: tuple[tuple[int, int], ...] = tuple((p, order - p) for order in range(4) for p in range(order, -1, -1))


def describe(channel_names: Sequence[str], params: FeatureParams) -> list[tuple[str, str | None, str, str]]:
    """Features of this family: ``(feature, channel, definition, unit)``.

    Shape features do not depend on a channel, so ``channel`` is always None.
    """
    out: list[tuple[str, str | None, str, str]] = [(f, None, d, u) for f, d, u in _SCALARS]
    out += [
        (f"moments_hu_{k}", None, f"Hu moment invariant {k} (invariant to translation, scale and rotation).", "1")
        for k in range(_N_HU)
    ]
    out += [
        (f"moments_normalized_{p}{q}", None,
         f"Scale-invariant normalized central moment of order ({p}, {q}) (rows, columns): "
         f"moments_central_{p}{q} / area^{(p + q) / 2 + 1:g}.", "1")
        for p, q in _PQ
    ]
    out += [
        (f"moments_central_{p}{q}", None,
         f"Central moment of order ({p}, {q}) (rows, columns) of the mask, about its centroid.", f"px^{p + q + 2}")
        for p, q in _PQ
    ]
    out += [
        (f"moments_{p}{q}", None,
         f"Raw moment sum r^{p} c^{q} of the mask, with (r, c) relative to the top-left pixel of its "
         "bounding box (regionprops' moments).", f"px^{p + q + 2}")
        for p, q in _PQ_RAW
    ]
    out += [
        (f"zernike_{n}_{m}", None,
         f"Magnitude of the Zernike moment (n={n}, m={m}) of the mask in its minimum enclosing circle, "
         "divided by the circle's area (CellProfiler Zernike_n_m); NaN for a single pixel.", "1")
        for n, m in zernike_indexes(int(params.zernike_degree))
    ]
    return out


def _hu(nu: dict[tuple[int, int], np.ndarray]) -> list[np.ndarray]:
    """Hu's invariants, as skimage's ``moments_hu``."""
    t0 = nu[3, 0] + nu[1, 2]
    t1 = nu[2, 1] + nu[0, 3]
    q0 = t0 * t0
    q1 = t1 * t1
    n4 = 4 * nu[1, 1]
    s = nu[2, 0] + nu[0, 2]
    d = nu[2, 0] - nu[0, 2]
    hu0 = s
    hu1 = d * d + n4 * nu[1, 1]
    hu3 = q0 + q1
    hu5 = d * (q0 - q1) + n4 * t0 * t1
    t0 = t0 * (q0 - 3 * q1)
    t1 = t1 * (3 * q0 - q1)
    q0 = nu[3, 0] - 3 * nu[1, 2]
    q1 = 3 * nu[2, 1] - nu[0, 3]
    hu2 = q0 * q0 + q1 * q1
    hu4 = q0 * t0 + q1 * t1
    hu6 = q1 * t0 - q0 * t1
    return [hu0, hu1, hu2, hu3, hu4, hu5, hu6]


def compute(objects: Objects, params: FeatureParams) -> dict[tuple[str, str | None], np.ndarray]:
    """Shape features of every object, aligned with ``objects.ids``."""
    groups = objects.groups
    starts = np.ascontiguousarray(groups.starts, dtype=np.int64)
    counts = np.ascontiguousarray(groups.counts, dtype=np.int64)
    # As Objects gives them (int32 below 2**31 pixels: one signature, no copy).
    rows = np.ascontiguousarray(objects.rows)
    cols = np.ascontiguousarray(objects.cols)
    # Raster order within an object: its first and last pixels hold the row range.
    min_row = rows[starts].astype(np.int64)
    height = rows[starts + counts - 1].astype(np.int64) - min_row + 1
    min_col = np.minimum.reduceat(cols, starts).astype(np.int64)
    bwidth = np.maximum.reduceat(cols, starts).astype(np.int64) - min_col + 1

    degree = int(params.zernike_degree)
    n = len(starts)
    scal = np.empty((n, _k.N_SCALARS))
    zsums = np.empty((n, int(monomial_index(degree).max()) + 1))
    _k.shape_kernel(rows, cols, starts, counts, min_row, min_col, height, bwidth,
                    np.ascontiguousarray(objects.row_shift), np.ascontiguousarray(objects.col_shift), degree,
                    _k._PERIMETER_WEIGHTS, _k._CROFTON_COEFS, _k._EULER_COEFS, scal, zsums)
    col = {name: scal[:, i] for i, name in enumerate(_k.SCALAR_COLUMNS)}

    area = counts.astype(np.float64)
    mu = {(p, q): col[f"mu{p}{q}"] for p in range(4) for q in range(4)}
    mu0 = mu[0, 0]
    nu = {pq: mu[pq] / mu0 ** (sum(pq) / 2 + 1) for pq in _PQ}
    # skimage's inertia tensor, operation for operation (its diagonal is
    # (mu20 + mu02 - mu_ii) / mu0), so that exact ties stay ties.
    trace = mu[2, 0] + mu[0, 2]
    a = (trace - mu[2, 0]) / mu0
    c = (trace - mu[0, 2]) / mu0
    b = -mu[1, 1] / mu0
    half = (a + c) / 2
    root = np.sqrt(((a - c) / 2) ** 2 + b * b)
    l1 = np.maximum(half + root, 0.0)
    l2 = np.maximum(half - root, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ecc = np.where(l1 == 0, 0.0, np.sqrt(np.maximum(1 - l2 / l1, 0.0)))
    orientation = np.where(
        a - c == 0,
        np.where(b < 0, np.pi / 4, -np.pi / 4),
        0.5 * np.arctan2(-2 * b, c - a),
    )

    values: dict[str, np.ndarray] = {
        "area": area,
        "area_convex": col["area_convex"],
        "area_filled": col["area_filled"],
        "perimeter": col["perimeter"],
        "perimeter_crofton": col["perimeter_crofton"],
        "eccentricity": ecc,
        "solidity": area / col["area_convex"],
        "extent": area / (height * bwidth),
        "axis_major_length": 4 * np.sqrt(l1),
        "axis_minor_length": 4 * np.sqrt(l2),
        "orientation": orientation,
        "euler_number": col["euler_number"],
        "equivalent_diameter_area": (2 * 2 * area / np.pi) ** 0.5,
        "feret_diameter_max": col["feret_diameter_max"],
        "feret_diameter_min": col["feret_diameter_min"],
    }
    for k, hu in enumerate(_hu(nu)):
        values[f"moments_hu_{k}"] = hu
    for p, q in _PQ:
        values[f"moments_normalized_{p}{q}"] = nu[p, q]
        values[f"moments_central_{p}{q}"] = mu[p, q]
    for p, q in _PQ_RAW:
        values[f"moments_{p}{q}"] = col[f"m{p}{q}"]

    real, imag = monomial_matrix(degree)
    score = np.empty((n, real.shape[0]))
    _k.zernike_scores(zsums, real, imag, np.ascontiguousarray(col["mec_radius"]), score)
    for i, (zn, zm) in enumerate(zernike_indexes(degree)):
        values[f"zernike_{zn}_{zm}"] = score[:, i]

    return {(f, None): np.asarray(values[f], dtype=np.float64) for f, _, _, _ in describe((), params)}
