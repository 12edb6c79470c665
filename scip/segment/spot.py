"""Segmentation of small bright spots: foci, micronuclei, speckles."""

from __future__ import annotations

import numpy as np
from skimage import morphology

from ._util import as_float_image, global_threshold, is_constant, remove_small_and_relabel, smooth_image

__all__ = ["spot"]

SPOT_THRESHOLDS = ("otsu", "std")


def spot(
    image: np.ndarray,
    *,
    smooth: float = 0.0,
    min_size: int = 2,
    radius: int = 3,
    threshold: str = "std",
    k: float = 3.0,
    level: float | None = None,
) -> np.ndarray:
    """Label small bright spots, ignoring larger bright structures.

    A white top-hat (the image minus its morphological opening by a disk)
    keeps only bright features that the disk does not fit in, so spots
    sitting on a nucleus or cell body stand out against a flat background;
    the top-hat image is then thresholded globally.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Intensity image of any real dtype; it is converted to float64. It
        must not contain NaN (callers reject such images first).
    smooth : float, optional
        Standard deviation in pixels of a Gaussian blur applied first,
        against pixel noise; 0 (the default) disables it, since blurring
        also dims spots of a few pixels.
    min_size : int, optional
        Spots with fewer pixels are removed.
    radius : int, optional
        Radius in pixels of the top-hat disk. Bright structures the disk
        fits in (about wider than ``2 * radius + 1``) are removed, so choose
        it slightly larger than the largest spot radius.
    threshold : {"otsu", "std"}, optional
        ``"otsu"``: Otsu's threshold of the top-hat image. ``"std"``: the
        top-hat's mean plus ``k`` standard deviations, steadier when spots
        are few and Otsu splits the background noise instead.
    k : float, optional
        Number of standard deviations for ``threshold="std"``.
    level : float, optional
        Threshold of the top-hat image to use instead of computing it from
        this image (windows of a large image share the whole image's,
        :mod:`scip.segment.image_statistics`).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 for background, 4-connected spots numbered 1..N. A constant image
        has no spots.
    """
    if threshold not in SPOT_THRESHOLDS:
        raise ValueError(f"threshold must be one of {SPOT_THRESHOLDS}, got {threshold!r}")
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    image = smooth_image(as_float_image(image), smooth)
    tophat = morphology.white_tophat(image, morphology.disk(radius))
    if level is not None:
        return remove_small_and_relabel(tophat > level, min_size)
    if is_constant(tophat):
        return np.zeros(image.shape, dtype=np.int32)
    if threshold == "otsu":
        level = global_threshold(tophat, "otsu")
    else:
        level = float(tophat.mean() + k * tophat.std())
    return remove_small_and_relabel(tophat > level, min_size)
