"""What every feature family works on: the objects of one label image.

:class:`Objects` is built once per :func:`scip.features.extract` call. It
sorts the foreground pixels by label a single time, so each family reduces
contiguous runs instead of looping over objects in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from scip._featureparams import FeatureParams

from ._groups import Groups, compact_labels, group_pixels, index_dtype, segment_ids

__all__ = ["BandRegions", "FeatureParams", "Objects", "Scratch", "empty"]

#: Grouped pixels gathered per step in :attr:`Objects.channel_values`.
_GATHER_CHUNK = 1 << 17



def gather_float64(flat: np.ndarray, index: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[c] = flat[c][index]`` as float64 for every row ``c`` of ``flat`` (C, N); returns ``out`` (C, len(index)).

    In chunks: numpy indexes with intp only and would convert an int32 index
    into an index-sized intp copy first (per channel); a chunk's copy stays in
    cache and serves every channel, and so does one buffer of the pixels' own
    dtype, where ``np.take(...).astype(np.float64)`` writes two fresh
    index-sized arrays (10 % faster than the whole-array np.take with an intp
    index; mode="clip" writes into the buffer directly, the positions are in
    range anyway).
    """
    scratch = np.empty(min(index.size, _GATHER_CHUNK), flat.dtype)
    for a in range(0, index.size, _GATHER_CHUNK):
        part = index[a:a + _GATHER_CHUNK].astype(np.intp, copy=False)
        got = scratch[:part.size]
        for c in range(flat.shape[0]):
            np.take(flat[c], part, out=got, mode="clip")
            out[c, a:a + part.size] = got
    return out


class Scratch:
    """Per-pixel buffers that one :func:`scip.features.extract` call reuses from strip to strip.

    Owned by the call (never shared between calls or threads) and handed to
    each strip's :class:`Objects`. A buffer freed and allocated again per
    strip was a fresh mapping each time (tens of MiB: glibc maps such sizes
    anew and trims them on free), whose pages the kernel zeroed again.
    Contents are never carried over: whoever takes a buffer writes it
    before reading, as with ``np.empty``.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def take(self, name: str, size: int, dtype: np.dtype | type) -> np.ndarray:
        """A 1-D array of ``size`` elements of ``dtype``: the start of buffer ``name``, grown when too small."""
        dtype = np.dtype(dtype)
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.size < size:
            # room for a quarter more, so that strips growing a little do not each allocate anew
            buf = np.empty(size + size // 4, dtype)
            self._buffers[name] = buf
        return buf[:size]


def empty(objects: Objects, name: str, size: int, dtype: np.dtype | type) -> np.ndarray:
    """``np.empty(size, dtype)``, from ``objects.scratch`` (buffer ``name``) when it has one."""
    if objects.scratch is None:
        return np.empty(size, dtype)
    return objects.scratch.take(name, size, dtype)


@dataclass(frozen=True)
class BandRegions:
    """Every object of a label image with its bounding box, for the background band.

    Needed where :class:`Objects` measures only some of the objects of its
    label image (a strip of a large image, :func:`scip.features.extract`):
    the others still claim the band pixels nearest to them. Boxes are
    inclusive rows and columns of the label image.
    """

    ids: np.ndarray
    min_row: np.ndarray
    min_col: np.ndarray
    max_row: np.ndarray
    max_col: np.ndarray


@dataclass(frozen=True)
class Objects:
    """The labeled objects of one image, with their pixels grouped by label.

    Attributes
    ----------
    pixels : ndarray, shape (C, H, W)
        Any real numeric dtype; families read values as float64. ``(C, Z, H,
        W)`` with 3-D labels, for the families that measure 3-D objects
        (:data:`scip.features.FAMILIES_3D`).
    labels : ndarray of int, shape (H, W) or (Z, H, W)
        0 is background. With ``compiled``, held as
        :func:`._groups.compact_labels` gives it (int32 unless a label needs
        int64), as is ``band_labels``.
    background : ndarray of bool, shape (H, W)
        Pixels that may serve as local background: by default ``labels == 0``.
        The pipeline also excludes other cells and the padding between packed
        crops.
    channel_names : tuple of str
    row_offset, col_offset : int or ndarray of int
        Whole pixels added to every row / column coordinate a family reports:
        a scalar, or one value per object (aligned with :attr:`ids`) when
        objects come from different crops packed into one image. Families
        compute in image coordinates (label image position plus offset), never
        in positions of the label image alone, so an object's features do not
        depend on where a packing put it.
    z_offset : int or ndarray of int
        As ``row_offset``, for the plane coordinate of 3-D labels.
    band_labels : ndarray of int, shape (H, W), optional
        Label image whose objects' surroundings are each object's local
        background band; same label numbers as ``labels``. None means
        ``labels``. The pipeline passes the cell labels when measuring a mask
        inside cells (e.g. nuclei), so a nucleus is corrected by the
        background around its cell, not by its own cytoplasm.
    outside : ndarray of bool, shape (H, W), optional
        Pixels that are not part of any real image: the margins between
        crops packed into one image. They are never background, and an object
        pixel next to them is treated as next to the image border.
    compiled : bool
        Group pixels with the compiled counting sort (see
        :func:`._groups.group_pixels`); False where no family needs numba.
    groups : Groups, optional
        Foreground pixels sorted by label: the objects measured. None groups
        every object of ``labels``; given, it may hold some of them only
        (indices into ``labels``), the others being context: never
        background, and claiming band pixels as in the whole image, which
        then needs ``band_regions``.
    band_regions : BandRegions, optional
        Every object of ``labels`` with its box, where ``groups`` holds only
        some of them (``band_labels`` must then be None).
    scratch : Scratch, optional
        Buffers the families take their per-pixel arrays from (the strips of
        one call share one); None allocates them anew.
    """

    pixels: np.ndarray
    labels: np.ndarray
    background: np.ndarray
    channel_names: tuple[str, ...]
    row_offset: int | np.ndarray = 0
    col_offset: int | np.ndarray = 0
    z_offset: int | np.ndarray = 0
    band_labels: np.ndarray | None = None
    outside: np.ndarray | None = None
    compiled: bool = True
    groups: Groups | None = None
    band_regions: BandRegions | None = None
    scratch: Scratch | None = None

    def __post_init__(self) -> None:
        if self.band_regions is not None and self.band_labels is not None:
            raise ValueError("band_regions describes the objects of labels; it cannot go with band_labels")
        if self.compiled:
            # The label dtype the compiled kernels are built for (int32 unless a
            # label needs more): an int32 image is used as it is, not copied.
            object.__setattr__(self, "labels", compact_labels(self.labels))
            if self.band_labels is not None:
                object.__setattr__(self, "band_labels", compact_labels(self.band_labels))
        if self.groups is None:
            object.__setattr__(self, "groups", group_pixels(self.labels, compiled=self.compiled))
        for name in ("row_offset", "col_offset", "z_offset"):
            if type(getattr(self, name)) is int:
                continue  # whole pixels: the usual case, without the numpy checks below (~10 us each)
            value = np.asarray(getattr(self, name))
            if value.ndim and value.shape != (len(self.groups),):
                raise ValueError(f"{name} has shape {value.shape}, expected a scalar or one value per object "
                                 f"({len(self.groups)})")
            # Whole pixels only: the shape family puts pixel centers on the
            # integer grid of the image (Zernike's enclosing circle, as
            # CellProfiler sees the full image).
            if not (np.issubdtype(value.dtype, np.number) and np.all(np.isfinite(value))
                    and np.all(value == np.round(value))):
                raise ValueError(f"{name} must be whole pixels, got {getattr(self, name)!r}")
        if self.band_labels is None:
            object.__setattr__(self, "band_labels", self.labels)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def ids(self) -> np.ndarray:
        """Labels present, ascending; every family's arrays follow this order."""
        return self.groups.ids

    @cached_property
    def seg(self) -> np.ndarray:
        """Object position (0 .. n-1) of each grouped pixel."""
        return segment_ids(self.groups)

    @cached_property
    def _coordinates(self) -> tuple[np.ndarray, ...]:
        """``rows, cols, box_min_row, box_min_col, box_height, box_width, local_row_sum, local_col_sum``.

        numpy, not a compiled pass: one saved ~60 ms per 5,000 cells but cost
        ~0.26 CPU s to compile on an empty cache, more than the first run's 2x
        budget (issue 18) had left. The box sizes and local sums come from
        ``rows`` and ``cols`` and the box corners (exact integers), so no
        pixel-sized box-relative array is built (45 MB per axis for the 5.6 M
        pixels of the benchmark mosaic, each one more fresh mapping for the
        kernel to zero).
        """
        groups = self.groups
        height, width = self.labels.shape[-2], self.labels.shape[-1]
        dtype = index_dtype(self.labels.size)
        # Written as ``dtype`` (an intp index from the numpy sort is cast
        # chunk by chunk in numpy's buffers, no pixel-sized temporary).
        # floor_divide by a scalar is vectorized (numpy divides by a
        # precomputed multiplier), divmod is not: the quotient, then the
        # remainder as index - rows * width, took 8.5 instead of 14.5 ms for
        # the 5.6 M pixels of the benchmark mosaic (fresh outputs). Exact
        # integers either way.
        rows = np.empty(groups.index.shape, dtype)
        cols = np.empty(groups.index.shape, dtype)
        np.floor_divide(groups.index, width, out=rows, casting="same_kind")
        np.multiply(rows, width, out=cols, casting="same_kind")
        np.subtract(groups.index, cols, out=cols, casting="same_kind")
        if self.labels.ndim == 3:
            np.remainder(rows, height, out=rows)
        starts = groups.starts
        # Pixels are grouped in raster order: an object's first pixel is in its top row.
        min_row = rows[starts].astype(np.int64)
        min_col = np.minimum.reduceat(cols, starts).astype(np.int64)
        counts = groups.counts
        # Sums in the coordinates' own dtype where no sum can overflow it:
        # np.add.reduceat would otherwise sum int32 in int64 after casting the
        # whole array (a pixel-sized copy). Exact integers either way.
        biggest = int(counts.max()) * max(height, width) if len(counts) else 0
        sum_dtype = dtype if biggest <= np.iinfo(dtype).max else np.int64
        # max(rows - min_row) = max(rows) - min_row and sum(rows - min_row) =
        # sum(rows) - count * min_row, exactly (integers).
        return (rows, cols, min_row, min_col,
                np.maximum.reduceat(rows, starts) - min_row + 1, np.maximum.reduceat(cols, starts) - min_col + 1,
                np.add.reduceat(rows, starts, dtype=sum_dtype) - counts * min_row,
                np.add.reduceat(cols, starts, dtype=sum_dtype) - counts * min_col)

    @property
    def rows(self) -> np.ndarray:
        """Row of each grouped pixel (:func:`._groups.index_dtype`); modulo the plane height for 3-D labels."""
        return self._coordinates[0]

    @property
    def cols(self) -> np.ndarray:
        """Column of each grouped pixel (:func:`._groups.index_dtype`)."""
        return self._coordinates[1]

    @cached_property
    def planes(self) -> np.ndarray:
        """Plane of each grouped pixel (the dtype of ``groups.index``, as :attr:`rows`); 0 for 2-D labels."""
        if self.labels.ndim == 2:
            return np.zeros(self.groups.index.size, self.groups.index.dtype)
        return self.groups.index // (self.labels.shape[-1] * self.labels.shape[-2])

    @property
    def box_min_row(self) -> np.ndarray:
        """Row of each object's first pixel in the label image (int64): its bounding box's first row in 2-D."""
        return self._coordinates[2]

    @property
    def box_min_col(self) -> np.ndarray:
        """First column of each object's bounding box in the label image (int64)."""
        return self._coordinates[3]

    @property
    def box_height(self) -> np.ndarray:
        """Number of rows of each object's bounding box (int64): its height in 2-D."""
        return self._coordinates[4]

    @property
    def box_width(self) -> np.ndarray:
        """Number of columns of each object's bounding box (int64)."""
        return self._coordinates[5]

    @cached_property
    def local_centroid(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean row and column of each object's pixels relative to its bounding box's corner (float64).

        Sums of integers, exact in any order, so they equal the float64
        reductions of the box-relative coordinates. The same wherever the
        object lies in the label image; adding :attr:`box_min_row` plus
        :attr:`row_shift` (exact integers) gives image coordinates that do not
        depend on it either.
        """
        counts = self.groups.counts
        return (self._coordinates[6].astype(np.float64) / counts, self._coordinates[7].astype(np.float64) / counts)

    @cached_property
    def row_shift(self) -> np.ndarray:
        """Whole-pixel row offset of each object (int64): label image row + shift = image row."""
        return np.broadcast_to(np.asarray(self.row_offset), (len(self),)).astype(np.int64)

    @cached_property
    def col_shift(self) -> np.ndarray:
        """Whole-pixel column offset of each object (int64): label image column + shift = image column."""
        return np.broadcast_to(np.asarray(self.col_offset), (len(self),)).astype(np.int64)

    @cached_property
    def z_shift(self) -> np.ndarray:
        """Whole-plane offset of each object (int64): label image plane + shift = image plane."""
        return np.broadcast_to(np.asarray(self.z_offset), (len(self),)).astype(np.int64)

    @cached_property
    def channel_values(self) -> np.ndarray:
        """Float64 values of every channel at the grouped pixels, C-contiguous ``(C, N)``.

        Gathered once and shared by the families (intensity and texture both
        read every object pixel of every channel).
        """
        flat = self.pixels.reshape(self.pixels.shape[0], -1)
        shape = (flat.shape[0], self.groups.index.size)
        return gather_float64(flat, self.groups.index, empty(self, "values", shape[0] * shape[1], np.float64).reshape(shape))

    def values(self, channel: int) -> np.ndarray:
        """Float64 values of channel ``channel`` at the grouped pixels (a row of :attr:`channel_values`)."""
        return self.channel_values[channel]

    def channel_image(self, channel: int, out: np.ndarray | None = None) -> np.ndarray:
        """Channel ``channel`` as a float64 ``(H, W)`` image, written into ``out`` when given.

        Float64 pixels are returned as they are; others are converted into
        ``out`` so that a caller looping over channels reuses one buffer
        instead of faulting in a fresh image-sized array per channel.
        """
        image = self.pixels[channel]
        if image.dtype == np.float64 and image.flags.c_contiguous:
            return image
        if out is None:
            out = np.empty(image.shape, np.float64)
        np.copyto(out, image)
        return out
