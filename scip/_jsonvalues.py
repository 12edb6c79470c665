"""Python values as JSON types: the one walk that run summaries, the report and ``scip classify`` share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

__all__ = ["plain"]


def plain(value: Any, leaf: Callable[[Any], Any] | None = None) -> Any:
    """``value`` with mappings, lists, tuples and numpy scalars turned into JSON types, recursively.

    Parameters
    ----------
    value : any
        What to convert. Mapping keys become strings, tuples lists, numpy
        scalars Python scalars.
    leaf : callable, optional
        Applied to every other value (``None``: kept as it is), e.g. to turn
        paths into strings; what it returns is not walked again.
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v, leaf) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, leaf) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value if leaf is None else leaf(value)
