"""Benchmark of the U-Net segmentation: speed against Cellpose's network, and accuracy of each variant.

Speed, network only: every variant of the shipped U-Net and Cellpose 3's
network (``cellpose.resnet_torch.CPnet``, Cellpose's default ``nbase``
[2, 32, 64, 128, 256], 3 outputs, random weights: the speed does not depend
on them) take turns, ``--repeats`` rounds after a warm-up round; medians of
the alternated runs (``benchmarks/_timing.py``). Cellpose runs as its CPU
default does (``cellpose.core._forward``: MKL-DNN when torch has it, batches
of 8 tiles of 224x224, 2 channels); the U-Net on batches of ``--batch``
512x512 tiles cut from the validation images, and also on Cellpose's own
8 x 224x224 input (equal input). Megapixels/s of input and the ratio to
Cellpose in the same run.

Speed, as each tool runs its network on a whole ``--side`` x ``--side``
image (the first validation image mirrored to that size): Cellpose's
``cellpose.core.run_net`` (224 px tiles, 10 % overlap, batches of 8, tile
averaging) against scip's ``predict_probabilities`` (tiles of at most 512 px, 64 px
overlap, batches of 4, blending), alternated, medians (no warm-up round:
the networks ran above).

Accuracy: the mnfinder validation split (3 images, 235 nuclei, not used in
training) segmented whole, as the pipeline does; object F1 at IoU 0.5,
object Jaccard (mean over true nuclei of the best IoU) and pixel Jaccard,
per image set and pooled (:mod:`scip.segment.unet.score`). Otsu+watershed
(``scip.segment.segment(img, "watershed")``, default parameters) is the
classical reference.

Variants: the default CPU path (``runtime: auto``: onnxruntime FP32), torch
FP32 with batch norms folded (``runtime: torch``), torch FP32 as before
(unfolded), INT8 static and dynamic, onnxruntime with spinning threads,
a TorchScript-frozen network, and the default with 8-fold test-time
augmentation. With CUDA: FP32 vs FP16 autocast throughput; without, that
part is skipped and says so.

Usage::

    .venv/bin/python benchmarks/bench_unet.py [--model nuclei] [--threads 2] [--side 1024] \
        [--data /path/to/mnfinder/validation-data]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _timing import alternate  # noqa: E402
from scip.segment import segment  # noqa: E402
from scip.segment.unet import modelfile  # noqa: E402
from scip.segment.unet.data import normalize  # noqa: E402
from scip.segment.unet.export import export_onnx, onnx_bytes, run_onnx  # noqa: E402
from scip.segment.unet.predict import (Predictor, clean_nuclei, labels_from_probabilities,  # noqa: E402
                                       load_predictor, predict_probabilities)
from scip.segment.unet.score import pool, score_image  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "mnfinder" / "validation-data"
TILE = 512
CELLPOSE_TILE = 224


def validation_images(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(set name, image, nucleus labels) of every validation image."""
    out = []
    for path in sorted(folder.glob("*/*.tif")):
        if path.stem.endswith(("_nuclei", "_micronuclei")):
            continue
        out.append((path.parent.name, tifffile.imread(path).astype(np.float32),
                    tifffile.imread(path.with_name(path.stem + "_nuclei.tif"))))
    return out


def tiles(images, n: int, meta: dict) -> np.ndarray:
    """``n`` normalized 512x512 tiles, cut from the images in turn (zero-padded where smaller)."""
    norm = meta["normalization"]
    out = []
    for i in range(n):
        img = normalize(images[i % len(images)][1][None], norm["low"], norm["high"])
        tile = np.zeros((1, TILE, TILE), np.float32)
        h, w = min(TILE, img.shape[1]), min(TILE, img.shape[2])
        tile[:, :h, :w] = img[:, :h, :w]
        out.append(tile)
    return np.stack(out)


def cellpose_network(threads: int):
    """Cellpose 3's network as ``CellposeModel`` builds it on the CPU (default nbase, MKL-DNN flag), random weights."""
    from cellpose import core
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    net = CPnet([2, 32, 64, 128, 256], 3, sz=3, mkldnn=core.check_mkl(True)).eval()
    torch.set_num_threads(threads)
    return net


def plain_predictor(mf) -> Predictor:
    """The torch FP32 network as it ran before batch-norm folding: eager, channels-last."""
    return Predictor(mf, mf.network().to(memory_format=torch.channels_last), torch.device("cpu"), None, "fp32")


def frozen_predictor(mf, example: np.ndarray) -> Predictor:
    """TorchScript: traced, frozen and ``optimize_for_inference`` (folds batch norms, MKL-DNN where it can)."""
    with torch.inference_mode():
        traced = torch.jit.trace(mf.network().eval(), torch.from_numpy(example))
    net = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    return Predictor(mf, net, torch.device("cpu"), None, "fp32", runtime="torchscript")


def spinning_predictor(mf, threads: int) -> Predictor:
    """onnxruntime with its threads spinning between calls (onnxruntime's default; scip turns it off)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    session = ort.InferenceSession(onnx_bytes(mf), options, providers=["CPUExecutionProvider"])
    return Predictor(mf, lambda x: torch.from_numpy(run_onnx(session, x.cpu().numpy())), torch.device("cpu"), None,
                     "fp32", activation=lambda y: y, runtime="onnxruntime")


def whole_image(images, side: int) -> np.ndarray:
    """The first validation image, mirrored to ``side`` x ``side`` (network speed does not depend on content)."""
    img = images[0][1]
    reps = (-(-side // img.shape[0]), -(-side // img.shape[1]))
    return np.pad(img, ((0, reps[0] * img.shape[0] - img.shape[0]), (0, reps[1] * img.shape[1] - img.shape[1])),
                  mode="symmetric")[:side, :side]


def unet_segmenter(predictor: Predictor, tta: bool = False):
    """The pipeline's U-Net step (normalization, tiles, thresholds, the model file's clean-up) with one predictor."""
    meta = predictor.model.meta
    norm, post = meta["normalization"], meta["postprocess"]

    def run(image: np.ndarray) -> np.ndarray:
        probs = predict_probabilities(normalize(image[None], norm["low"], norm["high"]), predictor, tta=tta)
        labels = labels_from_probabilities(probs, post["threshold"], post["seed_threshold"], 20, post.get("seed_h"))
        return clean_nuclei(labels, probs, predictor.model)

    return run


def accuracy(images, segment_fn) -> tuple[dict, dict, float]:
    """Pooled scores per image set and overall, and seconds per image (whole pipeline step)."""
    per_set, scores, start = {}, [], time.perf_counter()
    for name, image, truth in images:
        s = score_image(truth, segment_fn(image))
        per_set.setdefault(name, []).append(s)
        scores.append(s)
    seconds = (time.perf_counter() - start) / len(images)
    return {k: pool(v) for k, v in per_set.items()}, pool(scores), seconds


def cuda_comparison(mf: modelfile.ModelFile, batch: np.ndarray, images, repeats: int) -> tuple[str, dict | None]:
    """FP32 against FP16 autocast on CUDA: network tiles/s (batches of 2, 4x and 16x ``batch``, alternated) and
    the validation images segmented whole with each (accuracy, s/image). A line and a dict; no GPU: a reason."""
    if not torch.cuda.is_available():
        return "skipped: torch.cuda.is_available() is False (no GPU on this machine)", None
    p32 = load_predictor(mf.path, device="cuda", precision="fp32")
    p16 = load_predictor(mf.path, device="cuda", precision="fp16")
    out: dict = {"device": torch.cuda.get_device_name(0), "batches": {}}
    for k in (2, 4, 16):
        big = np.concatenate([batch] * k)

        def synced(p, big=big):
            p.forward(big)
            torch.cuda.synchronize()

        synced(p32), synced(p16)  # warm-up: cuDNN picks its algorithms on the first call of a shape
        t = alternate({"fp32": lambda: synced(p32), "fp16": lambda: synced(p16)}, repeats)
        out["batches"][len(big)] = {"fp32_tiles_per_s": len(big) / t["fp32"].median,
                                    "fp16_tiles_per_s": len(big) / t["fp16"].median}
    for name, p in (("fp32", p32), ("fp16", p16)):
        _, total, seconds = accuracy(images, unet_segmenter(p))
        out[name] = {"total": total, "seconds_per_image": seconds}
    rates = "; ".join(f"batch {n}: FP32 {r['fp32_tiles_per_s']:.0f}, FP16 {r['fp16_tiles_per_s']:.0f} tiles/s of "
                      f"{TILE}² ({r['fp16_tiles_per_s'] / r['fp32_tiles_per_s']:.2f}x)" for n, r in out["batches"].items())
    line = (f"{out['device']}, median of {repeats} alternated runs: {rates}. Whole validation images (pipeline step, "
            f"tiles of the pipeline's default size): FP32 F1@0.5 {out['fp32']['total']['f1']:.3f} at "
            f"{out['fp32']['seconds_per_image']:.2f} s/image, FP16 {out['fp16']['total']['f1']:.3f} at "
            f"{out['fp16']['seconds_per_image']:.2f} s/image")
    return line, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--side", type=int, default=1024, help="side of the whole image run as each tool runs it")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "unet.md")
    parser.add_argument("--cuda-only", action="store_true",
                        help="only the CUDA FP32/FP16 comparison (no Cellpose needed), written to --out")
    args = parser.parse_args()
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    images = validation_images(args.data)
    mf = modelfile.load(args.model)
    batch = tiles(images, args.batch, mf.meta)
    if args.cuda_only:
        line, res = cuda_comparison(mf, batch, images, args.repeats)
        print(f"CUDA FP32 vs FP16: {line}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# U-Net on CUDA: FP32 against FP16\n\nCommand: `python benchmarks/bench_unet.py --cuda-only "
                            f"--repeats {args.repeats}`; torch {torch.__version__}, model `{args.model}` "
                            f"({mf.describe()}).\n\n{line}.\n")
        args.out.with_suffix(".json").write_text(json.dumps(res, indent=2))
        return
    check = export_onnx(mf, Path(tempfile.mkdtemp()) / "model.onnx")
    cp_net = cellpose_network(args.threads)
    from cellpose import core as cp_core

    default = load_predictor(mf.path, device="cpu")
    assert default.runtime == "onnxruntime", "the benchmark needs onnxruntime (pip install 'scip[onnx]')"
    folded = load_predictor(mf.path, device="cpu", runtime="torch")
    # name: (predictor, tta, also scored for accuracy)
    variants = {
        "scip default: onnxruntime FP32": (default, False, True),
        "torch FP32, batch norms folded": (folded, False, True),
        "torch FP32 unfolded (before)": (plain_predictor(mf), False, True),
        "torch FP32, TorchScript freeze + optimize_for_inference": (frozen_predictor(mf, batch), False, False),
        "onnxruntime FP32, spinning threads": (spinning_predictor(mf, args.threads), False, False),
        "torch INT8 static": (load_predictor(mf.path, device="cpu", quantize="static"), False, True),
        "torch INT8 dynamic": (load_predictor(mf.path, device="cpu", quantize="dynamic"), False, True),
        "scip default + TTA (8x)": (default, True, True),
    }
    cp_batch = np.random.default_rng(0).random((8, 2, CELLPOSE_TILE, CELLPOSE_TILE), dtype=np.float32)
    unet_on_cp_tiles = np.ascontiguousarray(cp_batch[:, :mf.in_channels])
    funcs = {"Cellpose network (CPnet, as Cellpose runs it)": lambda: cp_core._forward(cp_net, cp_batch)}
    pixels = {"Cellpose network (CPnet, as Cellpose runs it)": cp_batch.shape[0] * CELLPOSE_TILE ** 2}
    for name, (predictor, tta, _) in variants.items():
        funcs[name] = (lambda p=predictor, t=tta: p.forward(batch, tta=t))
        pixels[name] = batch.shape[0] * TILE * TILE
    funcs["scip default on Cellpose's input (8 x 224²)"] = lambda: default.forward(unet_on_cp_tiles)
    pixels["scip default on Cellpose's input (8 x 224²)"] = pixels["Cellpose network (CPnet, as Cellpose runs it)"]
    print(f"network only: {len(funcs)} callables, {args.repeats} alternated rounds", flush=True)
    net_timing = alternate(funcs, args.repeats)
    cp_name = "Cellpose network (CPnet, as Cellpose runs it)"
    cp_rate = pixels[cp_name] / net_timing[cp_name].median
    speed = {name: {"mpx_per_s": pixels[name] / t.median / 1e6, "vs_cellpose": pixels[name] / t.median / cp_rate,
                    "median_s": t.median, "times_s": t.times, "pixels": pixels[name]}
             for name, t in net_timing.items()}
    for name, row in speed.items():
        print(f"{name}: {row['mpx_per_s']:.3f} Mpx/s, {row['vs_cellpose']:.1f}x Cellpose", flush=True)

    # The whole image as each tool runs its network: tiling, overlap, batching and tile blending included.
    image = whole_image(images, args.side)
    norm = mf.meta["normalization"]
    scip_input = normalize(image[None].astype(np.float32), norm["low"], norm["high"])
    cp_input = np.zeros((1, args.side, args.side, 2), np.float32)
    cp_input[0, :, :, 0] = scip_input[0]
    whole_funcs = {
        "Cellpose run_net (224 px tiles, 10 % overlap, batch 8)": lambda: cp_core.run_net(cp_net, cp_input),
        "scip default (onnxruntime; tiles of at most 512 px, 64 px overlap, batch 4)":
            lambda: predict_probabilities(scip_input, default),
        "scip default, tile 1024": lambda: predict_probabilities(scip_input, default, tile=1024),
        "scip torch FP32 folded (tiles of at most 512 px)": lambda: predict_probabilities(scip_input, folded),
    }
    print(f"whole {args.side}² image: {args.repeats} alternated rounds", flush=True)
    whole_timing = alternate(whole_funcs, args.repeats, warmup=0)  # every network is warm from the rounds above
    cp_whole = next(iter(whole_timing.values())).median
    whole = {name: {"median_s": t.median, "times_s": t.times, "mpx_per_s": args.side ** 2 / t.median / 1e6,
                    "vs_cellpose": cp_whole / t.median} for name, t in whole_timing.items()}
    for name, row in whole.items():
        print(f"{name}: {row['median_s']:.2f} s, {row['vs_cellpose']:.1f}x Cellpose", flush=True)

    rows, results = [], {"network_only": speed, "whole_image": whole, "side": args.side}
    for name, (predictor, tta, scored) in variants.items():
        if not scored:
            continue
        per_set, total, seconds = accuracy(images, unet_segmenter(predictor, tta))
        results[name] = {"seconds_per_image": seconds, "total": total, "per_set": per_set}
        rows.append((name, speed[name]["mpx_per_s"], seconds, total, per_set))
        print(f"{name}: {seconds:.2f} s/image, F1 {total['f1']:.3f}, object Jaccard {total['object_jaccard']:.3f}",
              flush=True)
    per_set, total, seconds = accuracy(images, lambda img: segment(img, "watershed"))
    results["Otsu+watershed"] = {"seconds_per_image": seconds, "total": total, "per_set": per_set}
    rows.append(("Otsu+watershed (classical)", None, seconds, total, per_set))
    print(f"Otsu+watershed: {seconds:.2f} s/image, F1 {total['f1']:.3f}", flush=True)

    cuda, results["cuda"] = cuda_comparison(mf, batch, images, args.repeats)
    print(f"CUDA FP32 vs FP16: {cuda}")
    load_end = os.getloadavg()
    results["load_average_1_5_15"] = {"start": load_start, "end": load_end}

    sets = sorted({name for name, _, _ in images})
    n_true = {s: sum(np.count_nonzero(np.bincount(t.ravel())[1:]) for n, _, t in images if n == s) for s in sets}
    load = " ".join(f"{x:.2f}" for x in load_start) + " → " + " ".join(f"{x:.2f}" for x in load_end)
    lines = [
        "# U-Net segmentation benchmark", "",
        f"Command: `python benchmarks/bench_unet.py --threads {args.threads} --side {args.side} "
        f"--repeats {args.repeats}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs, load average (1, 5, 15 min) "
        f"{load} over the run; {torch.get_num_threads()} torch threads, onnxruntime {args.threads} threads, "
        f"CPython {platform.python_version()}, torch {torch.__version__}, onnxruntime "
        f"{__import__('onnxruntime').__version__}, cellpose {__import__('cellpose').version}. Model: `{args.model}` "
        f"({mf.describe()}). ONNX export check: largest probability difference to torch {check.max_abs_diff:.1e}.", "",
        f"Every figure is the median of {args.repeats} alternated runs (each callable once per round, in turn; "
        "one warm-up round before the network-only rounds); the reference (Cellpose's network) ran in the same "
        "rounds.", "",
        "## Network only, per pixel", "",
        f"Cellpose 3's network (`CPnet`, nbase [2, 32, 64, 128, 256], random weights) through "
        f"`cellpose.core._forward`, as Cellpose runs it on the CPU (MKL-DNN), on 8 tiles of {CELLPOSE_TILE}² with 2 "
        f"channels; the U-Net variants on {len(batch)} tiles of {TILE}² cut from the validation images.", "",
        "| network | Mpx/s | × Cellpose | median s per call | runs (s) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in speed.items():
        lines.append(f"| {name} | {row['mpx_per_s']:.3f} | {row['vs_cellpose']:.1f} | {row['median_s']:.3f} | "
                     + ", ".join(f"{x:.2f}" for x in row["times_s"]) + " |")
    lines += ["", f"## The network as each tool runs it, one {args.side}² image", "",
              "Tiling, overlap, batching and the blending of tile outputs included (normalization and "
              "post-processing excluded). Cellpose: `cellpose.core.run_net` with its defaults; scip: "
              "`predict_probabilities` with the pipeline's defaults.", "",
              "| what | median s | Mpx/s of image | × Cellpose | runs (s) |", "|---|---:|---:|---:|---|"]
    for name, row in whole.items():
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['mpx_per_s']:.3f} | {row['vs_cellpose']:.1f} | "
                     + ", ".join(f"{x:.2f}" for x in row["times_s"]) + " |")
    lines += ["", "## Accuracy", "",
              "mnfinder validation split (not used in training), whole images as in the pipeline (normalization, "
              "tiles, thresholds, h-maxima seeds and the model file's clean-up); s/image includes all of it. "
              "F1 at IoU 0.5; object Jaccard = mean over true nuclei of the best IoU; pixel Jaccard = foreground "
              "IoU. Mpx/s from the network-only table.", "",
              "| variant | Mpx/s | s/image | F1@0.5 | object Jaccard | pixel Jaccard | precision | recall |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rate, seconds, total, _ in rows:
        lines.append(f"| {name} | {'' if rate is None else f'{rate:.3f}'} | {seconds:.2f} | {total['f1']:.3f} | "
                     f"{total['object_jaccard']:.3f} | {total['pixel_jaccard']:.3f} | {total['precision']:.3f} | "
                     f"{total['recall']:.3f} |")
    lines += ["", "Per image set (F1@0.5 / object Jaccard):", "",
              "| variant | " + " | ".join(f"{s} ({n_true[s]} nuclei)" for s in sets) + " |",
              "|---|" + "---:|" * len(sets)]
    for name, _, _, _, per_set in rows:
        lines.append(f"| {name} | " + " | ".join(f"{per_set[s]['f1']:.3f} / {per_set[s]['object_jaccard']:.3f}"
                                                 for s in sets) + " |")
    lines += ["", f"CUDA FP32 vs FP16: {cuda}.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
