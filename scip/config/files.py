"""Reading a config file: YAML (or a mapping) into a dict, command-line overrides merged in, paths resolved.

Shared by every scip config (run, tile and training configs): relative
paths in a file resolve against the file's folder, so a config and its data
can move together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationInfo

from scip._hints import short
from scip.yamlfile import ConfigError, parse_yaml

__all__ = ["read_config_file", "resolve_path"]


def read_config_file(source: str | Path | dict, *, base_dir: str | Path | None = None, overrides: dict | None = None,
                     sections: str = "input, segment, ...", what: str = "config") -> tuple[dict, str, Path]:
    """A YAML file (or a mapping) as a dict with ``overrides`` applied, its name for messages, and its folder.

    Parameters
    ----------
    source : str, Path or dict
        Path of a YAML file, or an already parsed mapping.
    base_dir : path, optional
        Folder relative paths resolve against; defaults to the file's folder,
        or the current directory for a mapping.
    overrides : dict, optional
        ``{"section": {"key": value}}`` applied on top, key by key.
    sections : str
        The expected top-level keys, named in the error for a file that is not a mapping.
    what : str
        The kind of config (``"training config"``) in messages.

    Returns
    -------
    tuple of (dict, str, Path)
        The merged mapping, its origin for messages, the folder paths resolve against.

    Raises
    ------
    ConfigError
        The file is missing, unreadable, not YAML, or not a mapping.
    """
    if isinstance(source, dict):
        raw, origin = source, what
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(source)
        origin = str(path)
        if not checked(path.is_file, path, ConfigError):
            raise ConfigError(f"{what} file not found: {path}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read {what} file {path}: {e.strerror or e}") from None
        raw = parse_yaml(data, origin)
        if raw is None:
            raw = {}
        base = Path(base_dir) if base_dir is not None else path.resolve().parent
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections ({sections}), got {type(raw).__name__}")
    return _merge(raw, overrides or {}), origin, base


def _merge(raw: dict, overrides: dict) -> dict:
    """``raw`` with ``overrides`` applied key by key, into nested sections (a ``None`` removes a section)."""
    merged = dict(raw)
    for key, value in overrides.items():
        current = merged.get(key)
        merged[key] = _merge(current if isinstance(current, dict) else {}, value) if isinstance(value, dict) else value
    return merged


def resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """``value`` made absolute against the folder of the config file (a validator's ``base_dir`` context).

    Parameters
    ----------
    value : Path or None
    info : ValidationInfo
        The validator's info; its context holds ``base_dir``.

    Returns
    -------
    Path or None
        ``~`` expanded; a relative path joined to ``base_dir`` when there is one.
    """
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    value = Path(value).expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


def checked(test: Any, path: Path, error: type[Exception] = ValueError) -> bool:
    """``test()`` (``path.exists`` and the like); an OS error (a name too long, no permission) becomes ``error``."""
    try:
        return test()
    except OSError as e:
        raise error(f"cannot use path {short(str(path), 200)}: {e.strerror or e}") from None
