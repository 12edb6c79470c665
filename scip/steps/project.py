"""Z projection step: a z stack ``(C, Z, H, W)`` to one plane ``(C, H, W)``.

Readers keep the z axis of inputs that have one (TIFF with ``Z`` in its
axes metadata, OME-Zarr with a ``z`` axis longer than 1); this step reduces
it with the method of ``input.z_projection``, before the image is checked
and segmented.
"""

from __future__ import annotations

import numpy as np

from scip.records import ImageRecord, skipped
from scip.steps.timing import timed

METHODS = ("max", "mean", "median")


def _project(pixels: np.ndarray, method: str) -> np.ndarray:
    if method == "max":
        return pixels.max(axis=1)
    if method == "mean":
        # Accumulate in float64 (exact for integer stacks of any depth), keep float32.
        return pixels.mean(axis=1, dtype=np.float64).astype(np.float32)
    return np.median(pixels, axis=1).astype(np.float32)


def project_z(record: ImageRecord, method: str | None) -> ImageRecord:
    """Project the z stack of ``record`` over Z with ``method``.

    Pixels ``(C, H, W)`` (no z axis), records already skipped and records
    without pixels pass through unchanged. Pixels ``(C, Z, H, W)`` become
    ``(C, H, W)``:

    - ``"max"``: maximum intensity projection; keeps the dtype.
    - ``"mean"``: mean over Z, as ``float32``.
    - ``"median"``: median over Z, as ``float32``.

    With ``method=None`` a z stack cannot be processed: the record is
    skipped, naming its number of planes and the ``input.z_projection``
    setting that would project it.

    Raises
    ------
    ValueError
        For a ``method`` other than the above (the config validates it).
    """
    if method is not None and method not in METHODS:
        raise ValueError(f"input.z_projection: unknown method {method!r}; allowed: {', '.join(METHODS)} or null")
    if not record.status or record.pixels is None or record.pixels.ndim != 4:
        return record
    timings = dict(record.timings)
    if method is None:
        return record.with_(pixels=None, timings=timings, status=skipped(
            "project", f"image is a z stack of {record.pixels.shape[1]} planes; set input.z_projection "
            f"to one of {', '.join(METHODS)} to project it to one plane",
            kind="image is a z stack and input.z_projection is not set"))
    with timed(timings, "project"):
        pixels = _project(record.pixels, method)
    return record.with_(pixels=pixels, timings=timings)
