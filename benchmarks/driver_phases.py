"""Where the serial part of a run goes: the driver's phases and the workers' idle time, 1 and 2 workers.

The scaling model (``bench_scaling.py --check-model``) calls everything a
1-worker run spends outside its tasks the serial part ``S``. This script
splits it, on the 5,000-event example (``examples/config.yml``), on fresh
local clusters of 1 and 2 workers (1 thread each) taking turns:

- the driver's phases in ``scip.run``, timed by wrapping its functions
  (``prepare``, the reductions' persist and thresholds, the final pass,
  ``run.json``, the report and its sections);
- each worker's idle time from the scheduler's task stream: before its first
  task (``head``), between its tasks (``gaps``, with the longest ones and
  where they fall), and after its last (``tail``).

Usage::

    flock /work/bench.lock python benchmarks/driver_phases.py [--events 5000] [--repeat 3] [--out DIR]
    python benchmarks/driver_phases.py --merge A/driver_phases.json B/driver_phases.json --out DIR

It writes ``driver_phases.json`` and ``driver_phases.md`` under ``--out``
(default ``benchmarks/results``). Wall times are medians of the runs; the
breakdown shown is that of the median run.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

import scip  # noqa: E402
from scip.config import ClusterConfig, load_config  # noqa: E402
from scip.datasets import write_example  # noqa: E402
from scip.engine import cluster  # noqa: E402

CONFIG = ROOT / "examples" / "config.yml"
#: (module, function, label): the driver's phases, in the order they run. A function a version of scip does not
#: have is left out.
PHASES = [
    ("scip.run", "prepare", "prepare"),
    ("scip.run", "prepare_output", "prepare output folder"),
    ("scip.engine.graph", "build_cells", "build cells graph"),
    ("scip.engine.cluster", "persist", "persist cells (pass 1)"),
    ("scip.engine.reduce", "_filter_bounds", "filter thresholds"),
    ("scip.engine.graph", "build_writes", "build writes graph"),
    ("scip.run", "compute_partitions", "final pass"),
    ("scip.run", "_summary", "summary"),
    ("scip.run", "_write_skipped", "skipped.csv"),
    ("scip.report", "save_samples", "save samples"),
    ("scip.report", "write_report", "report"),
    ("scip.report", "_timings", "report: timings plot"),
    ("scip.report", "_montage", "report: montage"),
    ("scip.report", "_distributions", "report: feature histograms"),
]


class Recorder:
    """Wraps the phase functions where they are looked up, and records their wall times."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []
        self.streams: list[list] = []

    def wrap(self, module: str, name: str, label: str) -> None:
        mod = importlib.import_module(module)
        original = getattr(mod, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.append((label, start, time.time()))

        # Rebind it in every scip module that imported it by name, so that calls from there are timed too.
        for other in list(sys.modules.values()):
            if getattr(other, "__name__", "").startswith("scip") and getattr(other, name, None) is original:
                setattr(other, name, timed)

    def keep_stream(self) -> None:
        original = cluster.task_stream_steps

        def keep(data, *args, **kwargs):
            self.streams.append(list(data))
            return original(data, *args, **kwargs)

        for other in list(sys.modules.values()):
            if (getattr(other, "__name__", "").startswith("scip")
                    and getattr(other, "task_stream_steps", None) is original):
                other.task_stream_steps = keep


def idle(stream: list, t0: float, t1: float, big: float = 0.05) -> dict:
    """Each worker's idle seconds before, between and after its tasks, and its gaps longer than ``big``."""
    by_worker: dict[str, list] = {}
    for task in stream:
        for ss in task.get("startstops", []):
            if ss.get("action") == "compute":
                by_worker.setdefault(task["worker"], []).append((ss["start"], ss["stop"], str(task["key"])))
    out = {}
    for n, (worker, spans) in enumerate(sorted(by_worker.items())):
        spans.sort()
        end, gaps, long = spans[0][1], 0.0, []
        for start, stop, key in spans[1:]:
            if start > end:
                gaps += start - end
                if start - end > big:
                    prefix = key.strip("('\"").split("-")[0]
                    long.append({"at_s": round(end - t0, 2), "s": round(start - end, 3), "before": prefix})
            end = max(end, stop)
        out[f"worker {n}"] = {"tasks": len(spans), "head_s": spans[0][0] - t0, "gaps_s": gaps, "tail_s": t1 - end,
                              "long_gaps": long}
    return out


def run_once(raw: dict, workers: int, rec: Recorder) -> dict:
    with cluster.connect(ClusterConfig(workers=workers, threads=1, dashboard_address=":0")) as session:
        rec.spans.clear()
        rec.streams.clear()
        t0, start = time.time(), time.perf_counter()
        result = scip.run(raw, client=session.client, progress=False)
        wall = time.perf_counter() - start
        t1 = time.time()
    seconds = result.summary["timings_s"]["task_stream"]["seconds"]
    busy = sum(v for k, v in seconds.items() if k != "other")
    phases: dict[str, float] = {}
    for label, a, b in rec.spans:
        phases[label] = phases.get(label, 0.0) + (b - a)
    return {"workers": workers, "wall_s": wall, "task_seconds": busy, "task_seconds_by_step": dict(seconds),
            "other_task_seconds": seconds.get("other", 0.0),
            "serial_s": wall - busy / workers, "phases_s": phases,
            "idle": idle(rec.streams[0] if rec.streams else [], t0, t1)}


def markdown(result: dict) -> str:
    lines = ["# Where the serial part goes: driver phases and worker idle time", "",
             f"`python benchmarks/driver_phases.py --events {result['events']} --repeat {result['repeat']}` at "
             f"{result['commit']} on {result['cores']} cores; load average (1 min) {result['load_start']:.2f} at the "
             f"start, {result['load_end']:.2f} at the end. One thread per worker, 1 and 2 workers taking turns; the "
             "run shown per worker count is the median run.", "",
             "S = wall − task seconds / workers (task seconds without the `other` tasks, e.g. the warm-up), as in "
             "the scaling model.", "",
             "| workers | wall (s) | task s | S (s) | runs (s) |", "|---:|---:|---:|---:|---|"]
    for w, r in result["median"].items():
        lines.append(f"| {w} | {r['wall_s']:.2f} | {r['task_seconds']:.2f} | {r['serial_s']:.2f} | "
                     f"{', '.join(f'{x:.2f}' for x in result['walls'][w])} |")
    lines += ["", "Driver phases (wall seconds; the passes include the workers' computing):", "",
              "| phase | " + " | ".join(f"{w} worker(s)" for w in result["median"]) + " |",
              "|---|" + "---:|" * len(result["median"])]
    labels = [label for _, _, label in PHASES]
    for label in labels:
        values = [r["phases_s"].get(label) for r in result["median"].values()]
        if any(v is not None for v in values):
            lines.append(f"| {label} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in values) + " |")
    lines += ["", "Worker idle time (seconds) from the task stream, from the start of `scip.run` to its return:", "",
              "| workers | worker | tasks | before first task | between tasks | after last task | gaps > 50 ms |",
              "|---:|---|---:|---:|---:|---:|---|"]
    for w, r in result["median"].items():
        for name, i in r["idle"].items():
            long = "; ".join(f"{g['s']:.2f} s at {g['at_s']:.1f} s before {g['before']}" for g in i["long_gaps"][:6])
            lines.append(f"| {w} | {name} | {i['tasks']} | {i['head_s']:.2f} | {i['gaps_s']:.2f} | {i['tail_s']:.2f} "
                         f"| {long} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per worker count, 1 and 2 workers taking turns")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="instead: merge the runs of these driver_phases.json files into one result under --out")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    rec = Recorder()
    importlib.import_module("scip.run")  # the module, which ``scip.run`` the function hides
    for module, name, label in PHASES:
        rec.wrap(module, name, label)
    rec.keep_stream()
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    load_start = os.getloadavg()[0]
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_example(data, n_events=args.events, n_fields=1, seed=0)
        raw = yaml.safe_load(CONFIG.read_text())
        raw["input"]["path"] = str(data / Path(raw["input"]["path"]).name)
        raw["evaluate"]["labels"] = str(data / Path(raw["evaluate"]["labels"]).relative_to("data"))
        raw = load_config(raw, base_dir=CONFIG.parent,
                          overrides={"output": {"path": str(Path(tmp) / "out"), "overwrite": True}}).model_dump()
        for _ in range(args.repeat):
            for workers in (1, 2):
                r = run_once(raw, workers, rec)
                runs[workers].append(r)
                print(f"{workers} worker(s): wall {r['wall_s']:.2f} s, task s {r['task_seconds']:.2f}, "
                      f"S {r['serial_s']:.2f} s", flush=True)
    write(summarize(runs, {"events": args.events, "repeat": args.repeat, "commit": commit, "cores": os.cpu_count(),
                           "load_start": load_start, "load_end": os.getloadavg()[0]}), args.out)


def summarize(runs: dict[int, list[dict]], info: dict) -> dict:
    """The runs with their medians: wall, S, and the median run per worker count."""
    median = {w: sorted(rs, key=lambda r: r["wall_s"])[(len(rs) - 1) // 2] for w, rs in runs.items()}
    return {**info, "runs": runs, "median": median, "walls": {w: [r["wall_s"] for r in rs] for w, rs in runs.items()},
            "ratio_2_vs_1": median[1]["wall_s"] / median[2]["wall_s"],
            "serial_s_median": {w: statistics.median(r["serial_s"] for r in rs) for w, rs in runs.items()}}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "driver_phases.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "driver_phases.md").write_text(markdown(result))
    print(markdown(result))


def merge(files: list[Path], out: Path) -> None:
    """One result from several invocations (e.g. taking turns with another version of scip): all their runs."""
    parts = [json.loads(f.read_text()) for f in files]
    runs = {w: [r for p in parts for r in p["runs"][str(w)]] for w in (1, 2)}
    info = {"events": parts[0]["events"], "repeat": sum(p["repeat"] for p in parts), "commit": parts[0]["commit"],
            "cores": parts[0]["cores"], "load_start": parts[0]["load_start"], "load_end": parts[-1]["load_end"]}
    write(summarize(runs, info), out)


if __name__ == "__main__":
    main()
