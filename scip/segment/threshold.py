"""Segmentation by one global intensity threshold (Otsu, Li).

Suited to well separated objects on a darker background; touching objects
come out as one, for those see :func:`scip.segment.watershed`.
"""

from __future__ import annotations

import numpy as np

from ._util import as_float_image, foreground_mask, remove_small_and_relabel

__all__ = ["otsu", "li"]


def _threshold_labels(
    image: np.ndarray, method: str, smooth: float, min_size: int, fill_holes: bool, level: float | None
) -> np.ndarray:
    image = as_float_image(image)
    mask = foreground_mask(image, smooth=smooth, threshold=method, fill_holes=fill_holes, level=level)
    return remove_small_and_relabel(mask, min_size)


def otsu(
    image: np.ndarray, *, smooth: float = 1.0, min_size: int = 20, fill_holes: bool = True,
    level: float | None = None,
) -> np.ndarray:
    """Label the connected regions brighter than Otsu's threshold.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Intensity image of any real dtype; it is converted to float64. It
        must not contain NaN (callers reject such images first).
    smooth : float, optional
        Standard deviation in pixels of the Gaussian blur applied before
        thresholding, against pixel noise; 0 disables it.
    min_size : int, optional
        Objects with fewer pixels are removed.
    fill_holes : bool, optional
        Fill holes inside objects (dim nucleoli, vacuoles).
    level : float, optional
        Use this threshold of the smoothed image instead of computing it from
        ``image``: how windows of a large image share the whole image's
        threshold (:mod:`scip.segment.image_statistics`).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 for background, objects numbered 1..N. Objects are 4-connected
        (connectivity 1), so regions touching only at a corner are separate.
        A constant image has no objects.

    See Also
    --------
    skimage.filters.threshold_otsu
    """
    return _threshold_labels(image, "otsu", smooth, min_size, fill_holes, level)


def li(
    image: np.ndarray, *, smooth: float = 1.0, min_size: int = 20, fill_holes: bool = True,
    level: float | None = None,
) -> np.ndarray:
    """Label the connected regions brighter than Li's minimum-cross-entropy threshold.

    Li's threshold is usually lower than Otsu's, so objects come out larger
    and dim objects are kept; otherwise as :func:`otsu`.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Intensity image of any real dtype; it is converted to float64. It
        must not contain NaN (callers reject such images first).
    smooth : float, optional
        Standard deviation in pixels of the Gaussian blur applied before
        thresholding; 0 disables it.
    min_size : int, optional
        Objects with fewer pixels are removed.
    fill_holes : bool, optional
        Fill holes inside objects.
    level : float, optional
        Use this threshold of the smoothed image instead of computing it from
        ``image``: how windows of a large image share the whole image's
        threshold (:mod:`scip.segment.image_statistics`).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 for background, 4-connected objects numbered 1..N. A constant image
        has no objects.

    See Also
    --------
    skimage.filters.threshold_li
    """
    return _threshold_labels(image, "li", smooth, min_size, fill_holes, level)
