"""First run against warm run, with an empty numba cache (issue 18, item 1).

Every measurement runs in a fresh process; "cold" starts with an empty
``NUMBA_CACHE_DIR`` (a new temp folder), "warm" reuses the folder the cold
run filled. Cold and warm runs alternate. Reported per measurement: wall
seconds and CPU seconds (user + system of the process and its children:
the dask workers), medians over the repeats. On a shared machine wall time
follows the load; CPU time much less.

(a) ``demo``: ``scip run`` of ``examples/config.yml`` on ``scip example-data``;
    besides wall and CPU seconds, each worker's first features task against
    its later ones (from ``run.json``'s task stream). ``NUMBA_CACHE_DIR`` is
    set, so where the package lies does not change where numba caches:
    (c) covers read-only installs. (A run as ``nobody`` cannot be measured
    here: the interpreter lies under ``/root``, and nobody cannot start the
    workers' processes.)
(b) ``worker``: a fresh process extracting the demo's features
    (``shape, intensity, texture, bbox``) from 400 cells three times: its
    first call against its steady state.
(c) ``readonly``: (b) from a copy of the package made read-only, run as user
    ``nobody`` (root writes anywhere) without ``NUMBA_CACHE_DIR``: with a
    writable home (numba's per-user cache) and without one (scip's fallback
    in the temp folder).
(d) ``kernels``: compile CPU seconds of each kernel of
    :data:`scip.features.warmup.KERNELS` (with the helpers it is first to
    call) and the specializations compiled, on an empty cache.

``--src DIR --baseline`` measures an older scip package in ``DIR`` instead
(e.g. ``git archive 7173820 scip | tar -x -C DIR``; (c) is skipped, (d) times
``extract`` as a whole); ``--merge-baseline JSON`` adds such a result to the
tables, for a before/after.

    python benchmarks/bench_first_run.py [--repeats 3] [--only kernels,demo,worker,readonly]
        [--src DIR --baseline --out DIR] [--merge-baseline JSON]

Writes ``benchmarks/results/first_run.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable
FAMILIES = "shape,intensity,texture,bbox"

# (b) and (c): 400 cells in 2 channels, like the demo's events, measured three times in one process.
WORKER_PROBE = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter(); c0 = time.process_time()
    import numpy as np
    from scip.features import extract
    imported = (time.perf_counter() - t0, time.process_time() - c0)
    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[:800, :800]
    labels = np.zeros((800, 800), np.int32)
    k = 1
    for r in range(20, 800, 40):
        for c in range(20, 800, 40):
            labels[(rr - r) ** 2 + (cc - c) ** 2 <= (10 + k % 7) ** 2] = k
            k += 1
    pixels = (rng.random((2, 800, 800)) * 4000).astype(np.uint16)
    calls = []
    for _ in range(3):
        t = time.perf_counter(); c = time.process_time()
        table = extract(pixels, labels, families=sys.argv[1].split(","), distances=(3, 5), gray_levels=32)
        calls.append((time.perf_counter() - t, time.process_time() - c))
    print(json.dumps({"cells": len(table), "import": imported, "calls": calls}))
""")

KERNEL_PROBE = textwrap.dedent("""
    import json, time
    import scip
    from scip.features import warmup
    out = []
    for kernel in warmup.KERNELS:
        t = time.perf_counter(); c = time.process_time()
        kernel.dispatcher.compile(kernel.signature)
        out.append({"kernel": kernel.name, "cpu_s": time.process_time() - c, "wall_s": time.perf_counter() - t})
    print(json.dumps({"kernels": out, "scip": scip.__file__}))
""")

# The kernels of the old code, called by extract: (b)'s probe works on any version.
BASELINE_KERNEL_PROBE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from scip.features import extract
    rr, cc = np.mgrid[:200, :200]
    labels = np.zeros((200, 200), np.int32)
    for k, (r, c) in enumerate([(r, c) for r in range(20, 200, 40) for c in range(20, 200, 40)], 1):
        labels[(rr - r) ** 2 + (cc - c) ** 2 <= 100] = k
    pixels = np.random.default_rng(0).random((2, 200, 200)).astype(np.float32)
    c = time.process_time()
    extract(pixels, labels, families=sys.argv[1].split(","), distances=(3, 5), gray_levels=32)
    print(json.dumps({"total_cpu_s": time.process_time() - c}))
""")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str], env: dict, cwd: Path | None = None) -> dict:
    """Run ``cmd``; wall and CPU seconds (the process and every child it waited for), its stdout.

    By default in the temp folder: ``python -c`` puts its working folder
    first on ``sys.path``, so run from a checkout's root it would import that
    checkout's ``scip`` whatever ``PYTHONPATH`` (the package under test) says.
    """
    c0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd if cwd is not None else tempfile.gettempdir(), capture_output=True,
                       text=True)
    out = {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(_children_cpu() - c0, 2),
           "returncode": p.returncode}
    if p.returncode:
        out["error"] = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "(no stderr)"
    out["stdout"] = p.stdout
    return out


def _env(src: Path, cache: Path | None, home: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(src)
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = str(cache)
    if home is not None:
        env["HOME"] = str(home)
        env.pop("XDG_CACHE_HOME", None)
    return env


def _median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get("returncode", 0) == 0 and r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def _readonly_install(src: Path, work: Path) -> Path:
    """A copy of the scip package, read-only for everyone (as a site-packages owned by root)."""
    install = Path(tempfile.mkdtemp(prefix="install-", dir=work))
    shutil.copytree(src / "scip", install / "scip", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chmod", "-R", "a-w,a+rX", str(install)], check=True)
    os.chmod(work, 0o755)
    return install


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _in_turn(srcs: list[Path], i: int) -> list[Path]:
    """The packages in the order of repeat ``i``, reversed every other repeat.

    A host that speeds up or slows down over minutes then moves them alike.
    """
    return srcs if i % 2 == 0 else srcs[::-1]


def bench_demo(srcs: list[Path], repeats: int, work: Path) -> list[dict]:
    """(a) scip run of the example config, cold then warm; several packages in turn each repeat (:func:`_in_turn`)."""
    folder = work / "demo"
    if not (folder / "data").exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([PY, "-m", "scip", "example-data", str(folder / "data")], env=_env(ROOT, None),
                       check=True, capture_output=True)
    shutil.copy(ROOT / "examples" / "config.yml", folder / "config.yml")
    rows: dict[Path, list[dict]] = {src: [] for src in srcs}
    for i in range(repeats):
        for src in _in_turn(srcs, i):
            cache = Path(tempfile.mkdtemp(prefix="numba-", dir=work))
            for kind in ("cold", "warm"):
                r = _run([PY, "-m", "scip", "run", "config.yml", "--overwrite"], _env(src, cache), cwd=folder)
                r.pop("stdout")
                run_json = folder / "results" / "ifc" / "run.json"
                if r["returncode"] == 0 and run_json.exists():
                    summary = json.loads(run_json.read_text())
                    r["workers"] = len(summary["cluster"].get("workers", []))
                    r["features_task_s"] = summary["timings_s"]["steps"].get("features")
                    # each worker's first features task against its later ones (the task stream's seconds)
                    first = summary["timings_s"]["task_stream"].get("first", {}).get("features", {})
                    r["features_first_over_rest_s"] = max((f - rest for f, rest in first.values() if rest is not None),
                                                          default=None)
                r.update(kind=kind, repeat=i)
                rows[src].append(r)
                print("demo", src.name, r, file=sys.stderr)
            r["specializations"] = sum(_specializations(cache).values())
    return [_summarize(rows[src]) for src in srcs]


def _summarize(rows: list[dict]) -> dict:
    out = {"runs": rows}
    for kind in ("cold", "warm"):
        sel = [r for r in rows if r["kind"] == kind]
        out[kind] = {"wall_s": _median(sel, "wall_s"), "cpu_s": _median(sel, "cpu_s")}
        if any("features_task_s" in r for r in sel):
            out[kind]["features_task_s"] = _median(sel, "features_task_s")
        if any(r.get("features_first_over_rest_s") is not None for r in sel):
            out[kind]["features_first_over_rest_s"] = _median(sel, "features_first_over_rest_s")
    if out["cold"]["wall_s"] and out["warm"]["wall_s"]:
        out["cold_over_warm_wall"] = round(out["cold"]["wall_s"] / out["warm"]["wall_s"], 2)
        out["cold_over_warm_cpu"] = round(out["cold"]["cpu_s"] / out["warm"]["cpu_s"], 2)
    # Each cold run against the warm run right after it: a host that slows down for minutes
    # moves both runs of a pair, where it moves the medians of all cold and all warm runs apart.
    pairs = [(c["wall_s"] / w["wall_s"]) for c, w in zip(rows[::2], rows[1::2])
             if c["kind"] == "cold" and w["kind"] == "warm" and not c["returncode"] and not w["returncode"]]
    if pairs:
        out["pair_ratios_wall"] = [round(r, 2) for r in pairs]
        out["median_pair_ratio_wall"] = round(statistics.median(pairs), 2)
    return out


def _worker_row(r: dict, kind: str, i: int) -> dict:
    row = {"kind": kind, "repeat": i, "returncode": r["returncode"], "process_wall_s": r["wall_s"],
           "process_cpu_s": r["cpu_s"]}
    if r["returncode"]:
        row["error"] = r.get("error")
        return row
    probe = json.loads(r["stdout"].strip().splitlines()[-1])
    (fw, fc), (sw, sc) = probe["calls"][0], probe["calls"][-1]
    row.update(cells=probe["cells"], import_wall_s=round(probe["import"][0], 2),
               first_wall_s=round(fw, 3), first_cpu_s=round(fc, 3), steady_wall_s=round(sw, 3),
               steady_cpu_s=round(sc, 3), first_minus_steady_wall_s=round(fw - sw, 3),
               first_minus_steady_cpu_s=round(fc - sc, 3))
    return row


def _worker_summary(rows: list[dict]) -> dict:
    out = {"runs": rows}
    for kind in sorted({r["kind"] for r in rows}):
        sel = [r for r in rows if r["kind"] == kind]
        out[kind] = {k: _median(sel, k) for k in ("first_wall_s", "first_cpu_s", "steady_wall_s", "steady_cpu_s",
                                                   "first_minus_steady_wall_s", "first_minus_steady_cpu_s")}
        errors = [r["error"] for r in sel if r.get("error")]
        if errors:
            out[kind]["error"] = errors[0]
    return out


def bench_worker(src: Path, repeats: int, work: Path) -> dict:
    """(b) a fresh process: first extract against the steady state, empty cache then warm cache."""
    rows = []
    for i in range(repeats):
        cache = Path(tempfile.mkdtemp(prefix="numba-", dir=work))
        for kind in ("cold", "warm"):
            r = _run([PY, "-c", WORKER_PROBE, FAMILIES], _env(src, cache))
            rows.append(_worker_row(r, kind, i))
            print("worker", src.name, rows[-1], file=sys.stderr)
    return _worker_summary(rows)


def bench_readonly(src: Path, repeats: int, work: Path) -> dict:
    """(c) the package copied and made read-only, run as nobody without NUMBA_CACHE_DIR."""
    install = _readonly_install(src, work)
    rows = []
    for i in range(repeats):
        home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
        os.chmod(home, 0o777)
        for mode, h in (("home", home), ("no_home", Path("/nonexistent"))):
            for kind in ("cold", "warm"):
                r = _run(AS_NOBODY + [PY, "-c", WORKER_PROBE, FAMILIES], _env(install, None, h))
                rows.append(_worker_row(r, f"{mode}_{kind}", i))
                print("readonly", src.name, rows[-1], file=sys.stderr)
        # The no-home fallback folder is per user and outlives the run: empty it for the next repeat.
        shutil.rmtree(Path(tempfile.gettempdir()) / "scip-numba-cache-65534", ignore_errors=True)
    out = _worker_summary(rows)
    out["install_writable_by_nobody"] = False
    return out


def bench_kernels(src: Path, work: Path, baseline: bool) -> dict:
    """(d) compile seconds per kernel on an empty cache."""
    cache = Path(tempfile.mkdtemp(prefix="numba-", dir=work))
    probe = BASELINE_KERNEL_PROBE if baseline else KERNEL_PROBE
    r = _run([PY, "-c", probe, FAMILIES], _env(src, cache))
    if r["returncode"]:
        return {"error": r.get("error")}
    out = json.loads(r["stdout"].strip().splitlines()[-1])
    if "scip" in out and not Path(out["scip"]).resolve().is_relative_to(src):
        return {"error": f"the probe imported {out['scip']}, not the package under {src}"}
    if not baseline:
        out["total_cpu_s"] = round(sum(k["cpu_s"] for k in out["kernels"]), 2)
        for k in out["kernels"]:
            k["cpu_s"], k["wall_s"] = round(k["cpu_s"], 2), round(k["wall_s"], 2)
    out["specializations"] = _specializations(cache)
    out["total_specializations"] = sum(out["specializations"].values())
    out["process_cpu_s"] = r["cpu_s"]
    return out


def _specializations(cache: Path) -> dict[str, int]:
    """Compiled specializations per function in a numba cache folder (one ``.nbc`` file each)."""
    counts: dict[str, int] = {}
    for f in cache.rglob("*.nbc"):
        name = f.name.split("-")[0]  # "<module>.<function>-<line>.py311.<n>.nbc"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def write_md(result: dict) -> str:
    lines = ["# First run against warm run, empty numba cache (issue 18, item 1)", "",
             f"Machine: {result['machine']}. Load average (1/5/15 min) at the start: {result['load_start']}, at the "
             f"end: {result.get('load_end')}. The machine was shared with other jobs: **wall times follow the load**, "
             "CPU seconds (process + children, i.e. the dask workers) much less. Medians over "
             f"{result['repeats']} alternated repeats, each run a fresh process.", "",
             "Command: `" + result["command"] + "`", ""]
    for label, key in (("this branch", "new"), ("baseline", "baseline")):
        block = result.get(key)
        if not block:
            continue
        lines += [f"## {label} (`{block['src']}`)", ""]
        if "kernels" in block:
            k = block["kernels"]
            rounds = (f" (median of alternated rounds {k['total_cpu_s_rounds']}; the table is the first round's)"
                      if k.get("total_cpu_s_rounds") else "")
            lines += ["### Compile cost on an empty cache", "",
                      f"Total CPU {k.get('total_cpu_s')} s{rounds}, {k.get('total_specializations')} specializations "
                      "of scip functions compiled (helpers included; `.nbc` files in the cache).", ""]
            if "kernels" in k:
                lines += ["| kernel (with the helpers it compiles first) | CPU s | wall s |", "|---|---|---|"]
                lines += [f"| {row['kernel']} | {row['cpu_s']} | {row['wall_s']} |" for row in k["kernels"]]
                lines.append("")
            many = {n: c for n, c in k.get("specializations", {}).items() if c > 1}
            lines += [f"Functions compiled more than once: {many or 'none'}", ""]
        if "demo" in block:
            d = block["demo"]
            lines += ["### (a) `scip run examples/config.yml`", "",
                      "| | wall s | CPU s | features task s (sum over workers) "
                      "| a worker's first features task minus its later ones' median, s (largest over workers) |",
                      "|---|---|---|---|---|",
                      *(f"| {kind} | {d[kind]['wall_s']} | {d[kind]['cpu_s']} | {d[kind].get('features_task_s')} "
                        f"| {d[kind].get('features_first_over_rest_s')} |" for kind in ("cold", "warm")),
                      "", f"cold / warm: wall {d.get('cold_over_warm_wall')}x, CPU {d.get('cold_over_warm_cpu')}x; "
                      f"each cold run over the warm run after it: {d.get('pair_ratios_wall')} "
                      f"(median {d.get('median_pair_ratio_wall')}x); "
                      f"specializations in the cache after the runs: "
                      f"{[r.get('specializations') for r in d['runs'] if 'specializations' in r]}", ""]
        for name, title in (("worker", "(b) fresh process: first extract against steady state (400 cells)"),
                            ("readonly", "(c) read-only install, as user nobody, no NUMBA_CACHE_DIR")):
            if name not in block:
                continue
            w = block[name]
            lines += [f"### {title}", "", "| case | first wall s | first CPU s | steady wall s | first - steady wall s "
                      "| first - steady CPU s |", "|---|---|---|---|---|---|"]
            for case, v in w.items():
                if isinstance(v, dict):
                    lines.append(f"| {case} | {v.get('first_wall_s')} | {v.get('first_cpu_s')} | "
                                 f"{v.get('steady_wall_s')} | {v.get('first_minus_steady_wall_s')} | "
                                 f"{v.get('first_minus_steady_cpu_s')} |" + (f" error: {v['error']}" if v.get("error")
                                                                              else ""))
            lines.append("")
    lines += result.get("notes", [])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--demo-repeats", type=int, default=None, help="repeats of (a); default --repeats")
    ap.add_argument("--only", default="kernels,worker,readonly,demo")
    ap.add_argument("--src", type=Path, default=ROOT, help="folder holding the scip package to measure")
    ap.add_argument("--baseline", action="store_true", help="--src is an older scip, without scip.features.warmup")
    ap.add_argument("--merge-baseline", type=Path, default=None, help="first_run.json of a --baseline run")
    ap.add_argument("--against", type=Path, default=None,
                    help="another scip package (a checkout) whose demo runs and kernel compiles alternate with "
                         "--src's, repeat by repeat (--repeats rounds of compiling); reported as the baseline")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.against is not None:
        if not (args.against / "scip" / "__init__.py").is_file():
            ap.error(f"--against {args.against}: no scip package there (expected {args.against / 'scip'})")
        if args.baseline:
            ap.error("--against compares two packages with scip.features.warmup; it does not combine with --baseline")
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="scip-first-run-"))
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "load_start": _load(), "repeats": args.repeats,
              "command": "python benchmarks/bench_first_run.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    try:
        import numba

        result["numba"] = numba.__version__
    except ImportError:
        pass
    src = args.src.resolve()
    key = "baseline" if args.baseline else "new"
    block: dict = {"src": str(src)}
    result[key] = block
    if args.merge_baseline:
        old = json.loads(args.merge_baseline.read_text())
        result["baseline"] = old["baseline"]
        result["baseline_command"] = old["command"]
        result["baseline_load"] = f"{old['load_start']} to {old.get('load_end')}"
    args.out.mkdir(parents=True, exist_ok=True)
    against = args.against.resolve() if args.against is not None else None

    def demo(repeats: int) -> dict:
        if against is None:
            return bench_demo([src], repeats, work)[0]
        ours, theirs = bench_demo([src, against], repeats, work)
        result.setdefault("baseline", {"src": str(against)})["demo"] = theirs
        result.setdefault("notes", []).append(
            "(a) of both packages measured in one run, alternated repeat by repeat (`--against`).")
        return ours

    def kernels() -> dict:
        if against is None:
            return bench_kernels(src, work, baseline=args.baseline)
        # the compile of every kernel, both packages in turn each round (the host's speed drifts)
        rounds: dict[Path, list[dict]] = {src: [], against: []}
        for i in range(args.repeats):
            for s in _in_turn([src, against], i):
                rounds[s].append(bench_kernels(s, work, baseline=False))
                print("kernels", s.name, rounds[s][-1].get("total_cpu_s", rounds[s][-1].get("error")), file=sys.stderr)
        summary = {}
        for s, rows in rounds.items():
            totals = [r["total_cpu_s"] for r in rows if "total_cpu_s" in r]
            summary[s] = {**rows[0], "total_cpu_s_rounds": totals,
                          "total_cpu_s": round(statistics.median(totals), 2) if totals else None}
        result.setdefault("baseline", {"src": str(against)})["kernels"] = summary[against]
        return summary[src]

    # Cheapest first, and saved after each part: on a loaded machine a long run may be cut short.
    parts = [("kernels", kernels),
             ("demo", lambda: demo(args.demo_repeats or args.repeats)),
             ("worker", lambda: bench_worker(src, args.repeats, work)),
             ("readonly", lambda: bench_readonly(src, args.repeats, work))]
    for name, part in parts:
        if name not in only or (name == "readonly" and args.baseline):
            continue
        block[name] = part()
        result["load_end"] = _load()
        (args.out / "first_run.json").write_text(json.dumps(result, indent=2))
        (args.out / "first_run.md").write_text(write_md(result))
    shutil.rmtree(work, ignore_errors=True)
    print(write_md(result))


if __name__ == "__main__":
    main()
