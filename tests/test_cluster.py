"""Distributed execution: resource routing, a heterogeneous local cluster, a worker killed mid-run."""

import logging
import json
import os
import re
import signal
import threading
import time

import pandas as pd
import pytest
from dask.base import collections_to_expr
from dask.utils import key_split

import scip
from scip import _numbacache
from scip.engine import cluster, graph
from scip.engine.cluster import CPU, GPU, Routing, routing_for
from scip.config import ClusterConfig, ConfigError, load_config
from scip.datasets import write_example
from scip.run import prepare

from conftest import require

FIELDS_PATTERN = r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff"


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    paths = write_example(tmp_path_factory.mktemp("data"), n_events=4, n_fields=12, seed=5)
    return paths["fields"]


def fields_config(folder, out, **cluster_cfg) -> dict:
    return {
        "input": {"path": str(folder), "pattern": FIELDS_PATTERN, "channels": ["DNA", "cyto", "marker"],
                  "images_per_partition": 1},
        "segment": {"method": "watershed", "channel": "cyto"},
        "masks": [{"name": "nucleus", "channel": "DNA"}],
        "filters": [{"measure": "signal", "channel": "cyto", "min": "otsu"}],
        "normalize": {"lower": 0.01, "upper": 0.99},
        "output": {"path": str(out)},
        "cluster": cluster_cfg or {"scheduler": "synchronous"},
    }


def sorted_table(result) -> pd.DataFrame:
    return result.read().sort_values(["meta_image_id", "meta_label"]).reset_index(drop=True)


def test_routing_follows_what_workers_offer():
    both = routing_for([{CPU: 1}, {GPU: 1}])
    assert both.segment == {GPU: 1} and both.cpu == {CPU: 1}
    # No GPU worker: segmentation goes to the CPU workers instead of waiting forever.
    cpu_only = routing_for([{CPU: 2}, {CPU: 2}])
    assert cpu_only.segment == {CPU: 1} and cpu_only.cpu == {CPU: 1}
    assert "no worker has the GPU resource" in cpu_only.note
    gpu_only = routing_for([{GPU: 1}])
    assert gpu_only.segment == {GPU: 1} and gpu_only.cpu is None
    assert routing_for([{}, {}]) == Routing(None, None, routing_for([{}]).note)


def test_every_task_carries_its_steps_resources(fields):
    """The annotations are on the graph as submitted (unoptimized, so Dask's fusing cannot drop them)."""
    p = prepare(fields_config(fields, "/tmp/unused"))
    routing = Routing({GPU: 1}, {CPU: 1})
    cells = graph.build_cells(p, routing=routing)
    tasks = graph.build_writes(p, "/tmp/unused", cells, bounds=[(0.0, float("inf"))], ranges={(): ((0.0, 1.0),) * 3},
                               routing=routing)
    expr = collections_to_expr(tasks, optimize_graph=False)
    resources = expr.__dask_annotations__()["resources"]
    steps: dict[str, list] = {}
    for key in expr.__dask_graph__():
        steps.setdefault(graph.STEPS.get(key_split(key), "other"), []).append(resources.get(key))
    assert steps["segment"] and all(r == {GPU: 1} for r in steps["segment"])
    for step in ("cells", "features", "export"):
        assert steps[step] and all(r == {CPU: 1} for r in steps[step]), step
    assert all(r is None for r in steps["load"])
    # One task per partition and kind of worker: reading with segmenting; masks and filter measures with the
    # cells; the filters with the features.
    n = len(graph.partitions(p))
    assert len(steps["segment"]) == len(steps["cells"]) == len(steps["features"]) == len(steps["export"]) == n


def test_each_write_depends_on_its_partitions_features_only(fields):
    """A write with a second input (the column list as a task of its own, which Dask sizes above a partition's
    features) is placed where that input is, and its features are sent after it: one input keeps it local."""
    from dask.core import get_dependencies

    p = prepare(fields_config(fields, "/tmp/unused"))
    cells = graph.build_cells(p)
    tasks = graph.build_writes(p, "/tmp/unused", cells, bounds=[(0.0, float("inf"))], ranges={(): ((0.0, 1.0),) * 3})
    dsk = dict(collections_to_expr(tasks, optimize_graph=False).__dask_graph__())
    writes = [k for k in dsk if graph.STEPS.get(key_split(k)) == "export"]
    assert len(writes) == len(graph.partitions(p)) > 1
    for key in writes:
        deps = get_dependencies(dsk, key)
        assert len(deps) == 1 and graph.STEPS.get(key_split(next(iter(deps)))) == "features", (key, deps)


def test_gpu_worker_runs_every_segmentation_and_no_texture(fields, tmp_path):
    """Acceptance 1: one GPU-resource worker and one CPU worker on a CPU machine; the task stream says where."""
    from distributed import get_task_stream

    reference = scip.run(fields_config(fields, tmp_path / "sync"), progress=False)
    cfg = ClusterConfig(workers=1, gpu_workers=1, dashboard_address=":0")
    with cluster.connect(cfg) as session:
        client = session.client
        names = cluster.worker_names(client)
        resources = {a: w["resources"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
        assert sorted(map(str, resources.values())) == sorted([str({CPU: 1}), str({GPU: 1})])
        with get_task_stream(client) as stream:
            result = scip.run(fields_config(fields, tmp_path / "dist"), client=client, progress=False)
    where: dict[str, set] = {}
    for rec in stream.data:
        where.setdefault(graph.STEPS.get(key_split(rec["key"]), "other"), set()).add(rec["worker"])
    gpu = {a for a, r in resources.items() if r.get(GPU)}
    assert where["segment"] == gpu
    for step in ("features", "cells", "export"):
        assert where[step] and not where[step] & gpu, step
    pd.testing.assert_frame_equal(sorted_table(reference), sorted_table(result))
    summary = json.loads((result.output / "run.json").read_text())
    ts = summary["timings_s"]["task_stream"]
    assert ts["workers"]["segment"] == {names[a]: ts["tasks"]["segment"] for a in gpu}
    assert ts["tasks"]["segment"] == ts["tasks"]["features"] == len(graph.partitions(prepare(
        fields_config(fields, tmp_path / "x"))))
    assert {"segment", "cells", "features", "export"} <= set(ts["seconds"])
    assert all(v >= 0 for v in ts["seconds"].values())
    # each worker's first task of a step against its later ones, for the steps it ran
    assert set(ts["first"]["segment"]) == {names[a] for a in gpu}
    for step, per_worker in ts["first"].items():
        assert set(per_worker) == set(ts["workers"][step]), step
        for first, rest in per_worker.values():
            assert first >= 0 and (rest is None or rest >= 0)
    # each worker's idle seconds in the run: parts that add up, no more than the run's wall time
    assert set(ts["idle"]) == set(names.values())
    for idle in ts["idle"].values():
        parts = idle["before_first"] + idle["between"] + idle["after_last"]
        assert min(idle.values()) >= 0 and idle["total"] == pytest.approx(parts, abs=2e-3)
        assert idle["total"] <= summary["timings_s"]["wall"]


def test_without_gpu_workers_segmentation_runs_on_cpu_workers(fields, tmp_path, caplog):
    caplog.set_level("INFO", logger="scip")
    result = scip.run(fields_config(fields, tmp_path / "cpu", workers=1, dashboard_address=":0"), progress=False)
    summary = json.loads((result.output / "run.json").read_text())
    assert summary["cluster"]["routing"]["segment"] == {CPU: 1}
    assert "no worker has the GPU resource: segmentation runs on the CPU workers" in caplog.text
    assert summary["counts"]["cells"]["exported"] > 0


def test_a_worker_killed_mid_run_does_not_fail_it(fields, tmp_path):
    """Acceptance 3: SIGKILL one of two workers after the first partition is written; the table is complete."""
    reference = scip.run(fields_config(fields, tmp_path / "sync"), progress=False)
    cfg = ClusterConfig(workers=2, dashboard_address=":0")
    killed: list[int] = []
    out = tmp_path / "dist"

    with cluster.connect(cfg) as session:
        pids = session.client.run(os.getpid)

        def kill_when_a_part_is_written():
            deadline = time.time() + 120
            while time.time() < deadline:
                if list((out / "progress").glob("part-*.json")):
                    pid = next(iter(pids.values()))
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=kill_when_a_part_is_written)
        watcher.start()
        result = scip.run(fields_config(fields, out), client=session.client, progress=False)
        watcher.join()
        remaining = session.client.run(os.getpid)
    assert killed, "no partition was written before the run ended"
    assert killed[0] not in remaining.values()
    summary = json.loads((result.output / "run.json").read_text())
    assert summary["partitions"]["computed"] == summary["partitions"]["total"] == 12
    assert summary["counts"] == reference.summary["counts"]
    pd.testing.assert_frame_equal(sorted_table(reference), sorted_table(result))


def test_slurm_config_is_validated():
    with pytest.raises(ConfigError, match="scheduler .* and slurm are both set"):
        load_config({"input": {"path": "."}, "cluster": {"scheduler": "tcp://x:8786", "slurm": {}}})
    with pytest.raises(ConfigError, match="walltime"):
        load_config({"input": {"path": "."}, "cluster": {"slurm": {"walltime": "1 hour"}}})
    with pytest.raises(ConfigError, match="multiple of processes"):
        load_config({"input": {"path": "."}, "cluster": {"slurm": {"cores": 3, "processes": 2}}})
    cfg = load_config({"input": {"path": "."}, "cluster": {"slurm": {"queue": "cpu", "gpu": {"queue": "gpu"}}}})
    assert cfg.cluster.slurm.gpu.gres == "gpu:1" and cfg.cluster.slurm.gpu.jobs == 1


def test_slurm_job_scripts(tmp_path):
    """CPU and GPU jobs: their directives, the resources their workers declare, TLS (no SLURM needed)."""
    require("dask_jobqueue")
    cfg = load_config({"input": {"path": "."}, "cluster": {"slurm": {
        "queue": "cpu", "cores": 4, "processes": 2, "memory": "8GiB", "walltime": "02:00:00",
        "job_extra_directives": ["--qos=normal"], "gpu": {"queue": "gpu", "gres": "gpu:a100:1", "jobs": 2},
        "interface": "lo", "shared_temp_directory": str(tmp_path / "tls")}}})
    assert cfg.cluster.security == "auto"
    slurm, offered = cluster.slurm_cluster(cfg.cluster.slurm, dashboard_address=":0", security=cfg.cluster.security)
    try:
        cpu_script = slurm.job_script()
        assert "#SBATCH -p cpu" in cpu_script and "#SBATCH --qos=normal" in cpu_script
        assert "--resources CPU=2" in cpu_script and "-t 02:00:00" in cpu_script
        assert not slurm.worker_spec  # jobs are submitted only by start_jobs()
        gpu_specs = list(slurm.gpu_specs.values())
        assert len(gpu_specs) == 2
        job = gpu_specs[0]["cls"]("tls://127.0.0.1:1", name="x", **gpu_specs[0]["options"])
        gpu_script = job.job_script()
        assert "#SBATCH -p gpu" in gpu_script and "#SBATCH --gres=gpu:a100:1" in gpu_script
        assert "--resources GPU=1" in gpu_script
        # TLS by default, on the configured interface; no worker dashboards (one open port less each).
        assert slurm.scheduler_address.startswith("tls://127.0.0.1:")
        assert slurm.dashboard_link.startswith("http://127.0.0.1:")
        files = sorted((tmp_path / "tls").iterdir())
        assert len(files) == 3 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
        assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
        for script in (cpu_script, gpu_script):
            assert "--protocol tls://" in script and "--interface lo" in script and "--no-dashboard" in script
            for option, f in zip(("--tls-ca-file", "--tls-cert", "--tls-key"), ("ca_file", "cert", "key")):
                assert re.search(rf"{option} {re.escape(str(tmp_path / 'tls'))}/\.dask-jobqueue\.worker\.{f}\.",
                                 script), option
    finally:
        slurm.close()
    assert offered.count({GPU: 1}) == 2 and offered.count({CPU: 2}) == 2
    assert not list((tmp_path / "tls").iterdir())  # the credentials go with the cluster


def test_slurm_without_tls_says_what_it_exposes(tmp_path, caplog):
    require("dask_jobqueue")
    slurm_cfg = load_config({"input": {"path": "."}, "cluster": {"security": False, "slurm": {
        "interface": "lo", "shared_temp_directory": str(tmp_path / "tls")}}}).cluster.slurm
    caplog.set_level("WARNING", logger="scip")
    slurm, _ = cluster.slurm_cluster(slurm_cfg, dashboard_address=":0", security=False)
    try:
        assert slurm.scheduler_address.startswith("tcp://127.0.0.1:")
        assert "--tls" not in slurm.job_script()
    finally:
        slurm.close()
    assert "whoever connects can run code as you" in caplog.text
    assert not (tmp_path / "tls").exists()


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}


def _cluster_pids() -> set[int]:
    import psutil

    me = psutil.Process()
    return {me.pid} | {p.pid for p in me.children(recursive=True)}


def test_local_cluster_listens_on_loopback_only():
    """Scheduler, nannies, workers and dashboard: no socket of the run listens beyond this machine."""
    require("psutil")
    assert ClusterConfig().dashboard_address == "127.0.0.1:8787"
    assert cluster.loopback_dashboard(":8787") == "127.0.0.1:8787" == cluster.loopback_dashboard("8787")
    assert cluster.loopback_dashboard("0.0.0.0:8787") == "0.0.0.0:8787"  # asked for by name: as asked
    # A port alone (what Dask binds to every interface) and both kinds of local worker.
    with cluster.connect(ClusterConfig(workers=1, gpu_workers=1, dashboard_address=":0")) as session:
        sockets = _listening(_cluster_pids())
        link = session.client.dashboard_link
        summary = session.describe()
        numba_opt = set(session.client.run(lambda: os.environ.get("NUMBA_OPT")).values())
    port = int(re.search(r":(\d+)/", link).group(1))
    assert link.startswith("http://127.0.0.1:") and ("127.0.0.1", port) in sockets
    assert summary["scheduler"].startswith("tcp://127.0.0.1:")
    # scheduler + dashboard + (nanny + worker) x 2
    assert len(sockets) >= 6 and {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
    # both kinds of worker compile the feature kernels at scip's level, unless the user chose one
    assert numba_opt == {os.environ.get("NUMBA_OPT") or _numbacache.COMPILE_OPT}


def _tls_files(folder) -> dict:
    """A CA, certificate and key (PEM files), as a site would hand out."""
    from distributed.security import Security

    tmp = Security.temporary()
    folder.mkdir()
    for name, pem in (("ca.pem", tmp.tls_ca_file), ("cert.pem", tmp.tls_client_cert), ("key.pem", tmp.tls_client_key)):
        (folder / name).write_text(pem)
    return {"ca_file": str(folder / "ca.pem"), "cert": str(folder / "cert.pem"), "key": str(folder / "key.pem")}


def test_tls_local_cluster_and_an_existing_tls_scheduler(fields, tmp_path):
    """cluster.security with certificate files: a local TLS cluster on loopback, and scip connecting to it."""
    require("cryptography")
    from distributed import Client
    from distributed.comm.core import FatalCommClosedError
    from distributed.security import Security

    files = _tls_files(tmp_path / "certs")
    own = load_config({"input": {"path": "."}, "cluster": {"workers": 1, "dashboard_address": ":0",
                                                            "security": files}}).cluster
    with cluster.connect(own) as session:
        address = session.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert {ip for ip, _ in _listening(_cluster_pids())} == {"127.0.0.1"}
        # `scip run --scheduler tls://...` with the same files: connects and runs.
        cfg = fields_config(fields, tmp_path / "out", scheduler=address, security=files)
        cfg["input"]["images_per_partition"] = 12
        result = scip.run(cfg, progress=False)
        assert result.summary["cluster"]["kind"] == "scheduler"
        assert result.summary["cluster"]["scheduler"] == address
        assert result.summary["counts"]["cells"]["exported"] > 0
        # Nobody else gets in: not with credentials of another CA, not in plain TCP.
        with pytest.raises(FatalCommClosedError, match="TLS certificate does not match"):
            Client(address, security=Security.temporary(), timeout=10)
        with pytest.raises(OSError):  # CommClosedError: the scheduler hangs up
            Client(address.replace("tls://", "tcp://"), timeout=10)
    # security: true needs credentials from somewhere: Dask's config has none here.
    with pytest.raises(ConfigError, match="has no TLS credentials .*cluster.security: \\{ca_file, cert, key\\}"):
        with cluster.connect(ClusterConfig(scheduler=address, security=True)):
            pass


def test_security_config_is_checked(tmp_path):
    base = {"input": {"path": "."}}
    with pytest.raises(ConfigError, match="speaks TLS but security is false"):
        load_config({**base, "cluster": {"scheduler": "tls://host:8786", "security": False}})
    with pytest.raises(ConfigError, match="is not a tls:// address"):
        load_config({**base, "cluster": {"scheduler": "tcp://host:8786", "security": True}})
    with pytest.raises(ConfigError, match="file does not exist: .*nope.pem"):
        load_config({**base, "cluster": {"scheduler": "tls://host:8786", "security": {
            "ca_file": str(tmp_path / "nope.pem"), "cert": str(tmp_path / "nope.pem")}}})
    assert load_config({**base, "cluster": {"scheduler": "tls://host:8786"}}).cluster.security == "auto"


def test_shipped_slurm_example_is_valid():
    from pathlib import Path

    import yaml

    # The cluster section: the example's input (the demo data) need not exist in a fresh clone.
    raw = yaml.safe_load((Path(__file__).parents[1] / "cluster" / "slurm.yml").read_text())
    slurm = ClusterConfig.model_validate(raw["cluster"]).slurm
    assert slurm.adapt and slurm.gpu is not None and slurm.gpu.gres == "gpu:1"
    options = cluster._job_options(slurm.gpu, {GPU: 1}, "scip-gpu", defaults=slurm)
    # unset GPU job keys come from the CPU job
    assert options["log_directory"] == slurm.log_directory and options["queue"] == "gpu"


def test_gpu_machine_path_builds_cuda_workers_beside_cpu_workers(monkeypatch, fields, tmp_path):
    """The dask-cuda branch, on a CPU machine: a stand-in LocalCUDACluster records how it is called.

    What this cannot show (no GPU here): that dask-cuda pins each worker to its device; that is
    dask-cuda's job, exercised only on a GPU machine.
    """
    import sys
    import types

    from distributed import LocalCluster

    calls = []

    class FakeLocalCUDACluster(LocalCluster):
        def __init__(self, CUDA_VISIBLE_DEVICES, threads_per_worker, resources, **kwargs):
            calls.append({"devices": CUDA_VISIBLE_DEVICES, "resources": resources})
            super().__init__(n_workers=len(CUDA_VISIBLE_DEVICES), threads_per_worker=threads_per_worker,
                             resources=resources, processes=True, **kwargs)

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=FakeLocalCUDACluster))
    monkeypatch.setattr(cluster, "gpu_count", lambda: 2)
    with pytest.raises(ValueError, match="gpu_workers: 3 asked for, but this machine has 2 GPU"):
        with cluster.connect(ClusterConfig(workers=1, gpu_workers=3, dashboard_address=":0")):
            pass
    # With TLS: the CPU workers scip adds beside dask-cuda's must speak it too.
    with cluster.connect(ClusterConfig(workers=1, dashboard_address=":0", security=True)) as session:
        assert session.client.scheduler.address.startswith("tls://127.0.0.1:")
        offered = sorted(str(w["resources"]) for w in session.client.scheduler_info(n_workers=-1)["workers"].values())
        result = scip.run(fields_config(fields, tmp_path / "out"), client=session.client, progress=False)
    assert calls == [{"devices": [0, 1], "resources": {GPU: 1}}]  # one worker per GPU by default
    assert offered == sorted([str({GPU: 1})] * 2 + [str({CPU: 1})])
    assert result.summary["cluster"]["routing"]["segment"] == {GPU: 1}


def _tile(g):
    return [{"a": g}] * 3


def _total(part):
    return [sum(r["a"] for r in part)]


def test_completed_keeps_a_bounded_window_of_tasks_on_the_scheduler():
    """A slide's thousands of tiles are given to the scheduler a few at a time, each batch with only its graph."""
    import dask.bag as db
    from distributed import Client, LocalCluster

    from scip.engine.tasks import annotate, task

    parts = [task(_tile, f"tile_cells-0-{g}", {"CPU": 1}, g) for g in range(40)]
    with annotate({"CPU": 1}):
        bag = db.from_delayed(parts).map(dict)
    tasks = bag.map_partitions(_total).to_delayed(optimize_graph=False)

    # A batch's graph holds exactly its partitions' chains, with the layers' resource annotations.
    piece = cluster._Pieces(tasks).take(tasks[:3])
    graph_of = piece[0].__dask_graph__()
    assert len(graph_of) == 3 * 4  # tile, from_delayed, map, map_partitions
    assert [layer.annotations for layer in graph_of.layers.values()].count({"resources": {"CPU": 1}}) >= 3

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      resources={"CPU": 1}) as lc, Client(lc) as client:
        session = cluster.Session(client=client)
        most = []
        got = {}
        for position, result in cluster.completed(tasks, session, progress=False, window=4):
            got[position] = result
            most.append(len(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))))
        assert got == {g: [3 * g] for g in range(40)}
        # 4 partitions of 4 tasks each at most (the ones yielded are released before the next batch).
        assert max(most) <= 4 * 4


def test_a_worker_paused_for_long_is_named_in_a_warning_and_its_pause_is_recorded(caplog):
    from scip.engine.cluster import PauseWatch

    watch = PauseWatch(client=None, after=30, repeat=300)

    def worker(status, memory=900 * 2**20):
        return {"name": "w0", "status": status, "memory_limit": 2**30, "metrics": {"memory": memory}}

    with caplog.at_level(logging.INFO, logger="scip"):
        watch.check([worker("paused")], now=0.0)
        watch.check([worker("paused")], now=10.0)
        assert not caplog.records  # a short pause is Dask doing its job: no word
        watch.check([worker("paused")], now=31.0)
        (warning,) = caplog.records
        assert warning.levelno == logging.WARNING
        assert "worker w0 has been paused for 31 s" in warning.message
        assert "900.00 MiB of its 1.00 GiB" in warning.message and "cluster.memory_limit" in warning.message
        watch.check([worker("paused")], now=100.0)
        assert len(caplog.records) == 1  # not again before `repeat`
        assert watch.paused_seconds()["w0"] > 0
        watch.check([worker("running")], now=131.0)
        assert "runs tasks again after 131 s" in caplog.records[-1].message
    assert watch.paused_seconds() == {"w0": 131.0}


def test_task_stream_steps_gives_each_workers_first_task_against_its_later_ones():
    def rec(key, worker, start, seconds):
        return {"key": key, "worker": worker, "startstops": [{"action": "compute", "start": start,
                                                                "stop": start + seconds}]}

    records = [rec("features-1", "tcp://a", 5.0, 0.5), rec("features-0", "tcp://a", 1.0, 9.0),
               rec("features-2", "tcp://a", 7.0, 0.7), rec("features-3", "tcp://b", 2.0, 0.4),
               rec("other-0", "tcp://b", 0.0, 1.0)]
    ts = cluster.task_stream_steps(records, {"features": "features"}, {"tcp://a": "0", "tcp://b": "1"})
    assert ts["first"] == {"features": {"0": [9.0, 0.6], "1": [0.4, None]}, "other": {"1": [1.0, None]}}
    assert ts["seconds"]["features"] == pytest.approx(10.6) and ts["tasks"] == {"features": 4, "other": 1}
    assert "idle" not in ts  # without the run's window


def test_task_stream_steps_counts_each_workers_idle_seconds_in_the_run():
    def rec(key, worker, start, stop):
        return {"key": key, "worker": worker, "startstops": [{"action": "transfer", "start": start - 5, "stop": start},
                                                             {"action": "compute", "start": start, "stop": stop}]}

    records = [rec("segment-0", "tcp://a", 12.0, 14.0),
               rec("other-0", "tcp://a", 11.0, 13.0),  # overlaps segment-0 (a task that left the pool): once
               rec("segment-1", "tcp://a", 15.5, 16.0), rec("features-0", "tcp://a", 16.0, 17.0),
               rec("segment-2", "tcp://b", 10.0, 19.5), rec("features-1", "tcp://b", 19.0, 21.0)]
    names = {"tcp://a": "a", "tcp://b": "b", "tcp://c": "c"}
    ts = cluster.task_stream_steps(records, {"segment": "segment", "features": "features"}, names, window=(10.0, 20.0))
    # a: idle 10-11, 14-15.5, 17-20; transfers are not compute. b: busy to the window's end. c: no task at all.
    assert ts["idle"] == {"a": {"before_first": 1.0, "between": 1.5, "after_last": 3.0, "total": 5.5},
                          "b": {"before_first": 0.0, "between": 0.0, "after_last": 0.0, "total": 0.0},
                          "c": {"before_first": 10.0, "between": 0.0, "after_last": 0.0, "total": 10.0}}
