"""Masks from Cellpose flows, with the semantics of Cellpose 3 and a shared-trajectory speed-up.

A Cellpose network predicts, for every pixel, a flow ``dP`` (2, H, W) that
points towards the centre of the pixel's cell, and a cell probability
(logit). :func:`compute_masks` turns them into labels the way Cellpose 3's
``dynamics.resize_and_compute_masks`` does on the CPU:

1. pixels with ``cellprob > cellprob_threshold`` are cell pixels; the flow
   is zeroed elsewhere and divided by 5;
2. every cell pixel follows the flow for ``niter`` Euler steps, the flow
   bilinearly interpolated at each sub-pixel position and positions clamped
   to the image;
3. end points (truncated to integers) are counted in a histogram; each bin
   holding more than 10 end points and the maximum of its 5 × 5
   neighbourhood is a seed; a seed grows for 5 steps of 8-connected dilation
   over bins holding more than 2 end points (inside its 11 × 11 window);
   where two grown seeds overlap the one with more end points wins;
4. a pixel's label is that of the grown seed its end point fell in; masks
   larger than ``max_size_fraction`` of the image are dropped;
5. optional flow check (``flow_threshold > 0``): flows are recomputed from
   each mask (Cellpose's heat diffusion from the mask pixel nearest the
   mask's mean, :func:`masks_to_flows`) and masks whose mean squared
   difference to the predicted flow exceeds the threshold are dropped;
6. masks smaller than ``min_size`` are dropped, holes filled (4-connected
   background enclosed within the mask's bounding box), small masks dropped
   again, labels renumbered 1..N in raster order of first pixel.

Why it is fast
--------------
Cellpose integrates every cell pixel for ``niter`` steps (200 by default):
``niter × n_pixels`` interpolations. Here a pixel's future depends only on
where it is, so trajectories that meet are followed once. Each cell pixel
is integrated exactly (Cellpose's arithmetic, float32 positions) for
``jump`` steps and handed to the nearest of the four pixels around its end
point (the nearest cell pixel among them, if any): a successor table ``F``
over the cell pixels. ``F`` applied ``m = niter / jump - 1`` times is
computed for all of them by repeated squaring (pointer jumping: about
``2 log2 m`` passes over an int32 table of the cell pixels), and the last
``jump`` to ``2 jump - 1`` steps are integrated exactly from the pixel
reached, once per distinct pixel reached (a handful per cell: the
trajectories have converged). Pixels that ``F`` hands back to themselves
(they moved less than half a pixel in a jump: weak flow at cell borders,
the few pixels around each cell's sink) would stop there for good, so they
are integrated exactly for all ``niter`` steps. The cost is about ``jump``
steps per pixel plus a few table passes instead of ``niter`` steps per
pixel; memory is a few arrays the size of the tile. The flow check replays
Cellpose's diffusion per mask in one compiled loop over each mask's box
(vectorized), instead of per-mask Python and fancy indexing, in float32 with
the 3 × 3 sum taken separably (Cellpose: float64, nine terms): its errors
agree with Cellpose's to about 1e-6. A trajectory's first step, from a
pixel's own position, is the flow there, without interpolation. ``threads``
shares the per-pixel work and the masks of the flow check out to threads.

Memory and passes: one pass over the tile builds the list of cell pixels,
their index (the one tile-sized array) and their steps (a table over the
cell pixels, read through the index: a pixel's two components in one cache
line), on one thread in bands of rows, each band's successor table made
while its rows are cached (:func:`_prepare_successors`); everything after the following works on that list and on the
masks' boxes (labels, sizes, boxes, hole filling, renumbering), never on
the whole tile again, and the index, zeroed at the cell pixels, serves as
histogram, grown seeds (painted into it) and label image. Seeds are
looked for only among the bins end points fell in; a mask with no gap in
any row of its box has no hole and is not flood-filled.

Where results can differ from Cellpose
--------------------------------------
- Handing a trajectory to a pixel after each jump moves it by under a
  pixel. The first ``jump`` steps from every pixel are exact, so a pixel
  near the border between two cells makes its decision as in Cellpose;
  later steps happen inside a cell, where flows converge. Measured
  (``benchmarks/bench_flows.py``, docs/flows.md): same mask counts and a
  mean matched IoU of 0.9999 on synthetic flows, 0.994-0.9998 on a
  trained network's outputs. ``jump=None`` follows every pixel exactly
  and gives Cellpose's masks pixel for pixel, save for the next point and
  for a mask whose flow error lies within about 1e-6 of ``flow_threshold``.
- Seeds with equal counts are ordered by raster position (Cellpose's torch
  ``argsort`` leaves their order unspecified); this matters only where two
  grown seeds with equal counts overlap.
- Cellpose 3.1's ``fill_holes_and_remove_small_masks`` picks the masks to
  drop by their position in the list of labels present, not by label, so
  after the flow check has removed masks (leaving gaps) it can drop the
  wrong ones; here exactly the masks smaller than ``min_size`` go.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

__all__ = ["compute_masks", "follow_flows", "masks_to_flows", "flow_errors", "fill_holes_and_remove_small",
           "DEFAULT_JUMP"]

#: Exact Euler steps per pointer jump in :func:`follow_flows`; the measured
#: agreement with Cellpose and the speed for other values are in docs/flows.md.
DEFAULT_JUMP = 4

# Cellpose's constants, kept under its names' meaning.
_SEED_MIN_COUNT = 10  # a seed bin holds more than this many end points
_GROW_MIN_COUNT = 2  # seeds grow over bins holding more than this many
_GROW_STEPS = 5
_SEED_WINDOW = 5  # seeds are maxima of this square neighbourhood


# ---------------------------------------------------------------------------
# Flow following


# Trajectories advanced together: one step of each in turn keeps several
# independent interpolations in flight (a single trajectory is a chain of
# dependent loads and is latency bound), and lets the arithmetic of a step
# run on vectors of trajectories.
_BATCH = 64


@numba.njit(cache=True, nogil=True)
def _integrate(steps, index, ys, xs, n_steps):
    """Exact end positions (float32, shape (2, n)) of the pixels ``(ys, xs)`` after ``n_steps``.

    Each Euler step has Cellpose's arithmetic: the bilinear interpolation in
    the precisions of ``cellpose.dynamics.map_coordinates`` (float32
    fractions: some products float32, the rest float64, see below) and the
    step rounded to float32 before it is added, so that exactly followed
    trajectories match Cellpose bit for bit; positions are clamped to the
    image. The step field is ``steps[index[y, x]]``: ``steps`` (n + 1, 2)
    holds the steps of the cell pixels that ``index`` (H, W) numbers 1..n,
    and zeros in row 0, where ``index`` sends the pixels off cells (whose
    step is 0). A tile-sized step field would be 8 bytes a pixel (33.5 MB at
    2048²) written and, over glibc's mmap ceiling, faulted in afresh on
    every call; the index is read here anyway (the pixel of the next hand-over),
    and ``steps`` is the size of the cell pixels. A step of a batch of trajectories is three loops: positions to
    offsets and weights, the eight loads, the arithmetic. The first and last
    vectorize (the same IEEE operations in the same order on each lane, no
    fused multiply-add), which one loop doing all three did not.
    """
    out = np.empty((2, ys.size), np.float32)
    h = index.shape[0]
    w = index.shape[1]
    hm = np.float32(h - 1)
    wm = np.float32(w - 1)
    zero = np.float32(0.0)
    values = steps.reshape(-1)
    flat = index.reshape(-1)
    py = np.empty(_BATCH, np.float32)
    px = np.empty(_BATCH, np.float32)
    fy = np.empty(_BATCH, np.float64)
    fx = np.empty(_BATCH, np.float64)
    # Flat indices of the four pixels around each position, and their flows.
    o00 = np.empty(_BATCH, np.uint64)
    o01 = np.empty(_BATCH, np.uint64)
    o10 = np.empty(_BATCH, np.uint64)
    o11 = np.empty(_BATCH, np.uint64)
    v = np.empty((8, _BATCH), np.float32)
    for s in range(0, ys.size, _BATCH):
        m = min(ys.size, s + _BATCH) - s
        for k in range(m):
            i = s + k
            py[k] = ys[i]
            px[k] = xs[i]
            if n_steps:
                # From a pixel's own position the bilinear weights are 1, 0, 0, 0: the
                # step is the flow there, bit for bit what a full step computes, at a quarter of the loads.
                own = flat[ys[i] * w + xs[i]]
                py[k] = min(hm, max(zero, np.float32(py[k] + steps[own, 0])))
                px[k] = min(wm, max(zero, np.float32(px[k] + steps[own, 1])))
        for _ in range(n_steps - 1):
            for k in range(m):
                # Positions are >= 0 (clamped): truncation is the floor.
                y0 = np.int64(py[k])
                x0 = np.int64(px[k])
                fy[k] = np.float64(py[k]) - np.float64(y0)
                fx[k] = np.float64(px[k]) - np.float64(x0)
                y1 = min(y0 + 1, h - 1)
                x1 = min(x0 + 1, w - 1)
                o00[k] = np.uint64(y0 * w + x0)
                o01[k] = np.uint64(y0 * w + x1)
                o10[k] = np.uint64(y1 * w + x0)
                o11[k] = np.uint64(y1 * w + x1)
            one = np.uint64(1)
            two = np.uint64(2)
            for k in range(m):
                # Offsets into values: the four pixels' rows of steps (indices are >= 0).
                a00 = np.uint64(flat[o00[k]]) * two
                a01 = np.uint64(flat[o01[k]]) * two
                a10 = np.uint64(flat[o10[k]]) * two
                a11 = np.uint64(flat[o11[k]]) * two
                v[0, k] = values[a00]
                v[1, k] = values[a01]
                v[2, k] = values[a10]
                v[3, k] = values[a11]
                v[4, k] = values[a00 + one]
                v[5, k] = values[a01 + one]
                v[6, k] = values[a10 + one]
                v[7, k] = values[a11 + one]
            for k in range(m):
                ay = fy[k]
                ax = fx[k]
                # The fractions are exact in float32 too (a float32 minus its floor).
                ay32 = np.float32(ay)
                ax32 = np.float32(ax)
                # Cellpose's expression, (f * a) * b left to right, in the precisions numba gives it
                # there (cellpose.dynamics.map_coordinates, float32 fractions): a float32 flow times
                # (1 - fraction) is float64, times a float32 fraction stays float32, so the third
                # term's first product and the whole fourth term are float32 products.
                dy = np.float32(np.float64(v[0, k]) * (1 - ay) * (1 - ax)
                                + np.float64(v[1, k]) * (1 - ay) * ax
                                + np.float64(v[2, k] * ay32) * (1 - ax)
                                + np.float64(v[3, k] * ay32 * ax32))
                dx = np.float32(np.float64(v[4, k]) * (1 - ay) * (1 - ax)
                                + np.float64(v[5, k]) * (1 - ay) * ax
                                + np.float64(v[6, k] * ay32) * (1 - ax)
                                + np.float64(v[7, k] * ay32 * ax32))
                py[k] = min(hm, max(zero, np.float32(py[k] + dy)))
                px[k] = min(wm, max(zero, np.float32(px[k] + dx)))
        for k in range(m):
            out[0, s + k] = py[k]
            out[1, s + k] = px[k]
    return out


@numba.njit(cache=True, nogil=True)
def _successors(steps, index, ys, xs, n_steps, table, start, stop):
    """Where the trajectories from cell pixels ``start:stop`` are handed after ``n_steps``.

    That is the nearest of the four pixels around the end point that is a
    cell pixel, or the nearest of the four if none is: a non-cell pixel has
    zero flow, so handing a trajectory to one would stop it, whereas at its
    sub-pixel position it still feels the flow of the cell pixels around
    it. ``index`` gives each cell pixel's position among ``(ys, xs)`` plus
    one (0 off cells); ``table[i]`` becomes that position for a cell pixel, or
    ``-1 - flat index`` for a non-cell pixel (where a trajectory stays).
    """
    h = index.shape[0]
    w = index.shape[1]
    end = _integrate(steps, index, ys[start:stop], xs[start:stop], n_steps)
    flat_index = index.reshape(-1)
    for i in range(stop - start):
        y = end[0, i]
        x = end[1, i]
        y0 = int(y)
        x0 = int(x)
        fy = y - y0
        fx = x - x0
        # Usually the nearest of the four pixels is a cell pixel: then it is
        # the answer (a non-cell pixel's distance is 4 more than any cell
        # pixel's), found with one look-up of the index. The distances, the
        # order of the four and the strict comparisons are those of the
        # full search below, so ties go the same way.
        best_d = (fy - 0) ** 2 + (fx - 0) ** 2
        a = 0
        b = 0
        d = (fy - 0) ** 2 + (fx - 1) ** 2
        if d < best_d:
            best_d = d
            b = 1
        d = (fy - 1) ** 2 + (fx - 0) ** 2
        if d < best_d:
            best_d = d
            a = 1
            b = 0
        d = (fy - 1) ** 2 + (fx - 1) ** 2
        if d < best_d:
            a = 1
            b = 1
        best = min(h - 1, y0 + a) * w + min(w - 1, x0 + b)
        k = flat_index[best]
        if k == 0:
            best_d = np.inf
            for a in range(2):
                for b in range(2):
                    yy = min(h - 1, y0 + a)
                    xx = min(w - 1, x0 + b)
                    d = (fy - a) ** 2 + (fx - b) ** 2
                    if index[yy, xx] == 0:
                        d += 4.0  # farther than any cell pixel of the four
                    if d < best_d:
                        best_d = d
                        best = yy * w + xx
            k = flat_index[best]
        table[start + i] = k - 1 if k > 0 else -1 - best


@numba.njit(cache=True, nogil=True)
def _square(table, out, start, stop):
    """``out = table ∘ table`` on entries ``start:stop`` (negative entries are final)."""
    for i in range(start, stop):
        t = table[i]
        out[i] = table[t] if t >= 0 else t


@numba.njit(cache=True, nogil=True)
def _advance(table, reached):
    """One more application of ``table`` to each trajectory's current entry, in place.

    In place, not into a new array: fresh memory costs a page fault per 4 KB
    on first touch, which on this path cost more than the reads.
    """
    for i in range(reached.size):
        r = reached[i]
        reached[i] = table[r] if r >= 0 else r


@numba.njit(cache=True, nogil=True)
def _fixed_points(table):
    """Whether each entry of the table points to itself."""
    out = np.empty(table.size, np.bool_)
    for i in range(table.size):
        out[i] = table[i] == i
    return out


@numba.njit(cache=True, nogil=True)
def _distinct_starts(reached, ys, xs, w, slot, inverse):
    """The distinct pixels reached, as rows and columns; each trajectory's index among them into ``inverse``.

    Entries are a cell pixel's position among ``(ys, xs)`` or ``-1 - flat
    index`` of a non-cell pixel (few: a dictionary). ``slot`` (one entry
    per cell pixel) and ``inverse`` (one per trajectory) are scratch
    buffers the caller has already touched (see :func:`_advance`). Two
    passes, numbering then the rows and columns of the distinct pixels (a
    few per cell), so that no list the size of ``reached`` is allocated:
    it would grow the heap past the point where glibc hands its top back
    to the kernel after the call, and the next call would fault it in again.
    """
    n = reached.size
    slot[:] = -1
    off = numba.typed.Dict.empty(key_type=numba.types.int64, value_type=numba.types.int64)
    m = 0
    for i in range(n):
        r = np.int64(reached[i])
        if r >= 0:
            k = slot[r]
            if k < 0:
                k = m
                slot[r] = k
                m += 1
        else:
            k = off.get(r, -1)
            if k < 0:
                k = m
                off[r] = k
                m += 1
        inverse[i] = k
    sy = np.empty(m, np.int64)
    sx = np.empty(m, np.int64)
    # Numbers were given in order of first occurrence: the next new one is the next number.
    k = 0
    for i in range(n):
        if inverse[i] == k:
            r = np.int64(reached[i])
            if r >= 0:
                sy[k] = ys[r]
                sx[k] = xs[r]
            else:
                sy[k] = (-1 - r) // w
                sx[k] = (-1 - r) % w
            k += 1
    return sy, sx


class _Threads:
    """A pool of ``n`` threads that runs work in contiguous chunks (none for ``n == 1``).

    The kernels release the GIL, so the chunks run in parallel. With a
    ``stages`` dict, :meth:`lap` adds the wall time since the previous lap
    to ``stages[name]`` (``benchmarks/bench_flows.py --stages``); without,
    it does nothing.
    """

    def __init__(self, n: int, stages: dict | None = None):
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        self.n = n
        self.pool = ThreadPoolExecutor(n) if n > 1 else None
        self.stages = stages
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.stages is not None:
            now = time.perf_counter()
            self.stages[name] = self.stages.get(name, 0.0) + now - self.last
            self.last = now

    def chunks(self, size: int, work) -> list:
        """``work(start, stop)`` over ``range(size)``, one contiguous chunk per thread."""
        if self.pool is None or size < 2:
            return [work(0, size)]
        bounds = np.linspace(0, size, self.n + 1).round().astype(np.int64)
        return list(self.pool.map(lambda i: work(bounds[i], bounds[i + 1]), range(self.n)))

    def __enter__(self) -> "_Threads":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _finish(steps: np.ndarray, index: np.ndarray, reached: np.ndarray, ys: np.ndarray, xs: np.ndarray, n_steps: int,
            pool: _Threads, slot: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Flat end bin of each trajectory: ``n_steps`` exact steps from the pixel reached, once per pixel.

    ``reached`` holds table entries (a cell pixel's position, or ``-1 - flat``
    for a non-cell pixel); the bookkeeping is the size of the cell pixels,
    not the tile. ``slot`` and ``inverse``: scratch of ``reached``'s size and
    an integer type that holds its entries.
    """
    sy, sx = _distinct_starts(reached, ys, xs, index.shape[1], slot, inverse)
    return _integrate_ends(steps, index, sy, sx, n_steps, pool)[inverse]


@numba.njit(cache=True, nogil=True)
def _prepare(dP, cell, steps, index, ys, xs):
    """One pass over the tile: the cell pixels, their index and their steps.

    ``(ys, xs)`` become the cell pixels in raster order (as ``np.nonzero``),
    ``index[y, x]`` a cell pixel's position among them plus one, 0 off cells
    (every pixel is written: the array comes from ``np.empty``), and
    ``steps[index[y, x]]`` Cellpose's step ``dP[:, y, x] * cell / 5``
    (float32, ``steps`` (n + 1, 2), row 0 zeros: the step off cells).
    """
    _prepare_rows(dP, cell, steps, index, ys, xs, 0, cell.shape[0], 0)


@numba.njit(cache=True, nogil=True)
def _prepare_rows(dP, cell, steps, index, ys, xs, y0, y1, k):
    """:func:`_prepare` on rows ``y0:y1``, the cell pixels numbered from ``k``.

    Returns the new count of cell pixels and the largest ``|steps[i, 0]|``
    written (the fastest a trajectory can move along the rows there).
    """
    if k == 0:
        steps[0, 0] = 0
        steps[0, 1] = 0
    five = np.float32(5.0)
    zero = np.float32(0.0)
    fastest = zero
    for y in range(y0, y1):
        for x in range(cell.shape[1]):
            if cell[y, x]:
                fy = dP[0, y, x] / five
                ys[k] = y
                xs[k] = x
                k += 1
                index[y, x] = k
                steps[k, 0] = fy
                steps[k, 1] = dP[1, y, x] / five
                fastest = max(fastest, abs(fy))
            else:
                index[y, x] = 0
    return k, fastest


# Rows prepared per band in _prepare_successors: with the rows a jump can
# reach below them, a few hundred KB of step field and index for 2048-wide
# tiles, so that the successor search finds them in the cache.
_BAND = 32


@numba.njit(cache=True, nogil=True)
def _prepare_successors(dP, cell, steps, index, ys, xs, jump, table):
    """:func:`_prepare` and :func:`_successors` of every cell pixel, in bands of rows.

    One pass over the whole tile writes ``index`` (17 MB for 2048² tiles),
    so a successor search after it finds them evicted from the
    cache. Here each band of rows is prepared, then the successors of the
    pixels whose trajectories cannot leave the rows prepared so far are
    found while those rows are still cached. Exactly the same table: a
    step moves a position by at most the largest ``|steps[..., 0]|`` of the
    rows it interpolates in (a convex combination), so ``jump`` steps from
    row ``y`` stay above row ``y + jump * fastest + 1``, and the
    interpolation and the nearest-pixel search read one row further; with
    ``fastest`` taken over the rows prepared, a trajectory that stays in
    them moves no faster (induction over the steps). Non-finite flows defer
    everything to the end.
    """
    h = cell.shape[0]
    k = 0
    done = 0
    fastest = np.float32(0.0)
    for y0 in range(0, h, _BAND):
        y1 = min(h, y0 + _BAND)
        k, band_fastest = _prepare_rows(dP, cell, steps, index, ys, xs, y0, y1, k)
        fastest = max(fastest, band_fastest)
        if y1 == h:
            limit = h
        else:
            reach = jump * np.float64(fastest)
            if not reach < h:  # also NaN
                continue
            # Start rows below limit reach at most row y1 - 2 (+ rounding), read up to y1 - 1.
            limit = y1 - np.int64(np.ceil(reach)) - 2
        stop = done
        while stop < k and ys[stop] < limit:
            stop += 1
        if stop > done:
            _successors(steps, index, ys, xs, jump, table, done, stop)
            done = stop


def _index_type(h: int, w: int) -> type:
    # int32 halves the memory traffic of the table's squarings wherever indices fit.
    return np.int32 if h * w < 2**31 - 1 else np.int64


def _buffers(cell: np.ndarray) -> tuple[np.ndarray, ...]:
    """Empty ``(steps, index, ys, xs)`` for the cell pixels of boolean ``cell``, as :func:`_prepare` fills them."""
    h, w = cell.shape
    n = int(np.count_nonzero(cell))
    steps = np.empty((n + 1, 2), np.float32)
    index = np.empty((h, w), _index_type(h, w))
    return steps, index, np.empty(n, index.dtype), np.empty(n, index.dtype)


def _prepared(dP: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(steps, index, ys, xs)`` of :func:`_prepare` for float32 ``dP`` (2, H, W) and boolean ``cell``."""
    steps, index, ys, xs = _buffers(cell)
    _prepare(np.ascontiguousarray(dP, np.float32), np.ascontiguousarray(cell), steps, index, ys, xs)
    return steps, index, ys, xs


def follow_flows(flow: np.ndarray, cell: np.ndarray, niter: int,
                 jump: int | None = DEFAULT_JUMP, threads: int = 1) -> np.ndarray:
    """End bins of the trajectories that start at the cell pixels.

    Parameters
    ----------
    flow : ndarray of float32, shape (2, H, W)
        The step field: Cellpose's ``dP * cell / 5`` (zero off cell pixels;
        it is read at the cell pixels only).
    cell : ndarray of bool, shape (H, W)
        The cell pixels: where trajectories start.
    niter : int
        Number of Euler steps.
    jump : int or None, optional
        Exact steps between two hand-overs to a pixel (see the module
        docstring). ``None`` integrates every trajectory exactly, as
        Cellpose does (slow; for checks).
    threads : int, optional
        Threads for the per-pixel work.

    Returns
    -------
    ndarray of int64, shape (n,)
        For each cell pixel in raster order, the flat index ``y * W + x`` of
        the pixel its end point falls in (positions truncated, as Cellpose
        does).
    """
    cell = np.asarray(cell, bool)
    ys, xs = np.nonzero(cell)
    index = np.zeros(cell.shape, _index_type(*cell.shape))
    index[ys, xs] = np.arange(1, ys.size + 1)
    steps = np.zeros((ys.size + 1, 2), np.float32)
    steps[1:] = np.asarray(flow, np.float32)[:, ys, xs].T
    with _Threads(threads) as pool:
        return _follow(steps, index, ys, xs, niter, jump, pool)


def _integrate_ends(steps: np.ndarray, index: np.ndarray, ys: np.ndarray, xs: np.ndarray, n_steps: int,
                    pool: _Threads) -> np.ndarray:
    """Flat end bins of exact trajectories from pixels ``(ys, xs)``."""
    w = index.shape[1]
    parts = pool.chunks(ys.size, lambda a, b: _integrate(steps, index, ys[a:b], xs[a:b], n_steps))
    end = np.concatenate(parts, axis=1) if parts else np.empty((2, 0), np.float32)
    return end[0].astype(np.int64) * w + end[1].astype(np.int64)


def _jumps(niter: int, jump: int | None) -> int:
    """Pointer jumps of :func:`_follow` (0: every pixel is followed exactly)."""
    if jump is not None and jump < 1:
        raise ValueError(f"jump must be >= 1 or None, got {jump}")
    return 0 if jump is None else max(0, niter // jump - 1)


def _follow(steps: np.ndarray, index: np.ndarray, ys: np.ndarray, xs: np.ndarray, niter: int,
            jump: int | None, pool: _Threads, table: np.ndarray | None = None) -> np.ndarray:
    """End bins of the cell pixels ``(ys, xs)``; ``steps`` and ``index`` as :func:`_prepare` makes them.

    ``table``: the successor table if already made (:func:`_prepare_successors`).
    """
    jumps = _jumps(niter, jump)
    if jumps == 0:
        return _integrate_ends(steps, index, ys, xs, niter, pool)
    # The table is over cell pixels only (sparse images are cheap).
    itype = index.dtype
    if table is None:
        table = np.empty(ys.size, itype)
        pool.chunks(ys.size, lambda a, b: _successors(steps, index, ys, xs, jump, table, a, b))
        pool.lap("follow: first jump of every pixel (successor table)")
    # A pixel handed back to itself moved less than half a pixel in a jump:
    # as a fixed point of the table it would stop for good, whereas its
    # sub-pixel drift adds up in Cellpose. Such pixels (cell borders with
    # weak flow, and the few around each cell's sink) are followed exactly.
    stuck = _fixed_points(table)
    # table^jumps by repeated squaring (pointer jumping), applied to each start.
    reached = np.arange(ys.size, dtype=itype)
    power = table
    scratch = np.empty_like(table)
    remaining = jumps
    while True:
        if remaining & 1:
            _advance(power, reached)
        remaining >>= 1
        if not remaining:
            break
        pool.chunks(power.size, lambda a, b: _square(power, scratch, a, b))
        power, scratch = scratch, power
    pool.lap("follow: pointer jumping")
    # The two tables are scratch now (memory already paged in).
    end = _finish(steps, index, reached, ys, xs, niter - jumps * jump, pool, power, scratch)
    pool.lap("follow: last steps from the pixels reached")
    end[stuck] = _integrate_ends(steps, index, ys[stuck], xs[stuck], niter, pool)
    pool.lap("follow: pixels that do not move, exactly")
    return end


# ---------------------------------------------------------------------------
# Clustering of end points


@numba.njit(cache=True, nogil=True)
def _histogram(end, counts):
    """End points per bin, added to ``counts`` (a zeroed tile, flat)."""
    for e in end:
        counts[e] += 1


@numba.njit(cache=True, nogil=True)
def _zero_cells(tile, ys, xs):
    """``tile`` with the cell pixels zeroed: :func:`_prepare`'s index is 0 elsewhere.

    Reusing it for the histogram spares allocating (and having the
    allocator zero) another tile.
    """
    for i in range(ys.size):
        tile[ys[i], xs[i]] = 0
    return tile


@numba.njit(cache=True, nogil=True)
def _seeds(hist, end):
    """Bins with more than 10 end points that are the maximum of their 5 × 5 window, as (y, x, count).

    Only bins some end point fell in can hold a count, so those are visited
    (each once: a visited bin is marked by negating its count, and restored
    afterwards) instead of the whole tile; the order is that of ``end``.
    """
    h, w = hist.shape
    flat = hist.reshape(-1)
    r = _SEED_WINDOW // 2
    marked = []
    ys = []
    xs = []
    ns = []
    for e in end:
        v = flat[e]
        if v <= _SEED_MIN_COUNT:
            continue  # also a marked bin (negative)
        flat[e] = -v
        marked.append(e)
        y = e // w
        x = e % w
        top = True
        for yy in range(max(0, y - r), min(h, y + r + 1)):
            for xx in range(max(0, x - r), min(w, x + r + 1)):
                if abs(hist[yy, xx]) > v:
                    top = False
        if top:
            ys.append(y)
            xs.append(x)
            ns.append(v)
    for e in marked:
        flat[e] = -flat[e]
    return np.array(ys, np.int64), np.array(xs, np.int64), np.array(ns, np.int64)


@numba.njit(cache=True, nogil=True)
def _grow(hist, ys, xs):
    """Grow each seed (in the given order, later ones overwrite) and paint ``hist`` with -(1 + its index).

    A step of 8-connected dilation restricted to the bins holding more than
    2 end points is a 3-wide OR along rows, then along columns, then the
    restriction. Painted in place (no tile more to allocate): a painted bin
    (negative) held more than 2 end points, so it stays allowed.
    """
    h, w = hist.shape
    size = 2 * _GROW_STEPS + 1
    region = np.zeros((size + 2, size + 2), np.bool_)  # a false border spares bounds tests
    rows = np.zeros((size + 2, size + 2), np.bool_)
    allowed = np.zeros((size, size), np.bool_)
    for k in range(ys.size):
        y0 = ys[k] - _GROW_STEPS
        x0 = xs[k] - _GROW_STEPS
        for i in range(size):
            for j in range(size):
                yy = y0 + i
                xx = x0 + j
                allowed[i, j] = 0 <= yy < h and 0 <= xx < w and (hist[yy, xx] > _GROW_MIN_COUNT or hist[yy, xx] < 0)
        region[:] = False
        region[_GROW_STEPS + 1, _GROW_STEPS + 1] = True
        for _ in range(_GROW_STEPS):
            for i in range(1, size + 1):
                for j in range(1, size + 1):
                    rows[i, j] = region[i, j - 1] | region[i, j] | region[i, j + 1]
            for i in range(1, size + 1):
                for j in range(1, size + 1):
                    region[i, j] = (rows[i - 1, j] | rows[i, j] | rows[i + 1, j]) & allowed[i - 1, j - 1]
        for i in range(size):
            for j in range(size):
                if region[i + 1, j + 1]:
                    hist[y0 + i, x0 + j] = -(k + 1)


@numba.njit(cache=True, nogil=True)
def _end_seeds(hist, end):
    """Seed painted (:func:`_grow`) at each end bin, 0 where none; then ``hist`` zeroed at the end bins.

    All are read before any is zeroed: many trajectories share a bin.
    Zeroed at the end bins, which are all its non-zero entries, ``hist``
    is a zeroed tile again.
    """
    out = np.empty(end.size, np.int32)
    flat = hist.reshape(-1)
    for i in range(end.size):
        out[i] = max(0, -flat[end[i]])
    for e in end:
        flat[e] = 0
    return out


# ---------------------------------------------------------------------------
# Label bookkeeping


@numba.njit(cache=True, nogil=True)
def _boxes(labels, n):
    """Bounding boxes ``(y0, y1, x0, x1)``, ends exclusive, of labels 1..n (y0 = -1: absent)."""
    box = np.full((n + 1, 4), -1, np.int64)
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            v = labels[y, x]
            if v == 0:
                continue
            if box[v, 0] < 0:
                box[v, 0] = y
                box[v, 1] = y + 1
                box[v, 2] = x
                box[v, 3] = x + 1
            else:
                box[v, 1] = y + 1
                box[v, 2] = min(box[v, 2], x)
                box[v, 3] = max(box[v, 3], x + 1)
    return box


@numba.njit(cache=True, nogil=True)
def _has_hole(labels, v, y0, y1, x0, x1):
    """Whether some row of the box has a pixel not ``v`` between two ``v`` pixels.

    A hole pixel has ``v`` pixels to its left and to its right in its row
    (walking along the row it cannot reach the box's edge), so a mask
    without such a gap (the common, convex case) needs no flood fill.
    """
    for y in range(y0, y1):
        seen = False
        gap = False
        for x in range(x0, x1):
            if labels[y, x] == v:
                if gap:
                    return True
                seen = True
            elif seen:
                gap = True
    return False


@numba.njit(cache=True, nogil=True)
def _fill_holes(labels, box, order, areas):
    """Fill the holes of masks ``order`` (in that order), in place; return the flat positions changed.

    A hole is a 4-connected set of pixels of other labels (or background)
    inside the mask's bounding box that does not reach the box's edge; it
    takes the mask's label, as in Cellpose (which fills each mask's box
    with ``fill_voids``, overwriting whatever lies in the hole). ``areas``
    (pixels per label) is kept up to date.
    """
    w = labels.shape[1]
    changed = np.empty(64, np.int64)
    n_changed = 0
    for v in order:
        y0, y1, x0, x1 = box[v, 0], box[v, 1], box[v, 2], box[v, 3]
        if y0 < 0 or y1 - y0 < 3 or x1 - x0 < 3 or not _has_hole(labels, v, y0, y1, x0, x1):
            continue
        hh = y1 - y0
        ww = x1 - x0
        outside = np.zeros((hh, ww), np.bool_)
        stack = np.empty(hh * ww, np.int64)
        top = 0
        for i in range(hh):
            for j in range(ww):
                edge = i == 0 or j == 0 or i == hh - 1 or j == ww - 1
                if edge and labels[y0 + i, x0 + j] != v:
                    outside[i, j] = True
                    stack[top] = i * ww + j
                    top += 1
        while top:
            top -= 1
            i = stack[top] // ww
            j = stack[top] % ww
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                a = i + di
                b = j + dj
                if 0 <= a < hh and 0 <= b < ww and not outside[a, b] and labels[y0 + a, x0 + b] != v:
                    outside[a, b] = True
                    stack[top] = a * ww + b
                    top += 1
        for i in range(hh):
            for j in range(ww):
                old = labels[y0 + i, x0 + j]
                if not outside[i, j] and old != v:
                    labels[y0 + i, x0 + j] = v
                    areas[old] -= 1
                    areas[v] += 1
                    if n_changed == changed.size:
                        changed = np.concatenate((changed, np.empty(changed.size, np.int64)))
                    changed[n_changed] = (y0 + i) * w + x0 + j
                    n_changed += 1
    return changed[:n_changed]


@numba.njit(cache=True, nogil=True)
def _pixel_labels(values, ys, xs, labels, n):
    """Label of each followed pixel, ``values`` (one per pixel), written to ``labels``.

    One pass over the followed pixels (raster order) also gives each
    label's pixel count, bounding box (as :func:`_boxes`) and first pixel
    (its position in the list).
    """
    areas = np.zeros(n, np.int64)
    box = np.full((n, 4), -1, np.int64)
    first = np.full(n, -1, np.int64)
    for i in range(values.size):
        v = values[i]
        y = ys[i]
        x = xs[i]
        labels[y, x] = v
        areas[v] += 1
        if first[v] < 0:
            first[v] = i
            box[v, 0] = y
            box[v, 2] = x
            box[v, 3] = x + 1
        else:
            box[v, 2] = min(box[v, 2], x)
            box[v, 3] = max(box[v, 3], x + 1)
        box[v, 1] = y + 1
    box[0] = -1
    first[0] = -1
    return areas, box, first


@numba.njit(cache=True, nogil=True)
def _final_numbers(labels, ys, xs, changed, drop):
    """Numbers 1..N of the labels not dropped, by first pixel among the pixels ``(ys, xs)`` and ``changed``.

    After hole filling a label's pixels are among the followed pixels
    (raster order) and the pixels the fill changed, so its first pixel is
    the smaller of its first in each.
    """
    w = labels.shape[1]
    flat = labels.reshape(-1)
    big = np.iinfo(np.int64).max
    first = np.full(drop.size, big, np.int64)
    for i in range(ys.size):
        p = ys[i] * w + xs[i]
        v = flat[p]
        if first[v] == big:
            first[v] = p
    for p in changed:
        v = flat[p]
        first[v] = min(first[v], p)
    first[0] = big
    for v in range(drop.size):
        if drop[v]:
            first[v] = big
    order = np.argsort(first, kind="mergesort")
    lut = np.zeros(drop.size, np.int32)
    for k in range(order.size):
        if first[order[k]] == big:
            break
        lut[order[k]] = k + 1
    return lut


@numba.njit(cache=True, nogil=True)
def _listed(ys, xs, y, x):
    """Whether pixel (y, x) is among ``(ys, xs)`` (raster order): binary search."""
    lo = 0
    hi = ys.size
    while lo < hi:
        mid = (lo + hi) // 2
        if ys[mid] < y or (ys[mid] == y and xs[mid] < x):
            lo = mid + 1
        else:
            hi = mid
    return lo < ys.size and ys[lo] == y and xs[lo] == x


@numba.njit(cache=True, nogil=True)
def _relabel(labels, ys, xs, changed, lut):
    """``labels = lut[labels]`` at the pixels ``(ys, xs)`` and ``changed`` (each once), in place.

    ``changed`` may repeat pixels and hold listed ones, which the first
    loop has done.
    """
    w = labels.shape[1]
    flat = labels.reshape(-1)
    for i in range(ys.size):
        p = ys[i] * w + xs[i]
        flat[p] = lut[flat[p]]
    for p in np.unique(changed):
        if not _listed(ys, xs, p // w, p % w):
            flat[p] = lut[flat[p]]


def _holes_and_sizes(labels: np.ndarray, ys: np.ndarray, xs: np.ndarray, areas: np.ndarray, box: np.ndarray,
                     first: np.ndarray, drop: np.ndarray, min_size: int) -> np.ndarray:
    """Cellpose's ``fill_holes_and_remove_small_masks`` on masks given by their pixels, in place.

    ``(ys, xs)`` (raster order) hold every labelled pixel; ``areas``, ``box`` (:func:`_boxes`) and
    ``first`` (position of the first pixel in the list, -1: absent)
    describe the labels; ``drop`` marks labels already removed, which may
    still be in ``labels`` (their pixels are not the filled mask's, as
    background is not). Everything runs over the listed pixels and the
    masks' boxes, never over the whole image.
    """
    drop = drop.copy()
    if min_size > 0:
        drop |= areas < min_size
    # Holes are filled mask by mask in the order of the masks' numbers
    # after dropping, i.e. of their first pixels.
    kept = np.flatnonzero(~drop & (first >= 0))
    order = kept[np.argsort(first[kept], kind="stable")]
    areas = areas.copy()
    changed = _fill_holes(labels, box, order, areas)
    # A mask overwritten whole by another's fill is gone (no pixel, no number).
    drop |= areas < max(min_size, 1)
    _relabel(labels, ys, xs, changed, _final_numbers(labels, ys, xs, changed, drop))
    return labels


# ---------------------------------------------------------------------------
# Flows from masks and the flow check


@numba.njit(cache=True, nogil=True)
def _jacobi(t, out, inside, lx, start, stop):
    """``out = mean3x3(t)`` where ``inside`` (else 0) on flat indices ``start:stop`` of images ``lx`` wide.

    One long loop over contiguous memory (whole rows, the padding columns
    included: ``inside`` is 0 there) with unsigned indices, so that it
    vectorizes; the nine terms are added in Cellpose's order. ``inside`` is
    uint8 and selects (rather than multiplies by a 0/1 float, same values):
    a quarter of the memory keeps a mask's buffers in the L1 cache.
    """
    ninth = t.dtype.type(1 / 9.0)
    zero = t.dtype.type(0.0)
    one = np.uint64(1)
    up = np.uint64(lx)
    for i in range(np.uint64(start), np.uint64(stop)):
        s = ninth * (t[i] + t[i - up] + t[i + up] + t[i - one] + t[i + one]
                     + t[i - up - one] + t[i - up + one] + t[i + up - one] + t[i + up + one])
        out[i] = s if inside[i] else zero


@numba.njit(cache=True, nogil=True)
def _jacobi_fused(rows, out, following, inside, lx, start, stop):
    """``out = mean3x3`` where ``inside`` (else 0) from the row sums ``rows``, and the next step's row sums.

    ``rows[i]`` holds ``t[i - 1] + t[i] + t[i + 1]`` of the heat ``t``; on
    flat indices ``start:stop`` of images ``lx`` wide, ``out[i]`` becomes
    ``(rows[i - lx] + rows[i] + rows[i + lx]) / 9`` inside the mask (0
    outside) and ``following[i - 1]`` the row sum of ``out`` at ``i - 1``
    (``following[stop - 1]`` too), each in the order a separate pass would
    add them, so the values are those of two passes per step bit for bit.
    Done in one loop, the row sums of the next step cost no reload of
    ``out``: the two values before ``i`` are carried in registers (a
    recurrence the compiler vectorizes with shuffles). An update is then
    three loads and two stores instead of six and two: 1.2-1.5 times
    faster on mask boxes of 31-80 pixels.
    """
    ninth = out.dtype.type(1 / 9.0)
    zero = out.dtype.type(0.0)
    one = np.uint64(1)
    up = np.uint64(lx)
    first = np.uint64(start)
    before = out[first - one - one]
    last = out[first - one]
    for i in range(first, np.uint64(stop)):
        s = ninth * (rows[i - up] + rows[i] + rows[i + up])
        v = s if inside[i] else zero
        out[i] = v
        following[i - one] = before + last + v
        before = last
        last = v
    end = np.uint64(stop)
    following[end - one] = before + last + out[end]


@numba.njit(cache=True, nogil=True)
def _heat(labels, v, y0, y1, x0, x1, inside, work, separable):
    """Cellpose's heat diffusion over mask ``v`` (box ``y0:y1, x0:x1``): the heat, flat over the padded box.

    As ``masks_to_flows_cpu``: the box padded by one pixel, the source at
    the mask pixel nearest to the mean position (first in raster order on
    ties), ``2 * (box height + box width + 4)`` Jacobi steps of the 3 × 3
    mean over mask pixels (everything else stays 0). Cellpose updates the
    mask's pixels from a list; here the padded box is swept whole
    (vectorized). With float64 ``work`` (its dtype is that of the heat) and
    not ``separable``, the nine terms are added in Cellpose's order, so
    flows match Cellpose's bit for bit (:func:`masks_to_flows`); the flow
    check uses float32 and ``separable`` sums, about 3.5 times faster, its
    errors agreeing with Cellpose's to about 1e-6. ``inside`` (zeros, the
    padded box's size) becomes 1 at the mask's pixels.
    """
    ly = y1 - y0 + 2
    lx = x1 - x0 + 2
    n = 0
    sy = 0
    sx = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if labels[y, x] == v:
                inside[(y - y0 + 1) * lx + x - x0 + 1] = 1
                n += 1
                sy += y - y0 + 1
                sx += x - x0 + 1
    my = sy / n
    mx = sx / n
    best = np.inf
    cy = 0
    cx = 0
    for y in range(1, ly - 1):
        for x in range(1, lx - 1):
            if inside[y * lx + x] > 0:
                d = (x - mx) ** 2 + (y - my) ** 2
                if d < best:
                    best = d
                    cy = y
                    cx = x
    a = np.zeros(ly * lx, work.dtype)
    b = np.zeros(ly * lx, work.dtype)
    # Row sums of a (and of b, made as b is swept): zero where a and b are.
    rows = np.zeros(ly * lx if separable else 0, work.dtype)
    following = np.zeros(ly * lx if separable else 0, work.dtype)
    c = cy * lx + cx
    for it in range(2 * (ly + lx)):
        # Heat spreads one pixel per step: outside these rows both buffers
        # (and the row sums) hold zeros, so only they are swept.
        ya = max(1, cy - it - 1)
        yb = min(ly - 1, cy + it + 2)
        a[c] += 1
        if separable:
            # The source changed the three row sums that hold a[c]: made again, in the same order.
            rows[c - 1] = a[c - 2] + a[c - 1] + a[c]
            rows[c] = a[c - 1] + a[c] + a[c + 1]
            rows[c + 1] = a[c] + a[c + 1] + a[c + 2]
            _jacobi_fused(rows, b, following, inside, lx, ya * lx + 1, (yb - 1) * lx + lx - 1)
            rows, following = following, rows
        else:
            _jacobi(a, b, inside, lx, ya * lx + 1, (yb - 1) * lx + lx - 1)
        a, b = b, a
    return a, n


@numba.njit(cache=True, nogil=True)
def _unit_gradient(a, i, lx):
    """The unit vector (y, x) of the central differences of the heat ``a`` at flat index ``i`` (row length ``lx``).

    Cellpose's normalization: differences taken in float64 (the heat is float32 in the flow check, float64
    for exact flows), ``1e-60`` added to the norm.
    """
    dy = np.float64(a[i + lx]) - np.float64(a[i - lx])
    dx = np.float64(a[i + 1]) - np.float64(a[i - 1])
    norm = 1e-60 + (dy * dy + dx * dx) ** 0.5
    return dy / norm, dx / norm


@numba.njit(cache=True, nogil=True)
def _diffuse(labels, v, y0, y1, x0, x1, work, separable):
    """Cellpose's flow of mask ``v`` (:func:`_heat`, then central differences of unit length).

    Returns the rows, columns and flow (y, x) of the mask's pixels, in raster order.
    """
    ly = y1 - y0 + 2
    lx = x1 - x0 + 2
    inside = np.zeros(ly * lx, np.uint8)
    a, n = _heat(labels, v, y0, y1, x0, x1, inside, work, separable)
    py = np.empty(n, np.int64)
    px = np.empty(n, np.int64)
    out_y = np.empty(n, np.float64)
    out_x = np.empty(n, np.float64)
    k = 0
    for y in range(1, ly - 1):
        for x in range(1, lx - 1):
            i = y * lx + x
            if inside[i] > 0:
                out_y[k], out_x[k] = _unit_gradient(a, i, lx)
                py[k] = y + y0 - 1
                px[k] = x + x0 - 1
                k += 1
    return py, px, out_y, out_x


@numba.njit(cache=True, nogil=True)
def _mask_flow(labels, box, v, work, separable):
    """Rows, columns and flow (y, x) of mask ``v``'s pixels (:func:`_diffuse` on its box)."""
    return _diffuse(labels, v, box[v, 0], box[v, 1], box[v, 2], box[v, 3], work, separable)


@numba.njit(cache=True, nogil=True)
def _mask_error(labels, v, y0, y1, x0, x1, dP, sink):
    """Flow error of mask ``v``: its flow (:func:`_heat`, float32, separable) against ``dP / 5``.

    The same values, in the same order (raster), as computing the mask's
    flow first and comparing after, but in one loop, without lists of the
    mask's pixels. Before the diffusion, one value per cache line of the
    box's rows of ``dP`` and ``labels`` is read (into ``sink``, so that the
    reads are kept): independent loads the processor overlaps, where the
    scan of the labels and the loop at the end would each wait on a miss
    per row (tens of MB of tile, cold by now).
    """
    ly = y1 - y0 + 2
    lx = x1 - x0 + 2
    touched = np.float32(0.0)
    seen = 0
    for y in range(y0, y1):
        for x in range(x0, x1 + 15, 16):
            xx = min(x, x1 - 1)
            touched += dP[0, y, xx] + dP[1, y, xx]
            seen += labels[y, xx]
    sink[0] = touched
    sink[1] = seen
    inside = np.zeros(ly * lx, np.uint8)
    a, n = _heat(labels, v, y0, y1, x0, x1, inside, np.zeros(0, np.float32), True)
    five = np.float32(5.0)
    ey = 0.0
    ex = 0.0
    for y in range(1, ly - 1):
        for x in range(1, lx - 1):
            i = y * lx + x
            if inside[i] > 0:
                uy, ux = _unit_gradient(a, i, lx)
                ey += (uy - dP[0, y + y0 - 1, x + x0 - 1] / five) ** 2
                ex += (ux - dP[1, y + y0 - 1, x + x0 - 1] / five) ** 2
    return ey / n + ex / n


@numba.njit(cache=True, nogil=True)
def _masks_to_flows(labels, box, mu):
    for v in range(1, box.shape[0]):
        if box[v, 0] < 0:
            continue
        py, px, fy, fx = _mask_flow(labels, box, v, np.zeros(0, np.float64), False)
        for k in range(py.size):
            mu[0, py[k], px[k]] = fy[k]
            mu[1, py[k], px[k]] = fx[k]


@numba.njit(cache=True, nogil=True)
def _flow_errors(labels, box, dP, first, stop):
    """Flow error of masks ``first .. stop - 1`` (0 elsewhere).

    The masks are taken in raster order of their boxes' corners, not by
    label (labels follow the seeds' counts, all over the tile): neighbours
    in turn share rows of ``labels`` and ``dP`` in the cache.
    """
    err = np.zeros(box.shape[0], np.float64)
    first = max(1, first)
    w = labels.shape[1]
    sink = np.zeros(2, dP.dtype)
    corner = np.empty(max(0, stop - first), np.int64)
    for v in range(first, stop):
        corner[v - first] = box[v, 0] * w + box[v, 2]
    for k in np.argsort(corner):
        v = first + k
        if box[v, 0] < 0:
            continue
        err[v] = _mask_error(labels, v, box[v, 0], box[v, 1], box[v, 2], box[v, 3], dP, sink)
    return err


def masks_to_flows(labels: np.ndarray) -> np.ndarray:
    """Unit flows of a label image, as Cellpose 3's ``dynamics.masks_to_flows`` computes them on the CPU.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 background, masks 1..N (gaps allowed).

    Returns
    -------
    ndarray of float64, shape (2, H, W)
        ``(dy, dx)`` of unit length inside masks, 0 elsewhere. A Cellpose
        network is trained to predict 5 times this.
    """
    labels = np.ascontiguousarray(labels)
    mu = np.zeros((2, *labels.shape), np.float64)
    if labels.size and labels.max() > 0:
        _masks_to_flows(labels, _boxes(labels, int(labels.max())), mu)
    return mu


def flow_errors(labels: np.ndarray, dP: np.ndarray, threads: int = 1) -> np.ndarray:
    """Mean squared difference between each mask's own flow and the predicted one.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Masks 1..N (gaps allowed).
    dP : ndarray, shape (2, H, W)
        The network's flow (5 times unit length).
    threads : int, optional
        Threads (masks are shared out between them).

    Returns
    -------
    ndarray of float64, shape (labels.max() + 1,)
        ``errors[v]`` for mask ``v`` (0 for labels absent and for index 0):
        the mean over the mask of ``|masks_to_flows - dP / 5|²``, as
        Cellpose's ``metrics.flow_error``.
    """
    with _Threads(threads) as pool:
        return _errors(labels, dP, pool)


def _errors(labels: np.ndarray, dP: np.ndarray, pool: _Threads) -> np.ndarray:
    labels = np.ascontiguousarray(labels)
    if not labels.size or labels.max() == 0:
        return np.zeros(1)
    return _box_errors(labels, _boxes(labels, int(labels.max())), dP, pool)


def _box_errors(labels: np.ndarray, box: np.ndarray, dP: np.ndarray, pool: _Threads) -> np.ndarray:
    """Flow errors of the labels whose boxes (:func:`_boxes`) are given; 0 for absent ones."""
    dP = np.asarray(dP, np.float32)
    return sum(pool.chunks(box.shape[0], lambda a, b: _flow_errors(labels, box, dP, a, b)))


# ---------------------------------------------------------------------------
# The whole post-processing


def _check_inputs(dP: np.ndarray, cellprob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dP = np.asarray(dP)
    cellprob = np.asarray(cellprob)
    if cellprob.ndim != 2 or dP.shape != (2, *cellprob.shape):
        raise ValueError(f"expected dP of shape (2, H, W) and cellprob of shape (H, W), "
                         f"got {dP.shape} and {cellprob.shape}")
    if not (np.issubdtype(dP.dtype, np.number) and np.issubdtype(cellprob.dtype, np.number)):
        raise TypeError(f"dP and cellprob must be numeric, got {dP.dtype} and {cellprob.dtype}")
    return dP.astype(np.float32, copy=False), cellprob


def compute_masks(
    dP: np.ndarray,
    cellprob: np.ndarray,
    *,
    niter: int = 200,
    cellprob_threshold: float = 0.0,
    flow_threshold: float = 0.4,
    min_size: int = 15,
    max_size_fraction: float = 0.4,
    jump: int | None = DEFAULT_JUMP,
    threads: int = 1,
) -> np.ndarray:
    """Label image from Cellpose's flows and cell probability.

    Same steps and defaults as Cellpose 3's
    ``dynamics.resize_and_compute_masks`` on the CPU without resizing (see
    the module docstring for the steps and for where results may differ).

    Parameters
    ----------
    dP : ndarray, shape (2, H, W)
        Predicted flows ``(dy, dx)``, as the network outputs them (5 times
        unit length); computed in float32.
    cellprob : ndarray, shape (H, W)
        Predicted cell probability (logit).
    niter : int, optional
        Euler steps of flow following. Cellpose's ``eval`` uses
        ``200 * diameter / diam_mean`` when resampling.
    cellprob_threshold : float, optional
        Pixels with ``cellprob`` above it are followed.
    flow_threshold : float, optional
        Masks whose flow error exceeds it are dropped; 0 skips the check.
    min_size : int, optional
        Masks with fewer pixels are dropped (before and after hole filling);
        0 or less keeps all.
    max_size_fraction : float, optional
        Masks larger than this fraction of the image are dropped.
    jump : int or None, optional
        Exact Euler steps per pointer jump; ``None`` follows every pixel
        exactly for all ``niter`` steps, as Cellpose does.
    threads : int, optional
        Threads for flow following and the flow check. Tiles segmented in
        parallel (Dask) are better served by 1 each.

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 background, masks 1..N in raster order of first pixel.
    """
    dP, cellprob = _check_inputs(dP, cellprob)
    if niter < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    with _Threads(threads) as pool:
        return _compute(dP, cellprob, niter, cellprob_threshold, flow_threshold, min_size, max_size_fraction,
                        jump, pool)


def _compute(dP, cellprob, niter, cellprob_threshold, flow_threshold, min_size, max_size_fraction, jump, pool):
    h, w = cellprob.shape
    pool.lap("start")
    cell = cellprob > cellprob_threshold
    if not cell.any():
        return np.zeros((h, w), np.int32)
    niter = int(niter)
    table = None
    if pool.n == 1 and _jumps(niter, jump) > 0:
        # One thread: the successor table is made band by band as the tile is prepared (cache).
        steps, index, ys, xs = _buffers(cell)
        table = np.empty(ys.size, index.dtype)
        _prepare_successors(np.ascontiguousarray(dP), np.ascontiguousarray(cell), steps, index, ys, xs, jump, table)
        pool.lap("threshold, step field, list of pixels, successor table (banded)")
    else:
        steps, index, ys, xs = _prepared(dP, cell)
        pool.lap("threshold, step field, list of pixels")
    del cell
    end = _follow(steps, index, ys, xs, niter, jump, pool, table)
    hist = _zero_cells(index, ys, xs)
    del index
    _histogram(end, hist.reshape(-1))
    sy, sx, counts = _seeds(hist, end)
    if sy.size == 0:
        return np.zeros((h, w), np.int32)
    order = np.lexsort((sy * w + sx, counts))  # fewer end points first: the larger seed paints last
    del steps
    _grow(hist, sy[order], sx[order])
    pool.lap("histogram, seeds, seed growth")
    # From here on the masks are handled as lists of their pixels (the
    # followed pixels, raster order): the image is only written there and
    # read inside masks' boxes, no pass over the whole tile. Dropped masks
    # stay in the image until the last relabelling (the flow check and the
    # hole filling only ask whether a pixel is the mask's own).
    seed = _end_seeds(hist, end)
    del end
    # hist zeroed again is the label image (int32 unless the tile has 2**31 pixels or more).
    labels = hist if hist.dtype == np.int32 else np.zeros((h, w), np.int32)
    del hist
    areas, box, first = _pixel_labels(seed, ys, xs, labels, sy.size + 1)
    del seed
    drop = areas > h * w * max_size_fraction
    drop[0] = False
    pool.lap("labels of the pixels, size filter")
    if flow_threshold is not None and flow_threshold > 0 and not drop[first >= 0].all():
        drop |= _box_errors(labels, np.where(drop[:, None], -1, box), dP, pool) > flow_threshold
    pool.lap("flow check")
    labels = _holes_and_sizes(labels, ys, xs, areas, box, first, drop, min_size)
    pool.lap("holes, min size, numbering")
    return labels


def fill_holes_and_remove_small(labels: np.ndarray, min_size: int = 15) -> np.ndarray:
    """Drop masks smaller than ``min_size``, fill holes, drop small masks again; renumber 1..N.

    Parameters
    ----------
    labels : ndarray of int32, shape (H, W)
        Masks (gaps allowed); overwritten (used as scratch).
    min_size : int, optional
        Smallest mask kept, in pixels; 0 or less keeps all.

    Returns
    -------
    ndarray of int32
        Masks 1..N in raster order of first pixel.
    """
    labels = np.ascontiguousarray(labels, np.int32)
    if labels.max() == 0:
        return labels
    ys, xs = np.nonzero(labels)
    n = int(labels.max()) + 1
    areas, box, first = _pixel_labels(labels[ys, xs], ys, xs, labels, n)
    return _holes_and_sizes(labels, ys, xs, areas, box, first, np.zeros(n, bool), min_size)
