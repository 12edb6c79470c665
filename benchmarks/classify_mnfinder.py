"""Real-data check of the classifier hand-off: which nuclei carry a micronucleus?

Runs the whole pipeline on the mnfinder training split (../shared/data/mnfinder), labels each
nucleus from the split's ``cells.csv`` (``has_micronucleus``), and

1. cross-validates XGBoost on the training split with folds grouped by image, so no image
   contributes cells to both the training and the test side of a fold;
2. trains on the whole training split and predicts the validation split.

Segmented nuclei are tied to the labelled ones through ``evaluate:`` (IoU >= 0.5 matching
against each image's ``*_nuclei.tif``), so the label keys are (set, image, ground-truth label).
Unmatched nuclei get no label and are not used. Results go to
``benchmarks/results/mnfinder_classification.{md,json}``.

Usage::

    python benchmarks/classify_mnfinder.py [--data ../shared/data/mnfinder] [--work /tmp/mnfinder]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

import scip
from scip.classify import classify, predict

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
KEYS = ["meta_set", "meta_name", "meta_truth_label"]


def flatten(split: Path, work: Path) -> Path:
    """Link ``<set>/<name>.tif`` as ``images/<set>__<name>.tif`` (names repeat across sets)."""
    images, labels = work / "images", work / "labels"
    for d in (images, labels):
        d.mkdir(parents=True, exist_ok=True)
    for tif in sorted(split.glob("*/*.tif")):
        if tif.stem.endswith(("_nuclei", "_micronuclei")):
            continue
        name = f"{tif.parent.name}__{tif.stem}.tif"
        for src, dst in ((tif, images / name), (tif.with_name(f"{tif.stem}_nuclei.tif"), labels / name)):
            if not dst.exists():
                dst.symlink_to(src.resolve())
    return work


def label_table(split: Path, out: Path) -> Path:
    cells = pd.read_csv(split / "cells.csv")
    parts = cells["image"].str.split("/", n=1, expand=True)
    labels = pd.DataFrame({"meta_set": parts[0], "meta_name": parts[1], "meta_truth_label": cells["nucleus_label"],
                           "has_micronucleus": cells["has_micronucleus"].astype(bool)})
    path = out / "labels.csv"
    labels.to_csv(path, index=False)
    return path


def run_split(split: Path, work: Path, workers: int) -> Path:
    flatten(split, work)
    config = {
        "input": {"path": str(work / "images"), "pattern": r"(?P<set>.+)__(?P<name>\d+)\.tif",
                  "images_per_partition": 4},
        "segment": {"method": "watershed", "channel": 0},
        "evaluate": {"labels": str(work / "labels" / "{set}__{name}.tif")},
        "output": {"path": str(work / "results"), "overwrite": True},
        "cluster": {"workers": workers},
    }
    return scip.run(config, progress=False).output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "mnfinder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/scip-mnfinder"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if not (args.data / "training-data").is_dir():
        print(f"no mnfinder data at {args.data}; pass --data", file=sys.stderr)
        return 2
    shutil.rmtree(args.work, ignore_errors=True)
    started = time.perf_counter()
    figures: dict = {"command": "python benchmarks/classify_mnfinder.py " + " ".join(argv or sys.argv[1:])}
    outputs = {}
    for split in ("training-data", "validation-data"):
        t0 = time.perf_counter()
        outputs[split] = run_split(args.data / split, args.work / split, args.workers)
        summary = json.loads((outputs[split] / "run.json").read_text())
        figures[split] = {"pipeline_seconds": round(time.perf_counter() - t0, 1),
                          "images": summary["counts"]["images"]["total"],
                          "cells_exported": summary["counts"]["cells"]["exported"],
                          "evaluation": summary.get("evaluation")}

    train_labels = label_table(args.data / "training-data", args.work / "training-data")
    result = classify(outputs["training-data"], train_labels, on=KEYS, target="has_micronucleus",
                      group="meta_image_id", folds=args.folds, seed=0)
    figures["cross_validation"] = {
        "balanced_accuracy": result.balanced_accuracy, "balanced_accuracy_folds": list(result.balanced_accuracy_folds),
        "accuracy": result.accuracy, "per_class": result.per_class, "classes": [str(c) for c in result.classes],
        "n_cells": result.counts.get("cells_labelled"), "n_features": len(result.features),
        "dropped_features": len(result.dropped_features), "folds": result.folds,
    }

    val_labels = pd.read_csv(label_table(args.data / "validation-data", args.work / "validation-data"))
    predicted = predict(result.out, outputs["validation-data"])
    for key in KEYS:
        predicted[key] = predicted[key].astype(str)
        val_labels[key] = val_labels[key].astype(str)
    joined = predicted.merge(val_labels, on=KEYS, how="inner")
    truth = joined["has_micronucleus"].astype(str).str.lower() == "true"
    guess = joined["predicted"].astype(str).str.lower() == "true"
    recall_pos = (guess & truth).sum() / max(truth.sum(), 1)
    recall_neg = (~guess & ~truth).sum() / max((~truth).sum(), 1)
    figures["validation"] = {"cells": int(len(joined)), "accuracy": float((guess == truth).mean()),
                             "balanced_accuracy": float((recall_pos + recall_neg) / 2),
                             "positives": int(truth.sum())}
    figures["seconds"] = round(time.perf_counter() - started, 1)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mnfinder_classification.json").write_text(json.dumps(figures, indent=2, default=str))
    cv = figures["cross_validation"]
    lines = [
        "# Micronucleus classification on mnfinder (real data)",
        "",
        f"Command: `{figures['command'].strip()}`",
        "",
        f"- Training split: {figures['training-data']['images']} images, "
        f"{figures['training-data']['cells_exported']} nuclei exported; validation split: "
        f"{figures['validation-data']['images']} images, {figures['validation-data']['cells_exported']} exported.",
        f"- Image-grouped {cv['folds']}-fold cross-validation on the training split: balanced accuracy "
        f"{cv['balanced_accuracy']:.3f} (folds: {', '.join(f'{v:.3f}' for v in cv['balanced_accuracy_folds'])}), "
        f"accuracy {cv['accuracy']:.3f}, {cv['n_cells']} labelled nuclei, {cv['n_features']} features "
        f"({cv['dropped_features']} constant or mostly-NaN columns dropped).",
        f"- Trained on the training split, predicted the validation split: accuracy "
        f"{figures['validation']['accuracy']:.3f}, balanced accuracy {figures['validation']['balanced_accuracy']:.3f} "
        f"on {figures['validation']['cells']} labelled nuclei ({figures['validation']['positives']} with a micronucleus).",
        f"- Total time {figures['seconds']} s.",
        "",
    ]
    (RESULTS / "mnfinder_classification.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
