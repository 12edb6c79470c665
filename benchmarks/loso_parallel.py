"""Leave-one-set-out for several training recipes at once: one process per (recipe, fold).

``bench_generalization.py`` trains and scores its folds one after the other (16-17 min a fold on one
CPU thread). On a machine with a GPU or many cores the folds are independent: this script runs
``bench_generalization.py --folds <fold> --no-speed`` for every (recipe, fold) pair as its own
process, at most ``--jobs`` at a time, then one aggregating run per recipe
(``--no-train --reuse-scores``) that writes the recipe's table. With ``--final`` it also trains each
recipe on every training image (what a shipped model trains on) into ``<cache>/<recipe>/final/``.

Each fold process scores on the CPU with one thread, as the serial benchmark does; only training
moves to ``--device``. A fold that fails, or is stopped at ``--deadline``, leaves its log (``<cache>/<recipe>/<fold>.log``) and
is missing from its recipe's table (the table says which folds it holds).

    python benchmarks/loso_parallel.py --recipes shipped benchmarks/recipes/long.json --device cuda \\
        --jobs 16 --cache /tmp/loso --data /tmp/data --final
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_generalization as bg  # noqa: E402


def _recipe_name(spec: str) -> str:
    return "shipped" if spec == "shipped" else Path(spec).stem


def summary(cache: Path, recipes: list[str], folds: list[str], argv: list[str]) -> str:
    """F1 of each recipe's fold models per held-out set, beside otsu and watershed, from the folds' scores.json."""
    from scip.segment.unet.score import pool

    rows = {(r, f): json.loads(p.read_text())["rows"] for r in recipes for f in folds
            if (p := cache / r / f / "scores.json").is_file()}

    def f1(image_rows: list[dict], method: str) -> float:
        return pool(x["scores"][method] for x in image_rows if method in x["scores"])["f1"]

    lines = ["# Training recipes, leave one set out", "",
             f"Command: `python benchmarks/loso_parallel.py {' '.join(argv)}`", "",
             "F1 at IoU 0.5 pooled over each held-out set's images (the shipped clean-up); – = fold not trained or "
             "scored. The pooled rows count only the sets every recipe has.", "",
             "| held out | otsu | watershed | " + " | ".join(recipes) + " |", "|---|---:|---:|" + "---:|" * len(recipes)]
    for fold in folds:
        have = [rows[(r, fold)] for r in recipes if (r, fold) in rows]
        if not have:
            lines.append(f"| {fold} | – | – | " + " | ".join("–" for _ in recipes) + " |")
            continue
        cells = [f"{f1(rows[(r, fold)], 'new recipe'):.3f}" if (r, fold) in rows else "–" for r in recipes]
        lines.append(f"| {fold} | {f1(have[0], 'otsu'):.3f} | {f1(have[0], 'watershed'):.3f} | " + " | ".join(cells) + " |")
    common = [f for f in folds if all((r, f) in rows for r in recipes)]
    if common:
        every = {r: [x for f in common for x in rows[(r, f)]] for r in recipes}
        first = every[recipes[0]]
        lines.append(f"| **pooled over {len(common)} common sets** | {f1(first, 'otsu'):.3f} | {f1(first, 'watershed'):.3f} | "
                     + " | ".join(f"{f1(every[r], 'new recipe'):.3f}" for r in recipes) + " |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["shipped"],
                        help="recipe JSON files (keys over bench_generalization.RECIPE); 'shipped' = RECIPE itself")
    parser.add_argument("--folds", default="all")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--cache", type=Path, required=True, help="<cache>/<recipe>/<fold>/model.pt and logs")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--final", action="store_true", help="also train each recipe on every training image")
    parser.add_argument("--out", type=Path, default=None, help="folder of the tables (default: --cache)")
    parser.add_argument("--summary-only", action="store_true",
                        help="train and score nothing: only write <out>/recipes.md from the folds already scored")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds: then start nothing new and stop what runs (the tables hold the folds done)")
    args = parser.parse_args()
    data = args.data or bg.find_data()
    known = bg.folds(data)
    names = bg.FOLD_ORDER if args.folds == "all" else [f.strip() for f in args.folds.split(",")]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown fold(s) {unknown}; folds: {', '.join(bg.FOLD_ORDER)}")
    recipes = {spec: bg.load_recipe(None if spec == "shipped" else Path(spec)) for spec in args.recipes}
    out = args.out or args.cache
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    script = str(HERE / "bench_generalization.py")

    def recipe_args(spec: str) -> list[str]:
        return [] if spec == "shipped" else ["--recipe", str(Path(spec).resolve())]

    jobs: list[tuple[str, list[str]]] = []
    if args.final:  # first: a shipped model's training is the longest job
        for spec in args.recipes:
            # train_fold with nothing held out: every training image, resumed if a run was stopped
            code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]); "
                    "import bench_generalization as bg; a = json.loads(sys.argv[1]); "
                    "bg.train_fold(Path(a['data']), 'final', [], Path(a['cache']), a['recipe'], 1, True, a['device'])")
            job = {"data": str(data), "cache": str(args.cache / _recipe_name(spec)), "recipe": recipes[spec],
                   "device": args.device}
            jobs.append((f"{_recipe_name(spec)}/final", [sys.executable, "-c", code, json.dumps(job), str(HERE)]))
    # Then the folds, interleaved over the recipes, so that a run cut short still has every recipe's first folds.
    for fold in names:
        for spec in args.recipes:
            jobs.append((f"{_recipe_name(spec)}/{fold}",
                         [sys.executable, script, "--folds", fold, "--no-speed", "--data", str(data), "--device",
                          args.device, "--cache", str(args.cache / _recipe_name(spec)),
                          "--out", str(args.cache / _recipe_name(spec) / fold / "table.md"), *recipe_args(spec)]))

    if args.summary_only:
        jobs = []
    running: list[tuple[str, subprocess.Popen, float]] = []
    failed = []
    t0 = time.perf_counter()
    while jobs or running:
        if args.deadline is not None and time.perf_counter() - t0 > args.deadline:
            for name, proc, _ in running:
                proc.kill()
                proc.wait()
                failed.append(f"{name} (stopped at the deadline)")
            print(f"deadline: {len(running)} stopped, {len(jobs)} never started: "
                  + ", ".join(name for name, _ in jobs), flush=True)
            break
        while jobs and len(running) < args.jobs:
            name, cmd = jobs.pop(0)
            log = args.cache / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            running.append((name, subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                                                   cwd=bg.ROOT), time.perf_counter()))
        time.sleep(1)
        for item in list(running):
            name, proc, start = item
            if proc.poll() is not None:
                running.remove(item)
                status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                if proc.returncode:
                    failed.append(name)
                print(f"[{time.perf_counter() - t0:6.0f} s] {name}: {status} in {time.perf_counter() - start:.0f} s",
                      flush=True)

    (out / "recipes.md").write_text(summary(args.cache, [_recipe_name(s) for s in args.recipes], names, sys.argv[1:]))
    print((out / "recipes.md").read_text(), flush=True)
    for spec in args.recipes if not args.summary_only else []:
        name = _recipe_name(spec)
        done = [f for f in names if (args.cache / name / f / "scores.json").is_file()]
        if not done:
            print(f"{name}: no fold scored", flush=True)
            continue
        subprocess.run([sys.executable, script, "--folds", ",".join(done), "--no-train", "--reuse-scores", "--no-speed",
                        "--data", str(data), "--device", args.device, "--cache", str(args.cache / name),
                        "--out", str(out / f"{name}.md"), *recipe_args(spec)], env=env, cwd=bg.ROOT, check=False,
                       stdout=subprocess.DEVNULL)
        print(f"{name}: {len(done)} of {len(names)} folds -> {out / (name + '.md')}", flush=True)
    if failed:
        print("failed: " + ", ".join(failed), flush=True)


if __name__ == "__main__":
    main()
