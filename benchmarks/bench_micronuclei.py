"""Micronucleus detection and per-cell counts on the mnfinder validation split, as ``micronuclei:`` does them.

For each image of a split (``<set>/<name>.tif`` with ``<name>_nuclei.tif``, ``<name>_micronuclei.tif``,
and the split's ``cells.csv``), each method finds micronuclei exactly as a run does
(:func:`scip.steps.micronuclei.detect`, :func:`scip.segment.micronuclei.clean` against the nuclei,
:func:`~scip.segment.micronuclei.assign`, :func:`~scip.segment.micronuclei.per_nucleus`), with two
sources of nuclei:

- ``predicted``: the ``watershed`` method with its defaults (what classify_mnfinder.py segments), each
  ground-truth nucleus tied to a predicted one at IoU >= 0.5; unmatched nuclei are left out (as there);
- ``truth``: the ground-truth nuclei, which isolates micronucleus detection and assignment.

Measured:

- detection of the kept micronuclei against the ground-truth micronuclei, one-to-one: a pair matches
  when the centroids lie within 3 px (Hungarian assignment on the distance), and separately when their
  IoU >= 0.3 (:func:`scip.metrics.match_labels`); precision, recall, F1 pooled over the split;
- ``has_micronucleus`` (``cells.csv``) against ``micronucleus_count > 0``: balanced accuracy, to set
  beside the nucleus-feature classifier's 0.684 (``results/mnfinder_classification.md``).

Methods: ``spot`` (the section's defaults), ``spot_tuned`` (radius, k and max_overlap chosen on the
TRAINING split by its balanced accuracy with predicted nuclei; the validation split is not looked at),
``unet`` (the model's micronucleus output, when ``scip.segment.unet.micronuclei`` exists and the model has one).
Results: ``benchmarks/results/micronuclei.{json,md}``.

Usage::

    python benchmarks/bench_micronuclei.py [--data ../shared/data/mnfinder] [--methods spot,spot_tuned,unet]
                                           [--model nuclei]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from scip.config import SpotMicronucleiConfig, UnetMicronucleiConfig, WatershedConfig
from scip.metrics import match_labels
from scip.segment import segment
from scip.segment.micronuclei import assign, clean, per_nucleus
from scip.steps.micronuclei import detect

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CENTROID_PX = 3.0
IOU = 0.3
#: The grid searched on the training split for ``spot_tuned``.
GRID = {"radius": [3, 5], "k": [2.0, 3.0], "max_overlap": [0.5, 0.75]}
#: The feature classifier's validation balanced accuracy (results/mnfinder_classification.md).
CLASSIFIER = 0.684


def load_split(split: Path) -> list[dict]:
    """Every image of a split with its nuclei, micronuclei and per-nucleus truth."""
    cells = pd.read_csv(split / "cells.csv")
    images = []
    for tif in sorted(split.glob("*/*.tif")):
        if tif.stem.endswith(("_nuclei", "_micronuclei")):
            continue
        key = f"{tif.parent.name}/{tif.stem}"
        rows = cells[cells["image"] == key]
        images.append({
            "key": key,
            "image": tifffile.imread(tif).astype(np.float32),
            "nuclei": tifffile.imread(tif.with_name(f"{tif.stem}_nuclei.tif")).astype(np.int32),
            "micronuclei": tifffile.imread(tif.with_name(f"{tif.stem}_micronuclei.tif")).astype(np.int32),
            "truth": dict(zip(rows["nucleus_label"].astype(int), rows["has_micronucleus"].astype(bool))),
        })
    return images


def add_predicted_nuclei(images: list[dict]) -> None:
    params = WatershedConfig(method="watershed").method_params()
    for im in images:
        predicted = segment(im["image"], "watershed", **params)
        im["predicted"] = predicted
        matches = match_labels(im["nuclei"], predicted, 0.5).matches
        im["pairs"] = {int(t): int(p) for t, p in matches}


def centroid_matches(truth: np.ndarray, found: np.ndarray) -> int:
    """One-to-one pairs with centroids within :data:`CENTROID_PX` (minimum total distance)."""
    t_ids, f_ids = np.unique(truth[truth > 0]), np.unique(found[found > 0])
    if not t_ids.size or not f_ids.size:
        return 0
    t = np.array(ndi.center_of_mass(np.ones_like(truth), truth, t_ids))
    f = np.array(ndi.center_of_mass(np.ones_like(found), found, f_ids))
    distance = np.hypot(t[:, None, 0] - f[None, :, 0], t[:, None, 1] - f[None, :, 1])
    cost = np.where(distance <= CENTROID_PX, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return int((distance[rows, cols] <= CENTROID_PX).sum())


def evaluate(images: list[dict], cfg, detections: list[np.ndarray], sources=("predicted", "truth"),
             detection: bool = True) -> dict:
    """Detection and has_micronucleus figures of one method over a split, per source of nuclei."""
    out = {}
    for source in sources:
        tally = {"true": 0, "found": 0, "centroid_tp": 0, "iou_tp": 0}
        y_true, y_pred = [], []
        for im, det in zip(images, detections):
            nuclei = im["predicted"] if source == "predicted" else im["nuclei"]
            kept, _ = clean(nuclei, det, cfg.min_size, cfg.max_size, cfg.max_overlap)
            counts = per_nucleus(assign(nuclei, kept, cfg.max_distance), kept)
            if detection:
                tally["true"] += int(len(np.unique(im["micronuclei"][im["micronuclei"] > 0])))
                tally["found"] += int(kept.max())
                tally["centroid_tp"] += centroid_matches(im["micronuclei"], kept)
                tally["iou_tp"] += match_labels(im["micronuclei"], kept, IOU).tp
            for label, has in im["truth"].items():
                if source == "truth":
                    nucleus = label
                elif label in im["pairs"]:
                    nucleus = im["pairs"][label]
                else:
                    continue
                y_true.append(has)
                y_pred.append(counts.get(nucleus, (0, 0))[0] > 0)
        y_true, y_pred = np.array(y_true), np.array(y_pred)
        recall_pos = float((y_pred & y_true).sum() / max(y_true.sum(), 1))
        recall_neg = float((~y_pred & ~y_true).sum() / max((~y_true).sum(), 1))
        entry = {"cells": int(y_true.size), "positives": int(y_true.sum()),
                 "balanced_accuracy": round((recall_pos + recall_neg) / 2, 4),
                 "recall_with": round(recall_pos, 4), "recall_without": round(recall_neg, 4)}
        if detection:
            for rule in ("centroid", "iou"):
                tp = tally[f"{rule}_tp"]
                precision, recall = tp / max(tally["found"], 1), tp / max(tally["true"], 1)
                entry[f"{rule}_f1"] = round(2 * tp / max(tally["found"] + tally["true"], 1), 4)
                entry[f"{rule}_precision"], entry[f"{rule}_recall"] = round(precision, 4), round(recall, 4)
            entry["true_micronuclei"], entry["found_micronuclei"] = tally["true"], tally["found"]
        out[source] = entry
    return out


def tune_spot(data: Path) -> tuple[SpotMicronucleiConfig, list[dict]]:
    """The grid point with the best training balanced accuracy (predicted nuclei)."""
    images = load_split(data / "training-data")
    add_predicted_nuclei(images)
    trials = []
    for radius, k in itertools.product(GRID["radius"], GRID["k"]):
        detections = [detect(im["image"], SpotMicronucleiConfig(method="spot", radius=radius, k=k)) for im in images]
        for max_overlap in GRID["max_overlap"]:
            cfg = SpotMicronucleiConfig(method="spot", radius=radius, k=k, max_overlap=max_overlap)
            score = evaluate(images, cfg, detections, sources=("predicted",), detection=False)["predicted"]
            trials.append({"radius": radius, "k": k, "max_overlap": max_overlap,
                           "balanced_accuracy": score["balanced_accuracy"]})
            print(f"  training: radius {radius} k {k} max_overlap {max_overlap}: balanced accuracy "
                  f"{score['balanced_accuracy']:.3f}", file=sys.stderr)
    best = max(trials, key=lambda t: t["balanced_accuracy"])
    return SpotMicronucleiConfig(method="spot", radius=best["radius"], k=best["k"],
                                 max_overlap=best["max_overlap"]), trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mnfinder")
    parser.add_argument("--methods", default="spot,spot_tuned,unet", help="comma-separated: spot, spot_tuned, unet")
    parser.add_argument("--model", default="nuclei", help="the unet method's model (built-in name or file)")
    args = parser.parse_args(argv)
    if not (args.data / "validation-data").is_dir():
        print(f"no mnfinder data at {args.data}; pass --data", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {"spot", "spot_tuned", "unet"})
    if unknown:
        print(f"--methods: unknown {', '.join(unknown)}; allowed: spot, spot_tuned, unet", file=sys.stderr)
        return 2
    started = time.perf_counter()
    figures: dict = {"command": "python benchmarks/bench_micronuclei.py " + " ".join(argv or sys.argv[1:]),
                     "matching": f"one-to-one; centroid: centroids within {CENTROID_PX:g} px (Hungarian on "
                                 f"distance); iou: IoU >= {IOU} (scip.metrics.match_labels)",
                     "classifier_balanced_accuracy": CLASSIFIER, "methods": {}, "skipped": {}}
    images = load_split(args.data / "validation-data")
    add_predicted_nuclei(images)
    figures["validation_images"] = [im["key"] for im in images]
    configs = {}
    if "spot" in methods:
        configs["spot"] = SpotMicronucleiConfig(method="spot")
    if "spot_tuned" in methods:
        configs["spot_tuned"], figures["tuning"] = tune_spot(args.data)
    if "unet" in methods:
        from scip.segment import unet

        if not hasattr(unet, "micronuclei"):
            figures["skipped"]["unet"] = "scip.segment.unet.micronuclei does not exist in this version"
        else:
            configs["unet"] = UnetMicronucleiConfig(method="unet", model=args.model)
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        try:
            detections = [detect(im["image"], cfg) for im in images]
        except ValueError as e:  # a model without a micronucleus output
            figures["skipped"][name] = str(e)
            continue
        figures["methods"][name] = {"config": cfg.model_dump(), **evaluate(images, cfg, detections),
                                    "seconds": round(time.perf_counter() - t0, 1)}
    figures["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "micronuclei.json").write_text(json.dumps(figures, indent=2, default=str))
    lines = [
        "# Micronuclei on the mnfinder validation split",
        "",
        f"Command: `{figures['command'].strip()}` ({figures['seconds']} s). Images: "
        f"{', '.join(figures['validation_images'])}.",
        "",
        f"Detection: kept micronuclei against the ground truth's, matched one-to-one, by centroid within "
        f"{CENTROID_PX:g} px and, separately, by IoU >= {IOU}; pooled over the split. has_micronucleus: "
        "`micronucleus_count > 0` against `cells.csv`, balanced accuracy; the nucleus-feature classifier "
        f"scores {CLASSIFIER} (results/mnfinder_classification.md). Nuclei `predicted`: watershed defaults, "
        "tied to true nuclei at IoU >= 0.5 (unmatched left out); `truth`: the true nuclei.",
        "",
        "| method | nuclei | F1 centroid ≤ 3 px (P / R) | F1 IoU ≥ 0.3 (P / R) | found / true MN | "
        "has_micronucleus bal. acc. | cells (with MN) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in figures["methods"].items():
        for source in ("predicted", "truth"):
            e = entry[source]
            lines.append(f"| {name} | {source} | {e['centroid_f1']:.3f} ({e['centroid_precision']:.2f} / "
                         f"{e['centroid_recall']:.2f}) | {e['iou_f1']:.3f} ({e['iou_precision']:.2f} / "
                         f"{e['iou_recall']:.2f}) | {e['found_micronuclei']} / {e['true_micronuclei']} | "
                         f"{e['balanced_accuracy']:.3f} | {e['cells']} ({e['positives']}) |")
    for name, why in figures["skipped"].items():
        lines.append(f"\n`{name}` not measured: {why}.")
    for name, entry in figures["methods"].items():
        c = entry["config"]
        lines.append(f"\n`{name}`: radius {c.get('radius')}, k {c.get('k')}, smooth {c.get('smooth')}, "
                     f"max_overlap {c['max_overlap']}, max_distance {c['max_distance']}, min_size {c['min_size']}, "
                     f"max_size {c['max_size']}."
                     if c["method"] == "spot" else f"\n`{name}`: model {c['model']}, max_distance {c['max_distance']}.")
    if "tuning" in figures:
        lines.append("\nTraining-split grid (balanced accuracy, predicted nuclei): "
                     + "; ".join(f"radius {t['radius']} k {t['k']:g} max_overlap {t['max_overlap']:g}: "
                                 f"{t['balanced_accuracy']:.3f}"
                                 for t in figures["tuning"]) + ".")
    lines.append("")
    (RESULTS / "micronuclei.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
