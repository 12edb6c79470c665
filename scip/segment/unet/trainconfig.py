"""The training configuration (``scip train train.yml``), validated into typed objects.

Relative paths are resolved against the YAML file's folder. Errors raise
:class:`scip.config.ConfigError` naming the key, the value and what is
allowed, as for run configs. Every key is listed in ``docs/segmentation.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from scip._hints import did_you_mean, short
from scip.config import ConfigError, read_config_file

__all__ = ["TrainConfig", "DataConfig", "ArchConfig", "AugmentConfig", "load_train_config", "FREEZE_PATTERN"]

#: Fine-tuning schedules: encoder, decoder, all, or last:<k>.
FREEZE_PATTERN = r"^(encoder|decoder|all|last:[1-9][0-9]*)$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    value = Path(value).expanduser()
    return Path(base) / value if not value.is_absolute() and base is not None else value


class DataConfig(_Section):
    """One folder of image/label pairs (pairing rule: :mod:`scip.segment.unet.data`)."""

    path: Path
    images: str = "*"
    labels: str = "{stem}_labels"
    label_path: Path | None = None
    exclude: list[str] = []
    channels: list[Annotated[int, Field(ge=0)]] | None = None

    @field_validator("path", "label_path")
    @classmethod
    def _exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        value = _resolve(value, info)
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


class TrainConfig(_Section):
    """A training run, as read from ``train.yml``."""

    data: list[DataConfig]
    validation: Union[Annotated[float, Field(gt=0, lt=1)], list[str]] = 0.15
    channels: list[str] = ["nuclei"]
    output: Path = Path("model")
    finetune: str | None = None
    freeze: Annotated[str, Field(pattern=FREEZE_PATTERN)] = "all"
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
        return _resolve(value, info)

    @field_validator("finetune")
    @classmethod
    def _finetune(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        from .modelfile import builtin_models

        if value in builtin_models():
            return value
        path = _resolve(Path(value), info)
        if not path.is_file():
            raise ValueError(f"model file not found: {path}; built-in models: {', '.join(builtin_models())}")
        return str(path)


def _format(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        model: type[BaseModel] | None = TrainConfig
        for part in err["loc"][:-1]:
            if model is None or isinstance(part, int):
                continue
            annotation = model.model_fields[str(part)].annotation
            candidates = [annotation, *getattr(annotation, "__args__", ())]
            model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        allowed = sorted(model.model_fields) if model is not None else []
        return f"{key}: unknown key; allowed keys: {', '.join(allowed)}" + did_you_mean(err["loc"][-1], allowed, 0.5)
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    message = re.sub(r"^Value error, ", "", err["msg"])
    if err["type"] == "string_pattern_mismatch" and key == "freeze":
        message = "expected encoder, decoder, all or last:<k> (k >= 1)"
    return f"{key}: {message} (got {short(err.get('input'))})"


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
    try:
        return TrainConfig.model_validate(raw, context={"base_dir": base})
    except ValidationError as e:
        lines = [_format(err) for err in e.errors()]
        raise ConfigError(f"invalid training configuration in {origin}:\n" + "\n".join(f"  - {x}" for x in lines)) from None


def as_plain(config: TrainConfig) -> dict[str, Any]:
    """The config as plain types (paths as strings), for the model file's provenance."""
    return config.model_dump(mode="json")
