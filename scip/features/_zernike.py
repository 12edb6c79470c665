"""Zernike shape moments as CellProfiler defines them, reduced to monomial sums.

CellProfiler (``centrosome.zernike``, ``cp_measure get_zernike``) maps each
object's pixel centers into its minimum enclosing circle, ``x = (col - cx) / R``
and ``y = (row - cy) / R``, and scores every ``(n, m)`` with ``0 <= m <= n``,
``n - m`` even, as

    |sum over pixels of s_nm(x^2 + y^2) * (y + i x)^m| / (pi R^2)

where ``s_nm`` is the radial polynomial ``R_n^m(r) / r^m`` written in ``r^2``
(pixels with ``x^2 + y^2 > 1`` are left out). ``s_nm(x^2 + y^2) (y + i x)^m``
is a complex polynomial in ``x`` and ``y`` of degree ``n``, so every moment is a
fixed linear combination of the monomial sums ``sum x^a y^b`` with
``a + b <= degree``: the kernels accumulate those sums once per object and
:func:`monomial_matrix` holds the coefficients that turn them into all the
moments (applied object by object, see ``_shape_kernels.zernike_scores``).

The expansion has larger coefficients than CellProfiler's per-pixel Horner
evaluation (up to 840 for degree 9, ~1e8 for degree 20), so round-off grows
with the degree: measured against cp_measure, absolute differences are ~1e-14
for degree 9 and ~1e-10 for degree 20.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["zernike_indexes", "radial_lut", "monomial_index", "monomial_matrix"]


def zernike_indexes(degree: int) -> list[tuple[int, int]]:
    """``(n, m)`` pairs in CellProfiler's order: ``n`` ascending, then ``m``."""
    return [(n, m) for n in range(degree + 1) for m in range(n % 2, n + 1, 2)]


def radial_lut(degree: int) -> np.ndarray:
    """Coefficients of ``s_nm`` in Horner order (highest power of ``r^2`` first).

    Row ``i`` belongs to ``zernike_indexes(degree)[i]``; entry ``k`` multiplies
    ``(r^2)^((n - m) / 2 - k)``. Same table as
    ``centrosome.zernike.construct_zernike_lookuptable``.
    """
    from math import factorial

    idx = zernike_indexes(degree)
    lut = np.zeros((len(idx), degree // 2 + 1))
    for i, (n, m) in enumerate(idx):
        for k in range((n - m) // 2 + 1):
            lut[i, k] = (-1) ** k * factorial(n - k) / (
                factorial(k) * factorial((n + m) // 2 - k) * factorial((n - m) // 2 - k)
            )
    return lut


def monomial_index(degree: int) -> np.ndarray:
    """``(degree + 1, degree + 1)`` int array: flat position of ``x^a y^b`` (-1 if ``a + b > degree``).

    Monomials are ordered by ``a`` then ``b``, as the kernels accumulate them.
    """
    out = np.full((degree + 1, degree + 1), -1, dtype=np.int64)
    k = 0
    for a in range(degree + 1):
        for b in range(degree + 1 - a):
            out[a, b] = k
            k += 1
    return out


def _polymul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Product of two polynomials stored as ``coef[a, b]`` of ``x^a y^b``."""
    out = np.zeros((p.shape[0] + q.shape[0] - 1, p.shape[1] + q.shape[1] - 1), dtype=np.result_type(p, q))
    for a, b in zip(*np.nonzero(p)):
        out[a:a + q.shape[0], b:b + q.shape[1]] += p[a, b] * q
    return out


@lru_cache(maxsize=None)
def monomial_matrix(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary coefficient matrices, each ``(n_moments, n_monomials)``.

    ``sums @ real.T + 1j * (sums @ imag.T)`` gives the complex moment sums of
    ``zernike_indexes(degree)`` from the monomial sums of :func:`monomial_index`.
    """
    idx = zernike_indexes(degree)
    lut = radial_lut(degree)
    mono = monomial_index(degree)
    n_mono = int(mono.max()) + 1
    r2 = np.zeros((3, 3))
    r2[2, 0] = r2[0, 2] = 1.0  # x^2 + y^2
    z = np.zeros((2, 2), dtype=complex)
    z[0, 1] = 1.0  # y
    z[1, 0] = 1j  # i x
    real = np.zeros((len(idx), n_mono))
    imag = np.zeros((len(idx), n_mono))
    for i, (n, m) in enumerate(idx):
        s = np.zeros((1, 1), dtype=complex)
        for k in range((n - m) // 2 + 1):  # Horner in r^2, as centrosome
            s = _polymul(s, r2)
            s[0, 0] += lut[i, k]
        poly = s
        for _ in range(m):
            poly = _polymul(poly, z)
        for a, b in zip(*np.nonzero(poly)):
            real[i, mono[a, b]] = poly[a, b].real
            imag[i, mono[a, b]] = poly[a, b].imag
    real.flags.writeable = False
    imag.flags.writeable = False
    return real, imag
