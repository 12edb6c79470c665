"""The one place tasks get their resources: GPU segmentation, CPU features, anything else.

Every graph builder of the engine annotates its tasks through
:func:`annotate` (a layer of a Bag or an array) or :func:`task` (one named
delayed task). The annotations only survive when graphs are computed
unoptimized (:func:`scip.engine.cluster.compute` does): fusion would drop them.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import dask

__all__ = ["annotate", "task"]


def annotate(resources: dict[str, float] | None) -> ContextManager:
    """A context in which the tasks built ask for ``resources`` (e.g. ``{"GPU": 1}``); none: no annotation."""
    return dask.annotate(resources=resources) if resources else nullcontext()


def task(func: Callable, name: str, resources: dict[str, float] | None, *args: Any, **kwargs: Any):
    """One delayed call of ``func`` named ``name`` (its key), asking for ``resources``."""
    with annotate(resources):
        return dask.delayed(func, pure=False, name=name)(*args, **kwargs)
