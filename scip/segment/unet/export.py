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

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import modelfile
from .modelfile import ModelFile

__all__ = ["ExportCheck", "export_onnx", "onnx_session", "run_onnx"]


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


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU inference session for ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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
    example = torch.rand(1, c, 64, 64)
    with warnings.catch_warnings():
        # The TorchScript exporter is the one that needs no extra packages; it announces its retirement.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(wrapped, (example,), str(out), input_names=["image"], output_names=["probabilities"],
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        "probabilities": {0: "batch", 2: "height", 3: "width"}},
                          opset_version=opset, dynamo=False)
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
