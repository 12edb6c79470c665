"""Threshold, then split touching objects with a distance-transform watershed."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, measure, segmentation

from ._util import (
    CONNECTIVITY,
    as_float_image,
    foreground_mask,
    remove_small_and_relabel,
    smooth_image,
)

__all__ = ["watershed"]

# Distance values closer than this (in pixels) count as one plateau; absorbs
# the rounding noise the Gaussian blur leaves on flat ridges.
_PLATEAU_TOL = 1e-6


def _markers(
    distance: np.ndarray,
    components: np.ndarray,
    min_distance: int,
    footprint: np.ndarray | None,
) -> np.ndarray:
    """Seeds for the watershed: one per peak of ``distance``, at least one per component."""
    if footprint is None:
        footprint = np.ones((2 * min_distance + 1,) * 2, dtype=bool)
    peaks = feature.peak_local_max(
        distance,
        min_distance=min_distance,
        footprint=footprint,
        labels=components,
        exclude_border=False,
    )
    # On a flat ridge (a straight-sided or one-pixel-thin object) every pixel
    # is a maximum and peak_local_max keeps one every min_distance pixels,
    # cutting the object in pieces; seeds on one connected plateau of maxima
    # are therefore merged into a single seed.
    local_max = distance >= ndi.maximum_filter(distance, footprint=footprint) - _PLATEAU_TOL
    plateaus = measure.label(local_max & (components > 0), connectivity=CONNECTIVITY)
    seeded = np.zeros(int(plateaus.max()) + 1, dtype=bool)
    seeded[plateaus[tuple(peaks.T)]] = True
    seeded[0] = False
    markers = measure.label(seeded[plateaus], connectivity=CONNECTIVITY).astype(np.int64)
    # Defensive: a component without any seed would be left unlabelled.
    n_components = int(components.max())
    has_seed = np.zeros(n_components + 1, dtype=bool)
    has_seed[components[markers > 0]] = True
    missing = np.flatnonzero(~has_seed[1:]) + 1
    if missing.size:
        positions = ndi.maximum_position(distance, components, index=missing)
        rows, cols = np.asarray(positions, dtype=np.intp).reshape(-1, 2).T
        markers[rows, cols] = markers.max() + np.arange(1, missing.size + 1)
    return markers


def watershed(
    image: np.ndarray,
    *,
    smooth: float = 1.0,
    min_size: int = 20,
    fill_holes: bool = True,
    threshold: str = "otsu",
    min_distance: int = 5,
    footprint: np.ndarray | None = None,
    compactness: float = 0.0,
    distance_smooth: float = 1.0,
    level: float | None = None,
) -> np.ndarray:
    """Segment bright objects and split those that touch.

    The foreground is found as in :func:`scip.segment.otsu` (or ``li``).
    Touching round objects form a blob whose distance transform has one
    peak per object; each peak seeds a watershed of the inverted distance,
    which cuts the blob along its necks.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Intensity image of any real dtype; it is converted to float64. It
        must not contain NaN (callers reject such images first).
    smooth : float, optional
        Standard deviation in pixels of the Gaussian blur applied before
        thresholding; 0 disables it.
    min_size : int, optional
        Objects with fewer pixels are removed after the split.
    fill_holes : bool, optional
        Fill holes in the foreground before the distance transform; holes
        would otherwise create spurious distance peaks.
    threshold : {"otsu", "li"}, optional
        Global threshold method for the foreground.
    min_distance : int, optional
        Smallest distance in pixels between two seeds; about the radius of
        the smallest object to keep whole. The default suits nuclei of about
        15-40 px diameter.
    footprint : ndarray of bool, optional
        Neighbourhood in which a seed must be the maximum, instead of the
        square of side ``2 * min_distance + 1``; seeds are still kept
        ``min_distance`` apart (see :func:`skimage.feature.peak_local_max`).
    compactness : float, optional
        Compact watershed parameter; > 0 gives more regular, convex regions
        (see :func:`skimage.segmentation.watershed`).
    distance_smooth : float, optional
        Standard deviation in pixels of a Gaussian blur of the distance map
        before the seeds are picked. Ragged outlines give the raw distance
        map spurious ridges and peaks, so each object would be cut in
        several; 0 disables it.
    level : float, optional
        Threshold of the smoothed image to use instead of ``threshold``'s
        method computed on ``image`` (windows of a large image share the
        whole image's, :mod:`scip.segment.image_statistics`).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 for background, objects numbered 1..N. A constant image has no
        objects.

    Notes
    -----
    Every connected component of the foreground gets at least one seed, so
    no foreground region is lost. On the 512x512 DSB 2018 nuclei image in
    ``tests/data/stardist-dsb2018`` the defaults reach F1 of about 0.76 at
    IoU 0.5, against about 0.53 for plain Otsu.
    """
    if threshold not in ("otsu", "li"):
        raise ValueError(f"threshold must be 'otsu' or 'li', got {threshold!r}")
    if min_distance < 1:
        raise ValueError(f"min_distance must be >= 1, got {min_distance}")
    image = as_float_image(image)
    mask = foreground_mask(image, smooth=smooth, threshold=threshold, fill_holes=fill_holes, level=level)
    if not mask.any():
        return np.zeros(image.shape, dtype=np.int32)
    components = measure.label(mask, connectivity=CONNECTIVITY)
    distance = smooth_image(ndi.distance_transform_edt(mask), distance_smooth)
    markers = _markers(distance, components, min_distance, footprint)
    labels = segmentation.watershed(
        -distance,
        markers,
        mask=mask,
        compactness=compactness,
        connectivity=CONNECTIVITY,
    )
    return remove_small_and_relabel(labels, min_size)
