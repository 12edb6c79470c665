"""Helpers shared by the segmentation methods: input conversion, clean-up."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, segmentation

__all__ = [
    "as_float_image",
    "is_constant",
    "smooth_image",
    "global_threshold",
    "foreground_mask",
    "remove_small_and_relabel",
    "CONNECTIVITY",
    "THRESHOLDS",
]

#: Pixel connectivity used to label objects: 1 (edge neighbours only), so
#: that two cells touching at a single corner pixel stay two objects.
CONNECTIVITY = 1

#: Global threshold methods :func:`global_threshold` accepts.
THRESHOLDS = ("otsu", "li")


def as_float_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a 2-D float64 array, checking its shape.

    NaN values are not handled here; the caller rejects such images before.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image (H, W), got shape {image.shape}")
    return image.astype(np.float64, copy=False)


def is_constant(image: np.ndarray) -> bool:
    """True when all pixels are equal (or there are none).

    Global thresholds are undefined there: skimage's Otsu returns the single
    value, Li may warn or return it too, and ``image > t`` then finds nothing
    or, worse, everything.
    """
    return image.size == 0 or bool(np.ptp(image) == 0)


def smooth_image(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels; 0 leaves it as is."""
    if sigma < 0:
        raise ValueError(f"smooth must be >= 0, got {sigma}")
    if sigma == 0:
        return image
    return ndi.gaussian_filter(image, sigma=sigma, mode="nearest")


def global_threshold(image: np.ndarray, method: str) -> float:
    """Global threshold of ``image`` by ``method``, ``"otsu"`` or ``"li"``."""
    if method == "otsu":
        return float(filters.threshold_otsu(image))
    if method == "li":
        return float(filters.threshold_li(image))
    raise ValueError(f"unknown threshold {method!r}; expected one of {THRESHOLDS}")


def foreground_mask(
    image: np.ndarray, *, smooth: float, threshold: str, fill_holes: bool, level: float | None = None
) -> np.ndarray:
    """Boolean foreground: smooth, threshold globally, optionally fill holes.

    ``level``, when given, is the threshold of the smoothed image, instead of
    ``threshold``'s method computed on this image (a window of a large image
    takes the threshold of the whole image, see
    :mod:`scip.segment.image_statistics`). Without ``level``, a constant image
    (after smoothing) has no foreground.
    """
    smoothed = smooth_image(image, smooth)
    if level is None:
        if is_constant(smoothed):
            return np.zeros(image.shape, dtype=bool)
        level = global_threshold(smoothed, threshold)
    mask = smoothed > level
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    return mask


def remove_small_and_relabel(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects of fewer than ``min_size`` pixels and renumber 1..N.

    Parameters
    ----------
    labels : ndarray of int or bool
        Label image, 0 as background; a boolean mask is labelled first (with
        :data:`CONNECTIVITY`).
    min_size : int
        Smallest object kept, in pixels.

    Returns
    -------
    ndarray of int32
        Labels numbered consecutively from 1, in raster order of the
        original labels.
    """
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = measure.label(labels, connectivity=CONNECTIVITY)
    labels = labels.astype(np.int64, copy=False)
    if min_size > 1 and labels.any():
        areas = np.bincount(labels.ravel())
        small = areas < min_size
        small[0] = False
        if small.any():
            labels = np.where(small[labels], 0, labels)
    relabelled, _, _ = segmentation.relabel_sequential(labels)
    return relabelled.astype(np.int32, copy=False)
