"""Small helpers shared by error messages: the "did you mean" suffix and values cut to a readable length."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any, Iterable

# Bounded depth and item counts: the cost of the repr does not grow with the value, so a
# value built from YAML aliases (a billion nested items) is described in microseconds.
_REPR = reprlib.Repr()  # attributes, not keywords: Python 3.11 has no keyword form
_REPR.maxlevel = 3
_REPR.maxtuple = _REPR.maxlist = _REPR.maxarray = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 6
_REPR.maxdict = 4
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlong = 40


def did_you_mean(value: Any, allowed: Iterable[Any], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the allowed value closest to ``value``, or ``""``."""
    # Cut first: difflib is quadratic in the length, and a value may be anything the user wrote.
    text = value[:200] if isinstance(value, str) else short(value, 200)
    close = difflib.get_close_matches(text, [str(a) for a in allowed], n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ""


def short(value: Any, limit: int = 80) -> str:
    """The ``repr`` of ``value`` for an error message, at most ``limit`` characters.

    Parameters
    ----------
    value : Any
        Whatever the user wrote; may be huge or deeply nested.
    limit : int
        Most characters returned; a longer repr is cut and ends with ``...``.

    Returns
    -------
    str
        ``repr(value)`` when short, else its beginning followed by ``...``.
        Never builds the full repr of a large container.
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."
