"""Where the graph runs: in-process, a local (heterogeneous) cluster, SLURM, or an existing scheduler.

Tasks are routed by Dask *resources*. Workers declare what they offer;
the graph builder asks for it per step (see :class:`Routing`):

=========  ==============================================================
``GPU``    one per GPU worker; every segmentation task asks for ``GPU=1``
``CPU``    one per thread of a CPU worker; cells, filters, features and
           export tasks ask for ``CPU=1``
=========  ==============================================================

A resource nobody offers would leave its tasks waiting forever, so the
routing is decided from what the cluster actually has: without a GPU
worker, segmentation runs on the CPU workers and a log line says so.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from scip.config import ClusterConfig, ConfigError, SlurmConfig, SlurmJobConfig, TlsFiles
from scip.engine.progress import Bar

log = logging.getLogger("scip")

__all__ = ["GPU", "CPU", "SYNCHRONOUS", "LOOPBACK", "ClusterError", "Routing", "Session", "connect", "compute", "persist",
           "routing_for", "default_workers", "gpu_count", "slurm_cluster", "task_stream", "task_stream_steps",
           "worker_names", "quiet_logs", "loopback_dashboard", "security_for", "worker_memory", "completed", "Killed",
           "killed_partitions", "release", "PauseWatch"]

SYNCHRONOUS = "synchronous"
GPU = "GPU"
#: Where a local cluster listens: nobody on another machine can connect a client and run code.
LOOPBACK = "127.0.0.1"


class ClusterError(RuntimeError):
    """The cluster could not be started or reached; the message says what to check."""


CPU = "CPU"


@dataclass(frozen=True)
class Routing:
    """The resources tasks ask for, per kind of step; ``None`` asks for nothing (any worker).

    Attributes
    ----------
    segment : dict or None
        Resources of segmentation tasks, e.g. ``{"GPU": 1}``.
    cpu : dict or None
        Resources of the CPU steps (cells, masks, filters, features, export).
    note : str
        Why segmentation runs where it runs, for the log and ``run.json``.
    """

    segment: dict | None = None
    cpu: dict | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return {"segment": self.segment, "cpu": self.cpu, "note": self.note}


def routing_for(offered: list[dict]) -> Routing:
    """Decide the routing from the resources each worker offers (one dict per worker)."""
    has_gpu = any(r.get(GPU, 0) > 0 for r in offered)
    has_cpu = any(r.get(CPU, 0) > 0 for r in offered)
    cpu = {CPU: 1} if has_cpu else None
    if has_gpu:
        return Routing({GPU: 1}, cpu, "segmentation runs on the workers with the GPU resource")
    if has_cpu:
        return Routing(cpu, cpu, "no worker has the GPU resource: segmentation runs on the CPU workers")
    return Routing(None, None, "no worker declares GPU or CPU resources: every task may run on any worker")


@dataclass
class Session:
    """A connection to where the graph runs: the client (``None`` in-process), its routing and retries."""

    client: object | None
    routing: Routing = field(default_factory=Routing)
    retries: int = 0
    kind: str = SYNCHRONOUS
    cluster: object | None = None
    pauses: PauseWatch | None = None

    def describe(self) -> dict:
        """Workers and their resources, for ``run.json``; ``paused_s``: seconds each worker spent paused."""
        if self.client is None:
            return {"kind": self.kind, "workers": []}
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return {"kind": self.kind, "scheduler": self.client.scheduler.address, "dashboard": self.client.dashboard_link,
                "workers": sorted(({"name": str(w["name"]), "threads": w["nthreads"],
                                    "resources": dict(w.get("resources") or {})} for w in workers),
                                  key=lambda w: w["name"]),
                "routing": self.routing.as_dict(), "retries": self.retries,
                "paused_s": self.pauses.paused_seconds() if self.pauses is not None else {}}


class PauseWatch:
    """Say so when a worker stays paused: Dask's pause is otherwise a silent, possibly endless wait.

    A worker whose process memory passes ``distributed.worker.memory.pause``
    (80 % of its limit by default) takes no new task until its memory falls.
    If it never falls (a limit too small for the libraries and one task's
    data), the run waits forever with an idle progress bar. A thread polls
    the scheduler and logs a warning naming the worker, its memory and the
    setting to change once a pause has lasted ``after`` seconds, again
    every ``repeat`` seconds while it lasts, and an info line when it ends.

    Parameters
    ----------
    client : distributed.Client
    interval, after, repeat : float
        Seconds between polls, before the first warning, between warnings.
    """

    def __init__(self, client, interval: float = 5.0, after: float = 30.0, repeat: float = 300.0):
        self.client, self.interval, self.after, self.repeat = client, interval, after, repeat
        self._since: dict[str, float] = {}
        self._warned: dict[str, float] = {}
        self._total: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="scip-pause-watch", daemon=True)

    def __enter__(self) -> PauseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval + 5)

    def paused_seconds(self) -> dict[str, float]:
        """Worker name to seconds spent paused so far (only workers that paused)."""
        now = time.monotonic()
        with self._lock:
            out = dict(self._total)
            for name, since in self._since.items():
                out[name] = out.get(name, 0.0) + now - since
        return {name: round(seconds, 1) for name, seconds in sorted(out.items())}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
            except Exception as e:  # noqa: BLE001 - a watch only: a closing client must not raise in a thread
                log.debug("scip: pause watch stopped (%s: %s)", type(e).__name__, e)
                return
            self.check(workers, time.monotonic())

    def check(self, workers, now: float) -> None:
        """Update the pause record from the scheduler's worker entries, logging what changed."""
        import dask
        from dask.utils import format_bytes

        paused = {str(w["name"]): w for w in workers if w.get("status") == "paused"}
        with self._lock:
            for name in [n for n in self._since if n not in paused]:
                lasted = now - self._since.pop(name)
                self._total[name] = self._total.get(name, 0.0) + lasted
                if self._warned.pop(name, None) is not None:
                    log.info("scip: worker %s runs tasks again after %.0f s paused", name, lasted)
            for name, w in paused.items():
                since = self._since.setdefault(name, now)
                last = self._warned.get(name)
                if now - since < self.after or (last is not None and now - last < self.repeat):
                    continue
                self._warned[name] = now
                limit = int(w.get("memory_limit") or 0)
                used = int((w.get("metrics") or {}).get("memory") or 0)
                fraction = dask.config.get("distributed.worker.memory.pause")
                log.warning(
                    "scip: worker %s has been paused for %.0f s: its process holds %s of its %s memory limit, above "
                    "Dask's pause threshold (distributed.worker.memory.pause = %s), so it takes no new task until "
                    "that memory is freed, and the run waits. If this lasts, raise cluster.memory_limit (or run "
                    "fewer cluster.threads per worker).", name, now - since, format_bytes(used),
                    format_bytes(limit) if limit else "unknown", fraction)


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


def gpu_count() -> int:
    """GPUs this machine has that dask-cuda can start workers on (0 without dask-cuda or GPUs)."""
    try:
        from dask_cuda.utils import get_n_gpus
    except ImportError:
        return 0
    try:
        return int(get_n_gpus())
    except Exception:  # noqa: BLE001 - no driver, no NVML: no GPU to use
        return 0


def quiet_logs() -> None:
    """Keep distributed's INFO chatter (workers starting, stopping) off the terminal.

    Takes effect when called before ``distributed`` is first imported, as the
    command line does; the environment variable reaches worker processes.
    """
    import dask

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    dask.config.set({"logging.distributed": "warning"})


def loopback_dashboard(address: str) -> str:
    """The dashboard's address with a host: one given as a port only (``:8787``) goes to loopback.

    Dask binds a port-only dashboard address to every interface; scip keeps it
    on this machine unless the config names a host (``0.0.0.0:8787``).
    """
    address = str(address).strip()
    if address.isdigit():
        return f"{LOOPBACK}:{address}"
    if address.startswith(":"):
        return LOOPBACK + address
    return address


def security_for(value: bool | TlsFiles | str, default_tls: bool):
    """The ``distributed.security.Security`` for ``cluster.security``, or ``None`` for plain TCP.

    Parameters
    ----------
    value : bool, TlsFiles or "auto"
        ``cluster.security``: ``True`` makes temporary credentials (a fresh CA,
        key and certificate held by this process), certificate files are used
        as they are, ``False`` means no TLS.
    default_tls : bool
        What ``"auto"`` means here: TLS (SLURM) or not (a loopback cluster).

    Returns
    -------
    distributed.security.Security or None
    """
    from distributed.security import Security

    if value == "auto":
        value = default_tls
    if value is False:
        return None
    if isinstance(value, TlsFiles):
        cert, key = str(value.cert), str(value.key) if value.key else None
        return Security(tls_ca_file=str(value.ca_file), tls_client_cert=cert, tls_client_key=key,
                        tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key,
                        require_encryption=True)
    try:
        return Security.temporary()
    except ImportError:
        raise ConfigError("cluster.security: TLS with temporary credentials needs the 'cryptography' package "
                          "(pip install cryptography); or give certificate files as cluster.security: "
                          "{ca_file, cert, key}") from None


def _local_cluster(cfg: ClusterConfig):
    """A local cluster of CPU workers plus GPU workers; returns it and the resources of each worker.

    With GPUs and dask-cuda, the GPU workers come from ``LocalCUDACluster``
    (one per GPU, pinned to it). Without, ``gpu_workers: N`` starts N workers
    that carry the GPU resource but compute on the CPU, which proves the
    routing on any machine.
    """
    from distributed import LocalCluster, Nanny

    from scip._numbacache import compiler_environment

    # Scheduler, workers and dashboard listen on loopback only; TLS on top is opt-in
    # (cluster.security: true), for machines shared with other users.
    sec = security_for(cfg.security, default_tls=False)
    network = {"host": LOOPBACK, "dashboard_address": loopback_dashboard(cfg.dashboard_address), "security": sec}
    n_gpus = gpu_count()
    gpu_workers = cfg.gpu_workers if cfg.gpu_workers is not None else n_gpus
    cpu_workers = cfg.workers if cfg.workers is not None else default_workers()
    offered = [{CPU: cfg.threads}] * cpu_workers + [{GPU: 1}] * gpu_workers
    env = compiler_environment()  # the CPU workers compile the feature kernels
    if gpu_workers and n_gpus:
        from dask_cuda import LocalCUDACluster

        if gpu_workers > n_gpus:
            raise ConfigError(f"cluster.gpu_workers: {gpu_workers} asked for, but this machine has {n_gpus} GPU(s)")
        cluster = LocalCUDACluster(CUDA_VISIBLE_DEVICES=list(range(gpu_workers)), threads_per_worker=1,
                                   resources={GPU: 1}, memory_limit=cfg.memory_limit, **network)
        extra = {f"cpu-{i}": {"cls": Nanny, "options": {"nthreads": cfg.threads, "memory_limit": cfg.memory_limit,
                                                          "resources": {CPU: cfg.threads}, "dashboard": False,
                                                          "env": env,
                                                          "host": LOOPBACK, "silence_logs": logging.WARNING,
                                                          "security": cluster.security,
                                                          "protocol": cluster.scheduler_address.split("://")[0] + "://"}}
                 for i in range(cpu_workers)}
        log.info("scip: %d GPU worker(s) from dask-cuda, %d CPU worker(s)", gpu_workers, cpu_workers)
    else:
        if gpu_workers and not n_gpus:
            log.info("scip: no GPU found: %d worker(s) carry the GPU resource but compute on the CPU", gpu_workers)
        cluster = LocalCluster(n_workers=cpu_workers, threads_per_worker=cfg.threads, memory_limit=cfg.memory_limit,
                               processes=True, resources={CPU: cfg.threads}, env=env, **network)
        options = {**cluster.new_spec["options"], "nthreads": 1, "resources": {GPU: 1}}
        extra = {f"gpu-{i}": {"cls": cluster.new_spec["cls"], "options": options} for i in range(gpu_workers)}
    if extra:
        cluster.worker_spec.update(extra)
        cluster.scale(len(cluster.worker_spec))
    return cluster, offered


def _job_options(job: SlurmJobConfig, resources: dict, name: str, defaults: SlurmJobConfig | None = None) -> dict:
    """dask-jobqueue's job options; the GPU job takes what it leaves unset from the CPU job (``defaults``)."""
    def inherit(key: str):
        value = getattr(job, key)
        return getattr(defaults, key) if defaults is not None and value in (None, []) else value

    # Workers' own dashboards would be one more open port per worker; the scheduler's shows them all.
    extra_args = ["--resources", ",".join(f"{k}={v}" for k, v in resources.items()), "--no-dashboard"]
    return {
        "queue": inherit("queue"), "account": inherit("account"), "cores": job.cores, "processes": job.processes,
        "memory": job.memory, "walltime": job.walltime, "job_extra_directives": list(job.job_extra_directives),
        "job_script_prologue": list(inherit("job_script_prologue")), "local_directory": inherit("local_directory"),
        "log_directory": inherit("log_directory"), "worker_extra_args": extra_args, "job_name": name,
        "python": sys.executable,
    }


def _tls_directory(cfg: SlurmConfig) -> str:
    """A private folder the worker jobs can read the temporary TLS key from (a shared file system)."""
    folder = Path(os.path.expandvars(cfg.shared_temp_directory or "~/.scip/tls")).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
    except OSError as e:
        raise ConfigError(f"cluster.slurm.shared_temp_directory: cannot create {folder} for the workers' TLS "
                          f"credentials ({e.strerror}); name a folder on a file system the compute nodes share")
    return str(folder)


def slurm_cluster(cfg: SlurmConfig, dashboard_address: str = f"{LOOPBACK}:8787",
                  security: bool | TlsFiles | str = True):
    """A dask-jobqueue ``SLURMCluster`` with CPU jobs and, when configured, GPU jobs on one scheduler.

    CPU jobs' workers offer ``CPU=<threads>``; GPU jobs (``cfg.gpu``) run one
    worker each with ``GPU=1`` and ``--gres``. The number of GPU jobs is
    fixed; the CPU jobs are fixed (``jobs``) or adaptive between
    ``minimum_jobs`` and ``maximum_jobs``.

    Parameters
    ----------
    cfg : SlurmConfig
        The jobs, and the network interfaces of workers and scheduler.
    dashboard_address : str
        Where the scheduler serves its dashboard; a port alone binds to loopback.
    security : bool, TlsFiles or "auto"
        ``cluster.security``. ``True`` (and ``"auto"``): the scheduler and the
        workers speak ``tls://`` with temporary credentials made here; the
        workers read theirs from ``cfg.shared_temp_directory`` (files only
        this user can read, deleted when the cluster closes).

    Returns
    -------
    cluster, offered
        The cluster (not yet scaled: call ``.start_jobs()``) and the resources
        each planned worker offers.
    """
    from dask_jobqueue import SLURMCluster
    from distributed.core import Status
    from distributed.utils import format_dashboard_link

    sec = security_for(security, default_tls=True)
    if sec is None:
        log.warning("scip: cluster.security is false: the scheduler accepts any client that reaches its port, "
                    "and whoever connects can run code as you")

    cpu_options = _job_options(cfg, {CPU: cfg.cores // cfg.processes}, "scip-cpu")
    gpu_options = None
    if cfg.gpu is not None:
        gpu_options = _job_options(cfg.gpu, {GPU: 1}, "scip-gpu", defaults=cfg)
        if cfg.gpu.gres:
            gpu_options["job_extra_directives"] = [f"--gres={cfg.gpu.gres}", *gpu_options["job_extra_directives"]]

    class _Cluster(SLURMCluster):
        """SLURM CPU jobs that scale (fixed or adaptive) and a fixed set of GPU jobs beside them."""

        def __init__(self, **kwargs):
            self.gpu_specs: dict = {}
            super().__init__(**kwargs)
            if gpu_options is not None:
                self.gpu_specs = {f"scip-gpu-{i}": {"cls": self.job_cls, "options": {
                    **self._job_kwargs, **gpu_options}} for i in range(cfg.gpu.jobs)}

        def scale(self, n=None, jobs=0, memory=None, cores=None):
            # n counts every worker (what Adaptive plans with); GPU jobs stay as they are.
            for name in self.gpu_specs:
                self.worker_spec.pop(name, None)
            if n is not None:
                n = max(n - len(self.gpu_specs), 0)
            try:
                return super().scale(n, jobs=jobs, memory=memory, cores=cores)
            finally:
                # Closing scales to 0: then the GPU jobs go too.
                if self.status not in (Status.closing, Status.closed):
                    self.worker_spec.update(self.gpu_specs)

        def scale_down(self, workers):
            return super().scale_down([w for w in workers if w not in self.gpu_specs])

        def close(self, *args, **kwargs):
            try:
                return super().close(*args, **kwargs)
            finally:
                # dask-jobqueue deletes the workers' credential files only when the cluster is
                # garbage-collected; a key should not outlive the scheduler it opens.
                for key in ("ca_file", "cert", "key"):
                    tmp = self.__dict__.pop(f"_job_{key}", None)
                    if tmp is not None:
                        tmp.close()

        @property
        def dashboard_link(self):
            # Dask names the scheduler's host; the dashboard may listen elsewhere (loopback).
            server = getattr(self.scheduler, "http_server", None)
            host = getattr(server, "address", None)
            if not host or host in ("0.0.0.0", "::"):
                return super().dashboard_link
            return format_dashboard_link(host, server.port)

        def start_jobs(self):
            if cfg.adapt:
                self.adapt(minimum_jobs=cfg.minimum_jobs, maximum_jobs=cfg.maximum_jobs)
            else:
                self.scale(jobs=cfg.jobs)

    # Worker names follow the cluster's name: scip-cpu-<n>, beside the GPU jobs' scip-gpu-<n>.
    scheduler_options = {"dashboard_address": loopback_dashboard(dashboard_address)}
    if cfg.scheduler_interface:
        scheduler_options["interface"] = cfg.scheduler_interface
    network = {"interface": cfg.interface, "scheduler_options": scheduler_options}
    if sec is not None:
        network.update(security=sec, shared_temp_directory=_tls_directory(cfg))
    cluster = _Cluster(name="scip-cpu", **network, **cpu_options)
    cpu_jobs = cfg.maximum_jobs if cfg.adapt else cfg.jobs
    offered = [{CPU: cfg.cores // cfg.processes}] * (cpu_jobs * cfg.processes)
    offered += [{GPU: 1}] * (cfg.gpu.jobs if cfg.gpu is not None else 0)
    return cluster, offered


@contextmanager
def connect(cfg: ClusterConfig, client=None) -> Iterator[Session]:
    """Connect to where the graph runs, as :class:`Session`; clusters started here are closed afterwards.

    An explicit ``client`` is used as is and left open; its routing comes
    from the resources of its workers. ``cfg.scheduler`` is an address of a
    running scheduler, or ``"synchronous"`` to compute in this process (for
    debugging); ``cfg.slurm`` starts workers as SLURM jobs; otherwise a local
    cluster sized to this machine is started (with ``cfg.gpu_workers`` GPU
    workers).

    The network follows ``cfg.security`` and ``cfg.dashboard_address``: a
    local cluster listens on loopback only; SLURM workers reach a scheduler
    that speaks TLS with temporary credentials; an existing scheduler gets
    this client's certificate files, or Dask's TLS configuration.
    """
    if client is not None:
        yield Session(client, _live_routing(client), cfg.retries, "client")
        return
    if cfg.scheduler == SYNCHRONOUS:
        yield Session(None, Routing(), cfg.retries)
        return
    from distributed import Client

    if cfg.scheduler:
        with Client(cfg.scheduler, security=_client_security(cfg)) as c, PauseWatch(c) as pauses:
            yield Session(c, _live_routing(c), cfg.retries, "scheduler", pauses=pauses)
        return
    if cfg.slurm is not None:
        cluster, offered = slurm_cluster(cfg.slurm, cfg.dashboard_address, cfg.security)
        with _closing(cluster), Client(cluster) as c:
            cluster.start_jobs()
            first = 1 if not cfg.slurm.adapt or cfg.slurm.minimum_jobs else 0
            if first:
                log.info("scip: waiting for SLURM jobs to start workers (up to %.0f s)", cfg.slurm.wait_timeout)
                try:
                    c.wait_for_workers(1, timeout=cfg.slurm.wait_timeout)
                except TimeoutError:
                    raise ClusterError(
                        f"no SLURM job started a worker within cluster.slurm.wait_timeout = {cfg.slurm.wait_timeout:g} s; "
                        "check the jobs with `squeue --me` (pending in the queue, or failed: see their output in "
                        f"{cfg.slurm.log_directory or 'the current folder'}) and the partition/account/resources "
                        "in cluster.slurm") from None
            with PauseWatch(c) as pauses:
                yield Session(c, _announce(routing_for(offered)), cfg.retries, "slurm", cluster, pauses)
        return
    cluster, offered = _local_cluster(cfg)
    with _stopping(cluster), Client(cluster) as c:
        c.wait_for_workers(len(offered), timeout=120)
        with PauseWatch(c) as pauses:
            yield Session(c, _announce(routing_for(offered)), cfg.retries, "local", cluster, pauses)


#: Seconds a local worker process gets to exit once asked to, before its nanny kills it. Distributed's own
#: four seconds are too short for a process that loaded numba, pandas and torch on a busy machine: it exits
#: cleanly, only later, and the nanny's "still alive after 4.0 seconds, killing" ends every run.
WORKER_STOP_TIMEOUT_S = 60.0


@contextmanager
def _stopping(cluster, timeout: float = WORKER_STOP_TIMEOUT_S) -> Iterator[None]:
    """Close a local cluster (after its client: the ``with`` line's order): workers, then scheduler.

    Each nanny asks its worker to stop and waits up to ``0.8 * timeout`` for the process to exit
    before killing it; a worker that takes that long is stuck, and the nanny's warning then says so.
    """
    try:
        yield
    finally:
        workers = list(getattr(cluster, "workers", {}).values())

        async def close_workers():
            import asyncio

            await asyncio.gather(*(w.close(timeout=timeout) for w in workers if hasattr(w, "close")),
                                 return_exceptions=True)

        try:
            cluster.sync(close_workers, callback_timeout=2 * timeout)
        except Exception as e:  # noqa: BLE001 - cluster.close below closes what is left, and says why
            log.debug("scip: closing the workers one by one failed (%s: %s)", type(e).__name__, e)
        cluster.close()


def _client_security(cfg: ClusterConfig):
    """TLS credentials of this client for a scheduler scip did not start (``None``: Dask's configuration)."""
    from distributed.security import Security

    if isinstance(cfg.security, TlsFiles):
        return security_for(cfg.security, default_tls=True)
    if cfg.security is True:
        configured = Security()
        if not (configured.tls_ca_file and configured.tls_client_cert):
            raise ConfigError(f"cluster.security is true for the scheduler {cfg.scheduler!r}, but Dask's configuration "
                              "has no TLS credentials (distributed.comm.tls.ca-file, distributed.comm.tls.client.cert); "
                              "give the certificate files as cluster.security: {ca_file, cert, key}")
        return configured
    return None


class _RefusedJobs(logging.Filter):
    """Turn the event loop's traceback for a job sbatch refused into one line with sbatch's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RuntimeError) and "sbatch" in str(exc):
            said = str(exc).split("stderr:", 1)[-1].strip() or str(exc)
            log.error("scip: sbatch refused a worker job: %s", " ".join(said.split()))
            return False
        return True


@contextmanager
def _closing(cluster) -> Iterator[None]:
    """Close a jobqueue cluster; cancels its jobs, including those SLURM never started."""
    refused = _RefusedJobs()
    loggers = [logging.getLogger(name) for name in ("tornado.application", "asyncio")]
    for logger in loggers:
        logger.addFilter(refused)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(refused)
        try:
            cluster.close()
        except AssertionError:
            # distributed asserts that every job it tried to start is closed; one that sbatch
            # refused (its error is logged above) stays "created". Its cancellation is moot.
            log.debug("scip: a SLURM job that never started was left as is at close")


def _announce(routing: Routing) -> Routing:
    log.info("scip: %s", routing.note)
    return routing


def _live_routing(client, timeout: float = 60) -> Routing:
    client.wait_for_workers(1, timeout=timeout)
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return _announce(routing_for([dict(w.get("resources") or {}) for w in workers]))


def compute(tasks: list, session: Session | None, progress: bool = True, label: str = "compute") -> list:
    """Compute delayed ``tasks`` in the session (or in-process), with a progress bar named ``label``.

    The graph is submitted unoptimized: Dask's optimization fuses tasks and
    drops their resource annotations, and the graph builder has already put
    the work of one step of one partition into one task.
    """
    import dask

    client = session.client if session is not None else None
    if client is None:
        with dask.config.set(scheduler="synchronous"), _counting(label if progress else None):
            return list(dask.compute(*tasks, optimize_graph=False))
    futures = client.compute(tasks, optimize_graph=False, retries=session.retries or None)
    if progress:
        _follow(futures, label, "tasks")
    return client.gather(futures)


def _follow(futures: list, label: str, unit: str) -> None:
    """A progress bar of ``futures`` as they finish (or fail: the caller sees the failure)."""
    from distributed import as_completed

    with Bar(label, len(futures), unit) as bar:
        for _ in as_completed(futures):
            bar.step()


@contextmanager
def _counting(label: str | None) -> Iterator[None]:
    """In-process computing: a progress bar of the graph's tasks (none when ``label`` is ``None``)."""
    if label is None:
        yield
        return
    from dask.callbacks import Callback

    class _Counter(Callback):
        bar: Bar | None = None

        def _pretask(self, key, dsk, state):
            if self.bar is None:
                total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
                self.bar = Bar(label, total, "tasks")

        def _posttask(self, key, result, dsk, state, worker_id):
            self.bar.step()

        def _finish(self, dsk, state, errored):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    with _Counter():
        yield


@dataclass(frozen=True)
class Killed:
    """What :func:`completed` yields for a task whose workers kept dying while they ran it.

    Attributes
    ----------
    task : str
        Function name of the task that killed them (``_segment``, ``_load``, ...).
    workers : int
        How many workers died running it before the scheduler gave up.
    memory_limit : str
        The workers' memory limit(s), e.g. ``2.00 GiB``, or ``unknown``.
    """

    task: str
    workers: int
    memory_limit: str


def _memory_limits(client, timeout: float = 30) -> str:
    from dask.utils import format_bytes

    try:
        # Right after a task killed its workers, their replacements may not be up yet.
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        return "unknown"
    limits = {w.get("memory_limit") for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    limits = sorted(int(m) for m in limits if m)
    return ", ".join(format_bytes(m) for m in limits) or "unknown"


def _killed(error, client) -> Killed:
    """A :class:`Killed` from distributed's ``KilledWorker``."""
    from dask.utils import key_split

    return Killed(key_split(error.task), error.allowed_failures + 1, _memory_limits(client))


def completed(tasks: list, session: Session | None, progress: bool = True, label: str = "compute",
              unit: str = "partitions", window: int | None = None) -> Iterator[tuple[int, object]]:
    """Compute delayed ``tasks``, yielding ``(position, result)`` as each one finishes.

    Unlike :func:`compute`, the caller sees every result as soon as it is
    there and may stop early: closing the generator (``break`` out of a
    ``for`` loop over it, or ``.close()``) cancels the tasks not yet done.
    In-process (no client), the tasks are computed one after the other.
    Once the generator is done, the scheduler has forgotten its tasks.

    A task whose workers kept dying while they ran it (``KilledWorker``:
    the process crashed, or the nanny killed it for exceeding its memory)
    yields a :class:`Killed` instead of a result, and the others go on.
    Any other exception of a task is raised.

    Parameters
    ----------
    tasks : list of dask.delayed.Delayed
        The tasks, submitted unoptimized (see :func:`compute`).
    session : Session or None
        Where to compute; ``None`` or a session without client: in-process.
    progress : bool
        Show a progress bar of the finished tasks.
    label : str
        The pass the bar names (``"features + write"``).
    unit : str
        What a task is, for the bar (``"partitions"``, ``"tiles"``).
    window : int, optional
        Most tasks given to the scheduler at once (default: 4 per worker
        thread, at least 16); more follow as these finish. Tasks must not
        share dependencies that are not persisted: each batch would compute
        them again.

    Yields
    ------
    (int, object)
        The task's position in ``tasks`` and its result, or a :class:`Killed`.
    """
    import dask

    client = session.client if session is not None else None
    bar = Bar(label, len(tasks), unit) if progress and tasks else None
    try:
        if client is None:
            with dask.config.set(scheduler="synchronous"):
                for position, task in enumerate(tasks):
                    (result,) = dask.compute(task, optimize_graph=False)
                    if bar is not None:
                        bar.step()
                    yield position, result
            return
        from distributed import KilledWorker, as_completed

        # A bounded number of tasks in flight: the scheduler keeps some 15 KB per task it was given (and the
        # client as much), and a slide has thousands of tiles. Refilled in batches, each with only its graph.
        window = window or max(16, 4 * sum(client.nthreads().values()))
        batch = max(1, window // 4)
        pieces = _Pieces(tasks)
        pending = iter(range(len(tasks)))
        positions: dict = {}
        futures = as_completed()

        def submit(count: int) -> None:
            chosen = [i for _, i in zip(range(count), pending)]
            if chosen:
                submitted = client.compute(pieces.take([tasks[i] for i in chosen]), optimize_graph=False,
                                           retries=session.retries or None)
                for i, future in zip(chosen, submitted):
                    positions[future.key] = i
                    futures.add(future)

        try:
            submit(window)
            for future in futures:
                try:
                    result = future.result()
                except KilledWorker as e:
                    result = _killed(e, client)
                if bar is not None:
                    bar.step()
                position = positions.pop(future.key)
                del future
                if futures.count() <= window - batch:
                    submit(batch)
                yield position, result
        finally:
            # All of them: the ones not done stop, and the scheduler forgets the failed ones, so that
            # the same tasks can be submitted again (a retry) without getting back the old failure.
            client.cancel(list(futures.futures))
    finally:
        if bar is not None:
            bar.close()


class _Pieces:
    """The graphs of many tasks, materialized once, from which a batch of them takes only what it needs.

    A Bag's delayed partitions each carry the whole Bag's graph: submitted
    in batches as they are, each batch would ship all of it. Annotations
    (resources) live on the layers, so each piece keeps its tasks' layers.
    """

    def __init__(self, tasks: list):
        from dask.highlevelgraph import HighLevelGraph

        graph = HighLevelGraph.merge(*[t.__dask_graph__() for t in tasks])
        self.annotations = {name: layer.annotations for name, layer in graph.layers.items()}
        self.layer_of = {key: name for name, layer in graph.layers.items() for key in layer.keys()}
        self.tasks = graph.to_dict()
        self.dependencies = graph.get_all_dependencies()

    def take(self, tasks: list) -> list:
        """``tasks`` as delayed objects sharing one graph of exactly the tasks they need."""
        from dask.delayed import Delayed
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

        needed, stack = set(), [t.key for t in tasks]
        while stack:
            key = stack.pop()
            if key not in needed:
                needed.add(key)
                stack.extend(self.dependencies.get(key, ()))
        layers: dict = {}
        for key in needed:
            layers.setdefault(self.layer_of[key], {})[key] = self.tasks[key]
        depends = {name: {self.layer_of[d] for key in keys for d in self.dependencies.get(key, ())} - {name}
                   for name, keys in layers.items()}
        graph = HighLevelGraph({name: MaterializedLayer(keys, annotations=self.annotations[name])
                                for name, keys in layers.items()}, depends)
        return [Delayed(t.key, graph, layer=self.layer_of[t.key]) for t in tasks]


def killed_partitions(collection, session: Session | None) -> dict[int, Killed]:
    """Partitions of a persisted ``collection`` whose tasks kept killing their workers, by partition index.

    A partition whose task raised anything else is not listed: that
    exception surfaces when the partition is used. In-process (no client)
    there are no workers to kill, and the result is empty.
    """
    client = session.client if session is not None else None
    if client is None:
        return {}
    from distributed import KilledWorker, futures_of

    killed = {}
    for future in futures_of(collection):
        if future.status != "error":
            continue
        error = future.exception()
        if isinstance(error, KilledWorker) and isinstance(future.key, tuple):
            killed[int(future.key[-1])] = _killed(error, client)
    return killed


def release(collection, session: Session | None) -> None:
    """Drop a persisted ``collection`` from the workers' memory, failures included, so it can be rebuilt."""
    client = session.client if session is not None else None
    if client is not None:
        from distributed import futures_of

        client.cancel(futures_of(collection))


def persist(collection, session: Session | None, progress: bool = True, label: str = "cells"):
    """Compute ``collection`` and keep its partitions in memory (on the workers), with a progress bar.

    Dataset-wide reductions read the persisted cells several times; this is
    what keeps them from reading the input again. On a cluster the workers
    spill to disk under memory pressure, and partitions lost with a worker
    are recomputed from their inputs.
    """
    import dask

    client = session.client if session is not None else None
    if client is None:
        with dask.config.set(scheduler="synchronous"), _counting(label if progress else None):
            (out,) = dask.persist(collection, optimize_graph=False)
        return out
    from distributed import futures_of, wait

    out = client.persist(collection, optimize_graph=False, retries=session.retries or None)
    if progress:
        _follow(futures_of(out), label, "partitions")
    wait(out)
    return out


@contextmanager
def task_stream(session: Session) -> Iterator[object | None]:
    """Record the scheduler's task stream during the block (``None`` in-process: there is no scheduler)."""
    if session.client is None:
        yield None
        return
    from distributed import get_task_stream

    with get_task_stream(session.client) as stream:
        yield stream


def task_stream_steps(records: list[dict], steps: dict[str, str], names: dict[str, str] | None = None,
                      window: tuple[float, float] | None = None) -> dict:
    """Seconds of compute per step, task counts, and the workers each step ran on, from the task stream.

    ``steps`` maps a task's function name (:func:`dask.utils.key_split` of
    its key) to the step it belongs to; other tasks count under ``other``.
    ``names`` maps worker addresses to names. Tasks that ran twice (a worker
    died, a retry) count twice: this is the time the cluster spent.
    ``first`` gives, per step and worker, the seconds of the worker's first
    task of the step and the median of its later ones (``null`` with one
    task): a first task much longer than the rest paid a start-up cost
    (compiling, loading a model).

    With ``window`` (the run's start and end, in the stream's clock:
    ``time.time()``), ``idle`` gives per worker the seconds of the window in
    which it computed nothing: before its first task, between tasks, and
    after its last (tasks that overlap, as a compiling task that left the
    thread pool, count once); a worker of ``names`` that computed nothing
    is idle for the whole window, before its first task. Idle seconds are what a second worker cannot
    win back: the start, the waits at the dataset-wide barrier, the end.
    """
    from dask.utils import key_split

    names = names or {}
    seconds: Counter = Counter()
    tasks: Counter = Counter()
    workers: dict[str, Counter] = {}
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for rec in records:
        step = steps.get(key_split(rec["key"]), "other")
        worker = str(names.get(rec.get("worker"), rec.get("worker")))
        computed = [(ss["start"], ss["stop"] - ss["start"]) for ss in rec.get("startstops", ())
                    if ss.get("action") == "compute"]
        seconds[step] += sum(d for _, d in computed)
        runs.setdefault((step, worker), []).extend(computed)
        tasks[step] += 1
        workers.setdefault(step, Counter())[worker] += 1
    first: dict[str, dict[str, list]] = {}
    for (step, worker), timed in sorted(runs.items()):
        if not timed:
            continue
        durations = [d for _, d in sorted(timed)]
        rest = round(statistics.median(durations[1:]), 3) if len(durations) > 1 else None
        first.setdefault(step, {})[worker] = [round(durations[0], 3), rest]
    out = {"seconds": {k: round(v, 3) for k, v in sorted(seconds.items())}, "tasks": dict(sorted(tasks.items())),
           "workers": {k: dict(sorted(v.items())) for k, v in sorted(workers.items())}, "first": first}
    if window is not None:
        spans: dict[str, list[tuple[float, float]]] = {}
        for (_, worker), timed in runs.items():
            spans.setdefault(worker, []).extend((s, s + d) for s, d in timed)
        for worker in names.values():  # a worker that computed nothing was idle all along
            spans.setdefault(str(worker), [])
        out["idle"] = {worker: _idle(sorted(timed), *window) for worker, timed in sorted(spans.items())}
    return out


def _idle(spans: list[tuple[float, float]], start: float, end: float) -> dict[str, float]:
    """Seconds of ``[start, end]`` outside the (sorted) compute spans: before the first, between, after the last."""
    first = min(max(spans[0][0], start), end) if spans else end
    covered_to = first
    between = 0.0
    for lo, hi in spans:
        lo = min(max(lo, start), end)
        if lo > covered_to:
            between += lo - covered_to
        covered_to = max(covered_to, min(hi, end))
    before = first - start
    after = end - covered_to
    return {"before_first": round(before, 3), "between": round(between, 3), "after_last": round(after, 3),
            "total": round(before + between + after, 3)}


def worker_memory(session: Session, cfg: ClusterConfig | None = None) -> tuple[int | None, str]:
    """The memory the smallest worker may use, in bytes, and what that number is (for messages).

    The smallest memory limit among the connected workers; with none
    connected yet (SLURM jobs still queued) the configured memory of a SLURM
    job per worker process; in-process, this machine's memory. ``None``
    when unknown (workers started without a memory limit).
    """
    if session.client is None:
        try:
            import psutil
        except ImportError:
            return None, ""
        return int(psutil.virtual_memory().total), "this machine's memory"
    workers = session.client.scheduler_info(n_workers=-1)["workers"].values()
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    limits = [m for m in limits if m > 0]
    if limits:
        return min(limits), "worker memory"
    if cfg is not None and cfg.slurm is not None:
        from dask.utils import parse_bytes

        jobs = [cfg.slurm] + ([cfg.slurm.gpu] if cfg.slurm.gpu is not None else [])
        return min(parse_bytes(j.memory) // j.processes for j in jobs), "worker memory"
    return None, ""


def worker_names(client) -> dict[str, str]:
    """Worker address to worker name, for the workers connected now."""
    return {addr: str(w["name"]) for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()}
