"""Training configuration of a superpixel-GNN model (``scip train`` with ``kind: superpixel_gnn``).

A training YAML whose top-level ``kind`` is ``superpixel_gnn`` is read by
:func:`load_gnn_train_config`; one without ``kind`` is a U-Net training
config (:mod:`scip.segment.unet.trainconfig`).
:func:`training_kind` tells them apart. Relative paths are resolved against
the YAML file's folder; errors raise :class:`scip.config.ConfigError`
naming the key, worded by the formatter of run configs
(:mod:`scip.config.errors`). Every key is listed in ``docs/segmentation.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from scip._hints import short
from scip.config import ConfigError, parse_yaml, read_config_file, resolve_path, suggest, validate
from scip.segment.unet.trainconfig import DataConfig

from .superpixels import DEFAULT_COMPACTNESS, DEFAULT_SIZE

__all__ = ["GnnTrainConfig", "load_gnn_train_config", "training_kind"]


class GnnTrainConfig(BaseModel):
    """A superpixel-GNN training run, as read from ``train.yml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["superpixel_gnn"]
    data: list[DataConfig]
    validation: Union[Annotated[float, Field(gt=0, lt=1)], list[str]] = 0.15
    channels: list[str] = ["nuclei"]
    output: Path = Path("model")
    superpixel_size: Annotated[int, Field(ge=4)] = DEFAULT_SIZE
    compactness: Annotated[float, Field(gt=0)] = DEFAULT_COMPACTNESS
    tile: Annotated[int, Field(ge=64)] = 1024
    hidden: Annotated[int, Field(ge=4)] = 32
    layers: Annotated[int, Field(ge=1)] = 4
    epochs: Annotated[int, Field(ge=1)] = 60
    patience: Annotated[int, Field(ge=1)] = 15
    lr: Annotated[float, Field(gt=0)] = 3e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    max_minutes: Annotated[float, Field(gt=0)] | None = None
    augment: bool = True
    seed: int = 0
    threads: Annotated[int, Field(ge=1)] | None = None

    @field_validator("output")
    @classmethod
    def _output(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)


def training_kind(source: str | Path | dict) -> str:
    """``"superpixel_gnn"`` for a training config with ``kind: superpixel_gnn``, else ``"unet"``.

    A U-Net training config has no ``kind`` key; a file that cannot be read
    counts as ``unet`` (that loader reports the problem).

    Raises
    ------
    ConfigError
        ``kind`` is present with another value.
    """
    raw: Any = source
    if not isinstance(source, dict):
        try:
            raw = parse_yaml(Path(source).read_bytes(), str(source))
        except (OSError, ConfigError):
            return "unet"
    if not isinstance(raw, dict) or "kind" not in raw:
        return "unet"
    if raw["kind"] != "superpixel_gnn":
        origin = "mapping" if isinstance(source, dict) else str(source)
        raise ConfigError(f"invalid training configuration in {origin}:\n  - kind: unknown kind {short(raw['kind'])}; "
                          "allowed: superpixel_gnn (leave kind out for a U-Net)"
                          + suggest(raw["kind"], ["superpixel_gnn"]))
    return "superpixel_gnn"


def load_gnn_train_config(source: str | Path | dict, *, base_dir: str | Path | None = None,
                          overrides: dict | None = None) -> GnnTrainConfig:
    """Read and validate a superpixel-GNN training configuration.

    Parameters
    ----------
    source : path or dict
        A YAML file, or the parsed mapping.
    base_dir : path, optional
        Folder relative paths are resolved against (default: the file's
        folder, or the current folder for a mapping).
    overrides : dict, optional
        Top-level keys applied over the file (the command line's options).

    Raises
    ------
    ConfigError
        Listing every problem with its key.
    """
    raw, origin, base = read_config_file(source, base_dir=base_dir, overrides=overrides,
                                         sections="kind, data, validation, ...", what="training config")
    return validate(GnnTrainConfig, raw, origin=origin, base=base, what="training configuration")
