"""Leave-one-set-out benchmark of nucleus (and micronucleus) segmentation on labs the model never saw.

Folds: each mnfinder set (``<date>_<cell line>``) is held out in turn; the
mixed ``2023-05-31_misc`` set is split by cell line (``misc-other`` =
training 1-3 + validation 4, ``misc-HeLa`` = 5-8, ``misc-MCC13`` = 9-11; see
``../shared/data/README.md``), and the DSB 2018 image is a fold of its own.
A fold's model trains on the **training-data** images of every other set
(plus DSB unless DSB is held out) and is scored on the held-out set's
training and validation images. Fold models train without a validation
split: a fixed schedule, the last epoch kept, default thresholds, so that
nothing is chosen on the held-out images.

Methods scored on the same images: ``otsu`` and ``watershed`` (defaults of
:func:`scip.segment.segment`), the old shipped model
(``benchmarks/models/nuclei_v1.pt``, scored only on images outside its
``train_images``), the new recipe trained per fold, and Cellpose when a
local model file exists (``~/.cellpose/models``). Every model's training
images are read from its file, and scoring an image a model saw raises.

Nuclei: object F1 at IoU 0.5 (:func:`scip.metrics.match_labels`),
precision, recall, object Jaccard, pooled per held-out set and over all.
Micronuclei (models with a ``micronuclei`` output): F1 of a one-to-one
matching of centroids within 3 px (Hungarian on distance).

Usage::

    python benchmarks/bench_generalization.py                       # every fold
    python benchmarks/bench_generalization.py --folds misc-HeLa,DSB --cache /tmp/loso
    python benchmarks/bench_generalization.py --no-train            # reuse cached fold models only
    python benchmarks/bench_generalization.py --validation          # the shipped model on the validation split

Results: ``benchmarks/results/generalization.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scip.segment import segment  # noqa: E402
from scip.segment.unet import modelfile  # noqa: E402
from scip.segment.unet import split_merge as shape  # noqa: E402
from scip.segment.unet.predict import (clean_nuclei, labels_from_probabilities, load_predictor,  # noqa: E402
                                       micronucleus_labels, segment_image)
from scip.segment.unet.score import pool, score_image  # noqa: E402

RPE1 = ["2022-03-18_RPE1", "2022-04-14_RPE1", "2022-05-25_RPE1", "2022-05-26_RPE1", "2022-05-27_RPE1"]
MISC = "2023-05-31_misc"
#: Fold name -> held-out image ids (relative to the data folder); order = priority when time is short.
FOLD_ORDER = ["misc-HeLa", "misc-MCC13", "misc-other", "U2OS", "DSB"] + RPE1
OLD_MODEL = ROOT / "benchmarks" / "models" / "nuclei_v1.pt"
MN_DISTANCE = 3.0
#: Shape-gated split and merge (scip.segment.unet.split_merge): chosen by leave-one-fold-out over SHAPE_GRID, the same
#: entry for every held-out set (benchmarks/results/shape_postprocess.md). The shipped model file asks for it
#: (since session 11; ``split_merge: false`` turns it off).
SHAPE_POST = dict(shape.DEFAULTS)
#: The nucleus clean-up of the shipped post-processing (scip.segment.unet.predict.clean_nuclei).
SHIPPED_POST = {"seed_h": 0.2, "min_area_fraction": 0.25, "drop_micronuclei": True, **SHAPE_POST}
_SHAPE_KEYS = shape.KEYS
#: What ``--post`` scores to choose the split/merge settings for each held-out set on the other sets (nested).
_SPLITS = {"split off": {}, "split >1.5x": {"split_area": 1.5, "split_h": 1.0}, "split >2x": {"split_area": 2.0, "split_h": 1.0},
           "split >1.5x & solidity <0.9": {"split_area": 1.5, "split_h": 1.0, "split_solidity": 0.9},
           "split >2x & solidity <0.9": {"split_area": 2.0, "split_h": 1.0, "split_solidity": 0.9}}
_MERGES = {"merge off": {}, "merge convex": {"merge_solidity": 0.93, "merge_area": 5.0},
           "merge convex or border 1.5": {"merge_solidity": 0.93, "merge_area": 5.0, "merge_boundary": 1.5}}
SHAPE_GRID = {f"{s} / {m}": {**sv, **mv} for s, sv in _SPLITS.items() for m, mv in _MERGES.items()}
SHAPE_VARIANT = "new recipe, shape: "

#: The new training recipe (fold models and the shipped model); see docs/segmentation.md.
RECIPE = {
    "crop": 192, "batch_size": 8, "epochs": 10, "steps_per_epoch": 50, "lr": 2e-3,
    "augment": {},  # the defaults; the stronger scale/blur/background set lost on misc-HeLa (docs/segmentation.md)
    "micronuclei": True,
}


def load_recipe(path: Path | None) -> dict:
    """:data:`RECIPE` with the keys of the JSON file ``path`` over it (``None``: the recipe itself)."""
    if path is None:
        return dict(RECIPE)
    if not path.is_file():
        raise SystemExit(f"recipe file not found: {path}")
    try:
        return {**RECIPE, **json.loads(path.read_text())}
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not a JSON recipe ({e})") from None


def find_data() -> Path:
    for cand in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data"):
        if (cand / "mnfinder").is_dir():
            return cand
    raise SystemExit("no shared data folder (../shared/data/mnfinder) next to the repository; pass --data")


def image_id(path: str | os.PathLike) -> str:
    """``mnfinder/<split>/<set>/<name>.tif`` or ``stardist-dsb2018/<name>``: an image's identity across machines."""
    parts = Path(path).parts
    for root in ("mnfinder", "stardist-dsb2018"):
        if root in parts:
            i = len(parts) - 1 - parts[::-1].index(root)
            return "/".join(parts[i:])
    return Path(path).as_posix()


def shipped_validation(data: Path, model: str) -> str:
    """The shipped model as a user runs it (``unet(image)``) and without split/merge, on the mnfinder validation split.

    Every image is asserted absent from the model's training images. Returns the markdown table.
    """
    from scip.segment.unet import unet

    seen = seen_ids(modelfile.load(model).meta)
    files = sorted(f for f in (data / "mnfinder" / "validation-data").glob("*/*.tif")
                   if not f.name.endswith(("_nuclei.tif", "_micronuclei.tif")))
    variants = {"default (split/merge on)": {}, "split_merge=False": {"split_merge": False}}
    scores: dict[str, list] = {v: [] for v in variants}
    rows = []
    for f in files:
        iid = image_id(f)
        if iid in seen:
            raise SystemExit(f"{iid} is one of {model}'s training images")
        image, truth, _ = read(data, iid)
        for name, kwargs in variants.items():
            scores[name].append(score_image(truth, unet(image, model=model, device="cpu", **kwargs)))
        rows.append(f"| {iid} | " + " | ".join(f"{scores[v][-1]['f1']:.3f}" for v in variants) + " |")
        print(rows[-1], flush=True)
    return "\n".join([
        f"# The shipped `{model}` model on the mnfinder validation split", "",
        f"Command: `python benchmarks/bench_generalization.py --validation` ({len(files)} images, none among the "
        "model's training images). F1 at IoU 0.5; `unet(image)` as a user calls it, and with `split_merge=False`.", "",
        "| image | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants), *rows,
        "| **pooled** | " + " | ".join(f"**{pool(scores[v])['f1']:.3f}**" for v in variants) + " |", ""])


def seen_ids(meta: dict) -> set[str]:
    """Ids of every image a model file trained on (conservative when the file records keys only)."""
    training = meta.get("training", {})
    if training.get("train_files"):
        return {image_id(f) for f in training["train_files"]}
    # Older files record keys relative to their data sources: count a key as seen in every source.
    out = set()
    for d in training.get("data", []):
        for key in training.get("train_images", []):
            out.add(image_id(Path(d["path"]) / key))
    return out


def folds(data: Path) -> dict[str, list[str]]:
    mn = data / "mnfinder"
    out: dict[str, list[str]] = {}
    for name in RPE1 + ["2022-10-14_U2OS"]:
        ids = [image_id(p) for split in ("training-data", "validation-data") for p in sorted((mn / split / name).glob("*.tif"))
               if not p.stem.endswith(("_nuclei", "_micronuclei"))]
        out["U2OS" if "U2OS" in name else name] = ids
    misc = lambda split, names: [f"mnfinder/{split}/{MISC}/{n}.tif" for n in names]  # noqa: E731
    out["misc-other"] = misc("training-data", [1, 2, 3]) + misc("validation-data", [4])
    out["misc-HeLa"] = misc("training-data", [5, 6, 7, 8])
    out["misc-MCC13"] = misc("training-data", [9, 10, 11])
    out["DSB"] = ["stardist-dsb2018/image.tif"]
    return out


def train_config(data: Path, held_out: list[str], output: Path, recipe: dict, threads: int,
                 device: str = "cpu") -> dict:
    """Training config of one fold: all training-data images except the held-out ones, plus DSB unless held out."""
    exclude = ["*_nuclei.tif", "*_micronuclei.tif"] + ["/".join(Path(i).parts[-2:]) for i in held_out
                                                       if i.startswith("mnfinder/training-data/")]
    sources = [{"path": str(data / "mnfinder" / "training-data"), "images": "*/*.tif", "labels": "{stem}_nuclei",
                "exclude": exclude, **({"micronuclei": "{stem}_micronuclei"} if recipe.get("micronuclei") else {})}]
    if "stardist-dsb2018/image.tif" not in held_out:
        sources.append({"path": str(data / "stardist-dsb2018"), "images": "image.tif", "labels": "labels"})
    keys = ("crop", "batch_size", "epochs", "steps_per_epoch", "lr", "augment", "seed")
    return {"data": sources, "validation": [], "channels": ["nuclei"], "output": str(output), "monitor": "loss",
            "tune_thresholds": False, "threads": threads, "device": device, "patience": 1000,
            **{k: recipe[k] for k in keys if k in recipe}}


def train_fold(data: Path, fold: str, held_out: list[str], cache: Path, recipe: dict, threads: int,
               allow_train: bool, device: str = "cpu") -> Path | None:
    model = cache / fold / "model.pt"
    # train() saves model.pt at every epoch's end but records the training images only when it finishes: a
    # file without them is an interrupted training (a killed fold process), not a fold model.
    complete = model.is_file() and bool(seen_ids(modelfile.load(model).meta))
    if complete:
        return model
    if not allow_train:
        return None
    from scip.segment.unet.train import train

    t0 = time.perf_counter()
    if model.is_file():
        print(f"  {model}: an interrupted training (no training images recorded); resuming it", flush=True)
    train(train_config(data, held_out, cache / fold, recipe, threads, device), base_dir=ROOT, resume=model.is_file())
    print(f"  trained fold {fold} in {time.perf_counter() - t0:.0f} s", flush=True)
    return model


def read(data: Path, iid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    path = data / iid
    if iid.startswith("stardist-dsb2018/"):
        return tifffile.imread(path).astype(np.float32), tifffile.imread(path.with_name("labels.tif")), None
    return (tifffile.imread(path).astype(np.float32), tifffile.imread(path.with_name(path.stem + "_nuclei.tif")),
            tifffile.imread(path.with_name(path.stem + "_micronuclei.tif")))


def centroids(labels: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    idx = np.unique(labels)
    idx = idx[idx > 0]
    if not idx.size:
        return np.zeros((0, 2))
    return np.asarray(ndi.center_of_mass(np.ones_like(labels), labels, idx), float).reshape(-1, 2)


def match_points(true: np.ndarray, pred: np.ndarray, distance: float = MN_DISTANCE) -> dict:
    """One-to-one matching of centroids within ``distance`` px: counts for a pooled F1."""
    tp = 0
    if len(true) and len(pred):
        d = np.linalg.norm(true[:, None] - pred[None], axis=2)
        cost = np.where(d <= distance, d, 1e6)
        r, c = linear_sum_assignment(cost)
        tp = int(np.count_nonzero(d[r, c] <= distance))
    return {"n_true": len(true), "n_pred": len(pred), "tp": tp}


def point_scores(counts: list[dict]) -> dict:
    n_true, n_pred, tp = (sum(c[k] for c in counts) for k in ("n_true", "n_pred", "tp"))
    return {"n_true": n_true, "n_pred": n_pred, "tp": tp, "f1": 2 * tp / (n_true + n_pred) if n_true + n_pred else 1.0,
            "precision": tp / n_pred if n_pred else float(n_true == 0),
            "recall": tp / n_true if n_true else float(n_pred == 0)}


def unet_variants(image: np.ndarray, model: Path, with_post: bool) -> tuple[dict, np.ndarray | None]:
    """Nucleus labels per post-processing variant, and micronucleus labels when the model has that output.

    The main entry (``""``) is what the shipped model does: :func:`clean_nuclei` with the shipped
    ``postprocess`` (fold models may predate those keys, so they are set here). With ``with_post`` the
    :data:`SHAPE_GRID` entries (h-maxima seeds and the clean-up, then each split/merge setting), and the
    levers one by one without split/merge: threshold seeds (as v1) without and with clean-up, size filter
    only, micronucleus filter only (both on threshold seeds), h-maxima seeds without clean-up.
    """
    mf = load_predictor(model, device="cpu").model
    _, probs = segment_image(image, model, device="cpu", return_probabilities=True, min_size=20)
    post = {**mf.meta.get("postprocess", {}), **SHIPPED_POST}
    has_mn = modelfile.MICRONUCLEI in mf.outputs
    shipped = replace(mf, meta={**mf.meta, "postprocess": post})
    seeded = labels_from_probabilities(probs, post["threshold"], post["seed_threshold"], 20, post["seed_h"])
    raw = labels_from_probabilities(probs, post["threshold"], post["seed_threshold"], 20)  # v1's seeds, no clean-up
    out = {"": clean_nuclei(seeded, probs, shipped)}
    mn = None
    if has_mn:
        mn = micronucleus_labels(probs, mf.outputs.index(modelfile.MICRONUCLEI), post.get("micronucleus_threshold", 0.5),
                                 post.get("micronucleus_min_size", 3))
    if with_post:
        # The split/merge candidates of the nested selection, on the same seeds and clean-up.
        unshaped = {k: v for k, v in post.items() if k not in _SHAPE_KEYS}
        for name, setting in SHAPE_GRID.items():
            out[SHAPE_VARIANT[len("new recipe"):] + name] = clean_nuclei(seeded, probs, replace(mf, meta={
                **mf.meta, "postprocess": {**unshaped, **setting}}))
        # The earlier levers, without split/merge, so that they compare with the results before it.
        out[" no clean-up"] = raw
        out[" size filter only"] = clean_nuclei(raw, probs, replace(mf, meta={**mf.meta, "postprocess": {
            **unshaped, "drop_micronuclei": False}}))
        if has_mn:
            out[" micronucleus filter only"] = clean_nuclei(raw, probs, replace(mf, meta={**mf.meta, "postprocess": {
                **unshaped, "min_area_fraction": None}}))
        out[" threshold seeds + clean-up"] = clean_nuclei(raw, probs, replace(mf, meta={**mf.meta,
                                                                                      "postprocess": unshaped}))
        out[" h-maxima seeds, no clean-up"] = seeded
    return out, mn


def tiles_per_second(models: dict[str, Path], n: int = 4, repeats: int = 5) -> dict[str, float]:
    """512x512 tiles/s of each model's network, median of ``repeats`` alternated runs (``_timing.alternate``): the
    models take turns in each round so that load from other jobs on a shared machine falls on all of them alike."""
    from _timing import alternate

    predictors = {name: load_predictor(path, device="cpu") for name, path in models.items()}
    batch = np.random.default_rng(0).random((n, 1, 512, 512), dtype=np.float32)
    timing = alternate({name: (lambda p=p: p.forward(batch)) for name, p in predictors.items()}, repeats)
    return {name: n / t.median for name, t in timing.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--folds", default="all", help=f"comma-separated folds (default all: {', '.join(FOLD_ORDER)})")
    parser.add_argument("--cache", type=Path, default=ROOT / "examples" / "results" / "loso-models",
                        help="folder of fold models (<cache>/<fold>/model.pt), reused when present; examples/results/ is not tracked")
    parser.add_argument("--no-train", action="store_true", help="only score fold models already in --cache")
    parser.add_argument("--train-only", action="store_true", help="train the missing fold models, score nothing")
    parser.add_argument("--reuse-scores", action="store_true",
                        help="reuse <cache>/<fold>/scores.json written by an earlier run (same model file)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where fold models train (scoring always runs on the CPU)")
    parser.add_argument("--no-speed", action="store_true",
                        help="skip the CPU tiles/s comparison (a fold run in parallel with others)")
    parser.add_argument("--post", action="store_true", help="also score post-processing variants of the new models")
    parser.add_argument("--recipe", type=Path, default=None, help="JSON file overriding RECIPE keys (experiments)")
    parser.add_argument("--shipped", default="nuclei", help="the new shipped model, for the speed comparison")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generalization.md")
    parser.add_argument("--validation", action="store_true",
                        help="instead: the shipped model on the mnfinder validation split, with and without split/merge "
                             "(writes shipped_validation.md beside --out)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or find_data()
    if args.validation:
        text = shipped_validation(data, args.shipped)
        (args.out.parent / "shipped_validation.md").write_text(text)
        print(text)
        return
    recipe = load_recipe(args.recipe)
    all_folds = folds(data)
    names = FOLD_ORDER if args.folds == "all" else [f.strip() for f in args.folds.split(",")]
    unknown = [n for n in names if n not in all_folds]
    if unknown:
        raise SystemExit(f"unknown fold(s) {unknown}; folds: {', '.join(FOLD_ORDER)}")
    old = modelfile.load(OLD_MODEL)
    old_seen = seen_ids(old.meta)
    cellpose_dir = Path.home() / ".cellpose" / "models"
    cellpose = "local model file" if cellpose_dir.is_dir() and any(cellpose_dir.iterdir()) else "no local model file"

    per_image: list[dict] = []
    timing = {}
    for fold in names:
        held = all_folds[fold]
        print(f"fold {fold}: {len(held)} image(s)", flush=True)
        t0 = time.perf_counter()
        model = train_fold(data, fold, held, args.cache, recipe, args.threads, not args.no_train, args.device)
        timing[fold] = time.perf_counter() - t0
        if args.train_only:
            continue
        if model is not None:
            new_seen = seen_ids(modelfile.load(model).meta)
            assert new_seen, f"fold {fold}: {model} records no training images (an interrupted training?)"
            assert not new_seen & set(held), f"fold {fold}: the model trained on {new_seen & set(held)}"
        saved = args.cache / fold / "scores.json"
        if args.reuse_scores and model is not None and saved.is_file():
            cached = json.loads(saved.read_text())
            if cached["model_mtime_ns"] == model.stat().st_mtime_ns and cached["post"] == args.post:
                per_image += cached["rows"]
                print(f"  scores reused from {saved}", flush=True)
                continue
        first = len(per_image)
        for iid in held:
            image, truth, mn_truth = read(data, iid)
            row = {"fold": fold, "image": iid, "scores": {}, "mn": {}}
            for method in ("otsu", "watershed"):
                row["scores"][method] = score_image(truth, segment(image, method))
            if iid not in old_seen:
                row["scores"]["old model (v1)"] = score_image(truth, segment_image(image, OLD_MODEL, device="cpu"))
                if args.post:  # the new post-processing on the old network: what training changed, what clean-up did
                    _, probs = segment_image(image, OLD_MODEL, device="cpu", return_probabilities=True)
                    v1 = replace(old, meta={**old.meta, "postprocess": {**old.meta["postprocess"], **SHIPPED_POST}})
                    seeded = labels_from_probabilities(probs, 0.5, 0.5, 20, SHIPPED_POST["seed_h"])
                    row["scores"]["old model (v1) + new clean-up"] = score_image(truth, clean_nuclei(seeded, probs, v1))
            if model is not None:
                assert iid not in new_seen, f"{iid} is in the training images of {model}"
                variants, mn = unet_variants(image, model, args.post)
                for suffix, labels in variants.items():
                    row["scores"]["new recipe" + suffix] = score_image(truth, labels)
                if mn is not None and mn_truth is not None:
                    row["mn"]["new recipe"] = match_points(centroids(mn_truth), centroids(mn))
            per_image.append(row)
            print(f"  {iid}: " + ", ".join(f"{k} {v['f1']:.3f}" for k, v in row["scores"].items()), flush=True)
        if model is not None:
            saved.write_text(json.dumps({"model_mtime_ns": model.stat().st_mtime_ns, "post": args.post,
                                         "rows": per_image[first:]}, default=float))

    if args.train_only:
        return
    methods = list(dict.fromkeys(m for r in per_image for m in r["scores"]))
    table = {}
    for fold in names + ["pooled"]:
        rows = [r for r in per_image if fold in ("pooled", r["fold"])]
        table[fold] = {m: {**pool(r["scores"][m] for r in rows if m in r["scores"]),
                           "images": sum(m in r["scores"] for r in rows)} for m in methods}
        mn_rows = [r["mn"]["new recipe"] for r in rows if "new recipe" in r["mn"]]
        if mn_rows:
            table[fold]["micronuclei (new recipe)"] = point_scores(mn_rows)
    nested = nested_shape(per_image, names) if args.post else {}
    speed = {} if args.no_speed else tiles_per_second(
        {"old model (v1)": OLD_MODEL, f"new shipped ({args.shipped})": modelfile.resolve(args.shipped)})
    result = {"folds": {n: all_folds[n] for n in names}, "recipe": recipe, "table": table, "per_image": per_image,
              "fold_seconds": timing, "nested_shape": nested, "cellpose": cellpose, "speed_tiles_per_s": speed, "device": args.device,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float))
    # The split/merge grid goes into its own (nested) table, not 15 more columns.
    args.out.write_text(markdown(result, names, [m for m in methods if not m.startswith(SHAPE_VARIANT)], sys.argv[1:]))
    print(args.out.read_text())


def nested_shape(per_image: list[dict], names: list[str]) -> dict:
    """Split/merge settings chosen for each held-out set on the *other* sets (leave-one-fold-out), and the F1 they give.

    For held-out set F, the :data:`SHAPE_GRID` entry with the highest F1 pooled over the other folds' images (each
    scored with its own fold model, which never saw it) is applied to F; ties go to the earlier entry. ``pooled``
    pools every set's images under its own choice.
    """
    cands = [SHAPE_VARIANT + k for k in SHAPE_GRID]
    rows = [r for r in per_image if all(c in r["scores"] for c in cands)]
    out, chosen_scores = {}, []
    for fold in names:
        held = [r for r in rows if r["fold"] == fold]
        if not held:
            continue
        others = [r for r in rows if r["fold"] != fold]
        best = max(cands, key=lambda c: (round(pool(r["scores"][c] for r in others)["f1"], 6), -cands.index(c)))
        chosen_scores += [r["scores"][best] for r in held]
        out[fold] = {"chosen": best[len(SHAPE_VARIANT):], **pool(r["scores"][best] for r in held)}
    if out:
        out["pooled"] = {"chosen": "", **pool(chosen_scores)}
    return out


def markdown(result: dict, names: list[str], methods: list[str], argv: list[str]) -> str:
    table = result["table"]
    lines = ["# Leave-one-set-out benchmark (nuclei, micronuclei)", "",
             f"Command: `python benchmarks/bench_generalization.py {' '.join(argv)}`".replace(" `", "`", 0), "",
             "Each fold's model never saw the held-out set (asserted from the model file's training images); the old "
             "model (v1) is scored only on images outside its `train_images` (its column counts those images). "
             f"Cellpose: {result['cellpose']}. F1 at IoU 0.5, pooled over the images of a set.", "",
             "| held out | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for fold in names + ["pooled"]:
        cells = []
        for m in methods:
            s = table[fold][m]
            cells.append("–" if not s["images"] else f"{s['f1']:.3f} (P {s['precision']:.2f} R {s['recall']:.2f} "
                                                         f"J {s['object_jaccard']:.2f}; {s['images']} img)")
        lines.append(f"| {'**pooled**' if fold == 'pooled' else fold} | " + " | ".join(cells) + " |")
    nested = result.get("nested_shape")
    if nested:
        off = SHAPE_VARIANT + "split off / merge off"
        lines += ["", "Shape-gated split/merge (`SHAPE_GRID`), chosen for each held-out set on the other sets' held-out "
                  "images (each scored by its own fold model): F1 at IoU 0.5.", "",
                  "| held out | otsu | watershed | new recipe without split/merge | new recipe (shipped: `SHAPE_POST`) "
                  "| nested choice | chosen on the other sets |", "|---|---:|---:|---:|---:|---:|---|"]
        for fold in [n for n in names if n in nested] + ["pooled"]:
            f1 = [table[fold][m]["f1"] if table[fold][m]["images"] else float("nan")
                  for m in ("otsu", "watershed", off, "new recipe")]
            lines.append(f"| {'**pooled**' if fold == 'pooled' else fold} | " + " | ".join(f"{v:.3f}" for v in f1)
                         + f" | {nested[fold]['f1']:.3f} | {nested[fold]['chosen']} |")
    lines += ["", "Micronuclei (new recipe): one-to-one matching of centroids within 3 px.", "",
              "| held out | true | predicted | F1 | precision | recall |", "|---|---:|---:|---:|---:|---:|"]
    for fold in names + ["pooled"]:
        s = table[fold].get("micronuclei (new recipe)")
        if s:
            lines.append(f"| {fold} | {s['n_true']} | {s['n_pred']} | {s['f1']:.3f} | {s['precision']:.3f} | "
                         f"{s['recall']:.3f} |")
    if result["speed_tiles_per_s"]:
        lines += ["", f"CPU speed, 512x512 tiles/s, batch 4, {result['threads']} torch thread(s), median of 5 alternated "
                  "runs: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in result["speed_tiles_per_s"].items())]
    lines += ["", f"Fold models trained on: {result['device']}.", "", "Recipe: `" + json.dumps(result["recipe"]) + "`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
