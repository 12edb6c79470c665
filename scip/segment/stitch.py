"""3-D objects from per-slice 2-D labels, with Cellpose's ``stitch3D`` rule.

Cellpose (``utils.stitch3D``) joins slice ``z + 1`` to slice ``z`` one pair
of slices after the other: it builds the dense IoU matrix between the labels
of slice ``z + 1`` and the (already joined) labels of slice ``z``, zeroes
IoUs below ``stitch_threshold``, then, in each column (a label of slice
``z``), zeroes every IoU below that column's maximum; each label of slice
``z + 1`` takes the label of its best remaining column (the lowest label on
ties), or a new label when none remains. The dense matrix has (labels in the
slice) × (largest label so far) entries, which grows with the square of the
number of objects.

:func:`stitch3d` applies the same rule to the same IoUs, so it returns the
same objects, but:

- only overlapping pairs are counted: one pass over the two slices' pixels
  (runs of equal label pairs along rows, found with vector compares and
  summed in a hash table) gives the sparse contingency table, whose size is
  the number of overlapping pairs;
- these tables depend only on the input labels, so they are computed for all
  pairs of slices in parallel (threads; the kernels release the GIL); only
  the cheap resolution, label by label, runs in slice order, on the sparse
  tables, merging the columns of slice ``z`` labels that an earlier tie has
  joined, as Cellpose's relabelled slice does;
- slices are read one or two at a time and can be written to any array
  that accepts ``out[z] = labels`` (a Zarr array, a memory map), so memory
  is a few slices, whatever the number of slices.

Where results differ from Cellpose
----------------------------------
Labels are renumbered 1..N in Cellpose's order of creation (slice 0's
labels in increasing order, then each slice's new objects in increasing
order of their per-slice label); up to that renumbering the result is
Cellpose's, with one exception: Cellpose 3.1, until the first pair of
non-empty neighbouring slices, resets its label counter at an empty slice,
so objects above and below an empty slice near the top of the stack can
share a label although they do not touch. Here they get distinct labels.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["stitch3d", "slice_overlaps"]

_EMPTY = -1
# Pixels per block of the overlap scan, in words of 64 change bits: a block
# of each slice (8 KiB of int32) stays in the L1 cache between the two steps.
_BLOCK_WORDS = 32


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(key, mask):
    # Fibonacci hashing of the 64-bit key.
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)) & mask


@numba.njit(cache=True, nogil=True)
def _grow_table(keys, counts):
    cap = keys.size * 2
    new_keys = np.full(cap, _EMPTY, np.int64)
    new_counts = np.zeros(cap, np.int64)
    mask = cap - 1
    for i in range(keys.size):
        k = keys[i]
        if k != _EMPTY:
            s = _slot(k, mask)
            while new_keys[s] != _EMPTY:
                s = (s + 1) & mask
            new_keys[s] = k
            new_counts[s] = counts[i]
    return new_keys, new_counts


@intrinsic
def _trailing_zeros(typingctx, word):
    """Count of trailing zero bits of a non-zero uint64 (LLVM's ``cttz``: one instruction)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _changes(a, b, first, count):
    """Bit k set where pixel ``first + k`` differs from the one before in ``a`` or ``b`` (k < count <= 64).

    A fixed-length loop of compares without branches, which LLVM turns into
    vector compares: the runs are found at the speed of reading the pixels.
    """
    word = np.uint64(0)
    # Unsigned indices: numba wraps negative signed ones, a select per load
    # that stops the vectorisation (first >= 1 here).
    start = np.uint64(first)
    for k in range(count):
        i = start + np.uint64(k)
        word |= np.uint64((a[i] != a[i - np.uint64(1)]) | (b[i] != b[i - np.uint64(1)])) << np.uint64(k)
    return word


@numba.njit(cache=True, nogil=True)
def _overlaps(upper, lower, n_upper, n_lower):
    """Sparse contingency of two label slices, and the areas of the upper one.

    Pixels are scanned in raster order, a block of ``64 * _BLOCK_WORDS`` at
    a time: first a bit mask of where either label changes (vectorised),
    then one step per run of pixels with the same pair of labels (a trailing
    zero count finds the next change), which adds the run to an
    open-addressing hash table keyed ``upper * n_lower + lower``.

    Returns (upper label, lower label, pixels) of the overlapping pairs, and
    the pixel count of each upper label (size ``n_upper``).
    """
    # Room for a block's worth of new pairs (see below), and for about two
    # overlapping pairs per upper label, so that the table seldom grows.
    size = 1 << 13
    while size < 4 * n_upper:
        size *= 2
    keys = np.full(size, _EMPTY, np.int64)
    counts = np.zeros(size, np.int64)
    areas = np.zeros(n_upper, np.int64)
    # The same pair recurs row after row: each upper label remembers its
    # last lower label and slot, which spares most hash look-ups.
    last_lower = np.zeros(n_upper, np.int64)
    last_slot = np.zeros(n_upper, np.int64)
    used = 0
    a = upper.reshape(-1)
    b = lower.reshape(-1)
    n = a.size
    masks = np.zeros(_BLOCK_WORDS + 1, np.uint64)
    pa = a[0] if n else a.dtype.type(0)
    pb = b[0] if n else b.dtype.type(0)
    start = 0  # the current run: pixels start.., labels (pa, pb)
    first = 1  # this block: pixels first..stop - 1 (pixel 0 starts the first run)
    while first <= n and n:
        stop = min(first + 64 * _BLOCK_WORDS, n)
        # Room for as many new pairs as the block has pixels, so that the
        # table (at most half full) is never replaced within the loop below:
        # rebinding its arrays there slows every step of that loop.
        while 2 * (used + stop - first + 1) > keys.size:
            keys, counts = _grow_table(keys, counts)
            last_lower[:] = 0  # slots moved
        words = (stop - first) // 64
        for j in range(words):
            masks[j] = _changes(a, b, first + 64 * j, 64)
        rest = stop - first - 64 * words
        if rest or stop == n:
            masks[words] = _changes(a, b, first + 64 * words, rest)
            if stop == n:
                masks[words] |= np.uint64(1) << np.uint64(rest)  # the last run ends at n
            words += 1
        for j in range(words):
            m = masks[j]
            while m:
                pos = first + 64 * j + np.int64(_trailing_zeros(m))
                m &= m - np.uint64(1)
                run = pos - start
                areas[pa] += run
                if pa > 0 and pb > 0:
                    if last_lower[pa] == pb:
                        counts[last_slot[pa]] += run
                    else:
                        key = np.int64(pa) * n_lower + np.int64(pb)
                        mask = keys.size - 1
                        s = _slot(key, mask)
                        while keys[s] != _EMPTY and keys[s] != key:
                            s = (s + 1) & mask
                        if keys[s] == _EMPTY:
                            keys[s] = key
                            used += 1
                        counts[s] += run
                        last_lower[pa] = pb
                        last_slot[pa] = s
                start = pos
                if pos < n:
                    pa = a[pos]
                    pb = b[pos]
        if stop == n:
            break
        first = stop
    ua = np.empty(used, np.int64)
    lb = np.empty(used, np.int64)
    pixels = np.empty(used, np.int64)
    j = 0
    for i in range(keys.size):
        if keys[i] != _EMPTY:
            ua[j] = keys[i] // n_lower
            lb[j] = keys[i] % n_lower
            pixels[j] = counts[i]
            j += 1
    return ua, lb, pixels, areas


@numba.njit(cache=True, nogil=True)
def _areas(labels, size):
    out = np.zeros(size, np.int64)
    flat = labels.reshape(-1)
    for p in range(flat.size):
        out[flat[p]] += 1
    return out


@numba.njit(cache=True, nogil=True)
def _apply(labels, lut, out):
    flat = labels.reshape(-1)
    dst = out.reshape(-1)
    for p in range(flat.size):
        dst[p] = lut[flat[p]]


@numba.njit(cache=True, nogil=True)
def _min_max(labels):
    flat = labels.reshape(-1)
    lo = flat[0]
    hi = flat[0]
    for p in range(1, flat.size):
        lo = min(lo, flat[p])
        hi = max(hi, flat[p])
    return lo, hi


def _read(stack: Any, z: int, check: bool = True) -> tuple[np.ndarray, int]:
    """Slice ``z`` as a contiguous array and its number of labels plus one (largest + 1).

    ``check`` validates it (one pass over the slice, which gives the
    largest label as well); without, the count is not computed (0).
    """
    labels = np.ascontiguousarray(np.asarray(stack[z]))
    if not check:
        return labels, 0
    if labels.ndim != 2:
        raise ValueError(f"slice {z} has shape {labels.shape}; expected a 2-D label image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers, got {labels.dtype} in slice {z}")
    if not labels.size:
        return labels, 1
    lo, hi = _min_max(labels)
    if lo < 0:
        raise ValueError(f"labels must be >= 0; slice {z} has {lo}")
    return labels, int(hi) + 1


def slice_overlaps(upper: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every overlapping pair of labels of two slices.

    Parameters
    ----------
    upper, lower : ndarray of int, shape (H, W)
        Label images, 0 background.

    Returns
    -------
    upper_labels, lower_labels, pixels : ndarray of int64
        One entry per pair of non-zero labels sharing at least one pixel,
        in no particular order.
    """
    upper = np.ascontiguousarray(upper)
    lower = np.ascontiguousarray(lower)
    n_upper = int(upper.max()) + 1 if upper.size else 1
    n_lower = int(lower.max()) + 1 if lower.size else 1
    return _pair_counts(upper, lower, n_upper, n_lower)[:3]


def _pair_counts(upper: np.ndarray, lower: np.ndarray, n_upper: int, n_lower: int) -> tuple[np.ndarray, ...]:
    if upper.shape != lower.shape:
        raise ValueError(f"slices differ in shape: {upper.shape} and {lower.shape}")
    return _overlaps(upper, lower, n_upper, n_lower)


class _Pair:
    """What the resolution needs about slice ``z + 1`` and the pair (z, z + 1)."""

    __slots__ = ("areas", "upper", "lower", "pixels")

    def __init__(self, areas: np.ndarray, upper: np.ndarray, lower: np.ndarray, pixels: np.ndarray):
        self.areas = areas
        self.upper = upper
        self.lower = lower
        self.pixels = pixels


def _measure(stack: Any, first: int, stop: int) -> list[_Pair]:
    """Areas of slices ``first .. stop - 1`` and the overlaps of each with the slice below.

    Each slice is read once; for ``first > 0`` slice ``first - 1`` is read too.
    """
    pairs = []
    below, n_below = _read(stack, first - 1) if first > 0 else (None, 0)
    for z in range(first, stop):
        here, n_here = _read(stack, z)
        if below is None:
            empty = np.empty(0, np.int64)
            pairs.append(_Pair(_areas(here, n_here), empty, empty, empty))
        else:
            try:
                upper, lower, pixels, areas = _pair_counts(here, below, n_here, n_below)
            except ValueError as err:
                raise ValueError(f"slices {z - 1} and {z}: {err}") from None
            pairs.append(_Pair(areas, upper, lower, pixels))
        below, n_below = here, n_here
    return pairs


def _resolve(prev_global: np.ndarray, prev_areas: np.ndarray, pair: _Pair, threshold: float,
             next_label: int) -> tuple[np.ndarray, int]:
    """Global labels of slice ``z + 1`` (a lookup table by its own labels) from those of slice ``z``."""
    n_here = pair.areas.size
    lut = np.zeros(n_here, np.int64)
    present = np.flatnonzero(pair.areas[1:]) + 1
    if pair.pixels.size:
        # Columns are global labels: labels of slice z joined by an earlier
        # tie form one column, with their pixels summed, as in Cellpose's
        # relabelled slice.
        g = prev_global[pair.lower]
        n_global = int(prev_global.max()) + 1
        area_g = np.bincount(prev_global[1:], weights=prev_areas[1:], minlength=n_global)
        key = pair.upper * n_global + g
        key, inverse = np.unique(key, return_inverse=True)
        inter = np.bincount(inverse, weights=pair.pixels).astype(np.int64)
        rows = key // n_global
        cols = key % n_global
        union = pair.areas[rows] + area_g[cols].astype(np.int64) - inter
        iou = inter / union
        keep = iou >= threshold
        rows, cols, iou = rows[keep], cols[keep], iou[keep]
        col_max = np.zeros(n_global)
        np.maximum.at(col_max, cols, iou)
        keep = iou >= col_max[cols]
        rows, cols, iou = rows[keep], cols[keep], iou[keep]
        # Per row: highest IoU, lowest column among equals (numpy's argmax).
        order = np.lexsort((cols, -iou, rows))
        rows, cols = rows[order], cols[order]
        first = np.ones(rows.size, bool)
        first[1:] = rows[1:] != rows[:-1]
        lut[rows[first]] = cols[first]
    new = present[lut[present] == 0]
    lut[new] = np.arange(next_label, next_label + new.size)
    return lut, next_label + new.size


def stitch3d(stack: Any, stitch_threshold: float = 0.25, *, out: Any = None, threads: int | None = None) -> Any:
    """Join per-slice 2-D labels into 3-D objects, as Cellpose's ``stitch3D``.

    Parameters
    ----------
    stack : array-like, shape (Z, H, W)
        Integer labels, 0 background, each slice numbered on its own (a
        numpy array, a Zarr or Dask array: anything where ``stack[z]`` gives
        a slice).
    stitch_threshold : float, optional
        A label joins a label of the slice below only with an IoU of at
        least this.
    out : array-like, optional
        Where to write the result, slice by slice (``out[z] = labels``);
        shape (Z, H, W) and an integer dtype wide enough for the number of
        objects. It may be ``stack`` itself, to stitch in place as
        Cellpose's ``stitch3D`` does: no output to allocate, and each slice
        is read before it is overwritten. ``None`` allocates a numpy int32
        array (int64 past 2**31 - 1 objects).
    threads : int, optional
        Threads for reading and counting overlaps; default: the CPU count.

    Returns
    -------
    array-like, shape (Z, H, W)
        ``out``: 0 background, objects numbered 1..N in Cellpose's order
        of creation.

    Raises
    ------
    ValueError
        For a stack that is not 3-D or holds negative labels, a threshold
        outside [0, 1], or an ``out`` of another shape or too narrow an
        integer type for the objects found (nothing is written then).
    TypeError
        For labels that are not integers.
    """
    shape = tuple(stack.shape)
    if len(shape) != 3:
        raise ValueError(f"expected a (Z, H, W) stack of labels, got shape {shape}")
    if not 0 <= stitch_threshold <= 1:
        raise ValueError(f"stitch_threshold must be in [0, 1], got {stitch_threshold}")
    nz = shape[0]
    threads = max(1, threads or os.cpu_count() or 1)
    bounds = np.linspace(0, nz, min(nz, threads) + 1).round().astype(int) if nz else np.zeros(1, int)
    with ThreadPoolExecutor(threads) as pool:
        chunks = list(pool.map(lambda i: _measure(stack, bounds[i], bounds[i + 1]), range(bounds.size - 1)))
        pairs = [p for chunk in chunks for p in chunk]
        luts = []
        next_label = 1
        prev_global = np.zeros(1, np.int64)
        prev_areas = np.zeros(1, np.int64)
        for pair in pairs:
            lut, next_label = _resolve(prev_global, prev_areas, pair, stitch_threshold, next_label)
            luts.append(lut)
            prev_global, prev_areas = lut, pair.areas
        del pairs, chunks
        if out is None:
            out = np.empty(shape, np.int32 if next_label - 1 <= np.iinfo(np.int32).max else np.int64)
        elif tuple(out.shape) != shape:
            raise ValueError(f"out has shape {tuple(out.shape)}; expected {shape}")
        elif not np.issubdtype(out.dtype, np.integer) or np.iinfo(out.dtype).max < next_label - 1:
            # Checked before writing: a narrower type would wrap the numbers silently.
            raise ValueError(f"out has dtype {out.dtype}, which cannot hold the {next_label - 1} objects found")

        def write(z: int) -> None:
            labels = _read(stack, z, check=False)[0]  # checked when measured
            lut = luts[z].astype(out.dtype)
            if isinstance(out, np.ndarray) and out[z].flags.c_contiguous:
                _apply(labels, lut, out[z])
            else:
                result = np.empty(labels.shape, out.dtype)
                _apply(labels, lut, result)
                out[z] = result

        list(pool.map(write, range(nz)))
    return out
