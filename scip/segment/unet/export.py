"""ONNX export of a model file, checked against the torch output with onnxruntime.

The exported graph takes ``image``, ``(N, C, H, W)`` float32 normalized as
the model file's ``normalization`` says, with H and W multiples of 16 (any
batch size and size: the axes are dynamic), and returns ``probabilities``,
``(N, K, H, W)``: the model's outputs (foreground, centre and, when it has one,
micronuclei) after the sigmoid. The model file's
metadata travels along as ONNX metadata properties (``scip_meta``, JSON),
so another runtime can normalize and post-process as scip does
(:func:`scip.segment.unet.predict.labels_from_probabilities`).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import modelfile
from .model import UNet
from .modelfile import ModelFile

__all__ = ["ExportCheck", "export_onnx", "onnx_bytes", "onnx_session", "run_onnx"]


class _Probabilities(nn.Module):
    """The network with its sigmoid, so the ONNX graph gives what the pipeline post-processes."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


@dataclass(frozen=True)
class ExportCheck:
    """Result of the onnxruntime check of an export.

    Attributes
    ----------
    path : Path
        The ONNX file.
    shape : tuple of int
        Shape of the random test input.
    max_abs_diff : float
        Largest absolute difference of the probabilities, onnxruntime vs torch.
    """

    path: Path
    shape: tuple[int, ...]
    max_abs_diff: float


def onnx_session(model: str | os.PathLike | bytes, threads: int | None = None):
    """An onnxruntime CPU inference session for an ONNX file or the bytes of one.

    Parameters
    ----------
    model : path or bytes
        The ONNX file, or its contents (:func:`onnx_bytes`).
    threads : int, optional
        Threads of one call (onnxruntime's intra-op threads); ``None`` is
        onnxruntime's default (one per physical core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: spinning threads take the cores of the other tasks of a worker (and
    # of other jobs on a shared machine); bench_unet measured spinning 1.6x slower on 2 busy cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_bytes(model: ModelFile | UNet, opset: int = 18) -> bytes:
    """The ONNX graph (network and sigmoid, dynamic batch, height and width) of a model, in memory.

    No metadata and no check: :func:`export_onnx` adds both for a file; this
    is what :func:`scip.segment.unet.predict.load_predictor` runs with
    onnxruntime.
    """
    net = model.network() if isinstance(model, ModelFile) else model
    buffer = io.BytesIO()
    _export(_Probabilities(net).eval(), buffer, net.arch.in_channels, opset)
    return buffer.getvalue()


def _export(wrapped: nn.Module, target, in_channels: int, opset: int) -> None:
    example = torch.rand(1, in_channels, 64, 64)
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that needs no extra packages; it announces its retirement.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(wrapped, (example,), target, input_names=["image"], output_names=["probabilities"],
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "probabilities": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=opset, dynamo=False)


def run_onnx(session, batch: np.ndarray) -> np.ndarray:
    """Probabilities of a normalized batch ``(N, C, H, W)`` through an onnxruntime session."""
    return session.run(None, {"image": np.ascontiguousarray(batch, dtype=np.float32)})[0]


def export_onnx(model: str | os.PathLike | ModelFile, out: str | os.PathLike, *, opset: int = 18,
                check_shape: tuple[int, int] = (2, 160), atol: float = 1e-4) -> ExportCheck:
    """Write ``model`` as ONNX and check onnxruntime against torch.

    Parameters
    ----------
    model : str, path or ModelFile
        Built-in name, model file, or loaded model.
    out : path
        ONNX file to write.
    opset : int
        ONNX opset version.
    check_shape : (int, int)
        Batch size and side of the random test input; it differs from the
        export's example input so the dynamic axes are exercised.
    atol : float
        Largest allowed difference of the probabilities.

    Returns
    -------
    ExportCheck

    Raises
    ------
    ImportError
        onnx or onnxruntime missing.
    RuntimeError
        The two outputs differ by more than ``atol``.
    """
    import onnx

    mf = model if isinstance(model, ModelFile) else modelfile.load(model)
    wrapped = _Probabilities(mf.network()).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    c = mf.in_channels
    _export(wrapped, str(out), c, opset)
    graph = onnx.load(str(out))
    meta = {**mf.meta, "architecture": mf.arch.to_dict(), "source": str(mf.path) if mf.path else None}
    entry = graph.metadata_props.add()
    entry.key, entry.value = "scip_meta", json.dumps(meta, default=str)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))

    n, side = check_shape
    x = torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(0)) * 1.2 - 0.1
    with torch.inference_mode():
        expected = wrapped(x).numpy()
    got = run_onnx(onnx_session(out), x.numpy())
    diff = float(np.abs(got - expected).max())
    if not diff <= atol:
        raise RuntimeError(f"{out}: onnxruntime and torch disagree by {diff:.2e} (> {atol:.0e}) on a {tuple(x.shape)} input")
    return ExportCheck(out, tuple(x.shape), diff)
