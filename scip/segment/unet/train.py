"""Training and fine-tuning: the loop, freezing schedules, checkpoints and the report.

A run reads the image/label pairs (:mod:`.data`), holds out validation
images, and trains on random augmented crops (:mod:`.augment`). An epoch is
``steps_per_epoch`` batches (default: about one pass over the training
pixels), then the whole validation images are segmented as in the pipeline
and scored (object F1 at IoU 0.5, Jaccard indices; :mod:`.score`). The best
epoch by ``monitor`` (validation loss, the default, or F1, which moves in
steps as seeds split or merge objects) is kept as the model file; training
stops after ``patience`` epochs without improvement, after ``epochs``, or
after ``max_minutes``. With ``tune_thresholds`` the foreground and seed
thresholds of the kept model are then chosen on the validation images
(:data:`THRESHOLD_GRID`) and stored in the model file.

The loss is binary cross-entropy plus soft Dice on the foreground output,
plus binary cross-entropy of the centre output against its soft target
(:func:`.data.targets`). When a data source names micronucleus labels
(``micronuclei:``), the model gets a third output, ``micronuclei``, trained
with binary cross-entropy plus soft Dice on the images that have such labels.

``validation: []`` holds out no image: every epoch trains, none is scored,
the last epoch is kept and the thresholds stay at their defaults (the
leave-one-set-out benchmark trains so, to keep every image of the other
sets for training and choose nothing on the held-out one).

Files written to the output folder: ``model.pt`` (the best model, a model
file), ``checkpoint.pt`` (last epoch: weights, optimizer, schedule, history,
random state; ``resume=True`` continues from it), ``report.json``,
``report.md`` and ``training.png`` (loss curves, validation F1 and Jaccard).

Fine-tuning schedules (``freeze``), after the M2U-Net edge-device study:

==============  ==============================================================
``all``         every layer trains
``encoder``     encoder convolutions fixed; the encoder's batch-norm layers still
                adapt (scale, shift and running statistics), so the features
                follow a new microscope's intensity statistics; decoder and
                head train
``decoder``     only the decoder and the head train; the encoder is fixed
                entirely, batch-norm statistics included
``last:k``      only the last ``k`` blocks train (:func:`.model.block_names`:
                stem, encoder blocks, decoder blocks, head); the rest is fixed
==============  ==============================================================
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import modelfile
from .augment import Augment, augment, random_crop
from .data import DataSource, Pair, find_pairs, normalize, read_image, read_labels, targets
from .model import Architecture, UNet, block_names
from .predict import Predictor, labels_from_probabilities, predict_probabilities, resolve_device
from .score import pool, score_image
from .trainconfig import TrainConfig, as_plain, load_train_config

__all__ = ["TrainResult", "Frozen", "train", "freeze", "train_mode", "loss_fn", "evaluate", "load_pairs"]

log = logging.getLogger("scip.unet")

#: Foreground and seed thresholds tried by ``tune_thresholds``.
THRESHOLD_GRID = ((0.4, 0.5, 0.6), (0.3, 0.4, 0.5, 0.6, 0.7))

#: Normalized training crops kept in the model file for static INT8 calibration.
CALIBRATION_CROPS = 8
CALIBRATION_SIZE = 128


@dataclass
class TrainResult:
    """What a training run wrote and measured.

    Attributes
    ----------
    model : Path
        The best model file.
    output : Path
        The output folder.
    history : list of dict
        One entry per epoch: ``epoch``, ``train_loss``, ``val_loss``,
        ``f1``, ``object_jaccard``, ``pixel_jaccard``, ``seconds``, ``lr``.
    best : dict
        The history entry of the kept model.
    final : dict
        Validation scores of the kept model with its final thresholds.
    frozen : Frozen
        The parameters the schedule froze.
    seconds : float
        Wall time of the run.
    """

    model: Path
    output: Path
    history: list
    best: dict
    final: dict
    frozen: "Frozen"
    seconds: float


@dataclass(frozen=True)
class Frozen:
    """What a freezing schedule fixed.

    Attributes
    ----------
    schedule : str
    trainable, frozen : tuple of str
        Parameter names (``requires_grad`` True / False).
    fixed_norms : tuple of str
        Batch-norm modules kept in eval mode while training, so their running
        statistics stay as they were.
    """

    schedule: str
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    fixed_norms: tuple[str, ...] = field(default=())


def _block_of(name: str, blocks: list[str]) -> str:
    return next(b for b in blocks if name == b or name.startswith(b + "."))


def freeze(net: UNet, schedule: str = "all") -> Frozen:
    """Apply a fine-tuning schedule to ``net`` (sets ``requires_grad``); see the module docstring.

    Raises
    ------
    ValueError
        Unknown schedule, or ``last:k`` with ``k`` larger than the number of
        blocks.
    """
    blocks = block_names(net)
    encoder = {b for b in blocks if b == "stem" or b.startswith("encoder.")}
    norms = {n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    if schedule == "all":
        fixed_blocks: set[str] = set()
    elif schedule in ("encoder", "decoder"):
        fixed_blocks = encoder
    elif schedule.startswith("last:") and schedule[5:].isdigit() and int(schedule[5:]) >= 1:
        k = int(schedule[5:])
        if k > len(blocks):
            raise ValueError(f"freeze: last:{k}, but the network has only {len(blocks)} blocks ({', '.join(blocks)})")
        fixed_blocks = set(blocks[:-k])
    else:
        raise ValueError(f"freeze: unknown schedule {schedule!r}; expected all, encoder, decoder or last:<k>")
    adapt_norms = schedule == "encoder"
    trainable, frozen = [], []
    for name, p in net.named_parameters():
        module = name.rsplit(".", 1)[0]
        fixed = _block_of(name, blocks) in fixed_blocks and not (adapt_norms and module in norms)
        p.requires_grad_(not fixed)
        (frozen if fixed else trainable).append(name)
    fixed_norms = tuple(sorted(n for n in norms if _block_of(n, blocks) in fixed_blocks and not adapt_norms))
    return Frozen(schedule, tuple(trainable), tuple(frozen), fixed_norms)


def train_mode(net: nn.Module, frozen: Frozen) -> None:
    """Training mode, except for the batch-norm layers the schedule keeps fixed."""
    net.train()
    for name in frozen.fixed_norms:
        net.get_submodule(name).eval()


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice on the foreground, BCE on the centre map; ``(N, 2, H, W)`` each.

    With a micronucleus output, ``logits`` is ``(N, 3, H, W)`` and ``target``
    ``(N, 4, H, W)`` (:func:`.data.targets`): BCE + soft Dice on the
    micronuclei where their labels are known (channel 3).
    """
    fg, centre = target[:, 0], target[:, 1]
    prob = torch.sigmoid(logits[:, 0])
    dice = 1 - (2 * (prob * fg).sum() + 1) / (prob.sum() + fg.sum() + 1)
    loss = (F.binary_cross_entropy_with_logits(logits[:, 0], fg) + dice
            + F.binary_cross_entropy_with_logits(logits[:, 1], centre))
    if logits.shape[1] > 2:
        mn, known = target[:, 2], target[:, 3]
        if known.sum() > 0:
            bce = F.binary_cross_entropy_with_logits(logits[:, 2], mn, weight=known, reduction="sum") / known.sum()
            p = torch.sigmoid(logits[:, 2]) * known
            loss = loss + bce + 1 - (2 * (p * mn).sum() + 1) / (p.sum() + (mn * known).sum() + 1)
    return loss


def _prob_loss(probs: np.ndarray, target: np.ndarray) -> float:
    """:func:`loss_fn` from probabilities (validation images come out of the tiled predictor)."""
    p = torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6)
    t = torch.from_numpy(target)
    dice = 1 - (2 * (p[0] * t[0]).sum() + 1) / (p[0].sum() + t[0].sum() + 1)
    return float(F.binary_cross_entropy(p[0], t[0]) + dice + F.binary_cross_entropy(p[1], t[1]))


@dataclass
class _Item:
    key: str
    image: np.ndarray   # (C, H, W) normalized
    target: np.ndarray  # (2, H, W)
    labels: np.ndarray  # (H, W)


def load_pairs(pairs: list[Pair], norm: dict, micronuclei: bool = False) -> list[_Item]:
    """Read, check and normalize pairs; targets computed once per image (with micronucleus channels if asked)."""
    items = []
    for pair in pairs:
        image = read_image(pair.image, pair.channels)
        labels = read_labels(pair.labels)
        if image.shape[1:] != labels.shape:
            raise ValueError(f"{pair.image} is {image.shape[1:]} but its labels {pair.labels} are {labels.shape}")
        mn = None
        if micronuclei and pair.micronuclei is not None:
            mn = read_labels(pair.micronuclei)
            if mn.shape != labels.shape:
                raise ValueError(f"{pair.image} is {labels.shape} but its micronucleus labels {pair.micronuclei} are "
                                 f"{mn.shape}")
        items.append(_Item(pair.key, normalize(image, norm["low"], norm["high"]),
                           targets(labels, mn, with_micronuclei=micronuclei), labels))
    return items


def _split(pairs: list[Pair], validation: float | list[str], seed: int) -> tuple[list[Pair], list[Pair]]:
    if isinstance(validation, list):
        for pattern in validation:
            if not any(fnmatch.fnmatch(p.key, pattern) for p in pairs):
                raise ValueError(f"validation: {pattern!r} matches no image; image keys look like {pairs[0].key!r}")
        val = [p for p in pairs if any(fnmatch.fnmatch(p.key, pat) for pat in validation)]
        if not validation:
            return list(pairs), []
    else:
        if len(pairs) < 2:
            raise ValueError("validation: a fraction needs at least 2 image/label pairs")
        n = min(max(1, round(len(pairs) * validation)), len(pairs) - 1)
        order = np.random.default_rng(seed).permutation(len(pairs))
        val = [pairs[i] for i in sorted(order[:n])]
    train = [p for p in pairs if p not in val]
    if not train:
        raise ValueError("validation: every image is held out; nothing is left to train on")
    return train, val


def _batch(items: list[_Item], weights: np.ndarray, size: int, n: int, aug: Augment,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in rng.choice(len(items), size=n, p=weights):
        x, y = random_crop(items[i].image, items[i].target, size, rng, aug.scale)
        x, y = augment(x, y, aug, rng)
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.stack(ys)


def evaluate(predictor: Predictor, items: list[_Item], threshold: float = 0.5, seed_threshold: float = 0.5,
             min_size: int = 20, tta: bool = False) -> dict:
    """Segment whole images as the pipeline does and score them (pooled), with the mean loss."""
    scores, losses = [], []
    for item in items:
        probs = predict_probabilities(item.image, predictor, tta=tta)
        losses.append(_prob_loss(probs, item.target))
        scores.append(score_image(item.labels, labels_from_probabilities(probs, threshold, seed_threshold, min_size)))
    return {**pool(scores), "loss": float(np.mean(losses)) if losses else float("nan")}


def _objects(items: list[_Item]) -> int:
    return int(sum(np.count_nonzero(np.bincount(it.labels.ravel())[1:]) for it in items))


def tune_thresholds(predictor: Predictor, items: list[_Item], grid=THRESHOLD_GRID) -> tuple[dict, list[dict]]:
    """Foreground and seed thresholds with the best pooled F1 on ``items`` (ties: nearest to 0.5, 0.5).

    Returns
    -------
    best : dict
        ``threshold``, ``seed_threshold``.
    table : list of dict
        Every pair tried, with its F1 and object Jaccard.
    """
    probs = [predict_probabilities(it.image, predictor) for it in items]
    table = []
    for t in grid[0]:
        for s in grid[1]:
            scores = pool(score_image(it.labels, labels_from_probabilities(p, t, s)) for it, p in zip(items, probs))
            table.append({"threshold": t, "seed_threshold": s, "f1": scores["f1"],
                          "object_jaccard": scores["object_jaccard"]})
    best = max(table, key=lambda r: (round(r["f1"], 6), -abs(r["threshold"] - 0.5) - abs(r["seed_threshold"] - 0.5)))
    return {"threshold": best["threshold"], "seed_threshold": best["seed_threshold"]}, table


def _diameter(items: list[_Item]) -> float:
    areas = np.concatenate([np.bincount(it.labels.ravel())[1:] for it in items])
    areas = areas[areas > 0]
    return float(np.median(2 * np.sqrt(areas / np.pi))) if areas.size else float("nan")


def _calibration(items: list[_Item], rng: np.random.Generator) -> torch.Tensor:
    crops = [random_crop(items[i].image, items[i].target, CALIBRATION_SIZE, rng)[0]
             for i in rng.choice(len(items), CALIBRATION_CROPS)]
    return torch.from_numpy(np.stack(crops)).to(torch.float16)


def _relative(path: Path, base: Path | None) -> str:
    if base is None:
        return str(path)
    return os.path.relpath(path, base)


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="training (crops)")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation (whole images)")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, label in (("f1", "object F1 @ IoU 0.5"), ("object_jaccard", "object Jaccard"),
                       ("pixel_jaccard", "pixel Jaccard")):
        ax2.plot(epochs, [h[key] for h in history], label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation score")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _report_md(result: dict) -> str:
    b, f, p = result["best"], result["final"], result["postprocess"]
    lines = [
        "# Training report", "",
        f"- model: `{result['model']}` ({result['parameters']:,} parameters, {result['model_bytes'] / 1e6:.2f} MB)",
        f"- data: {result['n_train']} training images ({result['n_train_objects']} objects), "
        f"{result['n_val']} validation images ({result['n_val_objects']} objects)",
        f"- fine-tuned from: {result['finetuned_from'] or 'no (new model)'}; freeze: {result['freeze']}",
        f"- epochs: {len(result['history'])} (best {b['epoch']}), {result['steps_per_epoch']} steps of "
        f"{result['batch_size']} crops of {result['crop']} px; stopped: {result['stopped']}",
        f"- wall time: {result['seconds']:.0f} s on {result['device']} ({result['threads']} threads)",
        f"- validation, kept epoch (thresholds 0.5/0.5): F1@0.5 {b['f1']:.3f}, object Jaccard "
        f"{b['object_jaccard']:.3f}, pixel Jaccard {b['pixel_jaccard']:.3f}",
        f"- validation, final (foreground threshold {p['threshold']}, seed threshold {p['seed_threshold']}): "
        f"F1@0.5 {f['f1']:.3f}, precision {f['precision']:.3f}, recall {f['recall']:.3f}, object Jaccard "
        f"{f['object_jaccard']:.3f}, pixel Jaccard {f['pixel_jaccard']:.3f}", "",
        "![training curves](training.png)", "",
        "| epoch | train loss | val loss | F1@0.5 | object Jaccard | pixel Jaccard | s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h['f1']:.3f} | "
              f"{h['object_jaccard']:.3f} | {h['pixel_jaccard']:.3f} | {h['seconds']:.0f} |" for h in result["history"]]
    return "\n".join(lines) + "\n"


def train(config: TrainConfig | str | os.PathLike | dict, *, output: str | os.PathLike | None = None,
          finetune: str | None = None, freeze_schedule: str | None = None, resume: bool = False,
          base_dir: str | os.PathLike | None = None) -> TrainResult:
    """Train a new model, or fine-tune one, as ``config`` describes.

    Parameters
    ----------
    config : TrainConfig, path or dict
        See :mod:`.trainconfig` and ``docs/segmentation.md``.
    output : path, optional
        Output folder (overrides ``config.output``).
    finetune : str, optional
        Model (built-in name or file) to start from (overrides ``config.finetune``).
    freeze_schedule : str, optional
        Fine-tuning schedule (overrides ``config.freeze``).
    resume : bool
        Continue from ``checkpoint.pt`` in the output folder.
    base_dir : path, optional
        Folder the provenance records data paths relative to (default: the
        config file's folder).

    Returns
    -------
    TrainResult

    Raises
    ------
    scip.config.ConfigError
        Invalid configuration.
    ValueError, FileNotFoundError, ModelFileError
        Data that cannot be used: no pairs, shape or channel mismatches.
    """
    start = time.perf_counter()
    if isinstance(config, (str, os.PathLike)):
        base_dir = Path(config).resolve().parent if base_dir is None else base_dir
        config = load_train_config(config)
    elif isinstance(config, dict):
        config = load_train_config(config, base_dir=base_dir)
    base = Path(base_dir) if base_dir is not None else None
    overrides = {k: v for k, v in {"output": Path(output) if output is not None else None, "finetune": finetune,
                                   "freeze": freeze_schedule}.items() if v is not None}
    if overrides:
        config = TrainConfig.model_validate({**config.model_dump(), **overrides}, context={"base_dir": Path.cwd()})
    cfg = config
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    base_model = modelfile.load(cfg.finetune) if cfg.finetune else None
    with_mn = any(d.micronuclei for d in cfg.data)
    if base_model is not None:
        has_mn = modelfile.MICRONUCLEI in base_model.meta.get("outputs", [])
        if with_mn and not has_mn:
            raise ValueError(f"data names micronucleus labels, but {base_model.path} has no micronucleus output "
                             "to fine-tune; train a new model, or drop micronuclei: from the data")
        with_mn = has_mn
    meta = dict(base_model.meta) if base_model else modelfile.default_meta(cfg.channels, micronuclei=with_mn)
    norm = meta["normalization"]
    sources = [DataSource(d.path, d.images, d.labels, d.label_path, tuple(d.exclude),
                          tuple(d.channels) if d.channels is not None else None, d.micronuclei) for d in cfg.data]
    found = find_pairs(sources)
    train_pairs, val_pairs = _split(found.pairs, cfg.validation, cfg.seed)
    train_items, val_items = load_pairs(train_pairs, norm, with_mn), load_pairs(val_pairs, norm, with_mn)
    channels = {it.image.shape[0] for it in train_items + val_items}
    if len(channels) != 1:
        raise ValueError(f"training images have different channel counts: {sorted(channels)}; select channels per source")
    n_channels = channels.pop()
    if base_model is not None:
        if base_model.in_channels != n_channels:
            raise modelfile.ModelFileError(
                f"{base_model.path}: the model takes {base_model.in_channels} input channel(s), the training images "
                f"have {n_channels}")
        net = base_model.network()
    else:
        if len(cfg.channels) != n_channels:
            raise ValueError(f"channels: {len(cfg.channels)} names given ({', '.join(cfg.channels)}), the training "
                             f"images have {n_channels} channel(s)")
        arch = Architecture(in_channels=n_channels, stem=cfg.architecture.stem,
                            stages=[tuple(s) for s in cfg.architecture.stages], decoder=list(cfg.architecture.decoder),
                            out_channels=len(meta["outputs"]))
        net = UNet(arch)
    net = net.to(device).to(memory_format=torch.channels_last)
    frozen = freeze(net, cfg.freeze)
    params = [p for p in net.parameters() if p.requires_grad]
    lr = cfg.lr if cfg.lr is not None else (5e-4 if base_model else 2e-3)
    pixels = np.array([it.image.shape[1] * it.image.shape[2] for it in train_items], float)
    steps = cfg.steps_per_epoch or max(10, math.ceil(pixels.sum() / (cfg.crop ** 2 * cfg.batch_size)))
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=cfg.epochs * steps,
                                                   pct_start=0.05, anneal_strategy="cos")
    aug = Augment(**cfg.augment.model_dump())
    weights = pixels / pixels.sum()
    history: list[dict] = []
    best: dict | None = None
    first_epoch = 1
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history, best = state["history"], state["best"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        first_epoch = history[-1]["epoch"] + 1 if history else 1
        log.info("resuming from %s at epoch %d", checkpoint, first_epoch)

    meta["diameter"] = _diameter(train_items)
    if cfg.pixel_size is not None:
        meta["pixel_size"] = cfg.pixel_size
    calibration = _calibration(train_items, np.random.default_rng(cfg.seed + 1))
    model_path = out / "model.pt"
    post = {**modelfile.default_meta([])["postprocess"], **meta.get("postprocess", {})}
    evaluator = Predictor(modelfile.ModelFile(net.arch, {}, meta), net, device, None, "fp32")
    log.info("training on %d images (%d objects), validating on %d; %d steps of %d crops per epoch; %s; freeze %s "
             "(%d of %d parameter tensors train)", len(train_items), _objects(train_items), len(val_items), steps,
             cfg.batch_size, device, cfg.freeze, len(frozen.trainable), len(frozen.trainable) + len(frozen.frozen))
    stopped = "epochs"
    for epoch in range(first_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_mode(net, frozen)
        losses = []
        for _ in range(steps):
            x, y = _batch(train_items, weights, cfg.crop, cfg.batch_size, aug, rng)
            x = torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(net(x), torch.from_numpy(y).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach().item())
        net.eval()
        if val_items:
            scores = evaluate(evaluator, val_items, post["threshold"], post["seed_threshold"])
        else:
            scores = dict.fromkeys(("loss", "f1", "precision", "recall", "object_jaccard", "pixel_jaccard"), float("nan"))
        entry = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": scores["loss"],
                 **{k: scores[k] for k in ("f1", "precision", "recall", "object_jaccard", "pixel_jaccard")},
                 "lr": schedule.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        history.append(entry)
        if not val_items:
            improved = True  # nothing to choose on: the last epoch is kept
        elif cfg.monitor == "f1":
            improved = best is None or (entry["f1"], -entry["val_loss"]) > (best["f1"], -best["val_loss"])
        else:
            improved = best is None or entry["val_loss"] < best["val_loss"]
        if improved:
            best = entry
            modelfile.save(net, model_path, meta=meta, calibration=calibration)
        log.info("epoch %d/%d: loss %.4f, val loss %.4f, F1 %.3f, object Jaccard %.3f, pixel Jaccard %.3f, "
                 "%.0f s%s", epoch, cfg.epochs, entry["train_loss"], entry["val_loss"], entry["f1"],
                 entry["object_jaccard"], entry["pixel_jaccard"], entry["seconds"], " (best)" if improved else "")
        torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "history": history, "best": best, "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state()}, checkpoint)
        if epoch - best["epoch"] >= cfg.patience:
            stopped = f"no improvement for {cfg.patience} epochs"
            break
        if cfg.max_minutes is not None and time.perf_counter() - start > cfg.max_minutes * 60:
            stopped = f"max_minutes ({cfg.max_minutes}) reached"
            break

    kept = modelfile.load(model_path)
    tuning: list[dict] = []
    if cfg.tune_thresholds and val_items:
        chosen, tuning = tune_thresholds(Predictor(kept, kept.network().to(device), device, None, "fp32"), val_items)
        kept.meta["postprocess"] = {**kept.meta.get("postprocess", {}), **chosen}
        log.info("thresholds chosen on the validation images: foreground %.2f, seed %.2f",
                 chosen["threshold"], chosen["seed_threshold"])
    final = evaluate(Predictor(kept, kept.network().to(device), device, None, "fp32"), val_items,
                     kept.meta["postprocess"]["threshold"], kept.meta["postprocess"]["seed_threshold"])
    if not val_items:
        final.update(dict.fromkeys(("f1", "precision", "recall", "object_jaccard", "pixel_jaccard"), float("nan")))
    seconds = time.perf_counter() - start
    from scip import __version__

    training = {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "scip_version": __version__, "torch_version": torch.__version__, "python": platform.python_version(),
        "device": str(device), "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
        "data": [{**as_plain(cfg)["data"][i], "path": _relative(d.path, base),
                  "label_path": _relative(d.label_path, base) if d.label_path else None}
                 for i, d in enumerate(cfg.data)],
        "train_images": [it.key for it in train_items], "validation_images": [it.key for it in val_items],
        # Keys repeat across sources (mnfinder's 1.tif in several splits): the files say which one was used.
        "train_files": [_relative(p.image, base) for p in train_pairs],
        "finetuned_from": None if base_model is None else {
            "path": cfg.finetune if cfg.finetune in modelfile.builtin_models() else _relative(Path(cfg.finetune), base),
            "date_utc": base_model.meta.get("training", {}).get("date_utc")},
        "freeze": cfg.freeze, "epochs_run": len(history), "best_epoch": best["epoch"], "stopped": stopped,
        "steps_per_epoch": steps, "crop": cfg.crop, "batch_size": cfg.batch_size, "lr": lr,
        "weight_decay": cfg.weight_decay, "augment": cfg.augment.model_dump(mode="json"), "seed": cfg.seed,
        "monitor": cfg.monitor, "postprocess_tuned": cfg.tune_thresholds,
        "validation": {k: final[k] for k in ("f1", "precision", "recall", "object_jaccard", "pixel_jaccard")},
    }
    kept.meta["training"] = training
    modelfile.save(kept, model_path)
    n_params = sum(p.numel() for p in net.parameters())
    report = {"model": str(model_path), "parameters": n_params, "model_bytes": model_path.stat().st_size,
              "n_train": len(train_items), "n_val": len(val_items),
              "n_train_objects": _objects(train_items), "n_val_objects": _objects(val_items),
              "unpaired_files": [str(p) for p in found.unpaired], "finetuned_from": cfg.finetune,
              "freeze": cfg.freeze, "frozen_parameters": list(frozen.frozen), "best": best, "final": final,
              "threshold_tuning": tuning, "postprocess": kept.meta["postprocess"], "history": history,
              "seconds": seconds, "device": str(device), "threads": torch.get_num_threads(),
              "steps_per_epoch": steps, "batch_size": cfg.batch_size, "crop": cfg.crop, "stopped": stopped,
              "meta": kept.meta}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    _plot(history, out / "training.png")
    (out / "report.md").write_text(_report_md(report))
    log.info("kept epoch %d: validation F1 %.3f, object Jaccard %.3f; model in %s (%.0f s)", best["epoch"],
             final["f1"], final["object_jaccard"], model_path, seconds)
    return TrainResult(model_path, out, history, best, final, frozen, seconds)
