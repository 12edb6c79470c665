"""Compiled per-object kernels of the shape family.

One call of :func:`shape_kernel` walks every object once, in a single compiled
loop: it rasterizes the object into a scratch bounding-box buffer and computes
everything that needs the object's own geometry (perimeters, Euler number,
filled area, moments, the two convex hulls, Feret diameters, the minimum
enclosing circle and the Zernike monomial sums). Conventions follow
:mod:`skimage.measure.regionprops` and CellProfiler; see :mod:`.shape`.

Coordinates inside the kernel are local to the object's bounding box, except
for CellProfiler's enclosing circle and the Zernike sums, which are in image
coordinates to round as CellProfiler does (see :func:`shape_kernel`); hull
geometry is done on doubled integer coordinates so that pixel-edge midpoints
(half-integers) stay exact and every inside/outside decision is exact.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import helper, kernel

__all__ = ["shape_kernel", "zernike_scores", "N_SCALARS", "SCALAR_COLUMNS"]

# Columns of the scalar output, in order.
SCALAR_COLUMNS: tuple[str, ...] = (
    "perimeter",
    "perimeter_crofton",
    "euler_number",
    "area_filled",
    "area_convex",
    "feret_diameter_max",
    "feret_diameter_min",
    "mec_radius",
    # raw moments m_pq (p, q = 0..3) about the bounding-box origin, then
    # central moments mu_pq about the centroid; p indexes rows, q columns.
    *(f"m{p}{q}" for p in range(4) for q in range(4)),
    *(f"mu{p}{q}" for p in range(4) for q in range(4)),
)
N_SCALARS = len(SCALAR_COLUMNS)
_RAW0 = SCALAR_COLUMNS.index("m00")
_CEN0 = SCALAR_COLUMNS.index("mu00")

# skimage.measure.perimeter (neighborhood 4): weight of a border pixel by the
# code 1 + 2 * (border 4-neighbours) + 10 * (border diagonal neighbours).
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2.0)
_PERIMETER_WEIGHTS[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0

# skimage.measure.perimeter_crofton (4 directions) and euler_number
# (connectivity 2), indexed by the 2x2 configuration code
# I[i, j] + 2 I[i-1, j] + 4 I[i, j-1] + 8 I[i-1, j-1].
_S2 = math.sqrt(2.0)
_CROFTON_COEFS = np.array([
    0.0, np.pi / 4 * (1 + 1 / _S2), np.pi / (4 * _S2), np.pi / (2 * _S2),
    0.0, np.pi / 4 * (1 + 1 / _S2), 0.0, np.pi / (4 * _S2),
    np.pi / 4, np.pi / 2, np.pi / (4 * _S2), np.pi / (4 * _S2),
    np.pi / 4, np.pi / 2, 0.0, 0.0,
])
_EULER_COEFS = np.array([0, 0, 0, 0, 0, 0, -1, 0, 1, 0, 0, 0, 0, 0, -1, 0], dtype=np.float64)


@helper
def _envelope(ys, xs, n, lower, out_y, out_x):
    """Convex envelope of points sorted by strictly increasing ``ys``.

    ``lower=True`` keeps the lower convex chain of ``x`` as a function of ``y``
    (the left boundary of the hull), else the upper concave chain (the right
    boundary). Collinear points are dropped. Returns the chain length.
    """
    k = 0
    for t in range(n):
        y = ys[t]
        x = xs[t]
        while k >= 2:
            # cross product (a - o) x (b - o), o and a the last two points, b the new
            oy = out_y[k - 2]
            ox = out_x[k - 2]
            c = (out_y[k - 1] - oy) * (x - ox) - (out_x[k - 1] - ox) * (y - oy)
            # Andrew's monotone chain with y as the abscissa: the lower chain
            # (left boundary) needs strictly positive turns, the upper negative.
            if (lower and c <= 0) or ((not lower) and c >= 0):
                k -= 1
            else:
                break
        out_y[k] = y
        out_x[k] = x
        k += 1
    return k


@helper
def _convex_rows(first, last, h, w, ys, xs, cy, cx, lo, hi):
    """Rows ``[lo[r], hi[r]]`` of skimage's convex image, and its pixel count.

    skimage's hull is the convex hull of the midpoints of the four edges of
    every object pixel; its convex image holds the pixel centers inside the
    hull or on its boundary. Per doubled row ``Y`` only the extreme points
    matter, so the left (right) hull boundary is the lower (upper) envelope of
    the leftmost (rightmost) edge midpoint of each doubled row.
    """
    # Left boundary. Typed constants (np.intp, np.bool_) as arguments of the
    # helpers: a bare literal would have numba compile one more
    # specialization of the helper for that literal value.
    n = np.intp(0)
    for Y in range(-1, 2 * h):
        if Y % 2 == 0:
            r = Y // 2
            if last[r] < 0:
                continue
            ys[n] = Y
            xs[n] = 2 * first[r] - 1
            n += 1
        else:
            # between rows (Y - 1) / 2 and (Y + 1) / 2: top/bottom edge midpoints
            best = 1 << 40
            ra = (Y - 1) // 2
            rb = (Y + 1) // 2
            if ra >= 0 and last[ra] >= 0 and 2 * first[ra] < best:
                best = 2 * first[ra]
            if rb < h and last[rb] >= 0 and 2 * first[rb] < best:
                best = 2 * first[rb]
            if best < (1 << 40):
                ys[n] = Y
                xs[n] = best
                n += 1
    nl = _envelope(ys, xs, n, np.bool_(True), cy, cx)
    t = 0
    for r in range(h):
        Y = 2 * r
        while t + 1 < nl and cy[t + 1] < Y:
            t += 1
        if cy[t] == Y or t + 1 >= nl:
            lo[r] = -((-cx[t]) // 2)  # ceiling division
        else:
            den = cy[t + 1] - cy[t]
            num = cx[t] * den + (Y - cy[t]) * (cx[t + 1] - cx[t])
            lo[r] = -((-num) // (2 * den))
    # Right boundary.
    n = np.intp(0)
    for Y in range(-1, 2 * h):
        if Y % 2 == 0:
            r = Y // 2
            if last[r] < 0:
                continue
            ys[n] = Y
            xs[n] = 2 * last[r] + 1
            n += 1
        else:
            best = -(1 << 40)
            ra = (Y - 1) // 2
            rb = (Y + 1) // 2
            if ra >= 0 and last[ra] >= 0 and 2 * last[ra] > best:
                best = 2 * last[ra]
            if rb < h and last[rb] >= 0 and 2 * last[rb] > best:
                best = 2 * last[rb]
            if best > -(1 << 40):
                ys[n] = Y
                xs[n] = best
                n += 1
    nr = _envelope(ys, xs, n, np.bool_(False), cy, cx)
    t = 0
    area = 0
    for r in range(h):
        Y = 2 * r
        while t + 1 < nr and cy[t + 1] < Y:
            t += 1
        if cy[t] == Y or t + 1 >= nr:
            hi[r] = cx[t] // 2
        else:
            den = cy[t + 1] - cy[t]
            num = cx[t] * den + (Y - cy[t]) * (cx[t + 1] - cx[t])
            hi[r] = num // (2 * den)
        if lo[r] < 0:
            lo[r] = 0
        if hi[r] > w - 1:
            hi[r] = w - 1
        if hi[r] >= lo[r]:
            area += hi[r] - lo[r] + 1
    return area


@helper
def _feret_max(lo, hi, h, ys, xs, cy, cx, vy, vx):
    """skimage's ``feret_diameter_max`` of the convex image rows ``[lo, hi]``.

    skimage takes the 0.5-level contour of the zero-padded convex image: the
    midpoints between 4-adjacent inside/outside pixel pairs. In doubled
    coordinates those are ``(2r, 2lo-1)``, ``(2r, 2hi+1)`` per row and
    ``(2r-1, 2c)`` for the columns in exactly one of rows ``r-1`` and ``r``.
    The diameter is attained between vertices of their hull.
    """
    nv = 0
    for side in range(2):
        n = np.intp(0)  # not a literal: see _convex_rows
        for Y in range(-1, 2 * h):
            if Y % 2 == 0:
                r = Y // 2
                if hi[r] < lo[r]:
                    continue
                ys[n] = Y
                xs[n] = 2 * lo[r] - 1 if side == 0 else 2 * hi[r] + 1
                n += 1
            else:
                ra = (Y - 1) // 2
                rb = (Y + 1) // 2
                a1 = 0
                b1 = -1
                a2 = 0
                b2 = -1
                if ra >= 0:
                    a1 = lo[ra]
                    b1 = hi[ra]
                if rb < h:
                    a2 = lo[rb]
                    b2 = hi[rb]
                e1 = b1 < a1
                e2 = b2 < a2
                # extreme columns of the symmetric difference of [a1, b1] and [a2, b2]
                if e1 and e2:
                    continue
                if e1:
                    mn = a2
                    mx = b2
                elif e2:
                    mn = a1
                    mx = b1
                else:
                    if a1 != a2:
                        mn = a2 if a2 < a1 else a1
                    elif b1 != b2:
                        mn = (b2 if b2 < b1 else b1) + 1
                    else:
                        continue
                    if b1 != b2:
                        mx = b2 if b2 > b1 else b1
                    else:
                        mx = (a2 if a2 > a1 else a1) - 1
                ys[n] = Y
                xs[n] = 2 * mn if side == 0 else 2 * mx
                n += 1
        k = _envelope(ys, xs, n, side == 0, cy, cx)
        for t in range(k):
            vy[nv] = cy[t]
            vx[nv] = cx[t]
            nv += 1
    best = 0
    for i in range(nv):
        for j in range(i + 1, nv):
            dy = vy[i] - vy[j]
            dx = vx[i] - vx[j]
            d = dy * dy + dx * dx
            if d > best:
                best = d
    return math.sqrt(best) / 2.0


@helper
def _cp_convex(ai, aj, bi, bj, ci, cj):
    # centrosome _convex_hull.pyx CONVEX: does a->b->c turn left (x is j, y is i)?
    cross = (bj - aj) * (ci - bi) - (cj - bj) * (bi - ai)
    if cross > 0:
        return True
    if cross < 0:
        return False
    return (bj > aj) and (bj > cj)


@helper
def _cp_hull(top, bottom, w, hi_, hj):
    """CellProfiler's convex hull of the pixel centers (centrosome ``convex_hull_ijv``).

    ``top[j]`` / ``bottom[j]`` are the smallest / largest row of column ``j``
    (-1 for empty columns). Writes the vertices counter-clockwise starting
    with the lower envelope, exactly in centrosome's order, and returns their
    number.
    """
    start_j = 0
    while top[start_j] < 0:
        start_j += 1
    end_j = w - 1
    while top[end_j] < 0:
        end_j -= 1
    k = 0
    for j in range(start_j, end_j + 1):
        if top[j] < 0:
            continue
        pi_ = top[j]
        while k >= 2 and not _cp_convex(hi_[k - 2], hj[k - 2], hi_[k - 1], hj[k - 1], pi_, j):
            k -= 1
        hi_[k] = pi_
        hj[k] = j
        k += 1
    for j in range(end_j, start_j, -1):
        if top[j] < 0:
            continue
        pi_ = bottom[j]
        while k >= 2 and not _cp_convex(hi_[k - 2], hj[k - 2], hi_[k - 1], hj[k - 1], pi_, j):
            k -= 1
        hi_[k] = pi_
        hj[k] = j
        k += 1
    pi_ = bottom[start_j]
    while k >= 2 and not _cp_convex(hi_[k - 2], hj[k - 2], hi_[k - 1], hj[k - 1], pi_, start_j):
        k -= 1
    if top[start_j] != bottom[start_j]:
        hi_[k] = pi_
        hj[k] = start_j
        k += 1
    return k


@helper
def _min_width(hi_, hj, k):
    """Smallest distance between two parallel support lines of a convex polygon.

    Rotating calipers over the hull vertices (convex, no repeated points): for
    each edge the farthest vertex only moves forward. Areas are exact integer
    cross products; 0 for fewer than 3 vertices.
    """
    if k < 3:
        return 0.0
    best = np.inf
    j = 1
    for e in range(k):
        ai = hi_[e]
        aj = hj[e]
        di = hi_[(e + 1) % k] - ai
        dj = hj[(e + 1) % k] - aj
        far = abs((hj[j] - aj) * di - (hi_[j] - ai) * dj)
        while True:
            nj = (j + 1) % k
            nxt = abs((hj[nj] - aj) * di - (hi_[nj] - ai) * dj)
            if nxt >= far and nj != e:
                if nxt == far:
                    break
                far = nxt
                j = nj
            else:
                break
        length = math.sqrt(float(di * di + dj * dj))
        if length > 0:
            width = far / length
            if width < best:
                best = width
    return best


@helper
def _cp_enclosing_circle(hi_, hj, k, within, proxy, out):
    """centrosome ``minimum_enclosing_circle`` (Chrystal's algorithm) on one hull.

    ``hi_``, ``hj`` are the hull vertices in image coordinates and in
    centrosome's order; the arithmetic is centrosome's, operation for
    operation, so the circle comes out with the same floating-point values.
    ``within`` (int64) and ``proxy`` (float64), of length ``k`` at least, are
    scratch space the caller allocates once for all objects: allocating here
    cost time per object, and compiling numba's ``np.arange`` / ``np.empty``
    once more for this helper's flags cost compile time on an empty cache.
    Writes ``(center_i, center_j, radius)`` into ``out``.
    """
    if k == 1:
        out[0] = float(hi_[0])
        out[1] = float(hj[0])
        out[2] = 0.0
        return
    if k == 2:
        ci = (hi_[0] + hi_[1]) / 2
        cj = (hj[0] + hj[1]) / 2
        di = ci - hi_[0]
        dj = cj - hj[0]
        out[0] = ci
        out[1] = cj
        out[2] = math.sqrt(di * di + dj * dj)
        return
    for v in range(k):
        within[v] = v
    s0 = 0
    s1 = 1
    for _ in range(4 * k + 16):
        s0i = float(hi_[s0])
        s0j = float(hj[s0])
        s1i = float(hi_[s1])
        s1j = float(hj[s1])
        s01i = s0i - s1i
        s01j = s0j - s1j
        n01 = s01i * s01i + s01j * s01j
        # The vertex V with the smallest angle S0-V-S1 is the one with the
        # largest cos(S0-V-S1): a cheap pre-selection. The angles themselves
        # are then computed as centrosome does (two arccos), for the few
        # vertices within round-off of the best, and the first smallest wins.
        best_cos = -np.inf
        for v in range(k):
            if within[v] < 2:
                continue
            ui = s0i - hi_[v]
            uj = s0j - hj[v]
            wi = s1i - hi_[v]
            wj = s1j - hj[v]
            cosv = (ui * wi + uj * wj) / math.sqrt((ui * ui + uj * uj) * (wi * wi + wj * wj))
            proxy[v] = cosv
            if cosv > best_cos:
                best_cos = cosv
        best = -1
        best_angle = np.inf
        best_a1 = 0.0
        best_a0 = 0.0
        for v in range(k):
            if within[v] < 2 or proxy[v] < best_cos - 1e-5:
                continue
            vs0i = hi_[v] - s0i
            vs0j = hj[v] - s0j
            vs1i = hi_[v] - s1i
            vs1j = hj[v] - s1j
            dot1 = (s01i * vs1i + s01j * vs1j) / math.sqrt(n01 * (vs1i * vs1i + vs1j * vs1j))
            a1 = abs(math.acos(dot1))
            dot0 = (-s01i * vs0i + -s01j * vs0j) / math.sqrt(n01 * (vs0i * vs0i + vs0j * vs0j))
            a0 = abs(math.acos(dot0))
            angle = np.pi - a1 - a0
            if angle < best_angle:
                best_angle = angle
                best = v
                best_a1 = a1
                best_a0 = a0
        if best < 0 or best_angle >= np.pi / 2:
            out[0] = (s0i + s1i) / 2
            out[1] = (s0j + s1j) / 2
            out[2] = math.sqrt(s01i * s01i + s01j * s01j) / 2
            return
        if not (best_a1 > np.pi / 2 or best_a0 > np.pi / 2 or best_angle > np.pi / 2):
            # circumcircle of S0, S1, V (centrosome: Y = i, X = j)
            vi = float(hi_[best])
            vj = float(hj[best])
            d = 2 * (s0j * (s1i - vi) + s1j * (vi - s0i) + vj * (s0i - s1i))
            q0 = s0i * s0i + s0j * s0j
            q1 = s1i * s1i + s1j * s1j
            qv = vi * vi + vj * vj
            x = (q0 * (s1i - vi) + q1 * (vi - s0i) + qv * (s0i - s1i)) / d
            y = (q0 * (vj - s1j) + q1 * (s0j - vj) + qv * (s1j - s0j)) / d
            out[0] = y
            out[1] = x
            di = s0i - y
            dj = s0j - x
            out[2] = math.sqrt(di * di + dj * dj)
            return
        if best_a0 > np.pi / 2:
            within[s0] = within[best]
            s0 = best
            within[best] = 0
        else:
            within[s1] = within[best]
            s1 = best
            within[best] = 1
    # Not reached for a convex polygon; fall back to the last diameter.
    out[0] = (hi_[s0] + hi_[s1]) / 2
    out[1] = (hj[s0] + hj[s1]) / 2
    out[2] = math.sqrt(float((hi_[s0] - hi_[s1]) ** 2 + (hj[s0] - hj[s1]) ** 2)) / 2


@helper
def _filled_area(mask, stack, ph, pw):
    """Cells of the padded box not 8-connected to its padding ring (object + holes).

    Marks the reached background cells of ``mask`` with 2.
    """
    nstack = 1
    stack[0] = 0
    mask[0] = 2
    reached = 1
    while nstack > 0:
        nstack -= 1
        p = stack[nstack]
        pi_ = p // pw
        pj = p % pw
        for di in range(-1, 2):
            qi = pi_ + di
            if qi < 0 or qi >= ph:
                continue
            for dj in range(-1, 2):
                qj = pj + dj
                if qj < 0 or qj >= pw:
                    continue
                q = qi * pw + qj
                if mask[q] == 0:
                    mask[q] = 2
                    reached += 1
                    stack[nstack] = q
                    nstack += 1
    return ph * pw - reached


@kernel
def shape_kernel(rows, cols, starts, counts, min_row, min_col, height, bwidth, row_shift, col_shift, degree,
                 perimeter_weights, crofton_coefs, euler_coefs, out, zsums):
    """Per-object shape geometry; see the module docstring.

    Parameters
    ----------
    rows, cols : int32 (N,), int64 for labels of 2**31 pixels or more
        Image row and column of every object pixel, grouped by object, in
        raster order within an object.
    starts, counts : int64 (n,)
        Run of each object in ``rows`` / ``cols``.
    min_row, min_col, height, bwidth : int64 (n,)
        Bounding box of each object.
    row_shift, col_shift : int64 (n,)
        Added to ``rows`` / ``cols`` to give image coordinates. The enclosing
        circle and the Zernike sums are computed in image coordinates, never in
        positions of the label image alone: their rounding, which decides
        whether a pixel on the circle counts, then depends on the object and
        its image only, not on where a packing of crops put it.
    degree : int
        Highest Zernike order; ``zsums`` holds ``sum x^a y^b`` for
        ``a + b <= degree`` (``a`` major), ``x``/``y`` the column/row offsets
        from the enclosing circle's center divided by its radius.
    out : float64 (n, N_SCALARS)
    zsums : float64 (n, n_monomials)
    """
    n = starts.shape[0]
    max_box = 0
    max_h = 0
    max_w = 0
    for k in range(n):
        box = (height[k] + 2) * (bwidth[k] + 2)
        if box > max_box:
            max_box = box
        if height[k] > max_h:
            max_h = height[k]
        if bwidth[k] > max_w:
            max_w = bwidth[k]
    # Scratch buffers, each set before it is read (mask, border and hist per
    # object below): np.empty only, for numba has one overload fewer to
    # compile when no np.zeros is called (issue 18).
    mask = np.empty(max_box, np.uint8)
    border = np.empty(max_box, np.uint8)
    stack = np.empty(max_box, np.int32)
    first = np.empty(max_h, np.int64)
    last = np.empty(max_h, np.int64)
    lo = np.empty(max_h, np.int64)
    hi = np.empty(max_h, np.int64)
    top = np.empty(max_w, np.int64)
    bottom = np.empty(max_w, np.int64)
    npts = 2 * max_h + 4
    ys = np.empty(npts, np.int64)
    xs = np.empty(npts, np.int64)
    cy = np.empty(npts, np.int64)
    cx = np.empty(npts, np.int64)
    vy = np.empty(2 * npts, np.int64)
    vx = np.empty(2 * npts, np.int64)
    hull_i = np.empty(2 * max_w + 4, np.int64)
    hull_j = np.empty(2 * max_w + 4, np.int64)
    circle = np.empty(3, np.float64)
    within = np.empty(2 * max_w + 4, np.int64)
    proxy = np.empty(2 * max_w + 4, np.float64)
    hist = np.empty(16, np.int64)
    rowsum = np.empty(4, np.float64)
    rowpow = np.empty((max_h, 4), np.float64)
    ypow = np.empty(degree + 1, np.float64)
    spow = np.empty(degree + 1, np.float64)
    mono_start = np.empty(degree + 1, np.int64)
    m = 0
    for a in range(degree + 1):
        mono_start[a] = m
        m += degree + 1 - a

    for k in range(n):
        s = starts[k]
        cnt = counts[k]
        r0 = min_row[k]
        c0 = min_col[k]
        h = height[k]
        w = bwidth[k]
        pw = w + 2
        ph = h + 2
        for t in range(ph * pw):
            mask[t] = 0
            border[t] = 0
        for r in range(h):
            first[r] = w
            last[r] = -1
        for c in range(w):
            top[c] = -1
            bottom[c] = -1
        # Rasterize, with row/column extents and per-row column power sums
        # sum dc^q (dc = column offset from the box; exact integers).
        for r in range(h):
            for q in range(4):
                rowpow[r, q] = 0.0
        # (unsigned: no negative-index handling per pixel)
        for t in range(np.uintp(s), np.uintp(s + cnt)):
            r = rows[t] - r0
            c = cols[t] - c0
            mask[(r + 1) * pw + c + 1] = 1
            if c < first[r]:
                first[r] = c
            if c > last[r]:
                last[r] = c
            if top[c] < 0:
                top[c] = r
            bottom[c] = r
            dc = float(c)
            rowpow[r, 0] += 1.0
            rowpow[r, 1] += dc
            rowpow[r, 2] += dc * dc
            rowpow[r, 3] += dc * dc * dc

        # Raw moments about the box origin, then central moments about the
        # centroid from the same row sums (binomial shift of the columns).
        raw = out[k, _RAW0:_RAW0 + 16]
        cen = out[k, _CEN0:_CEN0 + 16]
        for t in range(16):
            raw[t] = 0.0
            cen[t] = 0.0
        for r in range(h):
            dr = float(r)
            rp = 1.0
            for p in range(4):
                for q in range(4):
                    raw[p * 4 + q] += rp * rowpow[r, q]
                rp *= dr
        cr = raw[4] / raw[0]
        cc = raw[1] / raw[0]
        holes_possible = False
        for r in range(h):
            s0 = rowpow[r, 0]
            if s0 == 0.0:
                continue
            if last[r] - first[r] + 1 != s0:
                holes_possible = True
            s1 = rowpow[r, 1]
            s2 = rowpow[r, 2]
            s3 = rowpow[r, 3]
            rowsum[0] = s0
            rowsum[1] = s1 - cc * s0
            rowsum[2] = s2 - 2.0 * cc * s1 + cc * cc * s0
            rowsum[3] = s3 - 3.0 * cc * s2 + 3.0 * cc * cc * s1 - cc * cc * cc * s0
            dr = float(r) - cr
            rp = 1.0
            for p in range(4):
                for q in range(4):
                    cen[p * 4 + q] += rp * rowsum[q]
                rp *= dr

        # Perimeter (skimage, neighborhood 4): border pixels have a 4-neighbour
        # outside the object; each is weighted by its border neighbours.
        # The border pixels are listed as they are found, in raster order (the
        # pixels' order), and weighted from the list: a second pass over all
        # the pixels, testing each, mispredicted at each change between
        # inside and border.
        nb = 0
        for t in range(s, s + cnt):
            p = (rows[t] - r0 + 1) * pw + cols[t] - c0 + 1
            if mask[p - 1] == 0 or mask[p + 1] == 0 or mask[p - pw] == 0 or mask[p + pw] == 0:
                border[p] = 1
                stack[nb] = p
                nb += 1
        per = 0.0
        for t in range(nb):
            p = stack[t]
            n4 = border[p - 1] + border[p + 1] + border[p - pw] + border[p + pw]
            nd = border[p - pw - 1] + border[p - pw + 1] + border[p + pw - 1] + border[p + pw + 1]
            per += perimeter_weights[1 + 2 * n4 + 10 * nd]
        out[k, 0] = per

        # Crofton perimeter and Euler number from the 2x2 configurations.
        for t in range(16):
            hist[t] = 0
        for i in range(1, ph):
            for j in range(1, pw):
                p = i * pw + j
                code = mask[p] + 2 * mask[p - pw] + 4 * mask[p - 1] + 8 * mask[p - pw - 1]
                hist[code] += 1
        crof = 0.0
        eul = 0.0
        for t in range(16):
            crof += crofton_coefs[t] * hist[t]
            eul += euler_coefs[t] * hist[t]
        out[k, 1] = crof
        out[k, 2] = eul

        # Filled area: background reachable from outside the box (8-connected)
        # is not a hole. Without a gap inside any row, every background pixel
        # of the box sees the outside along its row: no holes. Otherwise flood
        # from the padding corner; the padding ring is connected, so one seed
        # reaches all of it.
        if not holes_possible:
            out[k, 3] = cnt
        else:
            out[k, 3] = _filled_area(mask, stack, ph, pw)

        # skimage convex hull image and max Feret diameter.
        out[k, 4] = _convex_rows(first, last, h, w, ys, xs, cy, cx, lo, hi)
        out[k, 5] = _feret_max(lo, hi, h, ys, xs, cy, cx, vy, vx)

        # CellProfiler hull, min Feret, enclosing circle, Zernike sums.
        nh = _cp_hull(top, bottom, w, hull_i, hull_j)
        ri = r0 + row_shift[k]
        cj0 = c0 + col_shift[k]
        for t in range(nh):
            hull_i[t] += ri
            hull_j[t] += cj0
        out[k, 6] = _min_width(hull_i, hull_j, nh)
        _cp_enclosing_circle(hull_i, hull_j, nh, within, proxy, circle)
        ci = circle[0]
        cj = circle[1]
        rad = circle[2]
        out[k, 7] = rad
        z = zsums[k]
        if rad == 0.0:
            for t in range(z.shape[0]):
                z[t] = np.nan
            continue
        for t in range(z.shape[0]):
            z[t] = 0.0
        t = s
        while t < s + cnt:
            r = rows[t]
            ym = (r + row_shift[k] - ci) / rad
            y2 = ym * ym
            for a in range(degree + 1):
                spow[a] = 0.0
            while t < s + cnt and rows[t] == r:
                xm = (cols[t] + col_shift[k] - cj) / rad
                t += 1
                if xm * xm + y2 > 1.0:
                    continue
                xp = 1.0
                for a in range(degree + 1):
                    spow[a] += xp
                    xp *= xm
            ypow[0] = 1.0
            for b in range(1, degree + 1):
                ypow[b] = ypow[b - 1] * ym
            for a in range(degree + 1):
                sa = spow[a]
                base = mono_start[a]
                for b in range(degree + 1 - a):
                    z[base + b] += sa * ypow[b]


@kernel
def zernike_scores(zsums, real, imag, radius, out):
    """Zernike scores from the monomial sums, one object at a time.

    ``out[k, i]`` is ``|zsums[k] . (real[i] + 1j imag[i])| / (pi radius[k]^2)``
    (NaN for radius 0). Not a matrix product across objects: BLAS chooses its
    blocking, and with it the summation order, from the number of objects, so
    an object's scores would change in the last bits with the other objects
    measured alongside it. Here each object's sums run in one fixed order.
    """
    n_mom = real.shape[0]
    n_mono = real.shape[1]
    for k in range(zsums.shape[0]):
        if radius[k] == 0.0:
            for i in range(n_mom):
                out[k, i] = np.nan
            continue
        area = np.pi * radius[k] * radius[k]
        for i in range(n_mom):
            re = 0.0
            im = 0.0
            for j in range(n_mono):
                re += zsums[k, j] * real[i, j]
                im += zsums[k, j] * imag[i, j]
            out[k, i] = math.sqrt(re * re + im * im) / area
