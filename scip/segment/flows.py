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


@numba.njit(cache=True, nogil=True, inline="always")
def _step(flow, y, x):
    """One Euler step from float32 position (y, x), with Cellpose's arithmetic.

    Bilinear weights and the interpolated step are float64 and the step is
    rounded to float32 before it is added, as ``cellpose.dynamics`` does, so
    that exactly followed trajectories match Cellpose bit for bit. Indices
    are unsigned: positions are clamped to the image, and it spares numba's
    negative-index checks.
    """
    h = flow.shape[1]
    w = flow.shape[2]
    y0 = np.uint64(y)
    x0 = np.uint64(x)
    fy = np.float64(y) - np.float64(y0)
    fx = np.float64(x) - np.float64(x0)
    y1 = y0 + np.uint64(1) if y0 < h - 1 else y0
    x1 = x0 + np.uint64(1) if x0 < w - 1 else x0
    dy = np.float32(np.float64(flow[0, y0, x0]) * (1 - fy) * (1 - fx)
                    + np.float64(flow[0, y0, x1]) * (1 - fy) * fx
                    + np.float64(flow[0, y1, x0]) * fy * (1 - fx)
                    + np.float64(flow[0, y1, x1]) * fy * fx)
    dx = np.float32(np.float64(flow[1, y0, x0]) * (1 - fy) * (1 - fx)
                    + np.float64(flow[1, y0, x1]) * (1 - fy) * fx
                    + np.float64(flow[1, y1, x0]) * fy * (1 - fx)
                    + np.float64(flow[1, y1, x1]) * fy * fx)
    zero = np.float32(0.0)
    return (min(np.float32(h - 1), max(zero, np.float32(y + dy))),
            min(np.float32(w - 1), max(zero, np.float32(x + dx))))


# Trajectories advanced together: one step of each in turn keeps several
# independent interpolations in flight (a single trajectory is a chain of
# dependent loads and is latency bound).
_BATCH = 64


@numba.njit(cache=True, nogil=True)
def _integrate(flow, ys, xs, n_steps):
    """Exact end positions (float32, shape (2, n)) of the pixels ``(ys, xs)`` after ``n_steps``."""
    out = np.empty((2, ys.size), np.float32)
    h = np.float32(flow.shape[1] - 1)
    w = np.float32(flow.shape[2] - 1)
    zero = np.float32(0.0)
    for s in range(0, ys.size, _BATCH):
        e = min(ys.size, s + _BATCH)
        for i in range(s, e):
            out[0, i] = ys[i]
            out[1, i] = xs[i]
            if n_steps:
                # From a pixel's own position the bilinear weights are 1, 0, 0, 0: the
                # step is the flow there, bit for bit what _step computes, at a quarter of the loads.
                out[0, i] = min(h, max(zero, np.float32(out[0, i] + flow[0, ys[i], xs[i]])))
                out[1, i] = min(w, max(zero, np.float32(out[1, i] + flow[1, ys[i], xs[i]])))
        for _ in range(n_steps - 1):
            for i in range(s, e):
                out[0, i], out[1, i] = _step(flow, out[0, i], out[1, i])
    return out


@numba.njit(cache=True, nogil=True)
def _successors(flow, index, ys, xs, n_steps, table, start, stop):
    """Where the trajectories from cell pixels ``start:stop`` are handed after ``n_steps``.

    That is the nearest of the four pixels around the end point that is a
    cell pixel, or the nearest of the four if none is: a non-cell pixel has
    zero flow, so handing a trajectory to one would stop it, whereas at its
    sub-pixel position it still feels the flow of the cell pixels around
    it. ``index`` gives each cell pixel's position among ``(ys, xs)`` (-1
    off cells); ``table[i]`` becomes that position for a cell pixel, or
    ``-1 - flat index`` for a non-cell pixel (where a trajectory stays).
    """
    h = flow.shape[1]
    w = flow.shape[2]
    end = _integrate(flow, ys[start:stop], xs[start:stop], n_steps)
    for i in range(stop - start):
        y = end[0, i]
        x = end[1, i]
        y0 = int(y)
        x0 = int(x)
        fy = y - y0
        fx = x - x0
        best = -1
        best_d = np.inf
        for a in range(2):
            for b in range(2):
                yy = min(h - 1, y0 + a)
                xx = min(w - 1, x0 + b)
                d = (fy - a) ** 2 + (fx - b) ** 2
                if index[yy, xx] < 0:
                    d += 4.0  # farther than any cell pixel of the four
                if d < best_d:
                    best_d = d
                    best = yy * w + xx
        k = index.reshape(-1)[best]
        table[start + i] = k if k >= 0 else -1 - best


@numba.njit(cache=True, nogil=True)
def _square(table, out, start, stop):
    """``out = table ∘ table`` on entries ``start:stop`` (negative entries are final)."""
    for i in range(start, stop):
        t = table[i]
        out[i] = table[t] if t >= 0 else t


@numba.njit(cache=True, nogil=True)
def _take(table, reached):
    """One more application of ``table`` to each trajectory's current entry."""
    out = np.empty_like(reached)
    for i in range(reached.size):
        r = reached[i]
        out[i] = table[r] if r >= 0 else r
    return out


@numba.njit(cache=True, nogil=True)
def _distinct(values, size):
    """Distinct values (in order of first occurrence) and each entry's index among them."""
    slot = np.full(size, -1, np.int64)
    inverse = np.empty(values.size, np.int64)
    n = 0
    for i in range(values.size):
        v = values[i]
        if slot[v] < 0:
            slot[v] = n
            n += 1
        inverse[i] = slot[v]
    distinct = np.empty(n, np.int64)
    for i in range(values.size):
        distinct[inverse[i]] = values[i]
    return distinct, inverse


class _Threads:
    """A pool of ``n`` threads that runs work in contiguous chunks (none for ``n == 1``).

    The kernels release the GIL, so the chunks run in parallel.
    """

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        self.n = n
        self.pool = ThreadPoolExecutor(n) if n > 1 else None

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


def _finish(flow: np.ndarray, reached: np.ndarray, ys: np.ndarray, xs: np.ndarray, n_steps: int,
            pool: _Threads) -> np.ndarray:
    """Flat end bin of each trajectory: ``n_steps`` exact steps from the pixel reached, once per pixel.

    ``reached`` holds table entries (a cell pixel's position, or ``-1 - flat``
    for a non-cell pixel); keys over ``len(ys)`` plus the few non-cell
    pixels keep the bookkeeping the size of the cell pixels, not the tile.
    """
    w = flow.shape[2]
    off_cells, rank = np.unique(reached[reached < 0], return_inverse=True)
    keys = reached.astype(np.int64)
    keys[reached < 0] = ys.size + rank
    distinct, inverse = _distinct(keys, ys.size + off_cells.size)
    on = distinct < ys.size
    flat = np.empty(distinct.size, np.int64)
    flat[on] = ys[distinct[on]] * w + xs[distinct[on]]
    flat[~on] = -1 - off_cells[distinct[~on] - ys.size]
    return _integrate_ends(flow, flat // w, flat % w, n_steps, pool)[inverse]


@numba.njit(cache=True, nogil=True)
def _masked(dP, cell):
    out = np.zeros(dP.shape, np.float32)
    five = np.float32(5.0)
    for y in range(cell.shape[0]):
        for x in range(cell.shape[1]):
            if cell[y, x]:
                out[0, y, x] = dP[0, y, x] / five
                out[1, y, x] = dP[1, y, x] / five
    return out


def _masked_flow(dP: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Cellpose's step field ``dP * cell / 5`` (float32), in one pass."""
    return _masked(np.ascontiguousarray(dP, np.float32), np.ascontiguousarray(cell))


def follow_flows(flow: np.ndarray, cell: np.ndarray, niter: int,
                 jump: int | None = DEFAULT_JUMP, threads: int = 1) -> np.ndarray:
    """End bins of the trajectories that start at the cell pixels.

    Parameters
    ----------
    flow : ndarray of float32, shape (2, H, W)
        The step field: Cellpose's ``dP * cell / 5`` (zero off cell pixels).
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
    with _Threads(threads) as pool:
        return _follow(flow, cell, niter, jump, pool)


def _integrate_ends(flow: np.ndarray, ys: np.ndarray, xs: np.ndarray, n_steps: int,
                    pool: _Threads) -> np.ndarray:
    """Flat end bins of exact trajectories from pixels ``(ys, xs)``."""
    w = flow.shape[2]
    parts = pool.chunks(ys.size, lambda a, b: _integrate(flow, ys[a:b], xs[a:b], n_steps))
    end = np.concatenate(parts, axis=1) if parts else np.empty((2, 0), np.float32)
    return end[0].astype(np.int64) * w + end[1].astype(np.int64)


def _follow(flow: np.ndarray, cell: np.ndarray, niter: int, jump: int | None,
            pool: _Threads) -> np.ndarray:
    h, w = flow.shape[1:]
    ys, xs = np.nonzero(cell)
    if jump is not None and jump < 1:
        raise ValueError(f"jump must be >= 1 or None, got {jump}")
    jumps = 0 if jump is None else max(0, niter // jump - 1)
    if jumps == 0:
        return _integrate_ends(flow, ys, xs, niter, pool)
    # The table is over cell pixels only (sparse images are cheap); int32
    # halves the memory traffic of the squarings wherever indices fit.
    itype = np.int32 if h * w < 2**31 else np.int64
    index = np.full((h, w), -1, itype)
    index[ys, xs] = np.arange(ys.size, dtype=itype)
    table = np.empty(ys.size, itype)
    pool.chunks(ys.size, lambda a, b: _successors(flow, index, ys, xs, jump, table, a, b))
    # A pixel handed back to itself moved less than half a pixel in a jump:
    # as a fixed point of the table it would stop for good, whereas its
    # sub-pixel drift adds up in Cellpose. Such pixels (cell borders with
    # weak flow, and the few around each cell's sink) are followed exactly.
    stuck = table == np.arange(ys.size, dtype=itype)
    # table^jumps by repeated squaring (pointer jumping), applied to each start.
    reached = np.arange(ys.size, dtype=itype)
    power = table
    scratch = np.empty_like(table)
    remaining = jumps
    while True:
        if remaining & 1:
            reached = _take(power, reached)
        remaining >>= 1
        if not remaining:
            break
        pool.chunks(power.size, lambda a, b: _square(power, scratch, a, b))
        power, scratch = scratch, power
    end = _finish(flow, reached, ys, xs, niter - jumps * jump, pool)
    end[stuck] = _integrate_ends(flow, ys[stuck], xs[stuck], niter, pool)
    return end


# ---------------------------------------------------------------------------
# Clustering of end points


@numba.njit(cache=True, nogil=True)
def _histogram(end, size):
    counts = np.zeros(size, np.int32)
    for e in end:
        counts[e] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def _seeds(hist):
    """Bins with more than 10 end points that are the maximum of their 5 × 5 window, as (y, x, count)."""
    h, w = hist.shape
    r = _SEED_WINDOW // 2
    ys = []
    xs = []
    ns = []
    for y in range(h):
        for x in range(w):
            v = hist[y, x]
            if v <= _SEED_MIN_COUNT:
                continue
            top = True
            for yy in range(max(0, y - r), min(h, y + r + 1)):
                for xx in range(max(0, x - r), min(w, x + r + 1)):
                    if hist[yy, xx] > v:
                        top = False
            if top:
                ys.append(y)
                xs.append(x)
                ns.append(v)
    return np.array(ys, np.int64), np.array(xs, np.int64), np.array(ns, np.int64)


@numba.njit(cache=True, nogil=True)
def _grow(hist, ys, xs, out):
    """Grow each seed (in the given order, later ones overwrite) and paint ``out`` with 1 + its index."""
    h, w = hist.shape
    size = 2 * _GROW_STEPS + 1
    region = np.zeros((size, size), np.bool_)
    grown = np.zeros((size, size), np.bool_)
    for k in range(ys.size):
        region[:] = False
        region[_GROW_STEPS, _GROW_STEPS] = True
        y0 = ys[k] - _GROW_STEPS
        x0 = xs[k] - _GROW_STEPS
        for _ in range(_GROW_STEPS):
            for i in range(size):
                for j in range(size):
                    hit = False
                    for di in range(max(0, i - 1), min(size, i + 2)):
                        for dj in range(max(0, j - 1), min(size, j + 2)):
                            if region[di, dj]:
                                hit = True
                    yy = y0 + i
                    xx = x0 + j
                    grown[i, j] = hit and 0 <= yy < h and 0 <= xx < w and hist[yy, xx] > _GROW_MIN_COUNT
            region[:] = grown
        for i in range(size):
            for j in range(size):
                if region[i, j]:
                    out[y0 + i, x0 + j] = k + 1


# ---------------------------------------------------------------------------
# Label bookkeeping


@numba.njit(cache=True, nogil=True)
def _renumber(labels, drop):
    """Labels 1..N in raster order of first pixel, in place; labels with ``drop[label]`` become 0."""
    new = np.zeros(drop.size, labels.dtype)
    n = 0
    flat = labels.reshape(-1)
    for p in range(flat.size):
        v = flat[p]
        if v == 0:
            continue
        if drop[v]:
            flat[p] = 0
            continue
        if new[v] == 0:
            n += 1
            new[v] = n
        flat[p] = new[v]
    return n


def _drop_and_renumber(labels: np.ndarray, drop: np.ndarray) -> np.ndarray:
    _renumber(labels, drop)
    return labels


def _areas(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)


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
def _fill_holes(labels, box):
    """Fill each mask's holes, in label order, in place.

    A hole is a 4-connected set of pixels of other labels (or background)
    inside the mask's bounding box that does not reach the box's edge; it
    takes the mask's label, as in Cellpose (which fills each mask's box
    with ``fill_voids``, overwriting whatever lies in the hole).
    """
    for v in range(1, box.shape[0]):
        y0, y1, x0, x1 = box[v, 0], box[v, 1], box[v, 2], box[v, 3]
        if y0 < 0 or y1 - y0 < 3 or x1 - x0 < 3:
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
                if not outside[i, j]:
                    labels[y0 + i, x0 + j] = v


# ---------------------------------------------------------------------------
# Flows from masks and the flow check


@numba.njit(cache=True, nogil=True)
def _jacobi(t, out, inside, lx, start, stop):
    """``out = inside * mean3x3(t)`` on flat indices ``start:stop`` of images ``lx`` wide.

    One long loop over contiguous memory (whole rows, the padding columns
    included: ``inside`` is 0 there) with unsigned indices, so that it
    vectorizes; the nine terms are added in Cellpose's order.
    """
    ninth = 1 / 9.0
    one = np.uint64(1)
    up = np.uint64(lx)
    for i in range(np.uint64(start), np.uint64(stop)):
        out[i] = inside[i] * (ninth * (t[i] + t[i - up] + t[i + up] + t[i - one] + t[i + one]
                                       + t[i - up - one] + t[i - up + one] + t[i + up - one] + t[i + up + one]))


@numba.njit(cache=True, nogil=True)
def _jacobi_separable(t, rows, out, inside, lx, start, stop):
    """As :func:`_jacobi`, the 3 x 3 sum as three row sums of three (4 additions instead of 8)."""
    ninth = t.dtype.type(1 / 9.0)
    one = np.uint64(1)
    up = np.uint64(lx)
    for i in range(np.uint64(start) - up, np.uint64(stop) + up):
        rows[i] = t[i - one] + t[i] + t[i + one]
    for i in range(np.uint64(start), np.uint64(stop)):
        out[i] = inside[i] * (ninth * (rows[i - up] + rows[i] + rows[i + up]))


@numba.njit(cache=True, nogil=True)
def _diffuse(labels, v, y0, y1, x0, x1, out_y, out_x, work, separable):
    """Cellpose's flow of mask ``v``: heat diffusion from its central pixel, normalized gradient.

    As ``masks_to_flows_cpu``: the box padded by one pixel, the source at
    the mask pixel nearest to the mean position (first in raster order on
    ties), ``2 * (box height + box width + 4)`` Jacobi steps of the 3 × 3
    mean over mask pixels (everything else stays 0), central differences,
    unit length. Cellpose updates the mask's pixels from a list; here the
    padded box is swept whole (vectorized). With float64 ``work`` (its
    dtype is that of the heat) and not ``separable``, the nine terms are
    added in Cellpose's order, so flows match Cellpose's bit for bit
    (:func:`masks_to_flows`); the flow check uses float32 and ``separable``
    sums, about 3.5 times faster, its errors agreeing with Cellpose's to
    about 1e-6. Writes the flow of the
    mask's pixels (raster order) to ``out_y``, ``out_x`` and returns their
    rows and columns.
    """
    ly = y1 - y0 + 2
    lx = x1 - x0 + 2
    inside = np.zeros(ly * lx, work.dtype)
    n = 0
    sy = 0
    sx = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if labels[y, x] == v:
                inside[(y - y0 + 1) * lx + x - x0 + 1] = 1.0
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
    rows = np.zeros(ly * lx if separable else 0, work.dtype)
    for it in range(2 * (ly + lx)):
        # Heat spreads one pixel per step: outside these rows both buffers
        # hold zeros, so only they are swept.
        ya = max(1, cy - it - 1)
        yb = min(ly - 1, cy + it + 2)
        a[cy * lx + cx] += 1
        if separable:
            _jacobi_separable(a, rows, b, inside, lx, ya * lx + 1, (yb - 1) * lx + lx - 1)
        else:
            _jacobi(a, b, inside, lx, ya * lx + 1, (yb - 1) * lx + lx - 1)
        a, b = b, a
    py = np.empty(n, np.int64)
    px = np.empty(n, np.int64)
    k = 0
    for y in range(1, ly - 1):
        for x in range(1, lx - 1):
            i = y * lx + x
            if inside[i] > 0:
                dy = np.float64(a[i + lx]) - np.float64(a[i - lx])
                dx = np.float64(a[i + 1]) - np.float64(a[i - 1])
                norm = 1e-60 + (dy * dy + dx * dx) ** 0.5
                out_y[k] = dy / norm
                out_x[k] = dx / norm
                py[k] = y + y0 - 1
                px[k] = x + x0 - 1
                k += 1
    return py, px


@numba.njit(cache=True, nogil=True)
def _count(labels, v, box):
    n = 0
    for y in range(box[0], box[1]):
        for x in range(box[2], box[3]):
            if labels[y, x] == v:
                n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _mask_flow(labels, box, v, work, separable):
    """Rows, columns and flow (y, x) of mask ``v``'s pixels (:func:`_diffuse` on its box)."""
    n = _count(labels, v, box[v])
    fy = np.empty(n, np.float64)
    fx = np.empty(n, np.float64)
    py, px = _diffuse(labels, v, box[v, 0], box[v, 1], box[v, 2], box[v, 3], fy, fx, work, separable)
    return py, px, fy, fx


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
    """Flow error of masks ``first .. stop - 1`` (0 elsewhere)."""
    err = np.zeros(box.shape[0], np.float64)
    five = np.float32(5.0)
    for v in range(max(1, first), stop):
        if box[v, 0] < 0:
            continue
        py, px, fy, fx = _mask_flow(labels, box, v, np.zeros(0, np.float32), True)
        n = py.size
        ey = 0.0
        ex = 0.0
        for k in range(n):
            ey += (fy[k] - dP[0, py[k], px[k]] / five) ** 2
            ex += (fx[k] - dP[1, py[k], px[k]] / five) ** 2
        err[v] = ey / n + ex / n
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
    box = _boxes(labels, int(labels.max()))
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
    cell = cellprob > cellprob_threshold
    labels = np.zeros((h, w), np.int32)
    if not cell.any():
        return labels
    flow = _masked_flow(dP, cell)
    end = _follow(flow, cell, int(niter), jump, pool)
    del flow
    hist = _histogram(end, h * w).reshape(h, w)
    sy, sx, counts = _seeds(hist)
    if sy.size == 0:
        return labels
    order = np.lexsort((sy * w + sx, counts))  # fewer end points first: the larger seed paints last
    painted = np.zeros((h, w), np.int32)
    _grow(hist, sy[order], sx[order], painted)
    del hist
    labels[cell] = painted.reshape(-1)[end]
    del painted, end
    areas = _areas(labels)
    big = areas > h * w * max_size_fraction
    big[0] = False
    labels = _drop_and_renumber(labels, big)
    if flow_threshold is not None and flow_threshold > 0 and labels.max() > 0:
        labels = _drop_and_renumber(labels, _errors(labels, dP, pool) > flow_threshold)
    return fill_holes_and_remove_small(labels, min_size)


def fill_holes_and_remove_small(labels: np.ndarray, min_size: int = 15) -> np.ndarray:
    """Drop masks smaller than ``min_size``, fill holes, drop small masks again; renumber 1..N.

    Parameters
    ----------
    labels : ndarray of int32, shape (H, W)
        Modified in place.
    min_size : int, optional
        Smallest mask kept, in pixels; 0 or less keeps all.

    Returns
    -------
    ndarray of int32
        ``labels``, masks 1..N in raster order of first pixel.
    """
    if labels.max() == 0:
        return labels
    if min_size > 0:
        labels = _drop_and_renumber(labels, _areas(labels) < min_size)
    if labels.max() > 0:
        _fill_holes(labels, _boxes(labels, int(labels.max())))
    drop = _areas(labels) < min_size if min_size > 0 else np.zeros(int(labels.max()) + 1, bool)
    return _drop_and_renumber(labels, drop)
