"""The ``cellpose`` method: a local Cellpose 3 model, with scip's flow post-processing.

Cellpose's network (``cellpose.models.CellposeModel``, Cellpose < 4) predicts
flows and a cell probability; :func:`scip.segment.flows.compute_masks` turns
them into labels with Cellpose's semantics, much faster than Cellpose's own
CPU post-processing. The model is a file given by path: nothing is
downloaded (Cellpose would fetch its built-in models from the internet; a
name such as ``cyto3`` is not accepted here, only a file, e.g. one fetched
once with Cellpose and copied, or one trained with Cellpose).

Cellpose and PyTorch are imported only when the method is used:
``import scip`` works without them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cellpose", "check_model", "resolve_model", "CellposeModelError", "CELLPOSE_MISSING",
           "require_cellpose"]

CELLPOSE_MISSING = "the cellpose method needs Cellpose 3 and PyTorch: pip install 'cellpose<4'"


class CellposeModelError(ValueError):
    """A model file that is missing, unreadable, or not a Cellpose 3 model; the message names the file."""


def require_cellpose() -> Any:
    """Import and return the ``cellpose`` package, or raise ``ImportError`` with the install command.

    Cellpose 4 changed the model format and the ``eval`` interface (no
    channels), so it is refused with the same hint.
    """
    try:
        import cellpose
        import cellpose.models  # noqa: F401 - imports torch: fail here, not later
    except ImportError as err:
        raise ImportError(f"{CELLPOSE_MISSING} ({err})") from None
    major = str(getattr(cellpose, "version", "0")).split(".")[0]
    if not major.isdigit() or int(major) >= 4:
        raise ImportError(f"{CELLPOSE_MISSING}; found cellpose {getattr(cellpose, 'version', '?')}")
    return cellpose


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`check_model` learned about a model file.

    Attributes
    ----------
    path : Path
        Absolute path of the file.
    diam_mean : float
        Object diameter (pixels) the model's training images were scaled to.
    diam_labels : float
        Mean object diameter of its training labels.
    """

    path: Path
    diam_mean: float
    diam_labels: float


# Smallest image side passed to Cellpose's eval (see cellpose()).
_MIN_SIDE = 16

_LOCK = threading.Lock()
_MODELS: dict[tuple, Any] = {}
_INFO: dict[tuple, ModelInfo] = {}


def resolve_model(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """The absolute path of a model file, which must exist (it is not read: no torch needed).

    Raises
    ------
    CellposeModelError
        No file at that path; the message names it.
    """
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    p = p.absolute()
    if not p.is_file():
        where = "not found" if not p.exists() else "not a file"
        raise CellposeModelError(f"Cellpose model file {p}: {where} (the cellpose method takes a local model file; "
                                 "nothing is downloaded)")
    return p


def _file_key(p: Path) -> tuple:
    st = p.stat()
    return (str(p), st.st_mtime_ns, st.st_size)


def check_model(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> ModelInfo:
    """Check that ``path`` is a readable Cellpose 3 model file, without building the network.

    Parameters
    ----------
    path : str or path
        The model file; relative paths are taken from ``base_dir``.
    base_dir : str or path, optional
        Directory of the config file the path came from.

    Returns
    -------
    ModelInfo

    Raises
    ------
    CellposeModelError
        The file is missing, unreadable, or not a Cellpose 3 network's
        weights; the message names the file.
    ImportError
        Cellpose 3 (or PyTorch) is not installed.
    """
    p = resolve_model(path, base_dir)
    require_cellpose()
    import torch

    key = _file_key(p)
    with _LOCK:
        if key in _INFO:
            return _INFO[key]
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read means a bad file
        # torch's own message (about weights_only) would mislead here.
        raise CellposeModelError(f"Cellpose model file {p} cannot be read as PyTorch weights "
                                 f"({type(err).__name__}); is it a Cellpose model file?") from None
    if not isinstance(state, dict) or "output.2.weight" not in state or "diam_mean" not in state:
        raise CellposeModelError(f"Cellpose model file {p} is not a Cellpose 3 model (no Cellpose network weights)")
    if "W2" in state:
        raise CellposeModelError(f"Cellpose model file {p} is a Cellpose 4 model; the cellpose method runs "
                                 "Cellpose 3 models (cellpose<4)")
    info = ModelInfo(p, float(state["diam_mean"].reshape(-1)[0]),
                     float(state.get("diam_labels", state["diam_mean"]).reshape(-1)[0]))
    with _LOCK:
        _INFO[key] = info
    return info


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no GPU")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def _load(info: ModelInfo, device) -> Any:
    """The CellposeModel for a file, built once per (file version, device) in this process."""
    from cellpose import models

    key = (*_file_key(info.path), str(device))
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            try:
                model = models.CellposeModel(pretrained_model=str(info.path), device=device,
                                             gpu=device.type == "cuda")
            except Exception as err:  # noqa: BLE001 - e.g. weights of another architecture
                raise CellposeModelError(
                    f"Cellpose model file {info.path} cannot be loaded: {type(err).__name__}: {err}") from None
            _MODELS[key] = model
    return model


def cellpose(
    image: np.ndarray,
    *,
    pretrained_model: str | os.PathLike | None = None,
    diameter: float | None = None,
    cellprob_threshold: float = 0.0,
    flow_threshold: float = 0.4,
    niter: int | None = None,
    min_size: int = 15,
    smooth: float = 0.0,
    device: str = "auto",
    batch_size: int = 8,
    norm_range: list | None = None,
) -> np.ndarray:
    """Label cells with a local Cellpose 3 model and scip's flow post-processing.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (C, H, W) with C in {1, 2}
        One channel (Cellpose's "grayscale", channels ``[0, 0]``) or two:
        the channel to segment and a nuclear channel (channels ``[1, 2]``).
        Any real dtype; Cellpose normalizes each image to its 1st and 99th
        percentiles.
    pretrained_model : str or path
        The model file (required; relative to the working directory).
    diameter : float, optional
        Typical cell diameter in pixels in this image; the image is scaled by
        ``diam_mean / diameter`` for the network (flows are computed at the
        original size). ``None`` uses the model's mean training diameter,
        as Cellpose does.
    cellprob_threshold : float, optional
        Pixels with a cell probability (logit) above it are followed.
    flow_threshold : float, optional
        Masks whose flows disagree with the network's by more than this
        (mean squared error) are dropped; 0 keeps all.
    niter : int, optional
        Steps of flow following; ``None``: Cellpose's ``200 * diameter / diam_mean``.
    min_size : int, optional
        Masks with fewer pixels are dropped; 0 keeps all.
    smooth : float, optional
        Standard deviation of a Gaussian blur of the input; 0 disables it.
    device : {"auto", "cpu", "cuda"}, optional
        Where the network runs; ``auto`` takes CUDA when torch sees a GPU.
    batch_size : int, optional
        224 × 224 tiles per forward pass.
    norm_range : list of (float, float), optional
        Per channel, the intensities (after ``smooth``) that become 0 and 1,
        instead of Cellpose's per-image 1st and 99th percentiles: how
        windows of a large image share the whole image's normalization
        (:mod:`scip.segment.image_statistics`).

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 background, cells 1..N. A constant image has no cells.

    Raises
    ------
    ValueError
        No ``pretrained_model``, or an image of the wrong shape.
    CellposeModelError
        Missing, unreadable or non-Cellpose-3 model file (named).
    ImportError
        Cellpose 3 or PyTorch is not installed.
    """
    if pretrained_model is None:
        raise ValueError("the cellpose method needs pretrained_model: the path of a local Cellpose 3 model file")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[0] == 2)):
        raise ValueError(f"expected an image of shape (H, W), (1, H, W) or (2, H, W), got {image.shape}")
    info = check_model(pretrained_model)
    torch_device = _device(device)
    shape = image.shape[-2:]
    pixels = image.astype(np.float32)
    if not np.all(np.isfinite(pixels)):
        raise ValueError("image has NaN or infinite values")
    if norm_range is None and (pixels.size == 0 or all(np.ptp(ch) == 0 for ch in pixels.reshape(-1, *shape))):
        return np.zeros(shape, np.int32)
    if smooth > 0:
        from scipy import ndimage as ndi

        sigma = (0, smooth, smooth) if pixels.ndim == 3 else smooth
        pixels = ndi.gaussian_filter(pixels, sigma)
    if norm_range is not None:
        ranges = np.asarray(norm_range, np.float64).reshape(-1, 2)
        channels = pixels.reshape(-1, *shape)
        if len(ranges) != len(channels):
            raise ValueError(f"norm_range gives {len(ranges)} channel range(s) for an image of "
                             f"{len(channels)} channel(s)")
        # Normalized here rather than through Cellpose's ``lowhigh``: Cellpose would
        # also shift the empty second channel it adds to a one-channel image.
        # In float32, as Cellpose's normalize99 computes it.
        lows, highs = ranges.astype(np.float32).T
        pixels = np.stack([(ch - lo) / (hi - lo) if hi > lo else np.zeros_like(ch)
                           for ch, lo, hi in zip(channels, lows, highs)]).reshape(pixels.shape)
    model = _load(info, torch_device)
    two = pixels.ndim == 3
    # Cellpose guesses the axes from the shape and takes a short side for
    # channels or planes: small images are edge-padded, outputs cropped back.
    pad = (max(0, _MIN_SIDE - shape[0]), max(0, _MIN_SIDE - shape[1]))
    if any(pad):
        pixels = np.pad(pixels, [(0, 0)] * (pixels.ndim - 2) + [(0, pad[0]), (0, pad[1])], mode="edge")
    _, outputs, _ = model.eval(pixels, channels=[1, 2] if two else [0, 0], channel_axis=0 if two else None,
                               diameter=diameter, batch_size=batch_size, compute_masks=False,
                               normalize=norm_range is None)
    dP = np.asarray(outputs[1], np.float32)[:, : shape[0], : shape[1]]
    cellprob = np.asarray(outputs[2], np.float32)[: shape[0], : shape[1]]
    if niter is None:
        # Cellpose's eval (flows resampled to the image, so the steps scale
        # with the object size there), with its arithmetic and truncation.
        rescale = model.diam_mean / diameter if diameter else model.diam_mean / model.diam_labels
        niter = int(1 / rescale * 200)
    from .flows import compute_masks

    return compute_masks(dP, cellprob, niter=niter, cellprob_threshold=cellprob_threshold,
                         flow_threshold=flow_threshold, min_size=min_size)
