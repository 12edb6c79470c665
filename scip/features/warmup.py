"""Compile the feature kernels ahead of the first image, split over processes.

Every kernel :func:`scip.features.extract` reaches from Python is listed in
:data:`KERNELS` with the one signature it is called with: the families pass
arrays of fixed dtypes and layouts (pixels are read as float64), so no
specialization depends on the data. :func:`compile_kernels` compiles some of
them with those signatures, or loads them from numba's cache when an earlier
process compiled them already.

Why: a fresh cache costs ~30 CPU seconds of compiling (the breakdown is in
``benchmarks/results/first_run.md``), and each worker process of a cluster
used to pay all of it by itself, at the same time as the others. With
:func:`assign`, each worker compiles a different share and writes it to the
shared cache; the others then load those kernels from the cache instead of
compiling them again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

from numba import types as nt

from . import COMPILED_FAMILIES, _glcm, _groups, _shape_kernels, _stats, intensity

__all__ = ["KERNELS", "Kernel", "assign", "compile_kernels", "kernels_for"]


def _array(dtype, ndim: int = 1, readonly: bool = False):
    return nt.Array(dtype, ndim, "C", readonly=readonly)


_I = _array(nt.int64)
_F = _array(nt.float64)
_F2 = _array(nt.float64, 2)
# Label images, as _groups.compact_labels gives them to the kernels (int64 only
# for labels beyond int32, compiled on first use then).
_L2 = _array(nt.int32, 2)
# Grouped flat pixel positions, rows and columns, as _groups.index_dtype gives
# them (int64 only for labels of 2**31 pixels or more, compiled on first use then).
_R = _array(nt.int32)


@dataclass(frozen=True)
class Kernel:
    """A compiled kernel called from Python, with the signature the families call it with.

    Attributes
    ----------
    name : str
        ``module.function``, for logs and benchmarks.
    dispatcher : Callable
        The ``numba.njit`` function.
    signature : tuple
        numba types of its arguments.
    families : tuple of str
        Feature families that call it.
    cost : float
        Rough compile CPU seconds on a fresh cache (this kernel and the
        helpers it calls), for balancing :func:`assign`; measured by
        ``benchmarks/bench_first_run.py``.
    bundle : str, optional
        Kernels with the same bundle call the same compiled helpers;
        :func:`assign` keeps them in one share, or each share holding one
        would compile those helpers again.
    """

    name: str
    dispatcher: Callable
    signature: tuple
    families: tuple[str, ...]
    cost: float
    bundle: str | None = None


#: The kernels :func:`scip.features.extract` calls, in decreasing compile cost.
KERNELS: tuple[Kernel, ...] = (
    Kernel("_shape_kernels.shape_kernel", _shape_kernels.shape_kernel,
           (_R, _R) + (_I,) * 8 + (nt.int64, _F, _F, _F, _F2, _F2), ("shape",), 5.5),
    Kernel("_glcm.haralick_runs", _glcm.haralick_runs,
           (_F2, _I, _I, _R, nt.int64, _array(nt.int64, 2), nt.int64, _F, _F, nt.boolean, _F), ("texture",), 2.2),
    Kernel("_stats._run_stats", _stats._run_stats, (_F, _I, _I), ("intensity", "texture", "volume"), 2.2,
           bundle="selection"),
    Kernel("intensity._band_owned", intensity._band_owned,
           (_L2, _array(nt.boolean, 2), _I, _array(nt.int64, 2), nt.int64, _I,
            _array(nt.uint8), _I, _array(nt.uint8), _I, _array(nt.int32)), ("intensity",), 1.2),
    Kernel("intensity._edge_pixels", intensity._edge_pixels,
           (_L2, _R, nt.int64, _array(nt.boolean, 2), nt.boolean, _array(nt.uint8), _I),
           ("intensity",), 0.6),
    Kernel("_glcm.sobel_runs", _glcm.sobel_runs, (_F2, _R, _R, _F), ("texture",), 0.35),
    Kernel("intensity._run_median", intensity._run_median, (_F, _I, _I), ("intensity",), 0.3,
           bundle="selection"),
    Kernel("_groups._label_counts", _groups.label_counts(), (_array(nt.int32), nt.int64), COMPILED_FAMILIES, 0.12),
    Kernel("_groups._counting_sort", _groups.counting_sort(), (_array(nt.int32), _I, _R), COMPILED_FAMILIES, 0.2),
    Kernel("_shape_kernels.zernike_scores", _shape_kernels.zernike_scores,
           (_F2, _array(nt.float64, 2, readonly=True), _array(nt.float64, 2, readonly=True), _F, _F2),
           ("shape",), 0.2),
)


def kernels_for(families: Sequence[str]) -> list[Kernel]:
    """The kernels of :data:`KERNELS` that the given feature families call."""
    wanted = {families} if isinstance(families, str) else set(families)
    return [k for k in KERNELS if wanted & set(k.families)]


def assign(kernels: Sequence[Kernel], n: int) -> list[list[Kernel]]:
    """Split ``kernels`` into ``n`` shares of similar compile cost (longest first, onto the lightest share).

    Kernels of one :attr:`Kernel.bundle` go to the same share.
    """
    if n < 1:
        raise ValueError(f"need at least one share, got n = {n}")
    units: dict[object, list[Kernel]] = {}
    for kernel in kernels:
        units.setdefault(kernel.bundle or kernel.name, []).append(kernel)
    shares: list[list[Kernel]] = [[] for _ in range(n)]
    load = [0.0] * n
    for unit in sorted(units.values(), key=lambda u: -sum(k.cost for k in u)):
        i = load.index(min(load))
        shares[i].extend(unit)
        load[i] += sum(k.cost for k in unit)
    return shares


def compile_kernels(names: Sequence[str] | None = None) -> dict[str, float]:
    """Compile (or load from numba's cache) the kernels named, all of :data:`KERNELS` by default.

    Parameters
    ----------
    names : sequence of str, optional
        :attr:`Kernel.name` of each kernel to compile.

    Returns
    -------
    dict of str to float
        Wall seconds each kernel took; near 0 for one already compiled in
        this process, a few milliseconds for one loaded from the cache.

    Raises
    ------
    ValueError
        For a name that is not in :data:`KERNELS`.
    """
    by_name = {k.name: k for k in KERNELS}
    chosen = list(by_name) if names is None else list(names)
    unknown = [n for n in chosen if n not in by_name]
    if unknown:
        raise ValueError(f"unknown kernel {unknown[0]!r}; kernels: {', '.join(by_name)}")
    seconds = {}
    for name in chosen:
        kernel = by_name[name]
        start = time.perf_counter()
        kernel.dispatcher.compile(kernel.signature)
        seconds[name] = time.perf_counter() - start
    return seconds
