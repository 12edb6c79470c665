"""What the learned methods' model files share: finding a file by built-in name or path, and reading its envelope.

A model file is a ``torch.save`` of a dict with a ``format`` tag and a
``format_version``; the U-Net (``.pt``) and the superpixel GNN (``.gnn``)
each add their own architecture, weights and metadata, which their own
``modelfile`` modules check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["ModelFileError", "ModelCheck", "MODELS_DIR", "builtin_names", "resolve", "read_payload", "write_payload",
           "check", "check_channels"]

#: Where the shipped models live (package data).
MODELS_DIR = Path(__file__).resolve().parent / "models"


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or does not fit the data; the message names the file."""


def builtin_names(suffix: str) -> list[str]:
    """Names of the shipped models whose files end in ``suffix``."""
    return sorted(p.stem for p in MODELS_DIR.glob(f"*{suffix}"))


def resolve(model: str | os.PathLike, base_dir: str | os.PathLike | None, suffix: str, what: str = "model") -> Path:
    """The file of ``model``: a built-in name (file ``<name><suffix>``), or a path (relative to ``base_dir``).

    Raises
    ------
    ModelFileError
        If no such file exists; the message names the path and lists the built-in names.
    """
    from scip._hints import did_you_mean

    text, names = str(model), builtin_names(suffix)
    if text in names:
        return MODELS_DIR / f"{text}{suffix}"
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise ModelFileError(f"{what} file not found: {path}; give a path to a model file or a built-in model "
                             f"({', '.join(names) or 'none installed'})" + did_you_mean(text, names))
    return path


def read_payload(path: Path, fmt: str, max_version: int, what: str, written_by: str) -> dict[str, Any]:
    """The dict a model file holds, after checking its format tag and version.

    Parameters
    ----------
    path : Path
    fmt : str
        The expected ``format`` tag.
    max_version : int
        The newest ``format_version`` this scip reads.
    what : str
        How to call the file in messages, e.g. ``"scip model"``.
    written_by : str
        What writes such files, for the message about a foreign file.

    Raises
    ------
    ModelFileError
        Unreadable, corrupt or foreign file, or a newer format; the message names the file.
    """
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise ModelFileError(f"{path}: cannot read the model file (permission denied)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file that is not its zip format
        raise ModelFileError(f"{path}: not a readable {what} file (corrupt or not written by scip: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise ModelFileError(f"{path}: not a {what} file (no '{fmt}' format tag); such files are written by "
                             f"{written_by}")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise ModelFileError(f"{path}: model file format version {version!r} is newer than this scip reads "
                             f"({max_version}); update scip")
    return payload


def write_payload(path: str | os.PathLike, fmt: str, version: int, arch, state_dict: dict, meta: dict,
                  **extra: Any) -> Path:
    """Write a model file atomically: the format envelope, architecture, weights, metadata and ``extra`` entries.

    ``meta`` goes through JSON first: anything but plain types (numpy scalars,
    torch's version string class) would make the file unreadable with
    ``weights_only=True``. A partly written file never has the final name.
    """
    import json

    import torch

    from scip.io.atomic import atomic_path

    payload = {"format": fmt, "format_version": version, "architecture": arch.to_dict(),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
               "meta": json.loads(json.dumps(meta, default=str)), **extra}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def check_channels(image, in_channels: int, channels: list, path: Path, what: str = "model"):
    """``image`` as ``(C, H, W)``, checked against a model's input channels.

    Raises
    ------
    ValueError
        The image is not ``(H, W)`` or ``(C, H, W)``.
    ModelFileError
        Another number of channels than the model takes; names the file.
    """
    import numpy as np

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"expected an image (H, W) or (C, H, W), got shape {image.shape}")
    if image.shape[0] != in_channels:
        raise ModelFileError(f"{path}: the {what} takes {in_channels} input channel(s) "
                             f"({', '.join(channels)}), the image has {image.shape[0]}")
    return image


@dataclass(frozen=True)
class ModelCheck:
    """What a run config needs to know about a model, without loading the network for inference.

    Attributes
    ----------
    model : str
        The value to keep in the config: a built-in name as given, or the
        file's absolute path.
    path : Path
    in_channels : int
    channels : list of str
        The model's input channel names (from its training).
    """

    model: str
    path: Path
    in_channels: int
    channels: list


# Config validation reads a model file for every config that names it; the file is read once per version.
_CHECKED: dict[tuple[str, str, int], tuple[int, list]] = {}


def check(model: str | os.PathLike, base_dir: str | os.PathLike | None, suffix: str,
          resolve_path: Callable[..., Path], load: Callable[[Path], Any]) -> ModelCheck:
    """Find and read a model file for a config (cached by path and modification time).

    ``resolve_path(model, base_dir)`` and ``load(path)`` are the method's own
    (their errors name the file); ``suffix`` tells built-in names apart.
    """
    path = resolve_path(model, base_dir)
    # The kind is part of the key: one file checked as a U-Net must still be refused as a GNN model.
    key = (suffix, str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _CHECKED:
        loaded = load(path)
        _CHECKED[key] = (loaded.in_channels, list(loaded.meta.get("channels", [])))
    in_channels, names = _CHECKED[key]
    value = str(model) if str(model) in builtin_names(suffix) else str(path.resolve())
    return ModelCheck(value, path, in_channels, names)
