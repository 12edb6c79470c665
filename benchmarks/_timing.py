"""Timing shared by the small benchmarks (run as scripts from this folder, so importable by name)."""

from __future__ import annotations

import time
from typing import Callable


def best_of(func: Callable[[], object], repeats: int) -> float:
    """Shortest wall time (s) of ``repeats`` calls of ``func``: the figure with the least noise of other jobs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)
