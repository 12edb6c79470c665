"""Group the foreground pixels of a label image by label, once.

Sorting the foreground pixels by label turns every per-object statistic into
a segmented reduction (``np.ufunc.reduceat``) over contiguous runs, which is
vectorized across objects instead of looping over them in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ["Groups", "bounding_boxes", "compact_labels", "group_pixels", "index_dtype", "segment_ids"]

_INT32_MAX = int(np.iinfo(np.int32).max)


def index_dtype(size: int) -> type:
    """dtype of the flat pixel positions in an image of ``size`` pixels: int32 below 2**31, else int64.

    The grouped index and the pixel rows and columns derived from it are
    pixel-sized (5.6 M entries on the 5,000-cell benchmark mosaic); int32
    halves the memory the sort writes and the kernels read, and they wait on
    memory. One dtype for every image below 2**31 pixels keeps one compiled
    specialization per kernel; larger images compile an int64 one on first use.
    """
    return np.int32 if int(size) <= _INT32_MAX else np.int64


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as the C-contiguous integer array the compiled kernels read: int32 when every value fits, else int64.

    One label dtype means one compiled specialization of each kernel that
    reads the label image (see :data:`scip.features.warmup.KERNELS`). int32
    rather than int64: label images of up to 2**31 - 1 objects are the rule,
    and an int64 copy of one is twice the memory to write and read (165 MB
    for the 4544 x 4544 benchmark mosaic, the int32 image itself being
    returned as is). Labels of up to 16 bits convert without a look at
    their values; wider ones are checked for their largest value first.
    """
    labels = np.asarray(labels)
    if labels.dtype in (np.int32, bool) or (labels.dtype.itemsize <= 2 and np.issubdtype(labels.dtype, np.integer)):
        return np.ascontiguousarray(labels, dtype=np.int32)
    # Only the largest label is looked at: labels are >= 0 (extract checks it;
    # the counting sort could not take a negative one either).
    if labels.size == 0 or int(labels.max()) <= _INT32_MAX:
        return np.ascontiguousarray(labels, dtype=np.int32)
    return np.ascontiguousarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class Groups:
    """Foreground pixels of a label image, sorted by label.

    Attributes
    ----------
    ids : ndarray
        Labels present (non-zero), ascending.
    starts : ndarray of intp
        Start of each label's run in ``index``.
    counts : ndarray of intp
        Number of pixels of each label.
    index : ndarray of int32 or int64
        Flat (raveled) pixel indices, grouped by label; within a label, in
        raster order. int32 for a label image of fewer than 2**31 pixels
        (:func:`index_dtype`), else int64.
    """

    ids: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _label_counts(flat, max_label):  # pragma: no cover - compiled
    # The counting sort's first pass: pixels per label. It skips blocks of 8
    # background pixels with one test of their bitwise OR (vector loads, no
    # branch per pixel): label images are mostly background, and a pass that
    # tested every pixel spent most of its time there (the mnfinder nuclei
    # images are 92 % background; grouping 21 % faster, 8 % on the 3-channel
    # mosaic). Background is never counted either (counts[0] stays 0): a run
    # of it incremented one entry again and again, each increment waiting
    # for the last.
    n = flat.shape[0]
    counts = np.empty(max_label + 1, np.int64)
    counts[:] = 0
    i = 0
    while i + 8 <= n:
        if (flat[i] | flat[i + 1] | flat[i + 2] | flat[i + 3]
                | flat[i + 4] | flat[i + 5] | flat[i + 6] | flat[i + 7]):
            for t in range(i, i + 8):
                v = flat[t]
                if v:
                    counts[v] += 1
        i += 8
    for t in range(i, n):
        v = flat[t]
        if v:
            counts[v] += 1
    return counts


def _counting_sort(flat, counts, index):  # pragma: no cover - compiled
    # The second pass, given the counts of _label_counts: each labeled pixel
    # goes to its label's next slot, so raster order within a label comes for
    # free (no comparison sort). ``index`` (one slot per labeled pixel) comes
    # from the caller: numpy backs large arrays with huge pages, numba does
    # not, and faulting in 4 KiB pages made grouping the benchmark mosaic's
    # 5.6 M pixels ~40 % slower.
    n = flat.shape[0]
    max_label = counts.shape[0] - 1
    n_labels = 0
    for v in range(1, max_label + 1):
        if counts[v]:
            n_labels += 1
    ids = np.empty(n_labels, np.int64)
    starts = np.empty(n_labels, np.int64)
    sizes = np.empty(n_labels, np.int64)
    cursor = np.empty(max_label + 1, np.int64)  # set below for every label present, read only for those
    k = 0
    total = 0
    for v in range(1, max_label + 1):
        if counts[v]:
            ids[k] = v
            starts[k] = total
            sizes[k] = counts[v]
            cursor[v] = total
            total += counts[v]
            k += 1
    # Pixels of one label come in runs (an object's row): the current
    # label's next slot stays in a register for its run and goes back to
    # cursor when the run ends, not one read-modify-write of cursor per
    # pixel, each waiting on the last (17.6 -> 12.4 ms on the benchmark
    # mosaic). cursor[0] is the background's, written and read but never
    # used; a skipped block does not end a run (its label's slots follow on).
    cursor[0] = 0
    cur = 0
    pos = 0
    i = 0
    while i + 8 <= n:
        if (flat[i] | flat[i + 1] | flat[i + 2] | flat[i + 3]
                | flat[i + 4] | flat[i + 5] | flat[i + 6] | flat[i + 7]):
            for t in range(i, i + 8):
                v = flat[t]
                if v != cur:
                    cursor[cur] = pos
                    cur = v
                    pos = cursor[v]
                if v:
                    index[pos] = t
                    pos += 1
        i += 8
    for t in range(i, n):
        v = flat[t]
        if v != cur:
            cursor[cur] = pos
            cur = v
            pos = cursor[v]
        if v:
            index[pos] = t
            pos += 1
    return ids, starts, sizes


@cache
def label_counts():
    """The counting sort's first pass (pixels per label), compiled lazily as :func:`counting_sort`."""
    from ._jit import kernel

    return kernel(_label_counts)


@cache
def counting_sort():
    """The compiled counting sort (its second pass; the first is :func:`label_counts`), compiled on first use.

    Compiled lazily so that a process measuring only families without
    compiled kernels (``bbox``) never imports numba: its LLVM library alone
    adds about 100 MiB to every such process's resident memory.
    """
    from ._jit import kernel

    return kernel(_counting_sort)


def group_pixels(labels: np.ndarray, compiled: bool = True) -> Groups:
    """Group the non-zero pixels of ``labels`` by label value.

    Parameters
    ----------
    labels : ndarray of int
        Label image, any shape; 0 is background. The compiled sort reads it
        as :func:`compact_labels` gives it (no copy of an int32 image).
    compiled : bool, optional
        Use the compiled counting sort (about 3× faster on dense labels);
        False sorts with numpy and never loads numba. Both give the same
        groups.
    """
    flat = np.ravel(labels)
    max_label = int(flat.max()) if flat.size else 0
    if compiled and max_label <= 4 * flat.size + 1_000_000:
        flat = compact_labels(flat)
        per_label = label_counts()(flat, max_label)
        index = np.empty(int(per_label.sum()), index_dtype(flat.size))
        ids, starts, counts = counting_sort()(flat, per_label, index)
        # copy=False: int64 is intp on 64-bit platforms, where the runs would be copied for nothing
        return Groups(ids=ids, starts=starts.astype(np.intp, copy=False), counts=counts.astype(np.intp, copy=False),
                      index=index)
    # Sparse, huge label values (or no compiler): a stable sort keeps raster order within a label.
    fg = np.flatnonzero(flat)
    lab = flat[fg]
    order = np.argsort(lab, kind="stable")
    # the index dtype of the compiled sort, so that the kernels see one signature whichever sort ran
    index = fg[order].astype(index_dtype(flat.size), copy=False)
    ids, starts, counts = np.unique(lab[order], return_index=True, return_counts=True)
    # int64 ids whatever the label dtype, as the compiled sort gives them
    return Groups(ids=ids.astype(np.int64), starts=starts.astype(np.intp), counts=counts.astype(np.intp), index=index)


def segment_ids(groups: Groups) -> np.ndarray:
    """Position (0 .. n-1) of each grouped pixel's label in ``groups.ids``."""
    return np.repeat(np.arange(len(groups), dtype=np.intp), groups.counts)


def bounding_boxes(groups: Groups, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First row, first column, last row and last column (int64, inclusive) of each group in a 2-D label image.

    ``width`` is the image's number of columns. A group's pixels come in
    raster order, so its first and last pixel give its rows; the columns are
    reduced over its pixels.
    """
    if not len(groups):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    index = groups.index
    first_row = (index[groups.starts] // width).astype(np.int64)
    last_row = (index[groups.starts + groups.counts - 1] // width).astype(np.int64)
    # columns as index - row * width: numpy's remainder by a scalar is ~3x slower than the division
    col = np.floor_divide(index, width)
    np.multiply(col, width, out=col)
    np.subtract(index, col, out=col)
    return (first_row, np.minimum.reduceat(col, groups.starts).astype(np.int64), last_row,
            np.maximum.reduceat(col, groups.starts).astype(np.int64))
