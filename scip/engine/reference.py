"""Exact whole-image threshold segmentation of an image of any size, with dask-image, as a reference.

The tiled path (:func:`scip.slide.segment_slide`, tiles with margins, a slide-wide
threshold, ownership by centroid) is built to give the objects a whole-image
segmentation gives, without holding the image. Whether it does can only be
checked against something that *is* a whole-image segmentation and still
fits in memory on a large image: :func:`label_reference` thresholds the image
as one dask array and labels it with ``dask_image.ndmeasure.label``, whose
connected components are exact across block borders by construction (each
block is labelled alone, then labels that touch across a block face are
merged as a graph). No margins, no diameter, no ownership: nothing that the
tiled path's correctness rests on is used here.

It reproduces the threshold methods (``otsu``, ``li`` with ``smooth``,
``fill_holes: false``, ``min_size: 0``, ``remove_border: false``): the
Gaussian blur of ``smooth`` (``dask_image.ndfilters.gaussian_filter``,
``mode="nearest"``, the same scipy kernel, with an overlap of its full
reach, so values are those of scipy on the whole image), the image-wide
Otsu level (:func:`otsu_level`, the same 256 bins as scikit-image), and
4-connected objects (:data:`scip.segment._util.CONNECTIVITY`).

Why only as a reference and not as the path of ``scip run``: measured in
``benchmarks/results/dask_image.md``, ``docs/dask_image.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["OTSU_BINS", "as_dask", "otsu_level", "label_reference"]

#: Bins of the Otsu histogram, as :func:`skimage.filters.threshold_otsu` and the tiled statistics pass.
OTSU_BINS = 256


def as_dask(image: "np.ndarray | da.Array", chunks: int | tuple[int, int] = 1024) -> "da.Array":
    """A 2-D image as a float64 dask array (a dask array keeps its blocks).

    Parameters
    ----------
    image : ndarray or dask array, shape (H, W)
        The pixels; an image from :func:`scip.engine.arrays.to_dask` stays lazy.
    chunks : int or (int, int), optional
        Block side(s) for a numpy input.

    Returns
    -------
    dask.array.Array
        ``(H, W)`` float64.

    Raises
    ------
    ValueError
        If ``image`` is not 2-D.
    """
    import dask.array as da

    array = image if isinstance(image, da.Array) else da.from_array(np.asarray(image), chunks=chunks)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D image (H, W), got shape {tuple(array.shape)}")
    return array.astype(np.float64)


def otsu_level(image: "da.Array") -> float:
    """Otsu's threshold of the whole image, from a histogram summed over its blocks.

    Parameters
    ----------
    image : dask array, shape (H, W)
        Values to threshold (already smoothed, float64).

    Returns
    -------
    float
        The level, as :func:`skimage.filters.threshold_otsu` on the whole
        image returns it (256 equal bins over [min, max]); a constant image's
        value for a constant image, so that nothing lies above it.
    """
    import dask.array as da
    from skimage.filters import threshold_otsu

    lo, hi = (float(v) for v in da.compute(image.min(), image.max()))
    if lo == hi:
        return lo
    counts, edges = da.histogram(image, bins=OTSU_BINS, range=(lo, hi))
    counts = counts.compute()
    return float(threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2.0)))


def label_reference(image: "np.ndarray | da.Array", *, smooth: float = 0.0, level: float | None = None,
                    chunks: int | tuple[int, int] = 1024, persist: bool = True) -> tuple["da.Array", float]:
    """Label the regions brighter than an image-wide threshold, exactly and without seams.

    Parameters
    ----------
    image : ndarray or dask array, shape (H, W)
        The image; any real dtype (compared as float64).
    smooth : float, optional
        Gaussian sigma in pixels applied first, as the ``smooth`` of the
        ``otsu`` and ``li`` methods; 0 disables it.
    level : float, optional
        The threshold of the smoothed image; by default its Otsu level
        (:func:`otsu_level`). Pass a tiled run's ``statistics.level`` to check
        its labelling alone, or a Li level computed elsewhere.
    chunks : int or (int, int), optional
        Block side(s) when ``image`` is a numpy array.
    persist : bool, optional
        Compute the thresholded mask first and keep it, then the labels (in
        memory, the workers' on a cluster: 1 + 4 bytes per pixel, ``int32``
        labels). dask-image builds one small graph per pair of neighbouring
        blocks, and each of them walks the whole graph above it: on a mask
        that is still a chain of reads, blurs and comparisons that costs the
        driver several times the labelling itself. The labels are persisted
        too because their graph refers to the mask's blocks by name only: the
        mask must stay held until they are computed. ``False`` returns a lazy
        graph whose memory is bounded by a few blocks (slow to build on many
        blocks).

    Returns
    -------
    labels : dask array of int, shape (H, W)
        Persisted or lazy (``persist``); 0 for background, the 4-connected
        objects numbered consecutively ``1..N`` (so ``N`` is its maximum), in an order of
        dask-image's choosing: compare objects, not numbers. Compute it, or
        store it block by block (``dask.array.to_zarr``) when it does not fit
        in memory.
    level : float
        The threshold used.

    Raises
    ------
    ValueError
        If ``image`` is not 2-D or ``smooth`` is negative.
    """
    from dask_image import ndfilters, ndmeasure
    from scipy import ndimage as ndi

    from scip.segment._util import CONNECTIVITY

    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    array = as_dask(image, chunks)
    if smooth > 0:
        array = ndfilters.gaussian_filter(array, sigma=smooth, mode="nearest")
    if level is None:
        level = otsu_level(array)
    mask = array > level
    if persist:
        mask = mask.persist()
    labels, _ = ndmeasure.label(mask, structure=ndi.generate_binary_structure(2, CONNECTIVITY))
    if persist:
        labels = labels.persist()
    return labels, float(level)
