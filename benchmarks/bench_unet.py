"""Benchmark of the U-Net segmentation: speed and accuracy of each inference variant.

Speed: 512x512 tiles per second through the network alone (normalization
and post-processing excluded), batches of ``--batch`` tiles cut from the
validation images, best of ``--repeats`` timed runs after one warm-up run,
``--threads`` CPU threads (torch and onnxruntime alike).

Accuracy: the mnfinder validation split (3 images, 235 nuclei, not used in
training) segmented whole, as the pipeline does; object F1 at IoU 0.5,
object Jaccard (mean over true nuclei of the best IoU) and pixel Jaccard,
per image set and pooled (:mod:`scip.segment.unet.score`). Otsu+watershed
(``scip.segment.segment(img, "watershed")``, default parameters) is the
classical reference.

Variants: torch FP32 (channels-last), INT8 static (calibrated on the model
file's crops), INT8 dynamic, onnxruntime FP32 (the ``scip export-model``
graph), and torch FP32 with 8-fold test-time augmentation. With CUDA:
FP32 vs FP16 autocast throughput; without, that part is skipped and says so.

Usage::

    .venv/bin/python benchmarks/bench_unet.py [--model nuclei] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
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

from scip.segment import segment  # noqa: E402
from scip.segment.unet import modelfile  # noqa: E402
from scip.segment.unet.data import normalize  # noqa: E402
from scip.segment.unet.export import export_onnx, onnx_session, run_onnx  # noqa: E402
from scip.segment.unet.predict import (Predictor, labels_from_probabilities, load_predictor,  # noqa: E402
                                       predict_probabilities)
from scip.segment.unet.score import pool, score_image  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "mnfinder" / "validation-data"
TILE = 512


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


def tiles_per_second(predictor: Predictor, batch: np.ndarray, repeats: int, tta: bool = False) -> float:
    predictor.forward(batch, tta=tta)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.forward(batch, tta=tta)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


def accuracy(images, segment_fn) -> tuple[dict, dict, float]:
    """Pooled scores per image set and overall, and seconds per image (whole pipeline step)."""
    per_set, scores, start = {}, [], time.perf_counter()
    for name, image, truth in images:
        s = score_image(truth, segment_fn(image))
        per_set.setdefault(name, []).append(s)
        scores.append(s)
    seconds = (time.perf_counter() - start) / len(images)
    return {k: pool(v) for k, v in per_set.items()}, pool(scores), seconds


def unet_segmenter(predictor: Predictor, tta: bool = False):
    meta = predictor.model.meta
    norm, post = meta["normalization"], meta["postprocess"]

    def run(image: np.ndarray) -> np.ndarray:
        probs = predict_probabilities(normalize(image[None], norm["low"], norm["high"]), predictor, tta=tta)
        return labels_from_probabilities(probs, post["threshold"], post["seed_threshold"], 20)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="nuclei")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "unet.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = validation_images(args.data)
    mf = modelfile.load(args.model)
    batch = tiles(images, args.batch, mf.meta)

    onnx_path = Path(tempfile.mkdtemp()) / "model.onnx"
    check = export_onnx(mf, onnx_path)
    session = onnx_session(onnx_path, threads=args.threads)
    ort = Predictor(mf, lambda x: torch.from_numpy(run_onnx(session, x.cpu().numpy())), torch.device("cpu"), None,
                    "onnxruntime", activation=lambda y: y)
    fp32 = load_predictor(mf.path, device="cpu")
    variants = [
        ("torch FP32", fp32, False),
        ("torch INT8 static", load_predictor(mf.path, device="cpu", quantize="static"), False),
        ("torch INT8 dynamic", load_predictor(mf.path, device="cpu", quantize="dynamic"), False),
        ("onnxruntime FP32", ort, False),
        ("torch FP32 + TTA (8x)", fp32, True),
    ]
    rows, results = [], {}
    for name, predictor, tta in variants:
        rate = tiles_per_second(predictor, batch, args.repeats, tta)
        per_set, total, seconds = accuracy(images, unet_segmenter(predictor, tta))
        results[name] = {"tiles_per_s": rate, "seconds_per_image": seconds, "total": total, "per_set": per_set}
        rows.append((name, rate, seconds, total, per_set))
        print(f"{name}: {rate:.2f} tiles/s, {seconds:.2f} s/image, F1 {total['f1']:.3f}, "
              f"object Jaccard {total['object_jaccard']:.3f}", flush=True)
    per_set, total, seconds = accuracy(images, lambda img: segment(img, "watershed"))
    results["Otsu+watershed"] = {"seconds_per_image": seconds, "total": total, "per_set": per_set}
    rows.append(("Otsu+watershed (classical)", None, seconds, total, per_set))
    print(f"Otsu+watershed: {seconds:.2f} s/image, F1 {total['f1']:.3f}", flush=True)

    cuda = "skipped: torch.cuda.is_available() is False (no GPU on this machine)"
    if torch.cuda.is_available():
        big = np.concatenate([batch] * 2)
        r32 = tiles_per_second(load_predictor(mf.path, device="cuda", precision="fp32"), big, args.repeats)
        r16 = tiles_per_second(load_predictor(mf.path, device="cuda", precision="fp16"), big, args.repeats)
        _, t16, _ = accuracy(images, unet_segmenter(load_predictor(mf.path, device="cuda", precision="fp16")))
        cuda = (f"{torch.cuda.get_device_name(0)}, batches of {len(big)}: FP32 {r32:.1f} tiles/s, FP16 autocast "
                f"{r16:.1f} tiles/s ({r16 / r32:.2f}x); FP16 F1@0.5 {t16['f1']:.3f}")
        results["cuda"] = {"fp32_tiles_per_s": r32, "fp16_tiles_per_s": r16, "fp16_total": t16}
    print(f"CUDA FP32 vs FP16: {cuda}")

    sets = sorted({name for name, _, _ in images})
    n_true = {s: sum(np.count_nonzero(np.bincount(t.ravel())[1:]) for n, _, t in images if n == s) for s in sets}
    lines = [
        "# U-Net segmentation benchmark", "",
        f"Command: `python benchmarks/bench_unet.py --threads {args.threads}`", "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads (onnxruntime: {args.threads}), "
        f"CPython {platform.python_version()}, torch {torch.__version__}, quantized engine "
        f"{torch.backends.quantized.engine}. Model: `{args.model}` ({mf.describe()}). ONNX export check: largest "
        f"probability difference to torch {check.max_abs_diff:.1e}.", "",
        f"Speed: {TILE}x{TILE} tiles through the network only, batches of {len(batch)}, best of {args.repeats}. "
        "Accuracy: mnfinder validation split (not used in training), whole images as in the pipeline; "
        "s/image includes normalization, tiling and post-processing. F1 at IoU 0.5; object Jaccard = mean over "
        "true nuclei of the best IoU; pixel Jaccard = foreground IoU.", "",
        "| variant | tiles/s | s/image | F1@0.5 | object Jaccard | pixel Jaccard | precision | recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rate, seconds, total, _ in rows:
        lines.append(f"| {name} | {'' if rate is None else f'{rate:.2f}'} | {seconds:.2f} | {total['f1']:.3f} | "
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
