"""Z step: what a z stack ``(C, Z, H, W)`` becomes, as ``input.z`` says.

Readers keep the z axis of inputs that have one (TIFF with ``Z`` in its
axes metadata, OME-Zarr with a ``z`` axis longer than 1). Before the image
is checked and segmented, this step projects it to one plane ``(C, H, W)``
(``max``, ``mean``, ``median``), picks one plane (a number), or keeps the
stack for 3-D objects (``stitch``; a 2-D image becomes a stack of one plane,
so one run measures both alike).
"""

from __future__ import annotations

import numpy as np

from scip.records import ImageRecord, skipped
from scip.steps.timing import timed

METHODS = ("max", "mean", "median")

#: The ``input.z`` value that keeps stacks whole, for 3-D objects.
STITCH = "stitch"

_SETTINGS = "input.z: max, mean or median to project it, stitch for 3-D objects, or a plane number"


def _project(pixels: np.ndarray, method: str) -> np.ndarray:
    if method == "max":
        return pixels.max(axis=1)
    if method == "mean":
        # Accumulate in float64 (exact for integer stacks of any depth), keep float32.
        return pixels.mean(axis=1, dtype=np.float64).astype(np.float32)
    return np.median(pixels, axis=1).astype(np.float32)


def project_z(record: ImageRecord, method: str | int | None) -> ImageRecord:
    """Reduce or keep the z stack of ``record`` as ``method`` (``input.z``) says.

    Records already skipped and records without pixels pass through
    unchanged, and so do pixels ``(C, H, W)`` (no z axis) except with
    ``"stitch"``. Pixels ``(C, Z, H, W)`` become:

    - ``"max"``: the maximum intensity projection ``(C, H, W)``; keeps the dtype.
    - ``"mean"``: mean over Z, as ``float32``.
    - ``"median"``: median over Z, as ``float32``.
    - an int ``z``: plane ``z``, ``(C, H, W)``; a stack without that plane is
      skipped, naming its number of planes. A 2-D image is plane 0: it
      passes with ``0`` and is skipped with any other plane.
    - ``"stitch"``: unchanged ``(C, Z, H, W)``; a 2-D image becomes ``(C, 1, H, W)``.

    With ``method=None`` a z stack cannot be processed: the record is
    skipped, naming its number of planes and the ``input.z`` settings that
    would process it.

    Raises
    ------
    ValueError
        For a ``method`` other than the above (the config validates it).
    """
    plane = isinstance(method, int) and not isinstance(method, bool)
    if method is not None and method not in (*METHODS, STITCH) and not (plane and method >= 0):
        raise ValueError(f"input.z: unknown method {method!r}; allowed: {', '.join(METHODS)}, {STITCH}, "
                         "a plane number (0, 1, ...) or null")
    if not record.status or record.pixels is None:
        return record
    if method == STITCH:
        return record if record.pixels.ndim != 3 else record.with_(pixels=record.pixels[:, None])
    if record.pixels.ndim != 4 and not (plane and method > 0):
        return record
    timings = dict(record.timings)
    planes = record.pixels.shape[1] if record.pixels.ndim == 4 else 1
    if method is None:
        return record.with_(pixels=None, timings=timings, status=skipped(
            "project", f"image is a z stack of {planes} planes; set {_SETTINGS}",
            kind="image is a z stack and input.z is not set"))
    if plane:
        if method >= planes:
            what = f"a z stack of {planes} planes (0..{planes - 1})" if planes > 1 else "2-D (plane 0 only)"
            return record.with_(pixels=None, timings=timings, status=skipped(
                "project", f"input.z: plane {method} does not exist; the image is {what}",
                kind="input.z: no such plane"))
        return record.with_(pixels=record.pixels[:, method].copy(), timings=timings)
    with timed(timings, "project"):
        pixels = _project(record.pixels, method)
    return record.with_(pixels=pixels, timings=timings)


def check_z(z: str | int | None, z_planes: int | None, first_image: str) -> None:
    """Raise ``ValueError`` when ``input.z`` cannot serve stacks of ``z_planes`` planes.

    Parameters
    ----------
    z : str or int or None
        ``input.z``.
    z_planes : int or None
        Planes of the first image (``None``: unknown until read).
    first_image : str
        That image's name, for the message.
    """
    if z_planes is None:
        return
    if isinstance(z, int) and not isinstance(z, bool) and z >= z_planes:
        what = f"a z stack of {z_planes} planes (0..{z_planes - 1})" if z_planes > 1 else "2-D (plane 0 only)"
        raise ValueError(f"input.z: plane {z} does not exist in {first_image}, {what}")
    if z is None and z_planes > 1:
        raise ValueError(f"input.z: the images are z stacks ({z_planes} planes in the first one, {first_image}); "
                         f"set {_SETTINGS}")
