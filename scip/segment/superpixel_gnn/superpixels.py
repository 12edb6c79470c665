"""Superpixels computed tile by tile, numbered once for the whole image.

SLIC (:func:`skimage.segmentation.slic`) runs on one tile at a time, so its
working memory (distance and label buffers, a few float arrays the size of
the tile) is bounded by the tile size, not the image size. Each tile's
superpixels get ids that follow the previous tile's, so ids are unique over
the whole image and every superpixel lies inside exactly one tile: tile
borders are superpixel borders. Superpixels of neighbouring tiles touch
across those borders, and :func:`scip.segment.superpixel_gnn.graph.build_graph`
joins them into one graph.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from skimage import segmentation

__all__ = ["tiles", "slic_tile", "superpixels", "normalize_image", "DEFAULT_SIZE", "DEFAULT_COMPACTNESS"]

#: Mean superpixel area in pixels (about 8 x 8: ~8 superpixels per 26 px nucleus).
DEFAULT_SIZE = 64
#: SLIC compactness for intensities normalized to about [0, 1] (see :func:`normalize_image`).
DEFAULT_COMPACTNESS = 0.05
#: Most pixels used to estimate the normalization percentiles of a large image.
_PERCENTILE_SAMPLE = 4_000_000


def tiles(shape: tuple[int, int], tile: int) -> Iterator[tuple[slice, slice]]:
    """The ``(rows, cols)`` slices of a grid of tiles of side ``tile`` covering ``shape``, in raster order.

    Parameters
    ----------
    shape : (int, int)
        Image height and width.
    tile : int
        Tile side in pixels (the last row and column of tiles may be smaller).

    Yields
    ------
    (slice, slice)
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    height, width = shape
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            yield slice(y, min(y + tile, height)), slice(x, min(x + tile, width))


def normalize_image(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale each channel so that its ``low`` / ``high`` percentiles become 0 / 1.

    Percentiles of images larger than a few million pixels are estimated on
    a regular subsample, so that they need no full sorted copy.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
    low, high : float
        Percentiles in [0, 100].

    Returns
    -------
    ndarray of float32, shape (C, H, W)
        Not clipped; a constant channel becomes zeros.
    """
    image = np.asarray(image)
    out = np.empty(image.shape, np.float32)
    for c in range(image.shape[0]):
        channel = image[c]
        step = max(1, int(np.ceil(np.sqrt(channel.size / _PERCENTILE_SAMPLE))))
        lo, hi = np.percentile(channel[::step, ::step], [low, high])
        scale = hi - lo
        if scale > 0:
            np.subtract(channel, lo, out=out[c], casting="unsafe")
            out[c] /= scale
        else:
            out[c] = 0.0
    return out


def slic_tile(image: np.ndarray, *, size: int = DEFAULT_SIZE, compactness: float = DEFAULT_COMPACTNESS) -> np.ndarray:
    """SLIC superpixels of one tile, numbered 0..n-1 without gaps.

    Parameters
    ----------
    image : ndarray, shape (C, h, w)
        Normalized intensities (:func:`normalize_image`).
    size : int
        Target mean superpixel area in pixels.
    compactness : float
        SLIC's balance of intensity and space; larger gives more regular,
        square superpixels.

    Returns
    -------
    ndarray of int32, shape (h, w)
    """
    h, w = image.shape[1:]
    n_segments = max(1, int(round(h * w / size)))
    if h * w < 4 or n_segments == 1:
        return np.zeros((h, w), np.int32)
    data = np.moveaxis(image, 0, -1) if image.shape[0] > 1 else image[0]
    labels = segmentation.slic(data, n_segments=n_segments, compactness=compactness, sigma=0.5,
                               channel_axis=-1 if image.shape[0] > 1 else None, start_label=0,
                               enforce_connectivity=True)
    # SLIC may leave unused ids after enforcing connectivity; close the gaps.
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(h, w).astype(np.int32)


def superpixels(image: np.ndarray, *, size: int = DEFAULT_SIZE, compactness: float = DEFAULT_COMPACTNESS,
                tile: int = 1024) -> np.ndarray:
    """Superpixels of a whole image, computed tile by tile with unique ids.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
        Normalized intensities (:func:`normalize_image`).
    size : int
        Target mean superpixel area in pixels.
    compactness : float
        SLIC compactness (see :func:`slic_tile`).
    tile : int
        Side of the square tiles SLIC runs on; bounds its memory.

    Returns
    -------
    ndarray of int32, shape (H, W)
        Superpixel ids 0..n-1, consecutive, in tile raster order; no
        superpixel crosses a tile border.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an image (C, H, W), got shape {image.shape}")
    if size < 1:
        raise ValueError(f"superpixel size must be >= 1, got {size}")
    out = np.empty(image.shape[1:], np.int32)
    offset = 0
    for rows, cols in tiles(image.shape[1:], tile):
        labels = slic_tile(image[:, rows, cols], size=size, compactness=compactness)
        out[rows, cols] = labels + offset
        offset += int(labels.max()) + 1
    return out
