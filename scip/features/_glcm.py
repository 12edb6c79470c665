"""Compiled kernels of the texture family: quantization, co-occurrence counting,
the 13 Haralick features and the Sobel gradient magnitude.

Everything here works on the foreground pixels grouped by label (see
:class:`~._objects.Objects`): object ``i`` is the run
``starts[i] : starts[i] + counts[i]`` of the grouped pixels, in raster order.
The public wrappers live in :mod:`.texture`.

How the Haralick kernel saves work, per object and channel:

* the object's levels are compacted to the ``m`` levels actually present, so
  the count matrix is ``m x m`` and rows/columns of absent levels never exist
  (unless only a few are absent: then the range ``min .. max`` is kept, whose
  contiguous levels make ``p_{x+y}`` and ``p_{x-y}`` contiguous in the loop);
* the object is copied once into a small bounding-box crop (padded so that
  no neighbour lookup needs a bounds check) holding the compact level + 1,
  0 outside the object: a pair is valid iff both entries are non-zero, so
  pixels of touching objects or the background never count;
* each pair is counted once, in the cell ``(first, second)`` of the
  directed matrix ``C``; the features read the symmetric matrix
  ``S = C + C^T`` (halved on the diagonal) as ``C[a, b] + C[b, a]`` on and
  above the diagonal only, so nothing is counted twice and the pair loop
  does no min/max (counting in the cell ``(min, max)`` instead took 5 %
  more time on the 3-channel cells);
* the pair loop has no branch: a pair whose second pixel is outside the
  object (crop entry 0) is counted too, in column 0 of a matrix of stride
  ``m + 1`` that the features never read (the number of valid pairs is the
  pixel count less that column's sum). A branch there was mispredicted at
  every row end of the object, for every offset;
* the pair loop takes two pixels per step, one from each half of the
  object's pixels: neighbouring pixels of a smooth texture often fall in the
  same cell, and an increment of a cell that the previous step incremented
  waits for that store to reach the load (3 % of the kernel on the
  3-channel cells; four quarters instead of two halves gained less, and two
  count matrices added up at the end, or four offsets counted in one pass
  over the pixels, gained nothing);
* the entropy of the off-diagonal entries is summed in a loop of its own,
  over the non-zero entries gathered by the main loop (in the same order, so
  the sum is the same): in the main loop, with its many live values, the
  running sum was kept in memory and every addition waited for the last;
* all marginals (``p_x``, ``p_{x+y}``, ``p_{x-y}``) are integer counts, every
  ``p log2 p`` is ``(n / T) (log2 T - log2 n)`` with ``log2 n`` read from a
  table (no logarithm in the loops, and exactly 0 for ``n == T``), and
  ``sum i j p`` comes from the integer moments of ``p_{x+y}`` and ``p_{x-y}``;
* indices are unsigned, which spares numba's negative-index handling in the
  inner loops.
"""

from __future__ import annotations

import numpy as np

from ._jit import helper, kernel

__all__ = ["N_HARALICK", "haralick_runs", "log2_table", "quantize_runs", "sobel_runs"]

#: Number of Haralick features per co-occurrence matrix.
N_HARALICK = 13


def log2_table(n: int) -> np.ndarray:
    """``log2(k)`` for ``k = 0 .. n - 1`` (entry 0 is 0 and never used)."""
    table = np.zeros(max(int(n), 2), dtype=np.float64)
    table[1:] = np.log2(np.arange(1, len(table), dtype=np.float64))
    return table


@helper
def _lg(n, table):  # pragma: no cover - compiled
    # A helper, not ``inline="always"``: numba inlines such a function into
    # the IR of every call site (eight here) and types each copy again, which
    # cost compile time on an empty cache; LLVM inlines this small function
    # into its callers anyway.
    if n < table.shape[0]:
        return table[np.uintp(n)]
    return np.log2(float(n))


@helper
def _quantize_run(x, n_levels, lo, hi, use_range, out):  # pragma: no cover - compiled
    """Levels 1..n_levels of the values ``x`` of one object into ``out``.

    Returns False (and leaves ``out`` undefined) if a value is not finite.
    Per object (``use_range`` False): ``1 + floor((v - min) * (L / (max - min)))``
    clipped to ``L``, all 1 when ``max == min``. With a fixed range: values
    clipped to ``[lo, hi]`` first, then the same with ``lo, hi``.
    """
    n = x.shape[0]
    vmin = np.inf
    vmax = -np.inf
    for k in range(n):
        v = x[k]
        if not np.isfinite(v):
            return False
        if v < vmin:
            vmin = v
        if v > vmax:
            vmax = v
    if use_range:
        vmin = lo
        vmax = hi
    span = vmax - vmin
    if not span > 0.0:
        for k in range(n):
            out[k] = 1
        return True
    scale = n_levels / span
    for k in range(n):
        # clipped, so v - vmin >= 0 and int() is floor()
        v = x[k]
        if vmin > v:  # max(v, vmin), min(., vmax) as Python's builtins
            v = vmin
        if vmax < v:
            v = vmax
        q = int((v - vmin) * scale) + 1
        out[k] = n_levels if n_levels < q else q
    return True


@kernel
def quantize_runs(values, starts, counts, n_levels, lo, hi, use_range):  # pragma: no cover - compiled
    """Gray levels (uint8, 1..n_levels) of grouped ``values``; 0 for the pixels
    of an object that has a non-finite value."""
    out = np.zeros(values.shape[0], np.uint8)
    for i in range(starts.shape[0]):
        s = starts[i]
        c = counts[i]
        if not _quantize_run(values[s:s + c], n_levels, lo, hi, use_range, out[s:s + c]):
            out[s:s + c] = 0
    return out


@helper
def _haralick13(cnt, m, st, lv, npairs, table, rsum, pp, pm, nzs, out):  # pragma: no cover - compiled
    """The 13 features of one symmetric co-occurrence matrix, as mahotas.

    ``cnt`` holds the directed pair counts ``C`` (flat, stride ``st >= m``)
    of the compact levels ``0 .. m-1``, whose gray levels are ``lv``:
    ``C[a, b] + C[b, a] = S[a, b]`` for ``a < b`` and ``C[a, a] = S[a, a] / 2``,
    where ``S`` is mahotas' symmetric matrix with total ``T = 2 * npairs``.
    mahotas' matrix has size ``fm1 = max level + 1``, which matters for the
    difference variance (variance of the ``fm1`` entries of ``p_{x-y}``).
    ``pp`` and ``pm`` are indexed relative to ``2 * lv[0]`` and 0. ``nzs``
    is scratch for the non-zero off-diagonal counts (``m (m - 1) / 2``).
    """
    l0 = lv[0]
    R = lv[m - 1] - l0 + 1   # range of levels; == m when they are contiguous
    fm1 = lv[m - 1] + 1
    T = 2 * npairs
    Tf = float(T)
    lgT = _lg(T, table)
    for a in range(m):
        rsum[a] = 0
    for j in range(R):
        pm[j] = 0
    for j in range(2 * R):
        pp[j] = 0
    asq = 0
    e_diag = 0.0
    e_off = 0.0
    k = 0  # non-zero off-diagonal counts gathered in nzs
    if R == m:
        # all levels of the range present: p_{x+y}, p_{x-y} are contiguous in b
        for a in range(m):
            base = a * st
            s = 2 * cnt[np.uintp(base + a)]
            ra = s
            pp[np.uintp(2 * a)] += s
            pm[0] += s
            asq += s * s
            e_diag += s * (lgT - _lg(s, table))
            for b in range(a + 1, m):
                s = cnt[np.uintp(base + b)] + cnt[np.uintp(b * st + a)]  # S[a, b]
                ra += s
                rsum[np.uintp(b)] += s
                pp[np.uintp(a + b)] += 2 * s
                pm[np.uintp(b - a)] += 2 * s
                asq += 2 * s * s
                nzs[np.uintp(k)] = s  # branch-free: kept only if non-zero
                k += s != 0
            rsum[np.uintp(a)] += ra
    else:
        for a in range(m):
            base = a * st
            la = lv[np.uintp(a)] - l0
            s = 2 * cnt[np.uintp(base + a)]
            ra = s
            pp[np.uintp(2 * la)] += s
            pm[0] += s
            asq += s * s
            e_diag += s * (lgT - _lg(s, table))
            for b in range(a + 1, m):
                s = cnt[np.uintp(base + b)] + cnt[np.uintp(b * st + a)]  # S[a, b]
                lb = lv[np.uintp(b)] - l0
                ra += s
                rsum[np.uintp(b)] += s
                pp[np.uintp(la + lb)] += 2 * s
                pm[np.uintp(lb - la)] += 2 * s
                asq += 2 * s * s
                nzs[np.uintp(k)] = s  # branch-free: kept only if non-zero
                k += s != 0
            rsum[np.uintp(a)] += ra
    # Entropy of the off-diagonal entries, in the order of the loops above
    # (a zero entry adds exactly 0). A loop of its own with few live values:
    # its running sum stays in a register (see the module docstring).
    for j in range(k):
        s = np.int64(nzs[np.uintp(j)])  # int64 as elsewhere: one specialization of _lg
        e_off += s * (lgT - _lg(s, table))
    entropy = (e_diag + 2.0 * e_off) / Tf
    # marginal p_x (== p_y): moments and entropy
    sx1 = 0
    sx2 = 0
    hx = 0.0
    d2 = 0
    idm = 0.0
    diff_ent = 0.0
    dmean = 1.0 / fm1   # p_{x-y} sums to 1 over its fm1 entries ...
    dvar = (fm1 - R) * dmean * dmean   # ... of which those from R on are 0
    # p_x and p_{x-y} in one loop (m <= R): two short loops of dependent
    # additions ran one after the other; here they overlap (each sum still
    # runs in index order, so the values are the same)
    for j in range(R):
        if j < m:
            r = rsum[j]
            la = lv[j]
            sx1 += la * r
            sx2 += la * la * r
            hx += r * (lgT - _lg(r, table))
        n = pm[j]
        d2 += j * j * n
        idm += n / (1.0 + j * j)
        diff_ent += n * (lgT - _lg(n, table))
        dd = n / Tf - dmean
        dvar += dd * dd
    hx /= Tf
    ux = sx1 / Tf
    vx = sx2 / Tf - ux * ux
    s1 = 0
    s2 = 0
    sum_ent = 0.0
    for j in range(2 * R - 1):
        n = pp[j]
        s = 2 * l0 + j
        s1 += s * n
        s2 += s * s * n
        sum_ent += n * (lgT - _lg(n, table))
    sum_avg = s1 / Tf
    out[0] = asq / (Tf * Tf)
    out[1] = d2 / Tf
    if vx == 0.0:
        out[2] = 1.0
    else:
        sx = np.sqrt(vx)
        # sum i j p = (sum (i + j)^2 p - sum (i - j)^2 p) / 4, exact in integers
        out[2] = (1.0 / sx / sx) * ((s2 - d2) / 4.0 / Tf - ux * ux)
    out[3] = vx
    out[4] = idm / Tf
    out[5] = sum_avg
    out[6] = s2 / Tf - sum_avg * sum_avg
    out[7] = sum_ent / Tf
    out[8] = entropy
    out[9] = dvar / fm1
    out[10] = diff_ent / Tf
    # HXY1 = HXY2 = HX + HY = 2 HX for a symmetric matrix (see texture.py)
    hxy = 2.0 * hx
    if hx == 0.0:
        out[11] = entropy - hxy
    else:
        out[11] = (entropy - hxy) / hx
    arg = 1.0 - np.exp(-2.0 * (hxy - entropy))
    out[12] = np.sqrt(arg if arg > 0.0 else 0.0)


@kernel
def haralick_runs(values, starts, counts, index, width, offsets, n_levels, lo, hi, use_range, table):  # pragma: no cover - compiled
    """Haralick features of every object, channel and offset.

    Parameters
    ----------
    values : float64 (C, N)
        Channel values of the grouped pixels.
    starts, counts : intp
        Run of each object in the grouped pixels (see :class:`~._groups.Groups`).
    index : int32 (N,), int64 for labels of 2**31 pixels or more
        Flat index of each grouped pixel in the label image, in raster order
        within an object (:attr:`~._groups.Groups.index`).
    width : int
        Columns of the label image. Rows and columns come from ``index`` here
        (an object's row only grows along its run) rather than from
        ``index // width`` and ``index % width`` over all pixels in numpy.
    offsets : int64 (K, 2)
        ``(d_row, d_col)`` of each co-occurrence offset, ``d_row >= 0``.
    n_levels : int
        Gray levels L.
    lo, hi : float64 (C,)
        Fixed quantization range per channel, used where ``use_range``.
    table : float64
        ``log2`` of the integers (see :func:`log2_table`).

    Returns
    -------
    float64 (n_objects, C, K, 13)
        NaN for an offset with no pair of object pixels, and for a channel in
        which the object has a non-finite value.
    """
    n_obj = starts.shape[0]
    n_ch = values.shape[0]
    n_off = offsets.shape[0]
    out = np.empty((n_obj, n_ch, n_off, 13), np.float64)
    out[:] = np.nan
    L = n_levels
    LL = L * L
    dmax = 0
    for o in range(n_off):
        if offsets[o, 0] > dmax:
            dmax = offsets[o, 0]
        if abs(offsets[o, 1]) > dmax:
            dmax = abs(offsets[o, 1])
    # Scratch buffers, each set before it is read (cnt, compact and crop
    # below, rsum, pp and pm in _haralick13): np.empty only, for numba has one
    # overload fewer to compile when no np.zeros is called (issue 18).
    cnt = np.empty((L + 1) * (L + 1), np.int32)   # directed pair counts, stride m + 1, column 0 for invalid pairs
    lev = np.empty(0, np.uint8)
    crop = np.empty(0, np.uint8)
    pos = np.empty(0, np.intp)
    prow = np.empty(0, np.intp)
    lv = np.empty(L, np.int64)
    compact = np.empty(L + 1, np.uint8)
    rsum = np.empty(L, np.int64)
    pp = np.empty(2 * L, np.int64)
    pm = np.empty(L, np.int64)
    nzs = np.empty(LL, np.int32)
    for i in range(n_obj):
        s0 = starts[i]
        n = counts[i]
        if n == 0:
            continue
        if lev.shape[0] < n:
            lev = np.empty(n, np.uint8)
            pos = np.empty(n, np.intp)
            prow = np.empty(n, np.intp)
        # Raster order: the first and last pixel hold the lowest and highest
        # row, and the row of the pixels only grows: found by stepping, with
        # no division per pixel. pos holds the column for now.
        row_start = (index[s0] // width) * width
        r = 0   # row relative to the first
        c0 = width
        c1 = 0
        for k in range(n):
            f = index[s0 + k]
            while f >= row_start + width:
                row_start += width
                r += 1
            c = f - row_start
            prow[k] = r
            pos[k] = c
            if c < c0:  # comparisons, not min/max: numba compiles those overloads anew (issue 18)
                c0 = c
            if c > c1:
                c1 = c
        h = r + 1
        w = c1 - c0 + 1
        # Bounding-box crop padded by dmax columns on both sides and dmax rows
        # below, so that p + offset (d_row >= 0) is always inside it; per pixel
        # the compact level + 1 of the channel, 0 outside the object.
        wp = w + 2 * dmax
        size = (h + dmax) * wp
        if crop.shape[0] < size:
            crop = np.empty(size if size > 2 * crop.shape[0] else 2 * crop.shape[0], np.uint8)
        for k in range(n):
            pos[k] = prow[k] * wp + pos[k] - c0 + dmax
        for ch in range(n_ch):
            ok = _quantize_run(values[ch, s0:s0 + n], L, lo[ch], hi[ch], use_range, lev)
            if not ok:
                continue  # a non-finite value: this channel stays NaN
            compact[:] = 0
            for k in range(n):
                compact[lev[k]] = 1
            m = 0
            lmin = L
            lmax = 1
            for q in range(1, L + 1):
                if compact[q]:
                    m += 1
                    if q < lmin:
                        lmin = q
                    lmax = q
            if (lmax - lmin + 1) ** 2 <= 2 * m * m:
                # few levels missing: keep the whole range (the rows and
                # columns of a missing level stay 0), for the contiguous loop
                m = lmax - lmin + 1
                for q in range(lmin, lmax + 1):
                    lv[q - lmin] = q
                    compact[q] = q - lmin + 1  # compact level + 1
            else:
                m = 0
                for q in range(lmin, lmax + 1):
                    if compact[q]:
                        lv[m] = q
                        m += 1
                        compact[q] = m
            crop[:size] = 0
            for k in range(n):
                crop[np.uintp(pos[k])] = compact[lev[k]]
            for o in range(n_off):
                if offsets[o, 0] >= h or abs(offsets[o, 1]) >= w:
                    continue  # no pair fits in the bounding box: stays NaN
                M = m + 1
                cnt[:M * M] = 0
                step = offsets[o, 0] * wp + offsets[o, 1]
                # Cell (x, y) of the crop entries (compact level + 1), stride
                # M, no branch: a pair leaving the object (y == 0) lands in
                # column 0, which is not a level. Two pixels per step, one
                # from each half of the object: neighbouring pixels often
                # share their cell, and each increment of a cell then waited
                # for the store of the last (see the module docstring).
                hh = n // 2
                for k in range(hh):
                    pa = pos[k]
                    pb = pos[k + hh]
                    ya = crop[np.uintp(pa + step)]
                    xa = crop[np.uintp(pa)]  # >= 1: an object pixel
                    yb = crop[np.uintp(pb + step)]
                    xb = crop[np.uintp(pb)]
                    cnt[np.uintp(xa * M + ya)] += 1
                    cnt[np.uintp(xb * M + yb)] += 1
                if n % 2:
                    pa = pos[n - 1]
                    cnt[np.uintp(crop[np.uintp(pa)] * M + crop[np.uintp(pa + step)])] += 1
                invalid = 0
                for b in range(1, M):
                    invalid += cnt[np.uintp(b * M)]
                npairs = np.intp(n - invalid)  # intp as before: one specialization of _haralick13
                if npairs:
                    # the matrix of the levels starts at row 1, column 1
                    _haralick13(cnt[M + 1:], m, M, lv, npairs, table, rsum, pp, pm, nzs, out[i, ch, o])
    return out


@kernel
def sobel_runs(image, rows, cols, out):  # pragma: no cover - compiled
    """Sobel gradient magnitude of ``image`` (H, W) at the pixels ``(rows, cols)``, written into ``out``.

    Same as ``skimage.filters.sobel(image)`` (mode 'reflect', which for a 3x3
    kernel equals 'nearest'): ``sqrt((G_r**2 + G_c**2) / 2)`` with the kernels
    ``[1, 0, -1]`` across and ``[1, 2, 1] / 4`` along the axis. ``out``
    (float64, one entry per pixel) is returned.

    The caller passes ``out`` so that one buffer serves every channel: a fresh
    array per call is as large as the pixel list (45 MB for 5.6 M pixels) and
    faulting its pages in cost about as much as the gradient itself (24 of
    64 ms a channel on the 5,000-cell benchmark mosaic). Sharing the column
    loads of neighbouring pixels along a row (a sliding window, or a
    vectorized loop over the interior of each run) did not run faster: the
    kernel waits on memory, not on arithmetic, except for the square root,
    taken in a second, vectorized loop.
    """
    H, W = image.shape
    half = np.sqrt(0.5)
    for k in range(rows.shape[0]):
        r = rows[k]
        c = cols[k]
        # 1 <= r <= H - 2 and 1 <= c <= W - 2 (unsigned: r - 1 wraps for r == 0,
        # and H - 2 for H < 2): away from the border, as nearly every pixel, a
        # well-predicted branch spares the four clamps (61 -> 57 ms for the 3
        # channels of the 5,000-cell mosaic, alternated).
        if np.uintp(r - 1) < np.uintp(H - 2) and np.uintp(c - 1) < np.uintp(W - 2):
            ru = np.uintp(r - 1)
            rd = np.uintp(r + 1)
            cl = np.uintp(c - 1)
            cr = np.uintp(c + 1)
        else:
            ru = np.uintp(r - 1 if r > 0 else 0)
            rd = np.uintp(r + 1 if r < H - 1 else H - 1)
            cl = np.uintp(c - 1 if c > 0 else 0)
            cr = np.uintp(c + 1 if c < W - 1 else W - 1)
        r_ = np.uintp(r)
        c_ = np.uintp(c)
        # float64 before subtracting: unsigned pixels would wrap around.
        a = np.float64(image[ru, cl])
        b = np.float64(image[ru, c_])
        d = np.float64(image[ru, cr])
        e = np.float64(image[r_, cl])
        f = np.float64(image[r_, cr])
        g = np.float64(image[rd, cl])
        h = np.float64(image[rd, c_])
        i = np.float64(image[rd, cr])
        gr = 0.25 * (g - a) + 0.5 * (h - b) + 0.25 * (i - d)
        gc = 0.25 * (d - a) + 0.5 * (f - e) + 0.25 * (i - g)
        out[k] = gr * gr + gc * gc
    # The square roots in a loop of their own, which LLVM vectorizes: one per
    # pixel in the loop above, they bounded it (the gradient of the 5,000-cell
    # mosaic's 3 channels took 66 -> 62 ms, alternated; same values, as a
    # square root is correctly rounded either way).
    for k in range(rows.shape[0]):
        out[k] = np.sqrt(out[k]) * half
    return out
