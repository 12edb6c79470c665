"""Compile the feature kernels once per cluster, not once per worker.

With an empty numba cache every worker process compiled every kernel by
itself when its first partition reached the features step, all workers at
the same time: the cluster paid the ~30 CPU seconds of compiling once per
worker. :func:`start_warming` gives each worker a different share of
:data:`scip.features.warmup.KERNELS` to compile and write to the cache
while the segmentation pass runs (the shares compile outside the workers'
thread pools); the run waits for them before its first feature task. A
worker that is through its share goes on through the others' backwards,
loading what another worker compiled and compiling what none has reached
yet, so the shares end together however the segmentation pass loaded the
workers. With a warm cache each worker only loads the kernels (milliseconds).

``scip run`` starts one more compiler before it imports Dask
(:func:`start_early`): a process of its own that compiles the largest share
while the driver imports and starts the local cluster, when one of the two
cores of a laptop is otherwise idle; the workers then split the other
kernels.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from scip._featureparams import needs_compiler

if TYPE_CHECKING:  # type hints only: start_early runs before the driver's imports
    from scip.config import Config
    from scip.engine.cluster import Session

log = logging.getLogger("scip")

__all__ = ["EarlyCompile", "Warming", "early_share", "start_early", "start_warming", "warm_workers"]


def _compile_share(names: list[str], rest: Sequence[str] = ()) -> dict[str, float]:
    """Compile the kernels ``names``, then go through ``rest``: the other shares, each backwards.

    A kernel another worker compiled meanwhile is loaded from the cache
    (milliseconds), one it has not reached yet is compiled here: a worker
    that finishes its share early takes the last kernels of a slower one
    instead of waiting for it, and every worker ends with every kernel
    loaded.
    """
    from scip.features.warmup import compile_kernels

    try:
        from distributed import get_worker, secede

        get_worker()
    except (ImportError, ValueError):  # not on a dask worker: nothing to leave
        pass
    else:
        # Out of the worker's thread pool: its task slot runs the segmentation
        # pass meanwhile, which needs none of these kernels.
        secede()
    seconds = compile_kernels(names)
    seconds.update(compile_kernels([n for n in rest if n not in seconds]))
    return seconds


def _feature_workers(session: Session) -> list[str]:
    """Addresses of the workers that run feature tasks (those offering the CPU steps' resources)."""
    need = session.routing.cpu or {}
    workers = session.client.scheduler_info(n_workers=-1)["workers"]
    return sorted(a for a, w in workers.items()
                  if all((w.get("resources") or {}).get(k, 0) >= v for k, v in need.items()))


def early_share(families: Sequence[str], workers: int) -> list[str]:
    """The kernels :func:`start_early`'s process compiles: the first share of ``workers + 1``, the largest kernel."""
    from scip.features.warmup import assign, kernels_for

    return [k.name for k in assign(kernels_for(families), workers + 1)[0]]


def _compile_early(families: str, workers: str) -> None:
    """The early process's body: ``families`` comma-separated, ``workers`` the local cluster's CPU workers."""
    from scip.features.warmup import compile_kernels

    compile_kernels(early_share(families.split(","), int(workers)))


@dataclass
class EarlyCompile:
    """A share of the feature kernels compiling in a process of its own, started by :func:`start_early`.

    Attributes
    ----------
    process : subprocess.Popen
        The compiling process.
    families : tuple of str
        The run's feature families.
    workers : int
        The local cluster's CPU workers it was sized for.
    stderr : Path
        The process's standard error, for the log when it fails.
    started : float
        ``time.perf_counter()`` at its start.
    """

    process: subprocess.Popen
    families: tuple[str, ...]
    workers: int
    stderr: Path
    started: float

    @cached_property
    def names(self) -> list[str]:
        """The kernels it compiles (derived as the process derives them: :func:`early_share`)."""
        return early_share(self.families, self.workers)

    def wait(self) -> bool:
        """Wait for it to end; True when it compiled its share, else the log says why (they compile on first use)."""
        code = self.process.wait()
        tail = self._close()
        if code:
            log.warning("scip: compiling feature kernels ahead in a process of their own failed (exit code %s%s); "
                        "they compile on first use", code, f": {tail}" if tail else "")
            return False
        log.info("scip: %d feature kernel(s) compiled beside the driver, %.1f s after starting", len(self.names),
                 time.perf_counter() - self.started)
        return True

    def stop(self) -> None:
        """End it now if it is still running (the run stopped before its features), and clean up."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> str:
        try:
            text = self.stderr.read_text(errors="replace").strip()
            self.stderr.unlink()
        except OSError:
            return ""
        return text.splitlines()[-1] if text else ""


def start_early(config: Config) -> EarlyCompile | None:
    """Start compiling the largest share of the run's feature kernels in a new process, before the driver's imports.

    ``scip run`` calls this as soon as the config is read: the process
    compiles (or, with a warm cache, loads) :func:`early_share` while the
    driver imports Dask and starts the local cluster, which keeps one core
    of a small machine busy for seconds; :func:`start_warming` then leaves
    that share to it. Only for a local cluster (workers on this machine,
    sharing its numba cache); the process inherits the environment, so
    ``NUMBA_CACHE_DIR`` as :mod:`scip._numbacache` set it.

    Parameters
    ----------
    config : Config
        The run's config.

    Returns
    -------
    EarlyCompile or None
        None for another cluster, families without compiled kernels, or a
        process that could not start (the workers then compile every kernel).
    """
    cluster = config.cluster
    families = tuple(config.features.families)
    if cluster.scheduler or cluster.slurm is not None or not needs_compiler(families):
        return None
    from scip._numbacache import compiler_environment
    from scip.engine.cluster import default_workers

    workers = cluster.workers if cluster.workers is not None else default_workers()
    fd, name = tempfile.mkstemp(prefix="scip-early-", suffix=".log")
    code = f"from scip.engine.warm import _compile_early; _compile_early({','.join(families)!r}, {str(workers)!r})"
    try:
        with open(fd, "w") as err:
            process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err,
                                       env={**os.environ, **compiler_environment()})
    except OSError as e:
        Path(name).unlink(missing_ok=True)
        log.warning("scip: could not start compiling feature kernels ahead (%s); the workers compile them", e)
        return None
    return EarlyCompile(process, families, workers, Path(name), time.perf_counter())


@dataclass
class Warming:
    """Kernels compiling on the workers, started by :func:`start_warming`; :meth:`wait` for them."""

    client: Any
    futures: list
    started: float

    def wait(self, poll: float = 0.1) -> dict[str, float] | None:
        """Wait until no share is still compiling.

        A share whose worker died (an image that kills workers, while the
        shares compile beside the segmentation pass) is not waited for: its
        kernels compile where they are first used, as without a warm-up. A
        share that finished on a worker that died afterwards is lost to Dask,
        which may never compute it again, but its kernels are in the cache.

        Parameters
        ----------
        poll : float, optional
            Seconds between looks at the shares' states.

        Returns
        -------
        dict of str to float or None
            Wall seconds per kernel on the worker that compiled it, for the
            shares whose result came back; None when none did.
        """
        # Polled, not gathered: gathering a lost future waits for a recomputation that may never come.
        pending = list(self.futures)
        seconds: dict[str, float] = {}
        while pending:
            still = []
            for future in pending:
                if future.status == "pending":
                    still.append(future)
                elif future.status == "finished":
                    seconds.update(future.result())
                elif future.status == "error":
                    e = future.exception()
                    # A worker killed by an image is a data problem reported elsewhere; anything else is a bug.
                    level = logging.INFO if type(e).__name__ == "KilledWorker" else logging.WARNING
                    log.log(level, "scip: compiling a share of the feature kernels ahead failed (%s: %s); "
                            "they compile on first use", type(e).__name__, e)
                else:  # lost, cancelled: its worker left
                    log.info("scip: the worker compiling a share of the feature kernels left (%s); "
                             "they load from the cache or compile on first use", future.status)
            pending = still
            if pending:
                time.sleep(poll)
        if not seconds:
            return None
        log.info("scip: %d feature kernels ready on %d workers, %.1f s after starting", len(seconds),
                 len(self.futures), time.perf_counter() - self.started)
        return seconds


def _rest(shares: list[list], i: int) -> list[str]:
    """The kernels of every share but the ``i``-th, each share's backwards (its last kernel first).

    Share ``i + 1`` first, then ``i + 2``, ...: workers done early start on different shares.
    """
    n = len(shares)
    return [k.name for j in range(i + 1, i + n) for k in reversed(shares[j % n])]


def start_warming(session: Session, families: Sequence[str], early: EarlyCompile | None = None) -> Warming | None:
    """Start compiling the kernels of ``families`` on the session's workers, a share each.

    Each share compiles outside its worker's thread pool, so the tasks
    submitted meanwhile (loading, segmenting: nothing that measures
    features) run beside it instead of queueing behind it. Call
    :meth:`Warming.wait` before the first feature task is submitted, so
    that no worker compiles a kernel that another is still compiling.

    Parameters
    ----------
    session : Session
        Where the graph runs; nothing happens in-process (``session.client``
        is None), where kernels compile on first use as before.
    families : sequence of str
        Feature families of the run; only their kernels are compiled.
    early : EarlyCompile, optional
        A process compiling :attr:`EarlyCompile.names` already
        (:func:`start_early`); the workers leave those kernels to it and
        load them when a feature task first calls them.

    Returns
    -------
    Warming or None
        None when nothing was started (in-process, no worker, no kernel to
        compile, or submitting failed).
    """
    if session.client is None or not needs_compiler(families):
        return None
    from scip.features.warmup import assign, kernels_for

    addresses = _feature_workers(session)
    left = set(early.names) if early is not None else set()
    kernels = [k for k in kernels_for(families) if k.name not in left]
    if not addresses or not kernels:
        return None
    start = time.perf_counter()
    shares = assign(kernels, len(addresses))
    try:
        # A preference, not a restriction: a share pinned to a worker that dies (an image that kills
        # it, while the shares compile beside the segmentation pass) would wait forever for it.
        futures = [session.client.submit(_compile_share, [k.name for k in share], _rest(shares, i),
                                         workers=[address], allow_other_workers=True, pure=False)
                   for i, (address, share) in enumerate(zip(addresses, shares)) if share]
    except Exception as e:  # noqa: BLE001 - a speed-up only: the run compiles lazily without it
        log.warning("scip: compiling the feature kernels ahead failed (%s: %s); they compile on first use",
                    type(e).__name__, e)
        return None
    return Warming(session.client, futures, start)


def warm_workers(session: Session, families: Sequence[str]) -> dict[str, float] | None:
    """Compile the kernels of ``families`` on the session's workers, a share each; wait for them.

    :func:`start_warming` then :meth:`Warming.wait`.

    Returns
    -------
    dict of str to float or None
        Wall seconds per kernel on the worker that compiled it; None when
        nothing ran (in-process, no worker, or the warm-up failed).
    """
    warming = start_warming(session, families)
    return warming.wait() if warming is not None else None
