"""One file per model: architecture, weights, calibration tiles and metadata.

A model file is written by :func:`save` with :func:`torch.save` and read back
with ``torch.load(weights_only=True)``, so loading it never runs code from
the file. It holds a dictionary:

``format``, ``format_version``
    ``"scip-unet"`` and :data:`FORMAT_VERSION`; the code that reads it is
    :class:`scip.segment.unet.model.UNet`.
``architecture``
    :class:`~scip.segment.unet.model.Architecture` as plain types.
``state_dict``
    The network's weights and batch-norm statistics.
``calibration``
    A few normalized training crops, ``(n, C, h, w)`` float16: what static
    INT8 quantization measures activation ranges on, so that quantizing
    the same file always gives the same model.
``meta``
    Plain types: ``channels`` (input channel names, for people), ``outputs``
    (``foreground``, ``centre`` and optionally ``micronuclei``),
    ``normalization``, ``diameter`` (median object diameter in pixels of the
    training labels), ``pixel_size`` (when known), ``postprocess``
    (default thresholds; in newer files also ``seed_h``, ``min_area_fraction``,
    ``drop_micronuclei``, ``micronucleus_threshold``,
    ``micronucleus_min_size``) and ``training`` (data, settings, scores,
    versions, ``train_files``).

Built-in models live in ``scip/segment/models/<name>.pt`` and are named
without the suffix (:func:`builtin_models`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scip.segment._modelfiles import ModelFileError, builtin_names, read_payload, write_payload
from scip.segment._modelfiles import resolve as resolve_file

from .model import MICRONUCLEI, OUTPUTS, Architecture, UNet

__all__ = ["FORMAT", "FORMAT_VERSION", "MICRONUCLEI", "ModelFile", "ModelFileError", "builtin_models", "resolve", "load", "save",
           "default_meta"]

FORMAT = "scip-unet"
FORMAT_VERSION = 1


def builtin_models() -> list[str]:
    """Names of the models shipped with scip (``scip/segment/models/*.pt``)."""
    return builtin_names(".pt")


def resolve(model: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """The file of ``model``: a built-in name, or a path (relative to ``base_dir``).

    Raises
    ------
    ModelFileError
        If no such file exists; the message lists the built-in names.
    """
    return resolve_file(model, base_dir, ".pt")


def default_meta(channels: list[str], micronuclei: bool = False) -> dict[str, Any]:
    """Metadata of a new model before training fills in ``diameter`` and ``training``.

    With ``micronuclei`` the outputs end with :data:`MICRONUCLEI`.
    """
    return {
        "channels": list(channels),
        "outputs": list(OUTPUTS) + ([MICRONUCLEI] if micronuclei else []),
        # Per-image percentiles make the input independent of camera gain, offset and bit depth.
        "normalization": {"kind": "percentile", "low": 1.0, "high": 99.8},
        "diameter": None,
        "pixel_size": None,
        # seed_h: h-maxima seeds; min_area_fraction: fragments far below the training size are dropped;
        # drop_micronuclei: nucleus objects that the micronucleus output claims are dropped (each measured
        # in docs/segmentation.md).
        "postprocess": {"threshold": 0.5, "seed_threshold": 0.5, "seed_h": 0.2, "min_area_fraction": 0.25,
                        **({"micronucleus_threshold": 0.5, "micronucleus_min_size": 3,
                            "drop_micronuclei": True} if micronuclei else {})},
        "training": {},
    }


@dataclass
class ModelFile:
    """A model read from (or to be written to) a file.

    Attributes
    ----------
    arch : Architecture
    state_dict : dict of str to Tensor
    meta : dict
        See the module docstring.
    calibration : Tensor or None
        ``(n, C, h, w)`` float16 normalized crops for static quantization.
    path : Path or None
        Where it was read from.
    """

    arch: Architecture
    state_dict: dict
    meta: dict
    calibration: torch.Tensor | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def outputs(self) -> list[str]:
        """Names of the output channels (``foreground``, ``centre`` and, when trained for it, ``micronuclei``)."""
        return list(self.meta.get("outputs", OUTPUTS))

    @property
    def in_channels(self) -> int:
        """Input channels the network expects."""
        return self.arch.in_channels

    def network(self) -> UNet:
        """A fresh :class:`UNet` with these weights, in eval mode, on the CPU."""
        net = UNet(self.arch)
        try:
            net.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            where = self.path if self.path is not None else "the model"
            raise ModelFileError(f"{where}: the weights do not fit its architecture ({e})") from None
        return net.eval()

    def describe(self) -> str:
        """One line: channels, diameter, parameter count."""
        n = sum(int(t.numel()) for k, t in self.state_dict.items() if not k.endswith(("running_mean", "running_var",
                                                                                        "num_batches_tracked")))
        d = self.meta.get("diameter")
        return (f"{self.in_channels} input channel(s) ({', '.join(self.meta.get('channels', []))}), "
                f"{n:,} parameters" + (f", trained for objects of ~{d:.0f} px diameter" if d else ""))


def save(model: ModelFile | UNet, path: str | os.PathLike, meta: dict | None = None,
         calibration: torch.Tensor | None = None) -> Path:
    """Write a model file (atomically: a partly written file never has the final name).

    Parameters
    ----------
    model : ModelFile or UNet
        A network (then ``meta`` is required) or a whole model file.
    path : path
        Where to write; parent folders are created.
    meta, calibration : optional
        Override or provide those parts.

    Returns
    -------
    Path
    """
    if isinstance(model, UNet):
        if meta is None:
            raise ValueError("save(UNet, ...) needs meta (see default_meta)")
        model = ModelFile(model.arch, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, meta,
                          calibration)
    calibration = model.calibration if calibration is None else calibration
    if calibration is not None:
        calibration = calibration.detach().cpu().to(torch.float16).contiguous()
    return write_payload(path, FORMAT, FORMAT_VERSION, model.arch, model.state_dict,
                         model.meta if meta is None else meta, calibration=calibration)


def load(model: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> ModelFile:
    """Read a model file (a path, or a built-in name).

    Raises
    ------
    ModelFileError
        Missing file, a file that is not a scip model (corrupt, truncated,
        another program's), a newer format, or weights that do not fit the
        architecture. The message names the file.
    """
    path = resolve(model, base_dir)
    payload = read_payload(path, FORMAT, FORMAT_VERSION, "scip model",
                           "'scip train' or scip.segment.unet.train")
    try:
        arch = Architecture.from_dict(payload["architecture"])
        state, meta = payload["state_dict"], payload["meta"]
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: incomplete model file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not isinstance(meta, dict):
        raise ModelFileError(f"{path}: incomplete model file (state_dict or meta is not a mapping)")
    out = ModelFile(arch, state, meta, payload.get("calibration"), path)
    out.network()  # the architecture and the weights must agree now, not at the first image
    return out
