"""3-D stitching: Cellpose 3's ``utils.stitch3D`` vs ``scip.segment.stitch.stitch3d``.

Stacks of per-slice labels of ellipsoidal cells, each slice numbered on its
own (``scip.segment._flows_synthetic.cell_stack``), stored as raw int32 files.

(a) ``--small``: Z slices of 2048² with about 2,000 labels each, in memory,
    one stack per ``--depths`` value (the cells' mean semi-axis along Z, in
    slices): deep cells persist through many slices, so few new objects
    appear per slice (Cellpose's dense IoU matrix is then small); shallow
    ones give many. Median of ``--repeats`` alternated wall times (stitch3d
    on 1 thread, Cellpose's stitch3D on a copy, stitch3d into a preallocated
    output, stitch3d in place on a copy, stitch3d on ``--threads`` threads,
    again ...), the labels compared (identical up to renumbering,
    and with these inputs even the numbers), and the floor: reading the
    int32 stack once (``np.load`` of the ``.npy`` file, page cache warm).
(b) ``--big``: Z slices of 16384² with about 150,000 labels each, on disk.
    Each tool runs in its own process (peak RSS from ``getrusage``); Cellpose
    gets the stack in memory (its stitch3D needs an array) under an address
    space cap (``--cap-gib``, ``RLIMIT_AS``), and fails if it needs more;
    stitch3d reads slices from the file and writes to a raw file, so its
    memory is a few slices whatever Z is.

    python benchmarks/bench_stitch.py --small --depths 12 4 1.5 --threads 2 --out benchmarks/results/stitch.json
    python benchmarks/bench_stitch.py --big --big-slices 4 --threads 2 --out benchmarks/results/stitch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scip.segment._flows_synthetic import cell_stack  # noqa: E402
from scip.segment.stitch import stitch3d  # noqa: E402


def renumbered(labels: np.ndarray) -> np.ndarray:
    flat = labels.ravel()
    ids, inverse = np.unique(flat, return_inverse=True)
    first = np.full(ids.size, flat.size)
    np.minimum.at(first, inverse, np.arange(flat.size))
    rank = np.zeros(ids.size, np.int64)
    fg = ids != 0
    rank[np.flatnonzero(fg)[np.argsort(first[fg])]] = np.arange(1, fg.sum() + 1)
    return rank[inverse].reshape(labels.shape)


def small(args: argparse.Namespace, work: Path, depth: float) -> dict:
    from cellpose import utils

    shape = (args.slices, 2048, 2048)
    stack = cell_stack(shape, 1500, seed=0, depth=depth)
    path = work / "stack.npy"
    np.save(path, stack)
    del stack
    stack = np.load(path)
    ref = utils.stitch3D(stack.copy(), stitch_threshold=0.25)  # untimed: compilation, page cache
    ours = stitch3d(stack, 0.25, threads=1)
    load_before = os.getloadavg()
    floor, t_cp = [], []
    t_ours = {n: [] for n in sorted({1, args.threads})}
    t_out, t_inplace = [], []
    same_out = same_inplace = True
    for _ in range(args.repeats):
        t = time.perf_counter()
        stack = np.load(path)
        floor.append(time.perf_counter() - t)
        copy = stack.copy()
        # Alternated: scip (1 thread), Cellpose, scip (more threads), scip
        # (1 thread) into an output allocated and touched outside the timing:
        # Cellpose overwrites its (copied) input, no allocation; a fresh
        # 336 MB output's first-touch page faults took from 0.05 to 0.5 s here.
        for n in sorted(t_ours)[:1]:
            t = time.perf_counter()
            ours = stitch3d(stack, 0.25, threads=n)
            t_ours[n].append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = utils.stitch3D(copy, stitch_threshold=0.25)
        t_cp.append(time.perf_counter() - t)
        out = np.zeros(stack.shape, np.int32)
        out[:] = 1
        t = time.perf_counter()
        stitch3d(stack, 0.25, threads=1, out=out)
        t_out.append(time.perf_counter() - t)
        same_out = same_out and bool(np.array_equal(out, ours))
        del out
        # In place, Cellpose's own contract: the input (a copy made outside the timing, as Cellpose's) is
        # overwritten; what scip's z-stack segmentation does with the stack it builds.
        inplace = stack.copy()
        t = time.perf_counter()
        stitch3d(inplace, 0.25, threads=1, out=inplace)
        t_inplace.append(time.perf_counter() - t)
        same_inplace = same_inplace and bool(np.array_equal(inplace, ours))
        del inplace
        for n in sorted(t_ours)[1:]:
            t = time.perf_counter()
            ours = stitch3d(stack, 0.25, threads=n)
            t_ours[n].append(time.perf_counter() - t)
    labels_per_slice = [len(np.unique(s)) - 1 for s in stack]
    same_numbers = bool(np.array_equal(ref, ours))
    same_objects = same_numbers or bool(np.array_equal(renumbered(ref), renumbered(ours)))
    cellpose = float(np.median(t_cp))
    return {"case": f"small, depth {depth:g}", "shape": list(shape), "depth": depth,
            "labels_per_slice_mean": float(np.mean(labels_per_slice)),
            "labels_per_slice_range": [min(labels_per_slice), max(labels_per_slice)],
            "objects": int(ours.max()),
            "new_objects_per_slice_mean": (int(ours.max()) - labels_per_slice[0]) / max(1, shape[0] - 1),
            "repeats": args.repeats, "read_stack_s": float(np.median(floor)), "cellpose_s": cellpose,
            "cellpose_runs_s": t_cp,
            "scip": [{"threads": n, "s": float(np.median(v)), "runs_s": v, "speedup": cellpose / float(np.median(v))}
                     for n, v in t_ours.items()],
            "scip_preallocated_out_1_thread": {"s": float(np.median(t_out)), "runs_s": t_out,
                                               "speedup": cellpose / float(np.median(t_out)),
                                               "identical_to_default": same_out},
            "scip_in_place_1_thread": {"s": float(np.median(t_inplace)), "runs_s": t_inplace,
                                       "speedup": cellpose / float(np.median(t_inplace)),
                                       "identical_to_default": same_inplace},
            "identical_up_to_renumbering": same_objects, "identical_numbers": same_numbers,
            "load_before": load_before, "load_after": os.getloadavg()}


class RawSlices:
    """A (Z, H, W) int32 raw file read one slice at a time (a real read, not a memory map)."""

    def __init__(self, path: Path, shape: tuple[int, int, int], mode: str = "r"):
        self.path, self.shape, self.dtype = path, shape, np.dtype(np.int32)
        self.plane = shape[1] * shape[2]
        if mode == "w":
            with open(path, "wb") as f:
                f.truncate(self.plane * shape[0] * 4)

    def __getitem__(self, z: int) -> np.ndarray:
        return np.fromfile(self.path, np.int32, self.plane, offset=z * self.plane * 4).reshape(self.shape[1:])

    def __setitem__(self, z: int, value: np.ndarray) -> None:
        with open(self.path, "r+b") as f:
            f.seek(z * self.plane * 4)
            np.ascontiguousarray(value, np.int32).tofile(f)


def _child(tool: str, path: str, shape: list, out: str, threads: int, cap_gib: float) -> None:
    """Run one tool on the raw stack in this (child) process; print a JSON line."""
    shape = tuple(shape)
    src = RawSlices(Path(path), shape)
    result = {"tool": tool, "slices": shape[0]}
    t = time.perf_counter()
    try:
        if tool == "read":
            for z in range(shape[0]):
                src[z]
        elif tool == "scip":
            stitch3d(src, 0.25, out=RawSlices(Path(out), shape, "w"), threads=threads)
        else:
            resource.setrlimit(resource.RLIMIT_AS, (int(cap_gib * 2**30),) * 2)
            from cellpose import utils

            stack = np.empty(shape, np.int32)
            for z in range(shape[0]):
                stack[z] = src[z]
            utils.stitch3D(stack, stitch_threshold=0.25)
        result["ok"] = True
    except MemoryError as err:
        result.update(ok=False, error=f"MemoryError: {err}")
    result["s"] = time.perf_counter() - t
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result), flush=True)


def _run_child(*argv: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        return {"tool": argv[0], "ok": False, "error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    return json.loads(lines[-1])


def big(args: argparse.Namespace, work: Path) -> dict:
    size = 16384
    shape = (args.big_slices, size, size)
    path = work / "big.raw"
    raw = RawSlices(path, shape, "w")
    counts = []
    t = time.perf_counter()
    for z in range(shape[0]):
        s = cell_stack(shape, 150_000, seed=0, z=z)
        counts.append(int(s.max()))
        raw[z] = s
        del s
    made = time.perf_counter() - t
    runs = {}
    for tool in ("read", "scip", "cellpose"):
        runs[tool] = _run_child(tool, str(path), json.dumps(list(shape)), str(work / "out.raw"),
                                str(args.threads), str(args.cap_gib))
        print(json.dumps(runs[tool]), flush=True)
    # Memory of stitch3d does not grow with the number of slices: half as many.
    half = (max(2, shape[0] // 2), size, size)
    runs["scip_half_slices"] = _run_child("scip", str(path), json.dumps(list(half)), str(work / "out.raw"),
                                          str(args.threads), str(args.cap_gib))
    print(json.dumps(runs["scip_half_slices"]), flush=True)
    return {"case": "big", "shape": list(shape), "labels_per_slice": counts, "generate_s": made,
            "threads": args.threads, "cellpose_cap_gib": args.cap_gib, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--big", action="store_true")
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--depths", type=float, nargs="+", default=[4.0],
                        help="--small: one stack per value of the cells' mean semi-axis along Z (slices)")
    parser.add_argument("--big-slices", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cap-gib", type=float, default=16.0)
    parser.add_argument("--workdir", type=Path, help="where the stacks are written (default: a temporary folder)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        tool, path, shape, out, threads, cap = args.child
        _child(tool, path, json.loads(shape), out, int(threads), float(cap))
        return
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.small:
            for depth in args.depths:
                results.append(small(args, Path(tmp), depth))
                print(json.dumps(results[-1]), flush=True)
        if args.big:
            results.append(big(args, Path(tmp)))
    if args.out:
        # Cases run separately (the big one takes long) share one file: a run
        # replaces its own cases and keeps the others.
        meta = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count()}
        command = "python benchmarks/bench_stitch.py " + " ".join(argv if argv is not None else sys.argv[1:])
        for r in results:
            r["command"] = command
        old = json.loads(args.out.read_text())["results"] if args.out.exists() else []
        cases = {r["case"] for r in results}
        merged = [r for r in old if r["case"] not in cases] + results
        args.out.write_text(json.dumps({"meta": meta, "results": merged}, indent=1))


if __name__ == "__main__":
    main()
