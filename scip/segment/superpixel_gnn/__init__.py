"""Superpixel-graph segmentation: a graph network over SLIC superpixels (after Jain et al., Microscopy 2024).

A large image becomes a graph of a few thousand superpixels per megapixel;
a small message passing network labels each superpixel foreground or
background, and the classical distance watershed splits the foreground into
objects. Memory and training time are a fraction of a pixel CNN's; the
accuracy is bounded by how well superpixels follow object borders (the
"upper bound": a perfect superpixel classifier, :meth:`.train.Sample.upper_bound`).

:func:`superpixel_gnn` is the ``superpixel_gnn`` entry of
:data:`scip.segment.METHODS`. PyTorch is imported only when a model is used
(plain torch: no torch-geometric or other graph library), so ``import scip``
works without it. Submodules (those after ``graph`` need torch):

- :mod:`.superpixels`: normalization, SLIC tile by tile with unique ids;
- :mod:`.graph`: region adjacency graph, node and edge features, targets;
- :mod:`.model`: the message passing network;
- :mod:`.modelfile`: one file holding architecture, weights, feature scaling, metadata;
- :mod:`.trainconfig`, :mod:`.train`, :mod:`.command`: ``scip train`` with ``kind: superpixel_gnn``;
- :mod:`.predict`: foreground probability / mask (a region of interest), instances.

See ``docs/segmentation.md``.
"""

from __future__ import annotations

import os

import numpy as np

from scip.segment._modelfiles import ModelCheck, check

__all__ = ["superpixel_gnn", "foreground_probability", "foreground_mask", "require_torch", "check_model",
           "ModelCheck", "TORCH_MISSING"]

TORCH_MISSING = "the superpixel_gnn method needs PyTorch: install torch (pip install 'scip[unet]')"


def require_torch() -> None:
    """Raise ``ImportError`` with the install command when PyTorch is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError(TORCH_MISSING) from None


def superpixel_gnn(
    image: np.ndarray,
    *,
    model: str | os.PathLike = "nuclei",
    superpixel_size: int | None = None,
    compactness: float | None = None,
    tile: int = 1024,
    threshold: float | None = None,
    smooth: float = 0.0,
    min_size: int = 20,
    fill_holes: bool = True,
    split: bool = True,
    min_distance: int = 5,
    distance_smooth: float = 1.0,
) -> np.ndarray:
    """Label objects with a superpixel graph network, then split them with a distance watershed.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (C, H, W)
        Raw intensities of the model's channel(s); normalized here by the
        image's own percentiles, as in training.
    model : str or path, optional
        A built-in model name (``nuclei``: scip/segment/models/nuclei.gnn)
        or a model file written by ``scip train`` (``kind: superpixel_gnn``).
    superpixel_size : int, optional
        Mean superpixel area in pixels; ``None`` takes the model's training
        size (the network has learnt features at that scale).
    compactness : float, optional
        SLIC compactness; ``None`` takes the model's.
    tile : int, optional
        Superpixels and graph are computed in tiles of this side, which
        bounds their working memory; the graph is one graph across tiles.
    threshold : float, optional
        Foreground probability threshold; ``None`` takes the model's (0.5).
    smooth : float, optional
        Standard deviation of a Gaussian blur of the input; 0 disables it.
    min_size : int, optional
        Objects with fewer pixels are removed.
    fill_holes : bool, optional
        Fill holes of the foreground before splitting.
    split : bool, optional
        Split touching objects with the distance watershed of
        :func:`scip.segment.watershed`; ``False`` keeps connected components.
    min_distance, distance_smooth : optional
        Seed spacing and distance-map blur of that watershed.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 background, objects 1..N. A constant image has no objects.

    Raises
    ------
    ImportError
        PyTorch is not installed.
    scip.segment.unet.modelfile.ModelFileError
        Missing or unreadable model file, or an image whose channel count
        differs from the model's; the message names the file.
    """
    require_torch()
    from .predict import segment_image

    return segment_image(image, model, superpixel_size=superpixel_size, compactness=compactness, tile=tile,
                         threshold=threshold, smooth=smooth, min_size=min_size, fill_holes=fill_holes, split=split,
                         min_distance=min_distance, distance_smooth=distance_smooth)


def foreground_probability(image: np.ndarray, model: str | os.PathLike = "nuclei", **params) -> np.ndarray:
    """Per-pixel foreground probability, float32 ``(H, W)`` (:func:`.predict.foreground_probability`)."""
    require_torch()
    from .predict import foreground_probability as run

    return run(image, model, **params)


def foreground_mask(image: np.ndarray, model: str | os.PathLike = "nuclei", *, threshold: float | None = None,
                    **params) -> np.ndarray:
    """Boolean foreground, e.g. a region-of-interest mask (:func:`.predict.foreground_mask`)."""
    require_torch()
    from .predict import foreground_mask as run

    return run(image, model, threshold=threshold, **params)


def check_model(model: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> ModelCheck:
    """Find and read a superpixel-GNN model file for a config (cached by path and modification time).

    Raises
    ------
    ValueError
        PyTorch missing (with the install command), or the model file is
        missing or unreadable (``ModelFileError``, naming the file).
    """
    try:
        require_torch()
    except ImportError as e:
        raise ValueError(str(e)) from None
    from .modelfile import load, resolve

    return check(model, base_dir, ".gnn", resolve, load)
