"""Where the graph runs: a local cluster, an existing scheduler, or in-process."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from scip.config import ClusterConfig

log = logging.getLogger("scip")

SYNCHRONOUS = "synchronous"


def default_workers(memory_per_worker_gib: float = 2.0) -> int:
    """Workers for this machine: one per core, while each gets ~2 GiB; never zero."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        import psutil

        memory_gib = psutil.virtual_memory().total / 2**30
    except ImportError:
        memory_gib = memory_per_worker_gib * cores
    return max(1, min(cores, int(memory_gib // memory_per_worker_gib)))


def quiet_logs() -> None:
    """Keep distributed's INFO chatter (workers starting, stopping) off the terminal.

    Takes effect when called before ``distributed`` is first imported, as the
    command line does; the environment variable reaches worker processes.
    """
    import dask

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    dask.config.set({"logging.distributed": "warning"})


@contextmanager
def connect(cfg: ClusterConfig, client=None) -> Iterator[object | None]:
    """A ``distributed.Client`` for the run (``None`` for the in-process scheduler).

    An explicit ``client`` is used as is and left open. ``cfg.scheduler`` is
    an address of a running scheduler, or ``"synchronous"`` to compute in
    this process (for debugging); otherwise a :class:`~distributed.LocalCluster`
    sized to this machine is started and closed afterwards.
    """
    if client is not None:
        yield client
        return
    if cfg.scheduler == SYNCHRONOUS:
        yield None
        return
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        with Client(cfg.scheduler) as c:
            yield c
        return
    n = cfg.workers or default_workers()
    with LocalCluster(
        n_workers=n,
        threads_per_worker=cfg.threads,
        memory_limit=cfg.memory_limit,
        dashboard_address=cfg.dashboard_address,
        processes=True,
    ) as cluster, Client(cluster) as c:
        yield c


def compute(tasks: list, client, progress: bool = True) -> list:
    """Compute delayed ``tasks`` on ``client`` (or in-process), with a progress bar."""
    import dask

    if client is None:
        from dask.diagnostics import ProgressBar

        with dask.config.set(scheduler="synchronous"):
            if progress:
                with ProgressBar():
                    return list(dask.compute(*tasks))
            return list(dask.compute(*tasks))
    from distributed import progress as show_progress

    futures = client.compute(tasks)
    if progress:
        show_progress(futures)
    return client.gather(futures)


def persist(collection, client, progress: bool = True):
    """Compute ``collection`` and keep its partitions in memory (on the workers), with a progress bar.

    Dataset-wide reductions read the persisted cells several times; this is
    what keeps them from reading the input again. On a cluster the workers
    spill to disk under memory pressure.
    """
    import dask

    if client is None:
        from dask.diagnostics import ProgressBar

        with dask.config.set(scheduler="synchronous"):
            if progress:
                with ProgressBar():
                    (out,) = dask.persist(collection)
            else:
                (out,) = dask.persist(collection)
        return out
    from distributed import progress as show_progress
    from distributed import wait

    out = client.persist(collection)
    if progress:
        show_progress(out)
    wait(out)
    return out
