"""Reject images that cannot give meaningful cells, with the reason."""

from __future__ import annotations

import numpy as np

from scip.records import ImageRecord, skipped


def check_image(record: ImageRecord, stack: bool = False) -> ImageRecord:
    """Skip an image that is empty, constant or holds NaN/inf pixels, or is not ``(C, H, W)``.

    ``(C, Z, H, W)`` passes too when ``stack`` is set (``input.z: stitch``
    keeps stacks whole).

    Such images would make thresholds meaningless (a constant image has no
    foreground) or poison every statistic (NaN), so they stop here, named,
    instead of failing somewhere later.
    """
    if not record.status:
        return record
    pixels = record.pixels
    if pixels.ndim != (4 if stack else 3):
        hint = (f"; it is a z stack of {pixels.shape[1]} planes: set input.z to max, mean or median to project "
                "it, stitch for 3-D objects, or a plane number") if pixels.ndim == 4 else ""
        expected = "(C, Z, H, W)" if stack else "(C, H, W)"
        return record.with_(pixels=None, status=skipped(
            "check", f"image has {pixels.ndim} dimensions (shape {pixels.shape}); expected {expected}{hint}",
            kind=f"image is not {expected}"))
    if pixels.size == 0 or 0 in pixels.shape:
        return record.with_(pixels=None, status=skipped(
            "check", f"image has no pixels (shape {pixels.shape})", kind="image has no pixels"))
    if pixels.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(pixels)))
        if bad:
            return record.with_(pixels=None, status=skipped(
                "check", f"image has {bad} NaN or infinite pixel values of {pixels.size}",
                kind="image has NaN or infinite pixel values"))
    lo, hi = pixels.min(), pixels.max()
    if lo == hi:
        return record.with_(pixels=None, status=skipped(
            "check", f"image is empty: every pixel is {lo.item()}", kind="image is empty: every pixel is the same"))
    return record
