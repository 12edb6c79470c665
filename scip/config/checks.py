"""Checks of a validated config that read more than the config: the learned methods' model files.

Kept out of the pydantic validators so that loading a config imports no
torch (and reads no weights): :func:`scip.run.prepare` (so ``scip run`` and
``scip check``) and :func:`scip.slide.segment_slide` call :func:`check_models` once.
"""

from __future__ import annotations

import importlib
from typing import Any

from scip._hints import short
from scip.yamlfile import ConfigError

__all__ = ["check_models"]


def check_models(config: Any) -> None:
    """Read the model file a config's ``segment`` section names, and check it fits the section.

    Parameters
    ----------
    config : Config or any validated config with a ``segment`` section
        A method without a model file (``otsu``, ``watershed``, ...) passes
        without any import.

    Raises
    ------
    ConfigError
        ``segment.model`` / ``segment.pretrained_model``: the file is corrupt,
        of another kind, or its package (torch, Cellpose) is not installed;
        ``segment.channel``: the section gives another number of channels
        than the model takes. The message names the file.
    """
    segment = config.segment
    if segment.method in ("unet", "superpixel_gnn"):
        check_model = importlib.import_module(f"scip.segment.{segment.method}").check_model
        try:
            info = check_model(segment.model)
        except ValueError as e:  # a ModelFileError, or torch missing (with the install command)
            raise ConfigError(f"segment.model: {e}") from None
        given = segment.channel if isinstance(segment.channel, list) else [segment.channel]
        if len(given) != info.in_channels:
            hint = "list one channel per model input" if info.in_channels > 1 else "name one channel"
            raise ConfigError(f"segment.channel: {short(segment.channel)} gives {len(given)} channel(s) but the model "
                              f"file {info.path} takes {info.in_channels} ({', '.join(info.channels)}); {hint}")
    elif segment.method == "cellpose":
        from scip.segment.cellpose import check_model

        try:
            check_model(segment.pretrained_model)
        except (ValueError, ImportError) as e:  # a CellposeModelError, or Cellpose missing
            raise ConfigError(f"segment.pretrained_model: {e}") from None
    _check_micronucleus_model(config)


def _check_micronucleus_model(config: Any) -> None:
    """``micronuclei.method: unet``: the model file must hold a ``micronuclei`` output on one channel."""
    section = getattr(config, "micronuclei", None)
    if section is None or section.method != "unet":
        return
    unet = importlib.import_module("scip.segment.unet")
    try:
        info = unet.check_model(section.model)
        from scip.segment.unet.modelfile import load

        outputs = list(load(info.path).meta.get("outputs", []))
    except ValueError as e:  # a ModelFileError, or torch missing (with the install command)
        raise ConfigError(f"micronuclei.model: {e}") from None
    if "micronuclei" not in outputs:
        raise ConfigError(f"micronuclei.model: the model file {info.path} has no 'micronuclei' output (its outputs: "
                          f"{', '.join(map(str, outputs)) or 'none'}); use a model trained with one, or "
                          "micronuclei.method: spot")
    if info.in_channels != 1:
        raise ConfigError(f"micronuclei.model: the model file {info.path} takes {info.in_channels} channels "
                          f"({', '.join(info.channels)}); micronuclei are found in one channel (micronuclei.channel)")
    if not hasattr(unet, "micronuclei"):
        raise ConfigError("micronuclei.method: unet needs scip.segment.unet.micronuclei, which this version of scip "
                          "does not have yet; use micronuclei.method: spot")
