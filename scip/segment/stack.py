"""3-D objects from a z stack: each plane segmented in 2-D, then the planes stitched.

Any 2-D method (:data:`scip.segment.METHODS`) labels each plane on its own;
:func:`scip.segment.stitch.stitch3d` then joins the labels of neighbouring
planes into 3-D objects with Cellpose's ``stitch3D`` rule (an object of plane
``z + 1`` joins the object of plane ``z`` it overlaps best, if their IoU
reaches ``stitch_threshold``). Objects are numbered 1..N.

A plane holding no object still gets a threshold from its own noise when a
method computes it plane by plane, and then finds specks everywhere. The
planes of a stack therefore share the statistic the method would take from
a whole image (:func:`stack_parameters`: Otsu or Li level, normalization
percentiles), computed over every plane, as the windows of a tiled image do
(:mod:`scip.segment.image_statistics`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .image_statistics import image_statistic

__all__ = ["STITCH_THRESHOLD", "segment_stack", "stack_parameters"]

#: Cellpose's usual ``stitch_threshold`` for 3-D stitching (its documentation
#: and examples use 0.25; its own default of 0 means "do not stitch").
STITCH_THRESHOLD = 0.25


def segment_stack(
    stack: Any,
    segment_fn: Callable[[np.ndarray], np.ndarray],
    stitch_threshold: float = STITCH_THRESHOLD,
    *,
    min_planes: int = 1,
    threads: int | None = None,
) -> np.ndarray:
    """Segment every plane of ``stack`` with ``segment_fn`` and stitch the planes into 3-D objects.

    Parameters
    ----------
    stack : array-like, shape (Z, ...)
        The planes: ``stack[z]`` is what ``segment_fn`` receives, ``(H, W)``
        for a one-channel method, ``(C, H, W)`` for a multi-channel model.
    segment_fn : callable
        A 2-D segmentation: one plane in, an integer label image ``(H, W)``
        out (0 background), e.g. ``functools.partial(scip.segment.segment,
        method="otsu")``.
    stitch_threshold : float, optional
        Least IoU for an object to join an object of the plane below; in
        ``[0, 1]``. 1 never joins two planes' objects unless identical.
    min_planes : int, optional
        3-D objects spanning fewer planes than this are dropped (a plane's
        speck of noise that joined nothing); 1 keeps all.
    threads : int, optional
        Threads of the stitching (see :func:`~scip.segment.stitch.stitch3d`).

    Returns
    -------
    ndarray of int32, shape (Z, H, W)
        0 background, 3-D objects numbered 1..N (int64 past 2**31 - 1).

    Raises
    ------
    ValueError
        If ``stack`` has no plane, ``stitch_threshold`` is outside ``[0, 1]``,
        ``min_planes`` is below 1, or ``segment_fn`` returns labels whose
        shape differs between planes or is not 2-D.
    """
    if not 0 <= stitch_threshold <= 1:
        raise ValueError(f"stitch_threshold must be in [0, 1], got {stitch_threshold!r}")
    if int(min_planes) < 1:
        raise ValueError(f"min_planes must be >= 1, got {min_planes!r}")
    n_planes = len(stack)
    if n_planes == 0:
        raise ValueError("the stack has no plane to segment")
    planes = []
    for z in range(n_planes):
        labels = np.asarray(segment_fn(np.asarray(stack[z])))
        if labels.ndim != 2 or (planes and labels.shape != planes[0].shape):
            expected = f"{planes[0].shape}, as plane 0" if planes else "2-D (H, W)"
            raise ValueError(f"plane {z}: the segmentation returned labels of shape {labels.shape}; expected {expected}")
        planes.append(labels)
    # Imported here: stitching is compiled (numba), and a run that never stitches should not load it.
    from .stitch import stitch3d

    merged = np.stack(planes)
    del planes
    # In place, as Cellpose does, when the planes' type is the one stitch3d would allocate: no second stack.
    objects = stitch3d(merged, stitch_threshold, threads=threads, out=merged if merged.dtype == np.int32 else None)
    if min_planes > 1:
        objects = _drop_thin(objects, int(min_planes))
    return objects


def _drop_thin(objects: np.ndarray, min_planes: int) -> np.ndarray:
    """Remove objects on fewer than ``min_planes`` planes; renumber the rest 1..N in order."""
    n = int(objects.max())
    # Planes an object lies on: one flag per (plane, label), summed over planes.
    on_plane = np.zeros((objects.shape[0], n + 1), bool)
    for z in range(objects.shape[0]):
        on_plane[z, np.unique(objects[z])] = True
    keep = on_plane.sum(axis=0) >= min_planes
    keep[0] = False
    lut = np.zeros(n + 1, objects.dtype)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[objects]


def stack_parameters(stack: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The statistic ``method`` takes from a whole image, computed over every plane of ``stack``.

    Parameters
    ----------
    stack : array-like, shape (Z, ...)
        Planes, as :func:`segment_stack` gets them.
    method : str
        A key of :data:`scip.segment.METHODS`.
    params : dict
        Its keyword parameters.

    Returns
    -------
    dict
        Keyword arguments that fix the statistic for every plane (e.g.
        ``{"level": 206.0}``); empty when ``params`` already fix it or the
        method takes none.
    """
    stat = image_statistic(method, params)
    if stat is None or len(stack) == 0:
        return {}
    # Each plane is transformed as the method transforms a 2-D image (its
    # smoothing stays within the plane), then the planes' summaries merge.
    values = [stat.transform(np.asarray(stack[z])) for z in range(len(stack))]
    ranges = stat.summarize_range(values[0])
    for v in values[1:]:
        ranges = ranges.merge(stat.summarize_range(v))
    histograms = None
    if stat.needs_histogram:
        histograms = stat.summarize_histogram(values[0], ranges)
        for v in values[1:]:
            histograms = histograms.merge(stat.summarize_histogram(v, ranges))
    return stat.finish(ranges, histograms)
