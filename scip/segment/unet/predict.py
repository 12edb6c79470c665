"""Inference: image in, probabilities and labels out.

The image is normalized as the model was trained (per-image percentiles),
optionally rescaled so its objects have the diameter the model was trained
for, padded to a multiple of the network's stride, cut into overlapping
tiles when larger than ``tile``, and run through the network in batches.
Tile outputs are blended with weights that fall off towards the tile edges,
so seams do not show. With ``tta`` each batch is also run flipped and
rotated (8 ways), and the outputs, turned back, are averaged.

Variants of the network (``device``, ``precision``, ``quantize``, ``runtime``):

- CPU FP32 through onnxruntime (``runtime: auto`` when onnxruntime is
  installed, or ``onnxruntime``): the network is exported to ONNX in memory
  at load time (a few seconds, once per process) and run by onnxruntime,
  whose fused convolutions run this depthwise network 3x faster than
  PyTorch (``benchmarks/results/unet.md``); probabilities equal
  PyTorch's within 1e-5;
- CPU FP32 through PyTorch (``runtime: torch``, or without onnxruntime),
  channels-last memory layout, batch norms folded into the convolutions
  at load time (one pass over memory less per layer, same result within
  float rounding);
- CUDA with FP16 or BF16 autocast (``precision: auto`` is FP16 there);
- CPU INT8, *static*: weights and activations in 8 bits, activation ranges
  measured on the calibration crops stored in the model file (so the same
  file always quantizes to the same model);
- CPU INT8, *dynamic*: weights in 8 bits, activation ranges measured on
  every call. PyTorch's dynamic convolutions are slow; kept for comparison
  (``benchmarks/bench_unet.py``).

Loaded networks are cached per process, keyed by (file, modification time,
device, variant, runtime and, for onnxruntime, its thread count), so a
pipeline worker loads a model once, not per image.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage import measure, morphology, segmentation
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .._util import CONNECTIVITY, remove_small_and_relabel
from . import modelfile
from scip.segment._modelfiles import check_channels

from .data import normalize, normalize_range
from .model import ConvBN
from .modelfile import ModelFile, ModelFileError
from . import split_merge as shape_rules

__all__ = ["Predictor", "load_predictor", "resolve_device", "resolve_runtime", "fold_batch_norm",
           "predict_probabilities", "labels_from_probabilities", "micronucleus_labels", "clean_nuclei", "segment_image", "segment_micronuclei", "tta_forward", "clear_cache"]

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
Quantize = Literal["none", "static", "dynamic"]
Runtime = Literal["auto", "torch", "onnxruntime"]

ONNXRUNTIME_MISSING = ("runtime: onnxruntime needs onnx and onnxruntime: pip install 'scip[onnx]' "
                       "(or use runtime: auto or torch)")

_CACHE: OrderedDict[tuple, "Predictor"] = OrderedDict()
_CACHE_SIZE = 8
_LOCK = threading.Lock()


def resolve_device(device: str = "auto", quantize: str = "none") -> torch.device:
    """The torch device for ``device``; INT8 always runs on the CPU.

    Raises
    ------
    ValueError
        ``cuda`` asked for without a usable CUDA device, or with INT8.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if quantize != "none":
        if device == "cuda":
            raise ValueError(f"quantize: {quantize} runs on the CPU; use device: cpu (or auto), or quantize: none on CUDA")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda, but torch sees no CUDA device (a CPU-only torch build, or no GPU); "
                         "use device: auto or cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_runtime(runtime: str, device: torch.device, variant: str) -> str:
    """``torch`` or ``onnxruntime``: the runtime that will run the network.

    ``auto`` takes onnxruntime for CPU FP32 when onnx and onnxruntime are
    installed (``scip[onnx]``; the fastest CPU path, same probabilities),
    PyTorch otherwise; onnxruntime runs only that variant here.

    Raises
    ------
    ValueError
        ``onnxruntime`` asked for with CUDA, BF16 or INT8.
    ImportError
        ``onnxruntime`` asked for but onnx or onnxruntime is not installed.
    """
    if runtime not in ("auto", "torch", "onnxruntime"):
        raise ValueError(f"runtime must be auto, torch or onnxruntime, got {runtime!r}")
    if runtime == "torch":
        return "torch"
    fits = device.type == "cpu" and variant == "fp32"
    if runtime == "onnxruntime":
        if not fits:
            raise ValueError(f"runtime: onnxruntime runs FP32 on the CPU here, not {variant} on {device.type}; "
                             "use runtime: auto or torch")
        if not _onnx_installed():
            raise ImportError(ONNXRUNTIME_MISSING)
        return "onnxruntime"
    return "onnxruntime" if fits and _onnx_installed() else "torch"


def _onnx_installed() -> bool:
    # The in-memory export needs onnx (torch's exporter writes through it), the run onnxruntime.
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def fold_batch_norm(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of an eval-mode network with every batch norm folded into the convolution before it.

    In eval mode a batch norm is a fixed per-channel scale and shift, so it
    can live in the convolution's weights and bias: one pass over the
    activations less per layer. The outputs equal the unfolded network's
    within float rounding (``tests/test_unet.py`` checks 1e-4 on a real image).
    """
    net = copy.deepcopy(net).eval()
    for module in net.modules():
        if isinstance(module, ConvBN):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = torch.nn.Identity()
    return net


class _OnnxNet:
    """An onnxruntime session called like the network: CPU tensor in, probabilities (sigmoid included) out."""

    def __init__(self, model: ModelFile, threads: int):
        from .export import onnx_bytes, onnx_session

        self.session = onnx_session(onnx_bytes(model), threads=threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from .export import run_onnx

        return torch.from_numpy(run_onnx(self.session, x.cpu().numpy()))


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None
    if precision in ("auto", "fp16"):
        if device.type != "cuda":
            raise ValueError("precision: fp16 needs CUDA; on the CPU use fp32, bf16 or quantize: static")
        return torch.float16
    return torch.bfloat16


def _quantize_static(net: torch.nn.Module, calibration: torch.Tensor | None, path: Path | None) -> torch.nn.Module:
    if calibration is None or len(calibration) == 0:
        raise ModelFileError(f"{path}: the model file holds no calibration crops, which static INT8 quantization "
                             "needs; use quantize: dynamic, or re-save the model with scip train")
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError as e:  # removed in some future torch; torchao is its successor
        raise RuntimeError(f"static INT8 quantization needs torch.ao.quantization, missing in torch "
                           f"{torch.__version__} ({e}); use quantize: none") from None
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao on every call; it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        qmap = get_default_qconfig_mapping(torch.backends.quantized.engine)
        prepared = prepare_fx(copy.deepcopy(net).eval(), qmap, (calibration[:1].float(),))
        with torch.inference_mode():
            for crop in calibration.float().split(1):
                prepared(crop)
        return convert_fx(prepared)


def _quantize_dynamic(net: torch.nn.Module) -> torch.nn.Module:
    from torch.ao.nn.quantized import dynamic as nnqd
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # The default dynamic mapping covers Linear and RNNs only; this network is all convolutions.
        return quantize_dynamic(copy.deepcopy(net).eval(), {torch.nn.Conv2d: default_dynamic_qconfig},
                                mapping={torch.nn.Conv2d: nnqd.Conv2d})


@dataclass
class Predictor:
    """A model ready to run on one device in one variant.

    Attributes
    ----------
    model : ModelFile
    net : callable
        Tensor ``(N, C, H, W)`` to logits ``(N, 2, H, W)``.
    device : torch.device
    autocast : torch.dtype or None
    variant : str
        ``fp32``, ``fp16``, ``bf16``, ``int8-static`` or ``int8-dynamic``
        (or a caller's name, e.g. ``onnxruntime``).
    activation : callable
        Turns the network's output into probabilities: the sigmoid of the
        logits; the identity for a runtime whose graph ends with the sigmoid
        (an exported ONNX model, :mod:`.export`).
    runtime : str
        ``torch`` or ``onnxruntime`` (:func:`resolve_runtime`).
    """

    model: ModelFile
    net: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    autocast: torch.dtype | None
    variant: str
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid
    runtime: str = "torch"

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** len(self.model.arch.decoder)

    def forward(self, batch: np.ndarray, tta: bool = False) -> np.ndarray:
        """Probabilities ``(N, 2, H, W)`` float32 of a normalized batch ``(N, C, H, W)``."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.runtime == "torch":  # onnxruntime takes the plain layout and picks its own
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.autocast is not None:
                with torch.autocast(self.device.type, dtype=self.autocast):
                    y = self._run(x, tta)
            else:
                y = self._run(x, tta)
        return y.float().cpu().numpy()

    def _run(self, x: torch.Tensor, tta: bool) -> torch.Tensor:
        if tta:
            return tta_forward(self.net, x, self.activation)
        return self.activation(self.net(x).float())


def tta_forward(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                activation: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid) -> torch.Tensor:
    """Mean probabilities over the 8 flips and 90-degree rotations of ``x``, each turned back."""
    total = None
    for k in range(4):
        for flip in (False, True):
            xt = torch.rot90(x, k, dims=(2, 3))
            if flip:
                xt = torch.flip(xt, dims=(3,))
            y = activation(net(xt.contiguous(memory_format=torch.channels_last)).float())
            if flip:
                y = torch.flip(y, dims=(3,))
            y = torch.rot90(y, -k, dims=(2, 3))
            total = y if total is None else total + y
    return total / 8


def load_predictor(model: str | os.PathLike | ModelFile = "nuclei", device: str = "auto", precision: str = "auto",
                   quantize: str = "none", runtime: str = "auto") -> Predictor:
    """A :class:`Predictor`, from the per-process cache when this file was loaded before.

    Parameters
    ----------
    model : str, path or ModelFile
        A built-in name, a model file, or an already loaded model (not cached).
    device : {"auto", "cpu", "cuda"}
    precision : {"auto", "fp32", "fp16", "bf16"}
        Autocast type; ``auto`` is FP16 on CUDA and FP32 on the CPU.
    quantize : {"none", "static", "dynamic"}
        INT8 on the CPU (see the module docstring).
    runtime : {"auto", "torch", "onnxruntime"}
        What runs the network (:func:`resolve_runtime`). onnxruntime uses
        as many threads as ``torch.get_num_threads()`` gives at load time.

    Raises
    ------
    ModelFileError
        The file is missing or not a readable model.
    ValueError
        Options that do not go together (fp16 on CPU, INT8 on CUDA,
        onnxruntime other than FP32 on the CPU).
    ImportError
        ``runtime: onnxruntime`` without onnxruntime installed.
    """
    if quantize not in ("none", "static", "dynamic"):
        raise ValueError(f"quantize must be none, static or dynamic, got {quantize!r}")
    dev = resolve_device(device, quantize)
    dtype = None if quantize != "none" else _autocast_dtype(dev, precision)
    variant = f"int8-{quantize}" if quantize != "none" else {None: "fp32", torch.float16: "fp16",
                                                              torch.bfloat16: "bf16"}[dtype]
    chosen = resolve_runtime(runtime, dev, variant)
    if isinstance(model, ModelFile):
        return _build_or_fall_back(model, dev, dtype, variant, chosen, runtime == "auto")
    path = modelfile.resolve(model)
    # onnxruntime fixes its thread count when the session is made, so it is part of the key; so is what was
    # asked for, since auto may have fallen back to PyTorch where onnxruntime asked by name must not.
    threads = torch.get_num_threads() if chosen == "onnxruntime" else None
    key = (str(path.resolve()), path.stat().st_mtime_ns, str(dev), variant, runtime, chosen, threads)
    runtime, auto = chosen, runtime == "auto"
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        predictor = _build_or_fall_back(modelfile.load(path), dev, dtype, variant, runtime, auto)
        _CACHE[key] = predictor
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return predictor


def clear_cache() -> None:
    """Forget every loaded model (tests; a long-lived process that swaps model files)."""
    with _LOCK:
        _CACHE.clear()


def _build_or_fall_back(model: ModelFile, dev: torch.device, dtype: torch.dtype | None, variant: str,
                        runtime: str, auto: bool) -> Predictor:
    """:func:`_build`; where ``runtime: auto`` chose onnxruntime and the export or session fails, PyTorch.

    The in-memory export goes through torch's TorchScript exporter, which
    torch announces it will retire: a torch that no longer has it (or an
    onnx it does not fit) must cost speed, not the run.
    """
    if runtime != "onnxruntime" or not auto:
        return _build(model, dev, dtype, variant, runtime)
    try:
        return _build(model, dev, dtype, variant, runtime)
    except Exception as e:  # noqa: BLE001 - any failure of the optional fast path falls back to the same network
        warnings.warn(f"{model.path or 'the model'}: running it through onnxruntime failed ({type(e).__name__}: "
                      f"{e}); running it with PyTorch instead (same probabilities, slower on the CPU)",
                      RuntimeWarning, stacklevel=3)
        return _build(model, dev, dtype, variant, "torch")


def _build(model: ModelFile, dev: torch.device, dtype: torch.dtype | None, variant: str,
           runtime: str = "torch") -> Predictor:
    if runtime == "onnxruntime":
        return Predictor(model, _OnnxNet(model, torch.get_num_threads()), dev, None, variant,
                         activation=lambda y: y, runtime="onnxruntime")
    net = model.network()
    if variant == "int8-static":
        net = _quantize_static(net, model.calibration, model.path)  # prepare_fx fuses conv and batch norm itself
    elif variant == "int8-dynamic":
        net = _quantize_dynamic(net)
    else:
        net = fold_batch_norm(net).to(dev)
    net = net.to(memory_format=torch.channels_last)
    return Predictor(model, net, dev, dtype, variant)


def _window(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights: a ramp over the overlap at each end, 1 in between, never 0."""
    w = np.ones(size, np.float32)
    ramp = min(overlap, size // 2)
    if ramp > 0:
        edge = (np.arange(ramp, dtype=np.float32) + 1) / (ramp + 1)
        w[:ramp] = edge
        w[size - ramp:] = edge[::-1]
    return w


def _tiling(length: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """Tile side and tile starts along one axis of ``length`` (a multiple of ``multiple``).

    The fewest tiles of at most ``tile`` pixels that overlap by at least
    ``overlap``, made as small as that allows and spread evenly (as
    Cellpose spreads its tiles): a 1024 px axis takes 3 tiles of 384 px, not
    3 of 512 px, so the network sees 1.27x a 1024² image's pixels, not 2.25x.
    """
    if length <= tile:
        return length, [0]
    step = max(tile - overlap, multiple)
    n = -(-(length - tile) // step) + 1
    side = min(tile, -(-(length + (n - 1) * overlap) // (n * multiple)) * multiple)
    return side, [int(round(i * (length - side) / (n - 1))) for i in range(n)]


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    pad = ((0, 0), (0, height - image.shape[1]), (0, width - image.shape[2]))
    # Mirroring continues the texture at the edge; it needs at least 2 pixels to mirror.
    mode = "reflect" if min(image.shape[1:]) > 1 else "edge"
    return np.pad(image, pad, mode=mode)


def predict_probabilities(image: np.ndarray, predictor: Predictor, *, tta: bool = False, tile: int = 512,
                          overlap: int = 64, batch_size: int = 4, scale: float = 1.0) -> np.ndarray:
    """Foreground and centre probabilities of a normalized image.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
        Normalized as the model expects (see :func:`segment_image`).
    predictor : Predictor
    tta : bool
        Average over the 8 flips and rotations.
    tile : int
        Largest tile side in pixels (rounded down to the network's stride
        multiple); larger images are cut into the fewest overlapping tiles
        of at most this side, spread evenly.
    overlap : int
        Overlap of neighbouring tiles in pixels; their outputs are blended
        with weights that ramp over it.
    batch_size : int
        Tiles per forward pass.
    scale : float
        Resize factor applied before the network (the outputs are resized
        back); ``model diameter / object diameter``.

    Returns
    -------
    ndarray of float32, shape (K, H, W)
        One channel per model output (``predictor.model.outputs``): 2, or 3
        with micronuclei.
    """
    c, h, w = image.shape
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = F.interpolate(torch.from_numpy(np.ascontiguousarray(image))[None], size=size, mode="bilinear",
                              antialias=scale < 1, align_corners=False)[0].numpy()
    m = predictor.multiple
    tile = max(m, tile // m * m)
    ih, iw = image.shape[1:]
    ph, pw = -(-ih // m) * m, -(-iw // m) * m
    # The padded image is a multiple of the stride in each direction; tiles are too.
    padded = _pad_to(image, ph, pw)
    (th, ys), (tw, xs) = _tiling(ph, tile, overlap, m), _tiling(pw, tile, overlap, m)
    corners = [(y, x) for y in ys for x in xs]
    weight = _window(th, overlap if len(corners) > 1 else 0)[:, None] * _window(tw, overlap if len(corners) > 1 else 0)[None, :]
    acc = None

    wsum = np.zeros(padded.shape[1:], np.float32)
    for i in range(0, len(corners), max(1, batch_size)):
        batch_corners = corners[i:i + max(1, batch_size)]
        batch = np.stack([padded[:, y:y + th, x:x + tw] for y, x in batch_corners])
        probs = predictor.forward(batch, tta=tta)
        if acc is None:
            acc = np.zeros((probs.shape[1],) + padded.shape[1:], np.float32)
        for (y, x), p in zip(batch_corners, probs):
            acc[:, y:y + th, x:x + tw] += p * weight
            wsum[y:y + th, x:x + tw] += weight
    out = (acc / wsum)[:, :ih, :iw]
    if scale != 1.0:
        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(out))[None], size=(h, w), mode="bilinear",
                            align_corners=False)[0].numpy()
    return out


def labels_from_probabilities(probs: np.ndarray, threshold: float = 0.5, seed_threshold: float = 0.5,
                              min_size: int = 20, seed_h: float | None = None) -> np.ndarray:
    """Instances from foreground and centre probabilities.

    Seeds are the connected regions where the centre probability exceeds
    ``seed_threshold``; a watershed of the inverted centre map grows them
    over the foreground (probability above ``threshold``), so touching
    objects part along the valley of the centre map. A foreground region
    without a seed becomes one object.

    With ``seed_h``, seeds are instead the maxima of the centre map (inside
    the foreground) that rise at least ``seed_h`` above the valley to any
    higher maximum (h-maxima): two maxima of one nucleus with a shallow
    valley between them give one seed, which stops fragments.

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 background, objects 1..N.
    """
    fg = probs[0] > threshold
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    centre = probs[1]
    if seed_h:
        peaks = morphology.h_maxima(np.where(fg, centre, 0).astype(np.float64), seed_h).astype(bool)
        markers = measure.label(fg & peaks, connectivity=CONNECTIVITY).astype(np.int64)
    else:
        markers = measure.label(fg & (centre > seed_threshold), connectivity=CONNECTIVITY).astype(np.int64)
    components = measure.label(fg, connectivity=CONNECTIVITY)
    seeded = np.zeros(int(components.max()) + 1, bool)
    seeded[components[markers > 0]] = True
    missing = np.flatnonzero(~seeded[1:]) + 1
    if missing.size:
        positions = ndi.maximum_position(centre, components, index=missing)
        rows, cols = np.asarray(positions, dtype=np.intp).reshape(-1, 2).T
        markers[rows, cols] = markers.max() + np.arange(1, missing.size + 1)
    labels = segmentation.watershed(-centre, markers, mask=fg, connectivity=CONNECTIVITY)
    return remove_small_and_relabel(labels, min_size)


def segment_image(image: np.ndarray, model: str | os.PathLike | ModelFile = "nuclei", *, device: str = "auto",
                  precision: str = "auto", quantize: str = "none", tta: bool = False, tile: int = 512,
                  overlap: int = 64, batch_size: int = 4, diameter: float | None = None,
                  threshold: float | None = None, seed_threshold: float | None = None, smooth: float = 0.0,
                  min_size: int = 20, norm_range: list | None = None, return_probabilities: bool = False,
                  runtime: str = "auto", split_merge: bool | None = None, median_area: float | None = None):
    """Label the objects of ``image`` with a U-Net model (see :func:`scip.segment.unet.unet`).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
    probabilities : ndarray of float32, shape (2, H, W)
        Only with ``return_probabilities``.
    """
    if median_area is not None and not median_area > 0:
        raise ValueError(f"median_area must be > 0 (pixels), got {median_area}")
    predictor = load_predictor(model, device=device, precision=precision, quantize=quantize, runtime=runtime)
    probs = _probabilities(image, predictor, tta=tta, tile=tile, overlap=overlap, batch_size=batch_size,
                           diameter=diameter, smooth=smooth, norm_range=norm_range)
    # Only the thresholds have defaults: newer files' clean-up keys must not reach older files.
    post = {"threshold": 0.5, "seed_threshold": 0.5, **predictor.model.meta.get("postprocess", {})}
    threshold = post["threshold"] if threshold is None else threshold
    seed_threshold = post["seed_threshold"] if seed_threshold is None else seed_threshold
    labels = labels_from_probabilities(probs, threshold, seed_threshold, min_size, post.get("seed_h"))
    labels = clean_nuclei(labels, probs, predictor.model, diameter, split_merge, median_area)
    return (labels, probs) if return_probabilities else labels


def postprocess(model: ModelFile, split_merge: bool | None = None) -> dict:
    """The clean-up keys of ``model``'s ``meta.postprocess`` with the ``split_merge`` switch applied.

    ``None`` keeps the file's own split/merge keys, ``True`` puts
    :data:`scip.segment.unet.split_merge.DEFAULTS` under them, ``False``
    removes them.
    """
    post = model.meta.get("postprocess", {})
    if split_merge is None:
        return post
    own = {k: v for k, v in post.items() if k in shape_rules.KEYS}
    return {**{k: v for k, v in post.items() if k not in shape_rules.KEYS},
            **({**shape_rules.DEFAULTS, **own} if split_merge else {})}


def splits_and_merges(post: dict) -> bool:
    """Whether the clean-up ``post`` (:func:`postprocess`) ends with the shape-gated split/merge."""
    return bool(post.get("split_area") or post.get("merge_solidity"))


def clean_nuclei(labels: np.ndarray, probs: np.ndarray, model: ModelFile, diameter: float | None = None,
                 split_merge: bool | None = None, median_area: float | None = None) -> np.ndarray:
    """The model file's own clean-up of nucleus labels (``meta.postprocess``; older files have none).

    - ``min_area_fraction``: objects smaller than this fraction of the area
      of a disk of the training diameter (or of ``diameter``, the image's
      nucleus size, when given) are dropped: fragments inside a nucleus and
      debris.
    - ``drop_micronuclei`` (models with a ``micronuclei`` output): objects
      whose mean micronucleus probability exceeds 0.5 are dropped, since
      micronuclei are not nuclei.
    - ``split_area`` / ``merge_solidity`` (and ``split_h``,
      ``split_solidity``, ``merge_area``, ``merge_boundary``): after the
      drops, objects far above the image's median size are split at the
      necks of their distance transform and touching pieces whose union is
      convex are joined (:func:`scip.segment.unet.split_merge.split_merge`); a
      split may not leave a part below the ``min_area_fraction`` size.

    ``split_merge`` overrides the file for the last step: ``None`` does what
    the file asks, ``True`` applies :data:`scip.segment.unet.split_merge.DEFAULTS`
    under the file's own split/merge keys, ``False`` skips it (:func:`postprocess`).
    ``median_area`` is the object area it compares sizes with; ``None``
    takes the median of these labels after the drops (a window of a large
    image is given the whole image's).

    Returns
    -------
    ndarray of int32
        Relabelled 1..N.
    """
    post = postprocess(model, split_merge)
    if labels.max() == 0:
        return labels
    drop = np.zeros(int(labels.max()) + 1, bool)
    if post.get("drop_micronuclei") and modelfile.MICRONUCLEI in model.outputs:
        mn = probs[model.outputs.index(modelfile.MICRONUCLEI)]
        sums = np.bincount(labels.ravel(), weights=mn.ravel(), minlength=drop.size)
        counts = np.bincount(labels.ravel(), minlength=drop.size)
        drop |= sums > 0.5 * np.maximum(counts, 1)
    fraction, d = post.get("min_area_fraction"), diameter or model.meta.get("diameter")
    min_area = fraction * np.pi * (d / 2) ** 2 if fraction and d else 0.0
    if min_area:
        drop |= np.bincount(labels.ravel(), minlength=drop.size) < min_area
    drop[0] = False
    if drop[1:].any():
        labels = remove_small_and_relabel(np.where(drop[labels], 0, labels).astype(np.int32), 1)
    if splits_and_merges(post):
        labels = shape_rules.split_merge(labels, post, min_area, median_area)
    return labels


def _probabilities(image: np.ndarray, predictor: Predictor, *, tta: bool, tile: int, overlap: int, batch_size: int,
                   diameter: float | None, smooth: float, norm_range: list | None) -> np.ndarray:
    """All output probabilities of a raw image: smoothing, normalization, rescaling, tiles."""
    mf = predictor.model
    image = check_channels(image, mf.in_channels, mf.meta.get("channels", []), mf.path)
    image = image.astype(np.float32)
    if smooth > 0:
        image = np.stack([ndi.gaussian_filter(ch, smooth, mode="nearest") for ch in image])
    if norm_range is not None:
        image = normalize_range(image, norm_range)
    elif image.size == 0 or all(np.ptp(ch) == 0 for ch in image):
        # A constant image has nothing to find; percentiles would also divide by zero.
        return np.zeros((len(mf.outputs),) + image.shape[1:], np.float32)
    else:
        norm = mf.meta.get("normalization", {})
        image = normalize(image, norm.get("low", 1.0), norm.get("high", 99.8))
    scale = 1.0
    if diameter is not None:
        if diameter <= 0:
            raise ValueError(f"diameter must be > 0, got {diameter}")
        if not mf.meta.get("diameter"):
            raise ModelFileError(f"{mf.path}: the model records no training diameter, so diameter cannot rescale")
        scale = float(mf.meta["diameter"]) / float(diameter)
    return predict_probabilities(image, predictor, tta=tta, tile=tile, overlap=overlap, batch_size=batch_size,
                                 scale=scale)


def micronucleus_labels(probs: np.ndarray, index: int, threshold: float = 0.5, min_size: int = 3) -> np.ndarray:
    """Micronuclei from the probabilities of the ``micronuclei`` output (channel ``index``).

    Each connected region above ``threshold`` is one micronucleus (they are
    small and rarely touch one another); regions under ``min_size`` pixels
    are dropped.

    Returns
    -------
    ndarray of int32, shape (H, W)
        0 background, micronuclei 1..N.
    """
    mask = probs[index] > threshold
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    return remove_small_and_relabel(measure.label(mask, connectivity=CONNECTIVITY), min_size)


def segment_micronuclei(image: np.ndarray, model: str | os.PathLike | ModelFile = "nuclei", *, device: str = "auto",
                        tile: int = 512, overlap: int = 64, batch_size: int = 4, tta: bool = False,
                        threshold: float | None = None, min_size: int | None = None,
                        base_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Label the micronuclei of ``image`` (see :func:`scip.segment.unet.micronuclei`)."""
    if not isinstance(model, ModelFile):
        model = modelfile.resolve(model, base_dir)
    predictor = load_predictor(model, device=device)
    mf = predictor.model
    if modelfile.MICRONUCLEI not in mf.outputs:
        raise ValueError(f"{mf.path}: the model has no micronuclei output (outputs: {', '.join(mf.outputs)}); "
                         "use a model trained with micronucleus labels, such as the built-in 'nuclei'")
    post = mf.meta.get("postprocess", {})
    threshold = post.get("micronucleus_threshold", 0.5) if threshold is None else threshold
    min_size = post.get("micronucleus_min_size", 3) if min_size is None else min_size
    probs = _probabilities(image, predictor, tta=tta, tile=tile, overlap=overlap, batch_size=batch_size,
                           diameter=None, smooth=0.0, norm_range=None)
    return micronucleus_labels(probs, mf.outputs.index(modelfile.MICRONUCLEI), threshold, min_size)
