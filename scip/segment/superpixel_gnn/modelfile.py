"""One file per superpixel-GNN model: architecture, weights, feature scaling and metadata.

Written by :func:`save` with :func:`torch.save`, read with
``torch.load(weights_only=True)`` (reading never runs code from the file).
The file holds a dictionary:

``format``, ``format_version``
    ``"scip-superpixel-gnn"`` and :data:`FORMAT_VERSION`.
``architecture``
    :class:`~scip.segment.superpixel_gnn.model.Architecture` as plain types.
``state_dict``
    The network's weights.
``meta``
    Plain types: ``channels`` (input channel names), ``superpixels``
    (``size``, ``compactness``: the superpixels it was trained on, used by
    default at inference), ``normalization`` (image percentiles),
    ``scaling`` (``node_mean``, ``node_std``, ``edge_mean``, ``edge_std``:
    feature standardization from the training graphs), ``threshold``
    (foreground probability) and ``training`` (data, settings, scores).

Built-in models are ``scip/segment/models/<name>.gnn``, named without the
suffix (the U-Net's are ``*.pt``; both may share a name, e.g. ``nuclei``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scip.segment._modelfiles import ModelFileError, builtin_names, read_payload, write_payload
from scip.segment._modelfiles import resolve as resolve_file

from .model import Architecture, GraphNet

__all__ = ["FORMAT", "FORMAT_VERSION", "SUFFIX", "GnnModelFile", "ModelFileError", "builtin_models", "resolve",
           "load", "save"]

FORMAT = "scip-superpixel-gnn"
FORMAT_VERSION = 1
SUFFIX = ".gnn"


def builtin_models() -> list[str]:
    """Names of the superpixel-GNN models shipped with scip (``scip/segment/models/*.gnn``)."""
    return builtin_names(SUFFIX)


def resolve(model: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """The file of ``model``: a built-in name, or a path (relative to ``base_dir``).

    Raises
    ------
    ModelFileError
        If no such file exists; the message names the file and lists the built-in names.
    """
    return resolve_file(model, base_dir, SUFFIX, "superpixel_gnn model")


@dataclass
class GnnModelFile:
    """A superpixel-GNN model read from (or to be written to) a file.

    Attributes
    ----------
    arch : Architecture
    state_dict : dict of str to Tensor
    meta : dict
        See the module docstring.
    path : Path or None
        Where it was read from.
    """

    arch: Architecture
    state_dict: dict
    meta: dict
    path: Path | None = field(default=None, compare=False)

    @property
    def in_channels(self) -> int:
        """Image channels the features are computed from."""
        return len(self.meta.get("channels", [])) or 1

    def network(self) -> GraphNet:
        """A fresh :class:`GraphNet` with these weights, in eval mode."""
        net = GraphNet(self.arch)
        try:
            net.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            raise ModelFileError(f"{self.path or 'the model'}: the weights do not fit its architecture ({e})") from None
        return net.eval()

    def scaling(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Node mean, node std, edge mean, edge std (float32) for standardizing features."""
        s = self.meta["scaling"]
        return tuple(np.asarray(s[k], np.float32) for k in ("node_mean", "node_std", "edge_mean", "edge_std"))

    def describe(self) -> str:
        """One line: channels, superpixel size, parameter count."""
        n = sum(int(t.numel()) for t in self.state_dict.values())
        sp = self.meta.get("superpixels", {})
        return (f"{self.in_channels} input channel(s) ({', '.join(self.meta.get('channels', []))}), superpixels of "
                f"~{sp.get('size')} px (compactness {sp.get('compactness')}), {self.arch.layers} message passing "
                f"layers, {n:,} parameters")


def save(model: GnnModelFile, path: str | os.PathLike) -> Path:
    """Write a model file atomically (a partly written file never has the final name)."""
    return write_payload(path, FORMAT, FORMAT_VERSION, model.arch, model.state_dict, model.meta)


def load(model: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> GnnModelFile:
    """Read a model file (a path, or a built-in name).

    Raises
    ------
    ModelFileError
        Missing, unreadable or foreign file, a newer format, or weights that
        do not fit the architecture; the message names the file.
    """
    path = resolve(model, base_dir)
    payload = read_payload(path, FORMAT, FORMAT_VERSION, "superpixel_gnn model",
                           "'scip train' with kind: superpixel_gnn")
    try:
        arch = Architecture.from_dict(payload["architecture"])
        state, meta = payload["state_dict"], payload["meta"]
        meta["scaling"], meta["superpixels"]
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: incomplete model file ({type(e).__name__}: {e})") from None
    out = GnnModelFile(arch, state, meta, path)
    out.network()
    return out
