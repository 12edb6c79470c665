"""Synthetic cell label images for the flow and stitching tests and benchmarks.

Cells are ellipses (2-D) or ellipsoids cut into slices (3-D) at jittered
grid positions; where two overlap, each pixel goes to the cell whose
normalized elliptical distance is smallest, so neighbours touch along a
shared edge as cells in a tissue do. Painting is done cell by cell in a
window around each cell, so the cost grows with the painted area, not with
cells × pixels.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["cell_labels", "cell_stack"]


@numba.njit(cache=True, nogil=True)
def _paint(shape_y, shape_x, cy, cx, ry, rx, theta, out, best):
    # Each cell claims the pixels inside its ellipse where it is nearer (in
    # its own normalized distance) than every cell painted before.
    for k in range(cy.size):
        c, s = np.cos(theta[k]), np.sin(theta[k])
        reach = max(ry[k], rx[k]) + 1.0
        y0, y1 = max(0, int(cy[k] - reach)), min(shape_y, int(cy[k] + reach) + 1)
        x0, x1 = max(0, int(cx[k] - reach)), min(shape_x, int(cx[k] + reach) + 1)
        for y in range(y0, y1):
            dy = y - cy[k]
            for x in range(x0, x1):
                dx = x - cx[k]
                u = (c * dy + s * dx) / ry[k]
                v = (-s * dy + c * dx) / rx[k]
                d = u * u + v * v
                if d < 1.0 and d < best[y, x]:
                    best[y, x] = d
                    out[y, x] = k + 1


def _layout(rng: np.random.Generator, shape: tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Jittered grid of about ``n`` centres over ``shape``; returns centres and the spacing."""
    spacing = float(np.sqrt(shape[0] * shape[1] / n))
    ys = np.arange(spacing / 2, shape[0], spacing)
    xs = np.arange(spacing / 2, shape[1], spacing)
    cy, cx = (a.ravel() for a in np.meshgrid(ys, xs, indexing="ij"))
    cy = cy + rng.uniform(-0.3, 0.3, cy.size) * spacing
    cx = cx + rng.uniform(-0.3, 0.3, cx.size) * spacing
    return cy, cx, spacing


@numba.njit(cache=True, nogil=True)
def _relabel_by_first_pixel(labels):
    """Labels 1..N in raster order of first pixel (one pass, in place)."""
    flat = labels.reshape(-1)
    new = np.zeros(flat.max() + 1 if flat.size else 1, np.int32)
    n = 0
    for p in range(flat.size):
        v = flat[p]
        if v:
            if new[v] == 0:
                n += 1
                new[v] = n
            flat[p] = new[v]
    return labels


def cell_labels(shape: tuple[int, int], n: int, seed: int = 0, touching: float = 0.6) -> np.ndarray:
    """A 2-D label image of about ``n`` elliptical cells.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    n : int
        Approximate number of cells (a jittered grid of that many centres).
    seed : int, optional
        Random seed.
    touching : float, optional
        Mean semi-axis as a fraction of the grid spacing: around 0.5 cells
        just touch, above it most neighbours share an edge.

    Returns
    -------
    ndarray of int32
        Labels 1..N in raster order of each cell's first pixel.
    """
    rng = np.random.default_rng(seed)
    cy, cx, spacing = _layout(rng, shape, n)
    ry = spacing * touching * rng.uniform(0.75, 1.25, cy.size)
    rx = ry * rng.uniform(0.6, 1.0, cy.size)
    theta = rng.uniform(0, np.pi, cy.size)
    out = np.zeros(shape, dtype=np.int32)
    best = np.full(shape, np.inf, dtype=np.float32)
    _paint(shape[0], shape[1], cy, cx, ry, rx, theta, out, best)
    return _relabel_by_first_pixel(out)


class _Cells3D:
    """Ellipsoidal cells in layers, painted one slice at a time (see :func:`cell_stack`)."""

    def __init__(self, shape: tuple[int, int, int], n: int, seed: int, depth: float, touching: float):
        rng = np.random.default_rng(seed)
        self.shape = shape
        # Layers of cells 1.5 depths apart, each a jittered grid of n cells in
        # Y and X: a slice cuts through one or two layers, so about n cells.
        step = 1.5 * depth
        n_layers = int(np.ceil((shape[0] + 2 * depth) / step))
        layers = [_layout(rng, shape[1:], n) for _ in range(n_layers)]
        self.cy = np.concatenate([c[0] for c in layers])
        self.cx = np.concatenate([c[1] for c in layers])
        cz = np.concatenate([np.full(c[0].size, -depth + i * step) for i, c in enumerate(layers)])
        self.cz = cz + rng.uniform(-0.25, 0.25, cz.size) * depth
        spacing = layers[0][2]
        self.rz = depth * rng.uniform(0.6, 1.4, self.cy.size)
        self.ry = spacing * touching * rng.uniform(0.75, 1.25, self.cy.size)
        self.rx = self.ry * rng.uniform(0.6, 1.0, self.cy.size)
        self.theta = rng.uniform(0, np.pi, self.cy.size)

    def slice(self, z: int) -> np.ndarray:
        frac = 1.0 - ((z - self.cz) / self.rz) ** 2
        on = frac > 0.05
        scale = np.sqrt(frac[on])
        out = np.zeros(self.shape[1:], dtype=np.int32)
        best = np.full(self.shape[1:], np.inf, dtype=np.float32)
        _paint(self.shape[1], self.shape[2], self.cy[on], self.cx[on], self.ry[on] * scale, self.rx[on] * scale,
               self.theta[on], out, best)
        del best
        return _relabel_by_first_pixel(out)


def cell_stack(shape: tuple[int, int, int], n: int, seed: int = 0, depth: float = 4.0,
               touching: float = 0.6, z: int | None = None) -> np.ndarray:
    """Per-slice 2-D labels of ellipsoidal 3-D cells, each slice numbered on its own.

    This is what a 2-D method run slice by slice gives: the same cell has
    unrelated labels in different slices, which 3-D stitching must join.

    Parameters
    ----------
    shape : (int, int, int)
        ``(Z, Y, X)``.
    n : int
        Approximate number of cells crossing each slice.
    seed : int, optional
        Random seed.
    depth : float, optional
        Mean semi-axis along Z, in slices.
    touching : float, optional
        As in :func:`cell_labels`, in Y and X.
    z : int, optional
        Only this slice (the same as ``cell_stack(...)[z]``, without
        painting the others): for stacks too large for memory.

    Returns
    -------
    ndarray of int32, shape (Z, Y, X), or (Y, X) when ``z`` is given
        Each slice labelled 1..N_z in raster order of first pixel.
    """
    cells = _Cells3D(shape, n, seed, depth, touching)
    if z is not None:
        return cells.slice(z)
    stack = np.zeros(shape, dtype=np.int32)
    for k in range(shape[0]):
        stack[k] = cells.slice(k)
    return stack
