"""The training configuration (``scip train train.yml``), validated into typed objects.

Relative paths are resolved against the YAML file's folder. Errors raise
:class:`scip.config.ConfigError` naming the key, the value and what is
allowed, worded by the formatter of run configs (:mod:`scip.config.errors`).
Every key is listed in ``docs/segmentation.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from scip.config import read_config_file, resolve_path, validate

__all__ = ["TrainConfig", "DataConfig", "ArchConfig", "AugmentConfig", "load_train_config", "FREEZE_PATTERN"]

#: Fine-tuning schedules: encoder, decoder, all, or last:<k>.
FREEZE_PATTERN = r"^(encoder|decoder|all|last:[1-9][0-9]*)$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """One folder of image/label pairs (pairing rule: :mod:`scip.segment.unet.data`)."""

    path: Path
    images: str = "*"
    labels: str = "{stem}_labels"
    micronuclei: str | None = None
    label_path: Path | None = None
    exclude: list[str] = []
    channels: list[Annotated[int, Field(ge=0)]] | None = None

    @field_validator("path", "label_path")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        value = resolve_path(value, info)
        if value is not None and not value.is_dir():
            raise ValueError(f"folder does not exist: {value}")
        return value


class ArchConfig(_Section):
    """Network shape of a new model (ignored when fine-tuning: the model keeps its own)."""

    stem: Annotated[int, Field(ge=4)] = 16
    stages: list[tuple[int, int, int, int]] = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1)]
    decoder: list[Annotated[int, Field(ge=4)]] = [48, 32, 24, 16]


class AugmentConfig(_Section):
    """Random changes to each training crop (:class:`scip.segment.unet.augment.Augment`)."""

    flips: bool = True
    rotate90: bool = True
    gain: tuple[float, float] = (0.7, 1.3)
    offset: Annotated[float, Field(ge=0)] = 0.1
    gamma: tuple[float, float] = (0.7, 1.4)
    noise: Annotated[float, Field(ge=0)] = 0.05
    scale: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (1.0, 1.0)
    blur: Annotated[float, Field(ge=0)] = 0.0
    background: Annotated[float, Field(ge=0)] = 0.0


class TrainConfig(_Section):
    """A training run, as read from ``train.yml``."""

    data: list[DataConfig]
    validation: Union[Annotated[float, Field(gt=0, lt=1)], list[str]] = 0.15
    channels: list[str] = ["nuclei"]
    output: Path = Path("model")
    finetune: str | None = None
    freeze: str = "all"
    architecture: ArchConfig = ArchConfig()
    augment: AugmentConfig = AugmentConfig()
    crop: Annotated[int, Field(ge=32)] = 256
    batch_size: Annotated[int, Field(ge=1)] = 8
    epochs: Annotated[int, Field(ge=1)] = 40
    steps_per_epoch: Annotated[int, Field(ge=1)] | None = None
    patience: Annotated[int, Field(ge=1)] = 10
    monitor: Literal["loss", "f1"] = "loss"
    tune_thresholds: bool = True
    max_minutes: Annotated[float, Field(gt=0)] | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, Field(ge=1)] | None = None
    pixel_size: Annotated[float, Field(gt=0)] | None = None

    @field_validator("output")
    @classmethod
    def _output(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)

    @field_validator("freeze")
    @classmethod
    def _freeze(cls, value: str) -> str:
        if not re.fullmatch(FREEZE_PATTERN, value):
            raise ValueError("expected encoder, decoder, all or last:<k> (k >= 1)")
        return value

    @field_validator("finetune")
    @classmethod
    def _finetune(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        from .modelfile import builtin_models

        if value in builtin_models():
            return value
        path = resolve_path(Path(value), info)
        if not path.is_file():
            raise ValueError(f"model file not found: {path}; built-in models: {', '.join(builtin_models())}")
        return str(path)


def load_train_config(source: str | Path | dict, *, base_dir: str | Path | None = None,
                      overrides: dict | None = None) -> TrainConfig:
    """Read and validate a training configuration.

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
                                         sections="data, validation, epochs, ...", what="training config")
    return validate(TrainConfig, raw, origin=origin, base=base, what="training configuration")


def as_plain(config: TrainConfig) -> dict[str, Any]:
    """The config as plain types (paths as strings), for the model file's provenance."""
    return config.model_dump(mode="json")
