"""Masks inside an object: threshold a channel over one region's pixels only."""

from __future__ import annotations

import numpy as np

from ._util import as_float_image, global_threshold, is_constant, smooth_image


def threshold_in_region(image: np.ndarray, region: np.ndarray, *, method: str = "otsu", smooth: float = 0.0) -> np.ndarray:
    """Pixels of ``region`` brighter than a threshold computed from ``region`` alone.

    This is how a per-channel mask is made inside one cell (e.g. the DNA-bright
    part of the cell): the threshold sees only the cell's own pixels, so the
    background around the crop does not pull it down.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        One channel of the crop; must not contain NaN.
    region : ndarray of bool, shape (H, W)
        The cell's mask; the result is a subset of it.
    method : {"otsu", "li"}
        Global threshold method, applied to the region's pixels.
    smooth : float
        Sigma (px) of a Gaussian blur of ``image`` before thresholding; 0 = none.

    Returns
    -------
    ndarray of bool, shape (H, W)
        Empty when the region is empty or its pixels are all equal.
    """
    image = smooth_image(as_float_image(image), smooth)
    region = np.asarray(region, dtype=bool)
    if region.shape != image.shape:
        raise ValueError(f"region shape {region.shape} differs from image shape {image.shape}")
    values = image[region]
    if is_constant(values):
        return np.zeros_like(region)
    return region & (image > global_threshold(values, method))
