"""Cellpose flow post-processing: Cellpose 3's own CPU code vs scip.segment.flows.

Two sources of flows, both fed unchanged to both implementations:

- ``synthetic``: label images of touching elliptical cells
  (``scip.segment._flows_synthetic.cell_labels``); flows from Cellpose's own
  ``dynamics.masks_to_flows`` times 5 (what a network is trained to output)
  plus smooth noise, and a cell probability (+4 inside, -4 outside,
  blurred, plus noise);
- ``model``: the outputs (``compute_masks=False``) of a Cellpose network
  run on a real image tiled from ``../shared/data/mnfinder`` nuclei images.
  The model is a local file: ``--make-model`` trains one briefly from
  random weights on the mnfinder training split (nothing is downloaded).

For each, Cellpose's ``dynamics.resize_and_compute_masks`` (what
``CellposeModel.eval`` runs, on the CPU) and ``scip.segment.flows.compute_masks``
run on the same inputs, alternately (scip, Cellpose, scip, ...), ``--repeats``
times each; the median wall time of each is reported (the speed-up is the
ratio of the medians) with the agreement of the masks (matched at IoU >= 0.5:
mean IoU of matched pairs over max(count), counts). ``--stages`` adds the
median wall time of each step of scip on one thread (as many extra runs).

    python benchmarks/bench_flows.py --make-model ~/.cache/scip/cellpose_mnfinder.pth --epochs 30
    python benchmarks/bench_flows.py --sizes 512 1024 2048 --jumps 4 --threads 1 2 --stages \\
        --model ~/.cache/scip/cellpose_mnfinder.pth --out benchmarks/results/flows.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scip.metrics import match_labels  # noqa: E402
from scip.segment import flows  # noqa: E402
from scip.segment._flows_synthetic import cell_labels  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MNFINDER = DATA / "mnfinder"


def synthetic_flows(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(dP, cellprob, number of cells) for a size × size image with about one cell per 45² pixels."""
    import torch
    from cellpose import dynamics

    labels = cell_labels((size, size), max(1, size * size // 2000), seed=seed)
    mu = dynamics.masks_to_flows(labels, device=torch.device("cpu"))
    rng = np.random.default_rng(seed)
    dP = (5 * mu).astype(np.float32)
    dP += 2.5 * ndi.gaussian_filter(rng.normal(size=dP.shape), (0, 2, 2)).astype(np.float32)
    cellprob = ndi.gaussian_filter(np.where(labels > 0, 4.0, -4.0), 1.5) + rng.normal(0, 0.5, labels.shape)
    return dP, cellprob.astype(np.float32), int(labels.max())


def _mnfinder_images() -> list[tuple[np.ndarray, np.ndarray]]:
    import tifffile

    pairs = []
    for path in sorted((MNFINDER / "training-data").glob("*/*.tif")):
        if path.stem.endswith(("_nuclei", "_micronuclei")):
            continue
        pairs.append((tifffile.imread(path), tifffile.imread(path.with_name(path.stem + "_nuclei.tif"))))
    return pairs


def make_model(path: Path, epochs: int, seed: int = 0) -> None:
    """Train a Cellpose 3 network from random weights on the mnfinder training nuclei (CPU).

    112-pixel crops instead of Cellpose's 224 keep a CPU epoch short; the
    model only has to give realistic, imperfect flows, not good masks.
    ``seed`` seeds torch (initial weights, batches) and numpy (Cellpose's
    augmentation): unseeded, two runs gave models far apart (one whose masks
    all failed the flow check).
    """
    import torch
    from cellpose import models, train

    torch.manual_seed(seed)
    np.random.seed(seed)
    pairs = _mnfinder_images()
    model = models.CellposeModel(pretrained_model=False, device=torch.device("cpu"))  # random weights
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    saved = train.train_seg(model.net, train_data=[p[0] for p in pairs], train_labels=[p[1] for p in pairs],
                            channels=[0, 0], n_epochs=epochs, learning_rate=0.02, batch_size=8, bsize=112,
                            save_path=str(path.parent), model_name=path.name, min_train_masks=1)
    saved = Path(saved[0] if isinstance(saved, tuple) else saved)
    if saved != path:
        saved.replace(path)
    print(f"trained {epochs} epochs on {len(pairs)} images in {time.perf_counter() - t0:.0f} s: {path}")


def model_flows(model_path: Path, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Network outputs on a size × size mosaic of mnfinder validation images (reflected to fill)."""
    import tifffile
    import torch
    from cellpose import models

    tiles = []
    for path in sorted((MNFINDER / "validation-data").glob("*/*.tif")):
        if not path.stem.endswith(("_nuclei", "_micronuclei")):
            img = tifffile.imread(path).astype(np.float32)
            lo, hi = np.percentile(img, (1, 99))
            tiles.append((img - lo) / max(hi - lo, 1e-6))
    row = np.concatenate([t[:512, :512] for t in tiles], axis=1)
    mosaic = np.pad(row, ((0, max(0, size - row.shape[0])), (0, max(0, size - row.shape[1]))), mode="reflect")
    mosaic = mosaic[:size, :size]
    model = models.CellposeModel(pretrained_model=str(model_path), device=torch.device("cpu"))
    _, out, _ = model.eval(mosaic, channels=[0, 0], compute_masks=False)
    return np.ascontiguousarray(out[1], np.float32), np.ascontiguousarray(out[2], np.float32), -1


def agreement(ref: np.ndarray, ours: np.ndarray) -> dict:
    m = match_labels(ref, ours, 0.5)
    n = max(m.n_true, m.n_pred, 1)
    return {"cellpose_masks": m.n_true, "scip_masks": m.n_pred, "matched": m.tp,
            "mean_matched_iou": float(m.ious.sum() / n) if m.tp else float(m.n_true == m.n_pred == 0),
            "count_difference_pct": 100.0 * (m.n_pred - m.n_true) / max(m.n_true, 1),
            "identical_pixels_pct": 100.0 * float(np.mean((ref > 0) == (ours > 0)))}


def stage_times(dP: np.ndarray, cellprob: np.ndarray, jump: int | None, repeats: int) -> dict:
    """Median wall time (s) of each step of ``compute_masks`` on one thread (the laps it records)."""
    runs = []
    for _ in range(repeats):
        stages = {}
        with flows._Threads(1, stages) as pool:
            flows._compute(*flows._check_inputs(dP, cellprob), 200, 0.0, 0.4, 15, 0.4, jump, pool)
        stages.pop("start", None)
        runs.append(stages)
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def run_case(name: str, dP: np.ndarray, cellprob: np.ndarray, repeats: int, jumps: list, threads: list,
             stages: bool = False) -> dict:
    import torch
    from cellpose import dynamics

    def cellpose_masks():
        return dynamics.resize_and_compute_masks(dP, cellprob, niter=200, cellprob_threshold=0.0,
                                                 flow_threshold=0.4, min_size=15, device=torch.device("cpu"))

    result = {"case": name, "shape": list(cellprob.shape), "cell_pixels": int((cellprob > 0).sum()),
              "repeats": repeats, "load_before": os.getloadavg()}
    variants = [(jump, 1) for jump in jumps] + [(jumps[0], n) for n in threads if n != 1]
    times = {"cellpose": []}
    ref = None
    masks = {}
    # One untimed run of each first (compilation for these arrays' layouts),
    # then alternated: each scip variant, then Cellpose, repeats times; medians.
    for jump, n in variants:
        flows.compute_masks(dP, cellprob, jump=jump, threads=n)
    cellpose_masks()
    for _ in range(repeats):
        for jump, n in variants:
            t = time.perf_counter()
            masks[jump, n] = flows.compute_masks(dP, cellprob, jump=jump, threads=n)
            times.setdefault((jump, n), []).append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = cellpose_masks()
        times["cellpose"].append(time.perf_counter() - t)
    ref = ref.astype(np.int32)
    result["cellpose_s"] = float(np.median(times["cellpose"]))
    result["cellpose_runs_s"] = times["cellpose"]
    result["scip"] = []
    for jump, n in variants:
        median = float(np.median(times[jump, n]))
        result["scip"].append({"jump": jump, "threads": n, "s": median, "runs_s": times[jump, n],
                               "speedup": result["cellpose_s"] / median,
                               "identical": bool(np.array_equal(ref, masks[jump, n])),
                               **agreement(ref, masks[jump, n])})
    if stages:
        result["stages_1_thread_s"] = stage_times(dP, cellprob, jumps[0], repeats)
    result["load_after"] = os.getloadavg()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jumps", nargs="+", default=[str(flows.DEFAULT_JUMP)],
                        help="values of compute_masks(jump=...), one thread each; 'None' follows every pixel exactly")
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="thread counts for compute_masks with the first jump value")
    parser.add_argument("--model", type=Path, help="a local Cellpose 3 model file for the 'model' case")
    parser.add_argument("--make-model", type=Path, help="train a model to this file and exit")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="seed of --make-model's training")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for training and the network")
    parser.add_argument("--stages", action="store_true", help="also time each step of scip (one thread)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (holds mnfinder/)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    global MNFINDER
    MNFINDER = args.data / "mnfinder"
    import torch

    torch.set_num_threads(args.torch_threads)
    if args.make_model:
        make_model(args.make_model.expanduser(), args.epochs, args.seed)
        return
    jumps = [None if j == "None" else int(j) for j in args.jumps]
    # Compile the numba kernels (both implementations) outside the timings.
    warm = synthetic_flows(96)
    run_case("warm-up", warm[0], warm[1], 1, jumps, args.threads)
    results = []
    for size in args.sizes:
        dP, cellprob, n = synthetic_flows(size)
        r = run_case("synthetic", dP, cellprob, args.repeats, jumps, args.threads, args.stages)
        r["cells_drawn"] = n
        results.append(r)
        print(json.dumps(r), flush=True)
        if args.model:
            dP, cellprob, _ = model_flows(args.model.expanduser(), size)
            r = run_case("model", dP, cellprob, args.repeats, jumps, args.threads, args.stages)
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.out:
        import cellpose
        import numba

        meta = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                "cellpose": cellpose.version, "machine": platform.machine(), "cpus": os.cpu_count(),
                "command": "python benchmarks/bench_flows.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
