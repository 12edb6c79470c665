"""The "did you mean" suffix shared by every error message that names allowed values."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


def did_you_mean(value: Any, allowed: Iterable[Any], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the allowed value closest to ``value``, or ``""``."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ""
