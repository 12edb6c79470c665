"""``scip train`` for a training config with ``kind: superpixel_gnn``."""

from __future__ import annotations

from pathlib import Path

from scip.config import ConfigError

__all__ = ["train_command"]


def train_command(config: Path, *, output: Path | None = None, epochs: int | None = None,
                  finetune: str | None = None, freeze: str | None = None, resume: bool = False) -> int:
    """Train a superpixel-GNN model as the YAML ``config`` says; print where it went.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    ConfigError
        Invalid config, torch missing, U-Net-only options, or data that
        cannot be used (the message names the file); the CLI exits with 2.
    """
    from . import require_torch

    try:
        require_torch()
    except ImportError as e:
        raise ConfigError(str(e)) from None
    given = [name for name, value in (("--finetune", finetune), ("--freeze", freeze), ("--resume", resume)) if value]
    if given:
        raise ConfigError(f"{', '.join(given)}: U-Net training options; a superpixel_gnn model (kind: superpixel_gnn "
                          f"in {config}) trains from scratch")
    from .modelfile import ModelFileError
    from .train import train_gnn
    from .trainconfig import load_gnn_train_config

    overrides = {k: v for k, v in {"output": str(output.resolve()) if output else None, "epochs": epochs}.items()
                 if v is not None}
    cfg = load_gnn_train_config(config, overrides=overrides)
    try:
        result = train_gnn(cfg, base_dir=config.resolve().parent)
    except (ModelFileError, FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    print(f"scip: kept epoch {result.best['epoch']} of {len(result.history)}: validation pixel Dice "
          f"{result.best['dice']:.3f} ({result.seconds:.0f} s, of which {result.prepare_seconds:.0f} s superpixels "
          "and graphs)")
    print(f"scip: model in {result.model.resolve()}; report in {(result.output / 'report.md').resolve()}")
    return 0
