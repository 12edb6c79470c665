"""Throughput of ``scip run`` with 1 and 2 local workers, per-task costs, and scheduler overhead.

On the built-in example data (``scip example-data``, by default 2,000
imaging-flow-cytometry events and 16 fields of view) with the demo's configs, each run on a fresh
local cluster of 1 worker and then 2 workers (1 thread each). Measured per run:

- wall time of ``scip.run`` after the cluster is up, and cells found per second;
- from the scheduler's task stream: tasks per step and their mean duration, so
  the cost of one partition is known;
- separately, the scheduler's overhead per task: ``N`` tasks that do nothing,
  submitted at once to the 2-worker cluster, wall time / N.

From these the script extrapolates to a cluster (written to the results file):
the tasks per second a scheduler must dispatch to keep ``W`` workers busy, and
the smallest partition (images per partition) for which the scheduler's time
stays under 5 % of the workers' time.

Usage::

    .venv/bin/python benchmarks/bench_scaling.py [--repeat 2] [--out benchmarks/results]

Each thread pool is pinned to one thread, so a worker uses one core.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scip  # noqa: E402
from scip.engine import cluster  # noqa: E402
from scip.config import ClusterConfig, load_config  # noqa: E402
from scip.datasets import write_example  # noqa: E402

CONFIGS = {"ifc": ROOT / "examples" / "config.yml", "fields": ROOT / "examples" / "fields.yml"}
#: 64 workers is the extrapolation the docs quote; 5 % the overhead budget.
TARGET_WORKERS = (16, 64, 256)
OVERHEAD_BUDGET = 0.05


class RssSampler:
    """Peak resident memory while a run goes: of this process and all its descendants together (the tree), and of
    each worker process on its own; sampled in a thread every ``interval`` seconds (a sample costs a few
    milliseconds in this process, which also runs the scheduler: not more often)."""

    def __init__(self, worker_pids: list[int], interval: float = 0.5):
        import psutil

        self.root, self.worker_pids, self.interval = psutil.Process(), worker_pids, interval
        self.tree_peak = 0
        self.worker_peak = dict.fromkeys(worker_pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if proc.pid in self.worker_peak:
                    self.worker_peak[proc.pid] = max(self.worker_peak[proc.pid], rss)
            self.tree_peak = max(self.tree_peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join()
        return False


def run_once(config_path: Path, data: Path, out: Path, workers: int, images_per_partition: int | None = None) -> dict:
    # The demo's config names examples/data/..., which a clean clone does not have: its paths point into
    # the data written here before the config is validated.
    raw = yaml.safe_load(config_path.read_text())
    raw["input"]["path"] = str(data / Path(raw["input"]["path"]).name)
    if images_per_partition is not None:
        raw["input"]["images_per_partition"] = images_per_partition
    if raw.get("evaluate"):
        raw["evaluate"]["labels"] = str(data / Path(raw["evaluate"]["labels"]).relative_to("data"))
    raw = load_config(raw, base_dir=config_path.parent,
                      overrides={"output": {"path": str(out), "overwrite": True}}).model_dump()
    with cluster.connect(ClusterConfig(workers=workers, threads=1, dashboard_address=":0")) as session:
        pids = list(session.client.run(os.getpid).values())
        with RssSampler(pids) as rss:
            start = time.perf_counter()
            result = scip.run(raw, client=session.client, progress=False)
            wall = time.perf_counter() - start
    summary = result.summary
    stream = summary["timings_s"]["task_stream"]
    return {"workers": workers, "wall_s": wall, "cells": summary["counts"]["cells"]["found"],
            "images": summary["counts"]["images"]["total"], "partitions": summary["partitions"]["total"],
            "task_seconds": stream["seconds"], "tasks": stream["tasks"], "idle": stream.get("idle", {}),
            # Memory: the whole tree (driver with the scheduler, nannies, workers) and the largest worker.
            "tree_rss_peak_mib": rss.tree_peak / 2**20,
            "worker_rss_peak_mib": max(rss.worker_peak.values()) / 2**20 if rss.worker_peak else float("nan")}


def take_turns(variants: list, repeat: int, run, swap: bool = False) -> dict:
    """``run(v)`` for each of ``variants`` in turn, ``repeat`` rounds, so that load from other jobs falls on every
    variant alike; with ``swap``, every other round goes through them backwards. Each variant's results, in order."""
    runs: dict = {v: [] for v in variants}
    for i in range(repeat):
        for v in (variants[::-1] if swap and i % 2 else variants):
            runs[v].append(run(v))
    return runs


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the lower one of an even count)."""
    return sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2]


def scheduler_overhead(n: int = 4000) -> float:
    """Seconds of scheduler time per task: ``n`` no-op tasks on 2 workers, wall / n (median of 3)."""
    from distributed import wait

    times = []
    with cluster.connect(ClusterConfig(workers=2, threads=1, dashboard_address=":0")) as session:
        client = session.client
        for attempt in range(3):
            start = time.perf_counter()
            futures = client.map(lambda x: x, range(n), key=[f"noop-{attempt}-{i}" for i in range(n)])
            wait(futures)
            times.append((time.perf_counter() - start) / n)
            del futures
    return statistics.median(times)


def ceiling(data: Path, tmp: Path, repeat: int) -> dict:
    """What this machine gives two copies of the 1-worker run: each copy's wall alone and with another at once.

    Two independent ``scip run``s, each with its own 1-worker cluster and scheduler, share nothing but the
    machine (cores, caches, memory bandwidth), so ``2 x alone / together`` is the throughput two workers could
    reach with no cost of working together; the 1-vs-2-worker ratio is below it by what the shared run costs.
    Alone and together take turns, ``repeat`` times; each wall is measured inside its process, as in ``run_once``.
    """
    import subprocess

    def walls(copies: int, turn: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, __file__, "--one-run", str(data),
                                   str(tmp / f"ceiling-{turn}-{copies}-{k}")], stdout=subprocess.PIPE, text=True)
                 for k in range(copies)]
        out = [p.communicate()[0] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"a ceiling run failed: {out}")
        return [json.loads(o.strip().splitlines()[-1])["wall_s"] for o in out]

    alone, together = [], []
    for turn in range(repeat):
        alone += walls(1, turn)
        together += walls(2, turn)
    a, t = statistics.median(alone), statistics.median(together)
    return {"alone_s": alone, "together_s": together, "alone_median_s": a, "together_median_s": t, "ceiling": 2 * a / t}


def extrapolate(run: dict, overhead: float) -> dict:
    """What a cluster of W workers needs from the scheduler, from one run's per-task costs."""
    step_tasks = {k: v for k, v in run["tasks"].items() if k != "other"}
    tasks_per_partition = sum(step_tasks.values()) / run["partitions"]
    busy = sum(v for k, v in run["task_seconds"].items() if k != "other")
    per_image = busy / run["images"]
    images_per_partition = run["images"] / run["partitions"]
    partition_seconds = per_image * images_per_partition
    out = {"tasks_per_partition": tasks_per_partition, "task_seconds_per_image": per_image,
           "partition_seconds": partition_seconds, "images_per_partition": images_per_partition, "workers": {}}
    for w in TARGET_WORKERS:
        # W workers finish W partitions every partition_seconds: that many tasks to dispatch.
        rate = w * tasks_per_partition / partition_seconds
        min_images = OVERHEAD_BUDGET ** -1 * w * tasks_per_partition * overhead / per_image
        out["workers"][w] = {"tasks_per_s_needed": rate, "scheduler_busy_fraction": rate * overhead,
                             "min_images_per_partition_for_5pct": min_images}
    return out


def check_model(path: Path, data: Path, tmp: Path, workers: tuple[int, ...], repeat: int, overhead: float,
                cores: int) -> dict:
    """Measured wall time at each worker count against what the overhead model predicts from the 1-worker run.

    The model: a run is a serial part ``S`` (planning, the filters' barrier, the report: what the 1-worker run
    spends outside its tasks) plus its task seconds ``C`` spread over ``min(W, cores)`` workers, unless the
    scheduler, dispatching ``N`` tasks at ``overhead`` seconds each, is slower:
    ``wall(W) = S + max(C / min(W, cores), N * overhead)``.
    """
    runs = take_turns(list(workers), repeat, lambda w: run_once(path, data, tmp / f"model-{w}", w))
    median = {w: median_run(r) for w, r in runs.items()}
    one = median[min(workers)]
    busy = sum(v for k, v in one["task_seconds"].items() if k != "other")
    tasks = sum(v for k, v in one["tasks"].items() if k != "other")
    serial = one["wall_s"] - busy

    def predict(w: int, scale: float = 1.0, cores_: int | None = None) -> float:
        c = cores if cores_ is None else cores_
        return serial + max(busy * scale / min(w, c), tasks * scale * overhead)

    out = {"serial_s": serial, "task_seconds": busy, "tasks": tasks, "overhead_s_per_task": overhead,
           "cores": cores, "images_per_partition": one["images"] / one["partitions"], "measured": {}, "at_scale": {}}
    for w in workers:
        out["measured"][w] = {"wall_s": median[w]["wall_s"], "all_walls_s": [round(r["wall_s"], 3) for r in runs[w]],
                              "predicted_s": predict(w), "worker_rss_peak_mib": median[w]["worker_rss_peak_mib"],
                              "tree_rss_peak_mib": median[w]["tree_rss_peak_mib"]}
    # A cluster where every worker has its own core: the same run, and one 200 times larger.
    for scale in (1, 200):
        for w in (64, 512):
            bound = "scheduler" if tasks * scale * overhead > busy * scale / w else "workers"
            out["at_scale"][f"{scale}x-{w}"] = {"events": scale * one["images"], "workers": w,
                                               "predicted_s": predict(w, scale, cores_=w), "bound": bound}
    return out


def partition_sizes(data: Path, tmp: Path, sizes: list[int], repeat: int) -> dict:
    """The IFC run at each ``input.images_per_partition`` in ``sizes``, 1 and 2 workers, sizes and workers in turn."""
    def one_size(n: int) -> dict[int, dict]:  # 1 worker, then 2 right after
        out = {}
        for w in (1, 2):
            out[w] = run_once(CONFIGS["ifc"], data, tmp / f"size-{n}-{w}", w, images_per_partition=n)
            print(f"images_per_partition {n}, {w} worker(s): {out[w]['wall_s']:.2f} s", flush=True)
        return out

    turns = take_turns(sizes, repeat, one_size, swap=True)
    runs = {n: {w: [t[w] for t in turns[n]] for w in (1, 2)} for n in sizes}
    out = {}
    for n in sizes:
        walls = {w: [r["wall_s"] for r in runs[n][w]] for w in (1, 2)}
        med = {w: statistics.median(walls[w]) for w in (1, 2)}
        out[n] = {"partitions": runs[n][1][0]["partitions"], "walls_s": walls, "median_s": med,
                  "ratio_of_medians": med[1] / med[2],
                  # each round's 1-worker run over the 2-worker run right after it
                  "pair_ratios": [a / b for a, b in zip(walls[1], walls[2])],
                  "worker_rss_peak_mib": {w: [r["worker_rss_peak_mib"] for r in runs[n][w]] for w in (1, 2)},
                  "export_task_s": {w: statistics.median(r["task_seconds"].get("export", 0.0) for r in runs[n][w])
                                    for w in (1, 2)}}
    return {"sizes": out, "repeat": repeat}


def partitions_markdown(r: dict) -> str:
    lines = ["# Scaling: partition size", "",
             f"`python benchmarks/bench_scaling.py --events {r['events']} --repeat {r['repeat']} --partition-sizes "
             f"{' '.join(str(n) for n in r['sizes'])}`: the IFC run (`examples/config.yml`) with each "
             "`input.images_per_partition`, 1 and 2 workers, sizes and worker counts in turn; wall time after the "
             f"cluster is up. Load average (1 min) {r['load_average_at_start']:.2f} at the start, "
             f"{r['load_average_at_end']:.2f} at the end.", "",
             "| images per partition | partitions | 1 worker (s) | 2 workers (s) | 2 vs 1 (medians) | 2 vs 1 per round | "
             "export task s (1 / 2 workers) | per worker RSS (MiB, 1 / 2 workers) |",
             "|---:|---:|---:|---:|---:|---|---:|---|"]
    for n, s in r["sizes"].items():  # keys as in the JSON file: strings
        med, exp, rss = s["median_s"], s["export_task_s"], s["worker_rss_peak_mib"]
        lines.append(f"| {n} | {s['partitions']} | {med['1']:.2f} | {med['2']:.2f} | {s['ratio_of_medians']:.2f}× | "
                     f"{', '.join(f'{x:.2f}' for x in s['pair_ratios'])} | {exp['1']:.2f} / {exp['2']:.2f} | "
                     f"{max(rss['1']):.0f} / {max(rss['2']):.0f} |")
    lines += ["", "Runs (s): " + "; ".join(
        f"{n}: 1 worker {', '.join(f'{x:.2f}' for x in s['walls_s']['1'])}, "
        f"2 workers {', '.join(f'{x:.2f}' for x in s['walls_s']['2'])}" for n, s in r["sizes"].items())]
    return "\n".join(lines) + "\n"


def _on_ifc_data(args, measure) -> dict:
    """``measure(data, tmp)`` on ``args.events`` IFC events written to a temporary folder, with the load around it."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_example(data, n_events=args.events, n_fields=1, seed=0)
        load = os.getloadavg()[0]
        result = measure(data, Path(tmp))
    result.update(events=args.events, load_average_at_start=load, load_average_at_end=os.getloadavg()[0])
    return result


def _write(out: Path, name: str, result: dict, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
    (out / f"{name}.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per worker count, 1 and 2 workers taking turns (the median run is kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--events", type=int, default=2000, help="imaging-flow-cytometry events (default 2000)")
    parser.add_argument("--fields", type=int, default=16, help="fields of view (default 16)")
    parser.add_argument("--check-model", type=int, nargs="+", metavar="W",
                        help="instead: the IFC run at these worker counts (e.g. 1 2 4) against the overhead model")
    parser.add_argument("--ceiling", action="store_true",
                        help="instead: two 1-worker IFC runs at once against one alone (what the machine allows)")
    parser.add_argument("--partition-sizes", type=int, nargs="+", metavar="N",
                        help="compare these input.images_per_partition values on the IFC run (scaling_partitions.md)")
    parser.add_argument("--one-run", nargs=2, type=Path, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:  # a child of --ceiling: one 1-worker IFC run, its result as the last line of stdout
        print(json.dumps(run_once(CONFIGS["ifc"], args.one_run[0], args.one_run[1], 1), default=float))
        return
    if args.ceiling:
        result = _on_ifc_data(args, lambda data, tmp: ceiling(data, tmp, args.repeat))
        result["repeat"] = args.repeat
        text = (f"`python benchmarks/bench_scaling.py --events {args.events} --repeat {args.repeat} --ceiling`: "
                f"one 1-worker IFC run alone {result['alone_median_s']:.2f} s (runs "
                f"{', '.join(f'{w:.2f}' for w in result['alone_s'])}), two at once "
                f"{result['together_median_s']:.2f} s each (runs {', '.join(f'{w:.2f}' for w in result['together_s'])}): "
                f"ceiling **{result['ceiling']:.2f}×** (2 × alone / together, medians). Load average "
                f"{result['load_average_at_start']:.2f} → {result['load_average_at_end']:.2f}.\n")
        _write(args.out, "scaling_ceiling", result, text)
        return
    if args.partition_sizes:
        result = _on_ifc_data(args, lambda data, tmp: partition_sizes(data, tmp, args.partition_sizes, args.repeat))
        result = json.loads(json.dumps(result, default=float))  # the JSON file's keys (strings) in the markdown too
        _write(args.out, "scaling_partitions", result, partitions_markdown(result))
        return
    if args.check_model:
        result = _on_ifc_data(args, lambda data, tmp: check_model(
            CONFIGS["ifc"], data, tmp, tuple(args.check_model), args.repeat, scheduler_overhead(), os.cpu_count() or 1))
        _write(args.out, "scaling_model", result, model_markdown(result))
        return

    # Another busy process on the machine changes the 1-vs-2 ratio most: record the load.
    results: dict = {"machine": {"python": platform.python_version(), "cores": os.cpu_count(),
                                 "processor": platform.processor() or platform.machine(),
                                 "load_average_at_start": os.getloadavg()[0]}, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_example(data, n_events=args.events, n_fields=args.fields, seed=0)
        results["data"] = {"events": args.events, "fields": args.fields, "repeat": args.repeat}
        for name, path in CONFIGS.items():
            results["runs"][name] = {}
            # 1 and 2 workers take turns, so load from other jobs falls on both alike; the median run is kept.
            runs = take_turns([1, 2], args.repeat,
                              lambda w: run_once(path, data, Path(tmp) / f"out-{name}-{w}", w))
            for workers in (1, 2):
                median = median_run(runs[workers])
                median["cells_per_s"] = median["cells"] / median["wall_s"]
                median["all_walls_s"] = [round(r["wall_s"], 3) for r in runs[workers]]
                results["runs"][name][workers] = median
                print(f"{name}: {workers} worker(s): {median['cells']} cells in {median['wall_s']:.2f} s "
                      f"= {median['cells_per_s']:.0f} cells/s (runs: {median['all_walls_s']})", flush=True)
            one, two = results["runs"][name][1], results["runs"][name][2]
            results["runs"][name]["speedup_2_vs_1"] = one["wall_s"] / two["wall_s"]
            print(f"{name}: 2 workers vs 1: {results['runs'][name]['speedup_2_vs_1']:.2f}x", flush=True)
    overhead = scheduler_overhead()
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    results["scheduler_overhead_s_per_task"] = overhead
    print(f"scheduler overhead: {overhead * 1e3:.3f} ms per task", flush=True)
    results["extrapolation"] = {name: extrapolate(results["runs"][name][2], overhead) for name in CONFIGS}

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps(results, indent=2, default=float))
    (args.out / "scaling.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["# Scaling: 1 vs 2 local workers", "",
             f"`python benchmarks/bench_scaling.py --events {results['data']['events']} --fields "
             f"{results['data']['fields']} --repeat {results['data'].get('repeat', '?')}` on "
             f"{results['machine']['cores']} cores "
             f"({results['machine']['processor']}), Python {results['machine']['python']}; "
             f"{results['data']['events']} events (`examples/config.yml`) and {results['data']['fields']} fields "
             "(`examples/fields.yml`) from `scip example-data`. Wall time excludes starting the cluster; "
             "median of the runs, 1 and 2 workers taking turns. Load average (1 min) at start "
             f"{results['machine'].get('load_average_at_start', float('nan')):.2f}, at end "
             f"{results['machine'].get('load_average_at_end', float('nan')):.2f}.", "",
             "Peak resident memory of the median run: the tree (this process with the scheduler, the nannies and the "
             "workers) and the largest worker process.", "",
             "| data | workers | cells | wall (s) | cells/s | 2 vs 1 | runs (s) | tree RSS (MiB) | "
             "per worker RSS (MiB) |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for name, runs in results["runs"].items():
        for w in (1, 2):
            r = runs[w]
            ratio = f"{runs['speedup_2_vs_1']:.2f}×" if w == 2 else ""
            walls = ", ".join(f"{t:.2f}" for t in r["all_walls_s"])
            lines.append(f"| {name} | {w} | {r['cells']} | {r['wall_s']:.2f} | {r['cells_per_s']:.0f} | {ratio} | "
                         f"{walls} | {r['tree_rss_peak_mib']:.0f} | {r['worker_rss_peak_mib']:.0f} |")
    lines += ["", f"Scheduler overhead: **{results['scheduler_overhead_s_per_task'] * 1e3:.3f} ms per task** "
              "(4,000 no-op tasks on 2 workers, median of 3).", "", "Per-step task time (2 workers, seconds summed over tasks):", ""]
    for name, runs in results["runs"].items():
        secs = ", ".join(f"{k} {v:.2f}" for k, v in runs[2]["task_seconds"].items())
        lines.append(f"- {name}: {secs}")
    lines += ["", "Idle seconds per worker in the median runs (from `run.json`'s `timings_s.task_stream.idle`: the "
              "seconds from the run's start to its results in which a worker computed nothing), and the ratio the "
              "runs would give if no worker were ever idle (wall less the mean idle):", "",
              "| data | workers | before its first task | between tasks | after its last | idle | wall − idle |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, runs in results["runs"].items():
        busy = {}
        for w in (1, 2):
            idle = list(runs[w].get("idle", {}).values())
            if not idle:
                continue
            mean = {k: statistics.mean(i[k] for i in idle) for k in ("before_first", "between", "after_last", "total")}
            busy[w] = runs[w]["wall_s"] - mean["total"]
            lines.append(f"| {name} | {w} | {mean['before_first']:.2f} | {mean['between']:.2f} | "
                         f"{mean['after_last']:.2f} | {mean['total']:.2f} | {busy[w]:.2f} |")
        if len(busy) == 2:
            lines.append(f"| {name} | 2 vs 1 without idle | | | | | {busy[1] / busy[2]:.2f}× |")
    lines += ["", "Extrapolation (from the 2-worker run's per-task costs):", "",
              "| data | tasks/partition | task s/image | workers | tasks/s needed | scheduler busy | "
              "min images/partition for 5 % |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, ex in results["extrapolation"].items():
        for w, e in ex["workers"].items():
            lines.append(f"| {name} | {ex['tasks_per_partition']:.1f} | {ex['task_seconds_per_image'] * 1e3:.2f} ms | "
                         f"{w} | {e['tasks_per_s_needed']:.0f} | {e['scheduler_busy_fraction'] * 100:.1f} % | "
                         f"{e['min_images_per_partition_for_5pct']:.0f} |")
    return "\n".join(lines) + "\n"


def model_markdown(r: dict) -> str:
    lines = ["# Scaling model against runs of 1, 2, 4 local workers", "",
             f"`python benchmarks/bench_scaling.py --events {r['events']} --repeat 3 --check-model "
             f"{' '.join(str(w) for w in r['measured'])}` on {r['cores']} cores; load average (1 min) "
             f"{r['load_average_at_start']:.2f} at the start, {r['load_average_at_end']:.2f} at the end. One thread per "
             "worker; wall time after the cluster is up, median of the runs, worker counts taking turns.", "",
             "Model: `wall(W) = S + max(C / min(W, cores), N × o)`, from the 1-worker run: serial part "
             f"S = {r['serial_s']:.2f} s (wall minus task seconds), task seconds C = {r['task_seconds']:.2f} s, "
             f"N = {r['tasks']} tasks, scheduler overhead o = {r['overhead_s_per_task'] * 1e3:.2f} ms per task "
             "(no-op tasks, median of 3).", "",
             "| workers | measured (s) | predicted (s) | measured / predicted | runs (s) | tree RSS (MiB) | "
             "per worker RSS (MiB) |", "|---:|---:|---:|---:|---|---:|---:|"]
    for w, m in r["measured"].items():
        lines.append(f"| {w} | {m['wall_s']:.2f} | {m['predicted_s']:.2f} | {m['wall_s'] / m['predicted_s']:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in m['all_walls_s'])} | {m['tree_rss_peak_mib']:.0f} | "
                     f"{m['worker_rss_peak_mib']:.0f} |")
    size = f"{r['images_per_partition']:.0f}" if "images_per_partition" in r else "64"  # files before session 18: 64
    lines += ["", f"Predictions for a cluster with a core per worker (same partitions of {size} events):", "",
              "| events | workers | predicted wall (s) | limited by |", "|---:|---:|---:|---|"]
    for p in r["at_scale"].values():
        lines.append(f"| {p['events']:,} | {p['workers']} | {p['predicted_s']:.1f} | {p['bound']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
