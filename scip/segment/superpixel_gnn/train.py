"""Training: superpixel graphs of image/label pairs, majority-vote targets, full-graph steps.

Every training and validation image is cut into superpixels and turned into
a graph once (:func:`prepare`); a superpixel's target is the majority vote
of the foreground pixels of its label image (:func:`.graph.superpixel_fraction`).
Node and edge features are standardized with their means and standard
deviations over the training graphs (stored in the model file). An epoch
takes each training graph once, in random order, as one batch: the loss is
binary cross-entropy of the node logits, each node weighted by its area
(so that it counts pixels, as the Dice score does); with ``augment`` each
step sees its graph under a random intensity gain and offset
(:func:`augment_features`). After each epoch the
validation pixel Dice is computed exactly from the node predictions and the
nodes' foreground fractions; the best epoch is kept, and training stops
after ``patience`` epochs without improvement, ``epochs``, or
``max_minutes``.

Files written to the output folder: ``model.gnn`` (the model file),
``report.json`` and ``report.md`` (settings, history, validation Dice and
the superpixel upper bound: the Dice of a perfect superpixel classifier).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from scip.segment.unet.data import DataSource, Pair, find_pairs, read_image, read_labels

from .graph import _PER_CHANNEL as NODE_INTENSITY
from .graph import Graph, superpixel_fraction
from .model import Architecture, GraphNet
from .modelfile import GnnModelFile, save
from .predict import graph_of
from .trainconfig import GnnTrainConfig

__all__ = ["Sample", "GnnTrainResult", "prepare", "sample_of", "fit_scaling", "fit", "augment_features", "dice_of",
           "train_gnn"]

log = logging.getLogger("scip.superpixel_gnn")

NORMALIZATION = {"kind": "percentile", "low": 1.0, "high": 99.8}


@dataclass
class Sample:
    """One image as a training graph.

    Attributes
    ----------
    key : str
    graph : Graph
    fraction : ndarray of float, shape (N,)
        Foreground fraction of each superpixel; ``> 0.5`` is its target.
    foreground : int
        Foreground pixels of the label image.
    """

    key: str
    graph: Graph
    fraction: np.ndarray
    foreground: int

    @property
    def target(self) -> np.ndarray:
        """Majority-vote label of each superpixel (float32 0/1)."""
        return (self.fraction > 0.5).astype(np.float32)

    def upper_bound(self) -> float:
        """Pixel Dice of the perfect superpixel classifier (the majority vote)."""
        return dice_of(self, self.target)


@dataclass
class GnnTrainResult:
    """What :func:`train_gnn` wrote and measured (``model``, ``output``, ``history``, ``best``, ``seconds``)."""

    model: Path
    output: Path
    history: list
    best: dict
    seconds: float
    prepare_seconds: float


def sample_of(key: str, image: np.ndarray, labels: np.ndarray, *, size: int, compactness: float,
              tile: int = 1024) -> Sample:
    """The training graph of one ``(C, H, W)`` image and its label image ``(H, W)``."""
    sp, graph = graph_of(image, size=size, compactness=compactness, tile=tile, normalization=NORMALIZATION)
    fg = np.asarray(labels) > 0
    return Sample(key, graph, superpixel_fraction(sp, fg), int(fg.sum()))


def prepare(pairs: list[Pair], *, size: int, compactness: float, tile: int = 1024) -> list[Sample]:
    """Read image/label pairs and make their graphs."""
    out = []
    for pair in pairs:
        image = read_image(pair.image, pair.channels)
        labels = read_labels(pair.labels)
        if image.shape[1:] != labels.shape:
            raise ValueError(f"{pair.image} is {image.shape[1:]} but its labels {pair.labels} are {labels.shape}")
        out.append(sample_of(pair.key, image, labels, size=size, compactness=compactness, tile=tile))
    return out


def fit_scaling(graphs: list[Graph]) -> dict:
    """Means and standard deviations of node and edge features over ``graphs`` (std 1 where constant)."""
    nodes = np.concatenate([g.nodes for g in graphs]).astype(np.float64)
    edges = np.concatenate([g.edge_features for g in graphs]).astype(np.float64)
    if edges.size == 0:
        edges = np.zeros((1, graphs[0].edge_features.shape[1]))

    def std(x: np.ndarray) -> list:
        s = x.std(axis=0)
        return np.where(s > 1e-8, s, 1.0).tolist()

    return {"node_mean": nodes.mean(axis=0).tolist(), "node_std": std(nodes),
            "edge_mean": edges.mean(axis=0).tolist(), "edge_std": std(edges)}


def _tensors(graph: Graph, scaling: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    nm, ns, em, es = (np.asarray(scaling[k], np.float32) for k in ("node_mean", "node_std", "edge_mean", "edge_std"))
    return (torch.from_numpy((graph.nodes - nm) / ns), torch.from_numpy(graph.edges),
            torch.from_numpy((graph.edge_features - em) / es))


def augment_features(graph: Graph, gain: float, offset: float) -> Graph:
    """The graph of the same image with intensities ``gain * x + offset``, computed from the features alone.

    Every intensity feature is linear in the intensities (:mod:`.graph`):
    means, minima and maxima become ``gain * v + offset``; standard
    deviations, gradients, differences of Gaussians and edge contrasts
    ``gain * v``. Training on such copies makes the network rely on
    relative, not absolute, brightness (images whose background sits
    higher after normalization). The relative mean (mean minus the image's
    background) only scales.
    """
    nodes = graph.nodes.copy()
    edges = graph.edge_features.copy()
    per = len(NODE_INTENSITY)
    channels = (nodes.shape[1] - 3) // per  # the relative mean only scales: the offset cancels
    for c in range(channels):
        block = slice(c * per, (c + 1) * per)
        nodes[:, block] *= gain
        nodes[:, [c * per + i for i, name in enumerate(NODE_INTENSITY) if name in ("mean", "min", "max")]] += offset
    edges[:, 1:1 + channels] *= gain
    return Graph(nodes, graph.edges, edges, graph.area)


def dice_of(sample: Sample, prediction: np.ndarray) -> float:
    """Pixel Dice of a node prediction (0/1 per superpixel) against the label image, exactly."""
    area = sample.graph.area.astype(np.float64)
    pred = np.asarray(prediction, np.float64)
    inter = float(np.sum(area * pred * sample.fraction))
    total = float(np.sum(area * pred)) + sample.foreground
    return 1.0 if total == 0 else 2.0 * inter / total


def _pooled_dice(samples: list[Sample], predictions: list[np.ndarray]) -> float:
    inter = total = 0.0
    for s, p in zip(samples, predictions):
        area = s.graph.area.astype(np.float64)
        inter += float(np.sum(area * p * s.fraction))
        total += float(np.sum(area * p)) + s.foreground
    return 1.0 if total == 0 else 2.0 * inter / total


def fit(train: list[Sample], validation: list[Sample], *, hidden: int = 32, layers: int = 4, epochs: int = 60,
        patience: int = 15, lr: float = 3e-3, weight_decay: float = 1e-4, max_minutes: float | None = None,
        seed: int = 0, augment: bool = True, meta: dict | None = None) -> tuple[GnnModelFile, list, dict]:
    """Train a :class:`GraphNet` on prepared samples.

    Parameters
    ----------
    train, validation : list of Sample
        Training graphs; validation graphs pick the kept epoch (the
        training graphs do when ``validation`` is empty).
    hidden, layers : int
        Network shape.
    epochs, patience, lr, weight_decay, max_minutes, seed
        Schedule (see the module docstring).
    augment : bool
        Each step sees the graph of its image under a random gain
        (0.6-1.5) and offset (-0.1-0.2) of the normalized intensities
        (:func:`augment_features`).
    meta : dict, optional
        Metadata for the model file; ``scaling`` is filled in here.

    Returns
    -------
    model : GnnModelFile
        The best epoch's weights.
    history : list of dict
        ``epoch``, ``loss``, ``dice`` (pooled validation pixel Dice), ``seconds``.
    best : dict
        The history entry kept.
    """
    if not train:
        raise ValueError("no training images")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scaling = fit_scaling([s.graph for s in train])
    arch = Architecture(node_features=train[0].graph.nodes.shape[1],
                        edge_features=train[0].graph.edge_features.shape[1], hidden=hidden, layers=layers)
    net = GraphNet(arch)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * min(e / epochs, 1.0))))
    data = [(torch.from_numpy(s.target), torch.from_numpy((s.graph.area / s.graph.area.mean()).astype(np.float32)))
            for s in train]
    plain = [_tensors(s.graph, scaling) for s in train]
    val = validation or train
    val_data = [_tensors(s.graph, scaling) for s in val]
    history: list[dict] = []
    best: dict = {}
    best_state = None
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        net.train()
        losses = []
        for i in rng.permutation(len(data)):
            y, w = data[i]
            if augment:
                gain, offset = rng.uniform(0.6, 1.5), rng.uniform(-0.1, 0.2)
                x, e, ea = _tensors(augment_features(train[i].graph, gain, offset), scaling)
            else:
                x, e, ea = plain[i]
            loss = F.binary_cross_entropy_with_logits(net(x, e, ea), y, weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        net.eval()
        with torch.inference_mode():
            preds = [(net(*t) > 0).numpy().astype(np.float64) for t in val_data]
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "dice": _pooled_dice(val, preds),
                 "seconds": round(time.perf_counter() - start, 2)}
        history.append(entry)
        log.info("epoch %d: loss %.4f, validation Dice %.4f (%.0f s)", epoch, entry["loss"], entry["dice"],
                 entry["seconds"])
        if not best or entry["dice"] > best["dice"]:
            best = entry
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if epoch - best["epoch"] >= patience:
            break
        if max_minutes is not None and time.perf_counter() - start > 60 * max_minutes:
            break
    meta = {**(meta or {}), "scaling": scaling}
    meta.setdefault("channels", ["nuclei"])
    meta.setdefault("threshold", 0.5)
    meta.setdefault("normalization", dict(NORMALIZATION))
    meta.setdefault("superpixels", {"size": None, "compactness": None})
    return GnnModelFile(arch, best_state, meta), history, best


def _split(pairs: list[Pair], validation: float | list[str], seed: int) -> tuple[list[Pair], list[Pair]]:
    from scip.segment.unet.train import _split as split

    return split(pairs, validation, seed)


def train_gnn(cfg: GnnTrainConfig, base_dir: str | Path | None = None) -> GnnTrainResult:
    """Train a superpixel-GNN model as ``cfg`` says and write it to ``cfg.output / "model.gnn"``.

    Raises
    ------
    FileNotFoundError
        No image/label pairs.
    ValueError
        Unusable data (shapes that differ, a validation pattern that
        matches nothing, channels that differ from ``cfg.channels``).
    """
    from scip import __version__

    start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sources = [DataSource(d.path, d.images, d.labels, d.label_path, tuple(d.exclude),
                          tuple(d.channels) if d.channels is not None else None) for d in cfg.data]
    pairs = find_pairs(sources).pairs
    train_pairs, val_pairs = _split(pairs, cfg.validation, cfg.seed)
    settings = {"size": cfg.superpixel_size, "compactness": cfg.compactness, "tile": cfg.tile}
    train = prepare(train_pairs, **settings)
    val = prepare(val_pairs, **settings)
    channels = train[0].graph.nodes.shape[1]
    if any(s.graph.nodes.shape[1] != channels for s in train + val):
        raise ValueError("the training images do not all have the same number of channels")
    n_channels = (channels - 3) // len(NODE_INTENSITY)
    if n_channels != len(cfg.channels):
        raise ValueError(f"channels names {len(cfg.channels)} channel(s) ({', '.join(cfg.channels)}) but the images "
                         f"have {n_channels}; select them with data[].channels")
    prepare_seconds = time.perf_counter() - start
    log.info("superpixel_gnn: %d training and %d validation graphs (%d nodes) in %.1f s", len(train), len(val),
             sum(s.graph.n_nodes for s in train + val), prepare_seconds)
    meta = {"channels": list(cfg.channels), "normalization": dict(NORMALIZATION), "threshold": 0.5,
            "superpixels": {"size": cfg.superpixel_size, "compactness": cfg.compactness}}
    model, history, best = fit(train, val, hidden=cfg.hidden, layers=cfg.layers, epochs=cfg.epochs,
                               patience=cfg.patience, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               max_minutes=cfg.max_minutes, seed=cfg.seed, augment=cfg.augment, meta=meta)
    seconds = time.perf_counter() - start
    upper = {s.key: round(s.upper_bound(), 4) for s in val}
    model.meta["training"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "scip_version": __version__,
        "torch_version": str(torch.__version__), "python": platform.python_version(),
        "threads": torch.get_num_threads(), "seconds": round(seconds, 1), "prepare_seconds": round(prepare_seconds, 1),
        "config": cfg.model_dump(mode="json", exclude={"data", "output"}),
        "data": [{"path": str(Path(d.path).name), "images": d.images, "labels": d.labels} for d in cfg.data],
        "train_images": [s.key for s in train], "validation_images": [s.key for s in val],
        "best_epoch": best["epoch"], "epochs_run": len(history), "validation_dice": round(best["dice"], 4),
        "validation_upper_bound": upper,
    }
    output = Path(cfg.output)
    path = save(model, output / "model.gnn")
    report = {"model": str(path), "best": best, "history": history, "upper_bound": upper,
              "training": model.meta["training"]}
    (output / "report.json").write_text(json.dumps(report, indent=1))
    lines = ["# superpixel_gnn training report", "", f"Model: `{path.name}` ({model.describe()})", "",
             f"Kept epoch {best['epoch']} of {len(history)}: validation pixel Dice {best['dice']:.4f}; "
             f"graphs prepared in {prepare_seconds:.1f} s, total {seconds:.1f} s.", "",
             "Superpixel upper bound (Dice of the majority label per superpixel) on the validation images:", ""]
    lines += [f"- `{k}`: {v:.4f}" for k, v in upper.items()]
    (output / "report.md").write_text("\n".join(lines) + "\n")
    return GnnTrainResult(path, output, history, best, seconds, prepare_seconds)
