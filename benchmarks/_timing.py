"""Timing shared by the benchmarks (run as scripts from this folder, so importable by name), and the
loading of another checkout's module for the A/B benchmarks.

The project quotes the median of alternated runs: every callable runs once per round, in turn
(A, B, A, B, ...), so a burst of load from other jobs on a shared machine hits all of them alike
instead of one; the median then drops the odd disturbed round. The shortest time (best-of) would
flatter whichever callable happened to run in a quiet moment.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping


@dataclass(frozen=True)
class Timing:
    """Wall times of one callable over the alternated rounds.

    Attributes
    ----------
    times : list of float
        Seconds of each timed call, in round order (warm-up calls excluded).
    """

    times: list[float]

    @property
    def median(self) -> float:
        """Median of :attr:`times`, in seconds."""
        return statistics.median(self.times)


def alternate(funcs: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Time each callable ``repeats`` times, taking turns round by round.

    Parameters
    ----------
    funcs : mapping of str to callable
        Name to a callable of no arguments; called in the mapping's order
        within each round.
    repeats : int
        Timed rounds (at least 1; the project quotes medians of at least 3).
    warmup : int
        Untimed rounds first (compilation, caches, lazy loading).

    Returns
    -------
    dict of str to Timing
        Same keys as ``funcs``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for func in funcs.values():
            func()
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - start)
    return {name: Timing(t) for name, t in times.items()}


def load_module(name: str, path: str | Path):
    """The Python file ``path`` imported as module ``name`` (e.g. another checkout's version of a scip module).

    The module is registered in ``sys.modules`` before it runs, as an import
    would: dataclasses (and pickling) look their module up there.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def ab_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every two-checkout comparison takes: ``--a``, ``--b``, ``--n`` cells and ``--rounds``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--a", type=Path, required=True, help="checkout A (e.g. before)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (e.g. after)")
    parser.add_argument("--n", type=int, default=5000, help="synthetic cells (default 5000)")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds, at least 3 (default 7)")
    return parser
