"""Tiles with margins, and who owns an object that several tiles see (plain numpy, no Dask).

The image is cut into a grid of *cores* of ``size x size`` pixels (the last
row and column of tiles may be smaller). Each tile is segmented on its
*window*: the core plus ``margin`` pixels of context on every side, clipped
to the image. Windows overlap, so an object near a core's edge is found by
several tiles; the tile whose core holds the object's centroid *owns* it and
is the only one that writes it. An object no wider than the margin is whole
in its owner's window: every pixel lies within one diameter of the centroid,
which is inside the core. A larger object may touch the window's outer edge
(where the window is cut, not where the image ends): it is kept but counted
as *cut* (``touches_margin`` in the cell table), a sign that the margin is too
small for it.

Labels are made globally unique in two passes. Pass 1 segments every window
and numbers the objects it owns ``1..k`` (the other objects it saw get
``k+1..n``, so later steps still know those pixels are cells). Then the
driver adds up ``k`` tile by tile: the owned object ``i`` of a tile becomes
``offset + i``, with ``offset`` the number of objects owned by the tiles
before it in raster order. There is no per-tile cap on the number of objects.
Pass 2 writes each output chunk (one core) from the owned objects of its own
tile and its neighbours, so each chunk is written by exactly one task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

__all__ = ["Tiling", "WindowResult", "segment_window", "assemble_core", "object_table", "polygon_wkb"]

#: Columns of the cell table, before the optional ``geometry`` and feature columns.
TABLE_COLUMNS = {"label": "int64", "centroid_y": "float64", "centroid_x": "float64", "bbox_min_row": "int64",
                 "bbox_min_col": "int64", "bbox_max_row": "int64", "bbox_max_col": "int64", "area": "int64",
                 "tile_row": "int64", "tile_col": "int64", "touches_margin": "bool"}


@dataclass(frozen=True)
class Tiling:
    """A grid of tiles over an image of ``shape`` pixels.

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` of the image.
    size : int
        Side of a tile's core; the output label image is chunked by it.
    margin : int
        Context in pixels added on every side of a core to make its window.
    """

    shape: tuple[int, int]
    size: int
    margin: int

    def __post_init__(self) -> None:
        if self.size < 2 * self.margin:
            raise ValueError(f"tile size {self.size} is smaller than 2 x margin ({2 * self.margin})")

    @property
    def grid(self) -> tuple[int, int]:
        """Tiles along y and x."""
        return (-(-self.shape[0] // self.size), -(-self.shape[1] // self.size))

    @property
    def frame(self) -> int:
        """Side of the (unclipped) window: ``size + 2 * margin``."""
        return self.size + 2 * self.margin

    def tiles(self) -> list[tuple[int, int]]:
        """Every tile ``(row, col)``, in raster order."""
        return [(r, c) for r in range(self.grid[0]) for c in range(self.grid[1])]

    def core(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of the tile's core."""
        y0, x0 = row * self.size, col * self.size
        return y0, min(y0 + self.size, self.shape[0]), x0, min(x0 + self.size, self.shape[1])

    def window(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of the tile's window: the core and its margin, clipped to the image."""
        y0, y1, x0, x1 = self.core(row, col)
        m = self.margin
        return max(y0 - m, 0), min(y1 + m, self.shape[0]), max(x0 - m, 0), min(x1 + m, self.shape[1])

    def frame_origin(self, row: int, col: int) -> tuple[int, int]:
        """Image coordinates of the frame's top-left pixel (may be negative at the image's top/left edge)."""
        return row * self.size - self.margin, col * self.size - self.margin

    def neighbours(self, row: int, col: int) -> list[tuple[int, int]]:
        """Tiles whose windows reach into this tile's core, this tile first, then in raster order."""
        # size >= 2 * margin, so a window reaches only into the next core on each side.
        around = [(r, c) for r in range(max(row - 1, 0), min(row + 2, self.grid[0]))
                  for c in range(max(col - 1, 0), min(col + 2, self.grid[1])) if (r, c) != (row, col)]
        return [(row, col), *around]


@dataclass(frozen=True)
class WindowResult:
    """What pass 1 learns about one tile.

    Attributes
    ----------
    labels : ndarray of uint32
        The window's labels: owned objects ``1..owned``, other objects after them.
    owned : int
        Objects whose centroid lies in the core (kept; written by this tile).
    found : int
        Objects the segmentation found in the whole window.
    cut : int
        Owned objects that touch the window's outer edge where the image goes on.
    border : int
        Objects owned by this tile that touch the image border and were dropped (``remove_border``).
    """

    labels: np.ndarray
    owned: int
    found: int
    cut: int
    border: int


def _props(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Area, centroid (row, col) and bounding box ``(n, 4)`` of labels ``1..n``, local coordinates."""
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:].astype(np.int64)
    rows, cols = np.indices(labels.shape, dtype=np.float64).reshape(2, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(flat, weights=rows, minlength=n + 1)[1:] / area
        cx = np.bincount(flat, weights=cols, minlength=n + 1)[1:] / area
    bbox = np.zeros((n, 4), dtype=np.int64)
    for i, sl in enumerate(ndi.find_objects(labels, max_label=n)):
        if sl is not None:
            bbox[i] = (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
    return area, cy, cx, bbox


def segment_window(image: np.ndarray, tiling: Tiling, row: int, col: int,
                   segment: Callable[[np.ndarray], np.ndarray], remove_border: bool = True) -> WindowResult:
    """Segment one tile's window and decide which objects the tile owns (pass 1).

    Parameters
    ----------
    image : ndarray, shape (h, w) or (C, h, w)
        The window's pixels (:meth:`Tiling.window`), as the method takes them.
    tiling : Tiling
    row, col : int
        The tile.
    segment : callable
        ``segment(image) -> labels`` (int, 0 background); any method of
        :data:`scip.segment.METHODS` with its parameters bound.
    remove_border : bool, optional
        Drop owned objects that touch the image border (cut by the edge of the scan).

    Returns
    -------
    WindowResult
    """
    wy0, wy1, wx0, wx1 = tiling.window(row, col)
    labels = np.asarray(segment(image))
    if labels.shape != (wy1 - wy0, wx1 - wx0):
        raise ValueError(f"segmentation returned labels of shape {labels.shape} for a window of "
                         f"{(wy1 - wy0, wx1 - wx0)}")
    labels = labels.astype(np.int64, copy=False)
    n = int(labels.max(initial=0))
    if n == 0:
        return WindowResult(np.zeros(labels.shape, np.uint32), 0, 0, 0, 0)
    area, cy, cx, bbox = _props(labels, n)
    present = area > 0
    cy0, cy1, cx0, cx1 = tiling.core(row, col)
    # floor() puts a centroid on a core boundary in exactly one core; the
    # centroid is computed from the same pixels, in image coordinates, by every tile that sees the object whole.
    gy, gx = np.floor(cy + wy0), np.floor(cx + wx0)
    owned = present & (gy >= cy0) & (gy < cy1) & (gx >= cx0) & (gx < cx1)
    h, w = labels.shape
    H, W = tiling.shape
    at_top, at_left, at_bottom, at_right = bbox[:, 0] == 0, bbox[:, 1] == 0, bbox[:, 2] == h, bbox[:, 3] == w
    inner = (at_top & (wy0 > 0)) | (at_left & (wx0 > 0)) | (at_bottom & (wy1 < H)) | (at_right & (wx1 < W))
    outer = (at_top & (wy0 == 0)) | (at_left & (wx0 == 0)) | (at_bottom & (wy1 == H)) | (at_right & (wx1 == W))
    dropped = owned & outer if remove_border else np.zeros(n, bool)
    kept = owned & ~dropped
    others = present & ~kept
    lookup = np.zeros(n + 1, dtype=np.uint32)
    n_kept = int(kept.sum())
    lookup[1:][kept] = np.arange(1, n_kept + 1, dtype=np.uint32)
    lookup[1:][others] = np.arange(n_kept + 1, n_kept + 1 + int(others.sum()), dtype=np.uint32)
    return WindowResult(lookup[labels], n_kept, int(present.sum()), int((kept & inner).sum()), int(dropped.sum()))


def assemble_core(core: tuple[int, int, int, int], pieces: Sequence[tuple[np.ndarray, tuple[int, int], int, int]],
                  dtype: np.dtype) -> tuple[np.ndarray, int]:
    """One output chunk from the owned objects of the tiles that see it (pass 2).

    Parameters
    ----------
    core : (y0, y1, x0, x1)
        The chunk, in image coordinates.
    pieces : sequence of (labels, origin, owned, offset)
        For each tile whose window reaches the core, the chunk's own tile
        first: its frame labels (pass 1), the frame's top-left image
        coordinates, its number of owned objects and its label offset.
    dtype : numpy dtype
        Of the output labels.

    Returns
    -------
    chunk : ndarray
        Global labels of the core.
    conflicts : int
        Pixels claimed by owned objects of two tiles (their segmentations of
        the overlap disagree); the first claim, the own tile's, wins.
    """
    y0, y1, x0, x1 = core
    out = np.zeros((y1 - y0, x1 - x0), dtype=dtype)
    conflicts = 0
    for labels, (oy, ox), owned, offset in pieces:
        if owned == 0:
            continue
        # The part of the core this tile's frame covers (all of it for the own tile, a margin strip for a neighbour).
        ry0, ry1 = max(y0, oy), min(y1, oy + labels.shape[0])
        rx0, rx1 = max(x0, ox), min(x1, ox + labels.shape[1])
        if ry0 >= ry1 or rx0 >= rx1:
            continue
        local = labels[ry0 - oy:ry1 - oy, rx0 - ox:rx1 - ox]
        mine = (local >= 1) & (local <= owned)
        if not mine.any():
            continue
        target = out[ry0 - y0:ry1 - y0, rx0 - x0:rx1 - x0]
        conflicts += int(np.count_nonzero(mine & (target != 0)))
        write = mine & (target == 0)
        target[write] = local[write].astype(dtype) + dtype.type(offset)
    return out, conflicts


def polygon_wkb(mask: np.ndarray, origin: tuple[int, int]) -> bytes:
    """Outline of one object as WKB: a polygon (or multipolygon) through its boundary pixels' edges' midpoints.

    Coordinates are ``x = column``, ``y = row`` of the image, pixel centres at
    integers (marching squares at level 0.5 on the object's mask); holes are
    kept.

    Parameters
    ----------
    mask : ndarray of bool
        The object within its bounding box.
    origin : (int, int)
        Image ``(row, col)`` of the mask's top-left pixel.
    """
    import shapely
    from skimage import measure

    padded = np.pad(mask.astype(np.float32), 1)
    rings = [shapely.Polygon(np.column_stack([c[:, 1] + origin[1] - 1, c[:, 0] + origin[0] - 1]))
             for c in measure.find_contours(padded, 0.5) if len(c) >= 4]
    # Outer boundaries and hole boundaries come out alike: the symmetric
    # difference of all rings nests them correctly (a hole's ring lies inside its object's ring).
    shape = shapely.Polygon()
    for ring in sorted(rings, key=lambda p: -p.area):
        shape = shapely.symmetric_difference(shape, shapely.make_valid(ring))
    return shapely.to_wkb(shape)


def object_table(labels: np.ndarray, owned: int, window: tuple[int, int, int, int], image_shape: tuple[int, int],
                 tile: tuple[int, int], offset: int, polygons: bool = False) -> pd.DataFrame:
    """One row per object a tile owns: global label, centroid, bounding box, area, tile of origin.

    Parameters
    ----------
    labels : ndarray of int
        The window's labels from pass 1 (owned objects ``1..owned``).
    owned : int
        Number of owned objects.
    window : (y0, y1, x0, x1)
        The window in image coordinates.
    image_shape : (int, int)
        ``(H, W)``, to tell the window's cut edges from the image border.
    tile : (int, int)
        The tile's ``(row, col)``.
    offset : int
        Global label of the tile's object 1, minus one.
    polygons : bool, optional
        Add a ``geometry`` column of WKB outlines (:func:`polygon_wkb`).

    Returns
    -------
    pandas.DataFrame
        Columns of :data:`TABLE_COLUMNS` (bounding boxes half-open, as
        scikit-image's ``bbox``), then ``geometry`` if asked.
    """
    wy0, wy1, wx0, wx1 = window
    mine = np.where(labels <= owned, labels, 0).astype(np.int64)
    area, cy, cx, bbox = _props(mine, owned)
    h, w = labels.shape
    inner = (((bbox[:, 0] == 0) & (wy0 > 0)) | ((bbox[:, 1] == 0) & (wx0 > 0))
             | ((bbox[:, 2] == h) & (wy1 < image_shape[0])) | ((bbox[:, 3] == w) & (wx1 < image_shape[1])))
    frame = pd.DataFrame({
        "label": offset + np.arange(1, owned + 1, dtype=np.int64),
        "centroid_y": cy + wy0, "centroid_x": cx + wx0,
        "bbox_min_row": bbox[:, 0] + wy0, "bbox_min_col": bbox[:, 1] + wx0,
        "bbox_max_row": bbox[:, 2] + wy0, "bbox_max_col": bbox[:, 3] + wx0,
        "area": area, "tile_row": np.full(owned, tile[0], np.int64), "tile_col": np.full(owned, tile[1], np.int64),
        "touches_margin": inner,
    }).astype(TABLE_COLUMNS)
    if polygons:
        frame["geometry"] = [polygon_wkb(mine[r0:r1, c0:c1] == i + 1, (r0 + wy0, c0 + wx0))
                             for i, (r0, c0, r1, c1) in enumerate(bbox)]
    return frame
