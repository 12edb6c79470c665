"""Channel names and channel selection, shared by every reader."""

from __future__ import annotations

from typing import Sequence

from scip._hints import did_you_mean


class InputError(ValueError):
    """The input cannot be read as configured; a configuration problem (exit 2)."""


def select_channels(
    stored: Sequence[str], use: Sequence[str] | None, where: str
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Names and stored positions of the channels to load.

    ``use`` lists channel names to keep, in order; ``None`` keeps all.
    """
    stored = tuple(stored)
    if use is None:
        return stored, tuple(range(len(stored)))
    index = []
    for name in use:
        if name not in stored:
            raise InputError(
                f"input.use_channels: channel {name!r} is not in {where}; available: {', '.join(stored)}"
                + did_you_mean(name, stored)
            )
        index.append(stored.index(name))
    return tuple(use), tuple(index)


def default_names(n: int) -> tuple[str, ...]:
    """Names for channels that have none: ``ch0``, ``ch1``, ..."""
    return tuple(f"ch{i}" for i in range(n))
