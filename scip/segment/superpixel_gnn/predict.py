"""Inference: superpixels, graph, network, then pixels; foreground and instances.

:func:`foreground_probability` paints each superpixel's foreground
probability onto its pixels; :func:`foreground_mask` thresholds it (a
region-of-interest mask); :func:`segment_image` splits the mask into
objects with the classical distance-transform watershed of
:mod:`scip.segment.watershed` and returns an int32 label image like every
method.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage import measure, segmentation

from .._modelfiles import check_channels
from .._util import CONNECTIVITY, remove_small_and_relabel, smooth_image
from ..watershed import _markers
from .graph import Graph, build_graph
from .modelfile import GnnModelFile, ModelFileError, load, resolve
from .superpixels import normalize_image, superpixels

__all__ = ["load_model", "as_channels", "graph_of", "node_probabilities", "foreground_probability",
           "foreground_mask", "split_instances", "segment_image", "clear_cache"]

_CACHE: dict[tuple[str, int], tuple[GnnModelFile, torch.nn.Module]] = {}


def load_model(model: str | os.PathLike | GnnModelFile) -> tuple[GnnModelFile, torch.nn.Module]:
    """A model file and its network in eval mode, cached by path and modification time."""
    if isinstance(model, GnnModelFile):
        return model, model.network()
    path = resolve(model)
    key = (str(Path(path).resolve()), path.stat().st_mtime_ns)
    if key not in _CACHE:
        mf = load(path)
        _CACHE[key] = (mf, mf.network())
    return _CACHE[key]


def clear_cache() -> None:
    """Forget the loaded models."""
    _CACHE.clear()


def as_channels(image: np.ndarray, mf: GnnModelFile) -> np.ndarray:
    """``image`` as ``(C, H, W)`` float32, checked against the model's channel count.

    Raises
    ------
    ModelFileError
        The image has another number of channels than the model; names the file.
    """
    image = check_channels(image, mf.in_channels, mf.meta.get("channels", []), mf.path, "superpixel_gnn model")
    return image.astype(np.float32, copy=False)


def graph_of(image: np.ndarray, *, size: int, compactness: float, tile: int = 1024,
             normalization: dict | None = None) -> tuple[np.ndarray, Graph]:
    """Superpixels and graph of a ``(C, H, W)`` image (normalized here by its percentiles).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        Superpixel ids.
    graph : Graph
    """
    norm = normalization or {}
    scaled = normalize_image(image, norm.get("low", 1.0), norm.get("high", 99.8))
    labels = superpixels(scaled, size=size, compactness=compactness, tile=tile)
    return labels, build_graph(scaled, labels, size=size, tile=tile)


def node_probabilities(graph: Graph, mf: GnnModelFile, net: torch.nn.Module | None = None) -> np.ndarray:
    """Foreground probability of every node of ``graph``, float32 ``(N,)``."""
    net = mf.network() if net is None else net
    node_mean, node_std, edge_mean, edge_std = mf.scaling()
    if graph.nodes.shape[1] != node_mean.size or graph.edge_features.shape[1] != edge_mean.size:
        raise ModelFileError(f"{mf.path}: the model expects {node_mean.size} node and {edge_mean.size} edge features, "
                             f"the graph has {graph.nodes.shape[1]} and {graph.edge_features.shape[1]}")
    with torch.inference_mode():
        logits = net(torch.from_numpy((graph.nodes - node_mean) / node_std),
                     torch.from_numpy(graph.edges),
                     torch.from_numpy((graph.edge_features - edge_mean) / edge_std))
    return torch.sigmoid(logits).numpy().astype(np.float32)


def foreground_probability(image: np.ndarray, model: str | os.PathLike | GnnModelFile = "nuclei", *,
                           superpixel_size: int | None = None, compactness: float | None = None, tile: int = 1024,
                           smooth: float = 0.0) -> np.ndarray:
    """Per-pixel foreground probability: each superpixel's, painted onto its pixels.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (C, H, W)
        Raw intensities of the model's channel(s).
    model : str, path or GnnModelFile
        A built-in name (``nuclei``) or a model file.
    superpixel_size, compactness : optional
        Superpixel settings; ``None`` takes the model's training ones.
    tile : int
        Tile side for superpixels and graph (bounds their working memory).
    smooth : float
        Gaussian blur (sigma in pixels) of the input; 0 disables it.

    Returns
    -------
    ndarray of float32, shape (H, W)
        A constant image gives zeros.

    Raises
    ------
    ModelFileError
        Missing or unreadable model file, or wrong channel count; names the file.
    """
    mf, net = load_model(model)
    image = as_channels(image, mf)
    if smooth > 0:
        image = np.stack([smooth_image(ch, smooth) for ch in image]).astype(np.float32)
    if image.size == 0 or all(np.ptp(ch) == 0 for ch in image):
        return np.zeros(image.shape[1:], np.float32)
    sp = mf.meta["superpixels"]
    labels, graph = graph_of(image, size=int(superpixel_size or sp["size"]),
                             compactness=float(compactness or sp["compactness"]), tile=tile,
                             normalization=mf.meta.get("normalization"))
    return node_probabilities(graph, mf, net)[labels]


def foreground_mask(image: np.ndarray, model: str | os.PathLike | GnnModelFile = "nuclei", *,
                    threshold: float | None = None, **params) -> np.ndarray:
    """Boolean foreground (region of interest): :func:`foreground_probability` above ``threshold``.

    ``threshold`` ``None`` takes the model's (0.5 unless training chose
    another); ``params`` go to :func:`foreground_probability`.
    """
    mf, _ = load_model(model)
    threshold = float(mf.meta.get("threshold", 0.5)) if threshold is None else threshold
    return foreground_probability(image, mf if isinstance(model, GnnModelFile) else model, **params) > threshold


def split_instances(mask: np.ndarray, *, min_size: int = 20, fill_holes: bool = True, split: bool = True,
                    min_distance: int = 5, distance_smooth: float = 1.0) -> np.ndarray:
    """Objects of a foreground mask: connected components, split by a distance-transform watershed.

    The seeds are those of :func:`scip.segment.watershed` (one per peak of
    the smoothed distance transform, merged on plateaus, at least one per
    component).

    Returns
    -------
    ndarray of int32
        0 background, objects 1..N.
    """
    mask = np.asarray(mask, bool)
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    components = measure.label(mask, connectivity=CONNECTIVITY)
    if not split:
        return remove_small_and_relabel(components, min_size)
    distance = smooth_image(ndi.distance_transform_edt(mask), distance_smooth)
    markers = _markers(distance, components, min_distance, None)
    labels = segmentation.watershed(-distance, markers, mask=mask, connectivity=CONNECTIVITY)
    return remove_small_and_relabel(labels, min_size)


def segment_image(image: np.ndarray, model: str | os.PathLike | GnnModelFile = "nuclei", *,
                  superpixel_size: int | None = None, compactness: float | None = None, tile: int = 1024,
                  threshold: float | None = None, smooth: float = 0.0, min_size: int = 20, fill_holes: bool = True,
                  split: bool = True, min_distance: int = 5, distance_smooth: float = 1.0) -> np.ndarray:
    """Label objects: :func:`foreground_mask`, then :func:`split_instances` (see :func:`scip.segment.superpixel_gnn.superpixel_gnn`)."""
    mask = foreground_mask(image, model, threshold=threshold, superpixel_size=superpixel_size,
                           compactness=compactness, tile=tile, smooth=smooth)
    return split_instances(mask, min_size=min_size, fill_holes=fill_holes, split=split, min_distance=min_distance,
                           distance_smooth=distance_smooth)
