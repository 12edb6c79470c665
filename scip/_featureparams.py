"""The feature families' names and parameters, importable without the families themselves.

:mod:`scip.features` re-exports these; they live apart so that the run
config (:mod:`scip.config`) can name the families and build
:class:`FeatureParams` without importing the feature code (numba, pandas).
A test checks that :data:`FAMILIES` lists exactly the families
:mod:`scip.features` registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["COMPILED_FAMILIES", "FAMILIES", "DEFAULT_FAMILIES", "FAMILIES_3D", "FeatureParams", "needs_compiler"]

#: Names of the available feature families (the registry of :mod:`scip.features`, in its order).
FAMILIES: tuple[str, ...] = ("shape", "intensity", "texture", "bbox", "volume")

#: Families computed when none are named.
DEFAULT_FAMILIES: tuple[str, ...] = ("shape", "intensity", "texture", "bbox")

#: Families that measure objects of 3-D ``(Z, H, W)`` labels; the others
#: need a plane (edge rings, outlines, co-occurrences in 2-D).
FAMILIES_3D: tuple[str, ...] = ("volume",)

#: Families whose compute calls numba kernels (all but ``bbox``). Loading numba (its
#: LLVM library) adds about 120 MiB to a process's resident memory, which a
#: whole-slide run with bounding boxes only would pay in every worker otherwise.
COMPILED_FAMILIES: tuple[str, ...] = tuple(f for f in FAMILIES if f != "bbox")


def needs_compiler(families: Sequence[str]) -> bool:
    """Whether measuring ``families`` runs compiled (numba) kernels; False for ``bbox`` alone."""
    flat = (families,) if isinstance(families, str) else tuple(families)
    return any(f in COMPILED_FAMILIES for f in flat)


@dataclass(frozen=True)
class FeatureParams:
    """Parameters of the feature families.

    Parameters
    ----------
    distances : tuple of int
        Pixel distances of the gray-level co-occurrence matrices (texture).
    gray_levels : int
        Number of gray levels object pixels are quantized to before the
        co-occurrence matrices are counted (texture).
    intensity_range : tuple of (float, float) per channel, optional
        Fixed ``(low, high)`` quantization bounds per channel, e.g. dataset-wide
        quantiles. None quantizes each object between its own minimum and
        maximum (texture).
    edge_width : int
        Width in pixels of the edge ring inside each object (intensity).
    background_width : int
        Width in pixels of the band around each object whose median is the
        local background (intensity).
    zernike_degree : int
        Highest order ``n`` of the Zernike moments (shape).
    """

    distances: tuple[int, ...] = (3, 5)
    gray_levels: int = 32
    intensity_range: tuple[tuple[float, float], ...] | None = None
    edge_width: int = 1
    background_width: int = 5
    zernike_degree: int = 9

    def __post_init__(self) -> None:
        # One distance or several (a list, tuple or numpy array): no numpy import for this.
        given = self.distances
        several = hasattr(given, "__iter__") and not isinstance(given, str)
        distances = tuple(int(d) for d in (given if several else [given]))
        if not distances or min(distances) < 1 or len(set(distances)) != len(distances):
            raise ValueError(f"distances must be distinct integers >= 1, got {self.distances!r}")
        object.__setattr__(self, "distances", distances)
        if not 2 <= int(self.gray_levels) <= 255:
            raise ValueError(f"gray_levels must be between 2 and 255, got {self.gray_levels!r}")
        if int(self.edge_width) < 1:
            raise ValueError(f"edge_width must be >= 1, got {self.edge_width!r}")
        if int(self.background_width) < 1:
            raise ValueError(f"background_width must be >= 1, got {self.background_width!r}")
        if not 0 <= int(self.zernike_degree) <= 20:
            raise ValueError(f"zernike_degree must be between 0 and 20, got {self.zernike_degree!r}")
        if self.intensity_range is not None:
            bounds = tuple((float(lo), float(hi)) for lo, hi in self.intensity_range)
            for lo, hi in bounds:
                if not hi > lo:
                    raise ValueError(f"intensity_range needs low < high per channel, got {(lo, hi)}")
            object.__setattr__(self, "intensity_range", bounds)
