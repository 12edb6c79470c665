"""What a reader refuses before it decodes: images over the memory budget, chunks that are not there.

Both are problems of one image's data, not of the run: the image becomes a
skipped record whose reason names the file (or chunk) and the numbers, and
the other images go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["ImageBudget", "ImageSkip", "ImageTooLarge", "ChunkMissing", "image_budget", "check_size",
           "format_bytes", "BUDGET_FRACTION"]

#: Share of a worker's memory one image may take once decoded. The pipeline holds several copies of an
#: image at once (the decoded pixels, a float copy for smoothing and thresholds, the labels, the crops),
#: so an image at a quarter of the memory limit already brings a worker close to it.
BUDGET_FRACTION = 4


class ImageSkip(ValueError):
    """One image cannot be read for a reason its message states in full (used as the skip reason)."""


class ImageTooLarge(ImageSkip):
    """The image's declared decoded size is above the per-image memory budget."""


class ChunkMissing(ImageSkip):
    """A storage chunk inside the image's region is not in the store (zarr would fill it with zeros)."""


@dataclass(frozen=True)
class ImageBudget:
    """The most bytes one decoded image may take, and where that number comes from (for messages).

    Attributes
    ----------
    bytes : int
        The limit, in bytes (> 0).
    origin : str
        How it was decided, e.g. ``"worker memory 2 GiB / 4"`` or ``"input.max_image_bytes"``.
    """

    bytes: int
    origin: str


def image_budget(setting: int | str, memory: int | None, where: str = "worker memory") -> ImageBudget | None:
    """The per-image budget for the configured ``input.max_image_bytes``.

    Parameters
    ----------
    setting : int or "auto"
        The config value: a number of bytes (0: no limit), or ``"auto"``.
    memory : int or None
        With ``"auto"``: the memory the smallest worker (or this process)
        may use, in bytes; ``None`` when unknown, which means no limit.
    where : str
        What ``memory`` is, for the message (``"worker memory"``, ...).

    Returns
    -------
    ImageBudget or None
        ``None`` when images are not limited.
    """
    if setting == "auto":
        if not memory:
            return None
        return ImageBudget(int(memory) // BUDGET_FRACTION, f"{where} {format_bytes(memory)} / {BUDGET_FRACTION}")
    if not setting:
        return None
    return ImageBudget(int(setting), f"input.max_image_bytes = {format_bytes(int(setting))}")


def check_size(path: str, shape: Sequence[int], dtype, budget: ImageBudget | None) -> None:
    """Raise :class:`ImageTooLarge` when ``shape`` of ``dtype`` is over ``budget`` (``None``: no limit).

    ``path`` names what would be decoded in the message. Called with the
    shape a header declares, so nothing is decoded to find out.
    """
    if budget is None:
        return
    size = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
    if size > budget.bytes:
        dims = "×".join(str(int(s)) for s in shape)
        raise ImageTooLarge(
            f"{path} decodes to {format_bytes(size)} ({dims} {np.dtype(dtype).name}); the budget is "
            f"{format_bytes(budget.bytes)} per image: {budget.origin} (input.max_image_bytes sets it; 0: no limit)")


def format_bytes(n: int | float) -> str:
    """``n`` bytes for people: ``2.2 GiB``, ``512 MiB``, ``900 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 100 or value == int(value) else f"{value:.1f} {unit}"
    return f"{int(n)} B"
