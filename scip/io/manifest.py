"""``manifest.json``: what a run set out to compute, so an interrupted run can resume.

The manifest is written before any partition is computed. It holds the
fingerprint of the config and of the image list, the partitions (which
images each holds and where its part goes) and the dataset-wide reductions
once decided, so a resumed run filters and normalizes with exactly the same
thresholds. A partition is complete when both its parquet part and its
summary (``progress/part-<index>.pkl``) exist: both are written atomically,
the summary last, by the task that computed them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from scip.io.atomic import atomic_path

__all__ = ["MANIFEST", "ManifestError", "fingerprint", "write_manifest", "read_manifest", "reductions_to_json",
           "reductions_from_json", "differences"]

MANIFEST = "manifest.json"
#: Config sections that may change between a run and its resumption: they do not change the table.
_FREE_SECTIONS = ("cluster", "output", "errors")


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or does not match the run to resume."""


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(config: dict, images: list[tuple[str, tuple[str, ...]]]) -> dict:
    """Fingerprints of the parts of a run that decide its table.

    ``config`` is ``Config.model_dump(mode="json")``; ``images`` the
    ``(image_id, paths)`` of every image in order.
    """
    table_config = {k: v for k, v in config.items() if k not in _FREE_SECTIONS}
    return {"config": _digest(table_config), "images": _digest(images), "n_images": len(images)}


def differences(old: dict, new: dict) -> list[str]:
    """Config keys (dotted paths) whose values differ, outside the sections free to change."""
    out: list[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if not path and key in _FREE_SECTIONS:
                    continue
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")

    walk(old, new, "")
    return out


def write_manifest(directory: Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically into ``directory``."""
    path = Path(directory) / MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
    return path


def read_manifest(directory: Path) -> dict:
    """Read ``directory``'s manifest; :class:`ManifestError` names the file when it is missing or broken."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path} does not exist: there is no interrupted run here to resume "
                            "(run without --resume to start one)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path} cannot be read ({e}); run again without --resume (and with --overwrite)") from None
    for key in ("fingerprint", "partitions", "config"):
        if key not in manifest:
            raise ManifestError(f"{path} has no '{key}': not a scip manifest, or from an incompatible version")
    return manifest


def _number(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _float(x: float | None) -> float:
    return math.nan if x is None else float(x)


def reductions_to_json(bounds: list | None, ranges: dict | None, report: dict) -> dict:
    """The filters' thresholds, normalization ranges and report, as JSON (floats round-trip exactly)."""
    return {
        "bounds": None if bounds is None else [[_number(lo), _number(hi)] for lo, hi in bounds],
        "ranges": None if ranges is None else [[list(group), [list(b) for b in per_channel]]
                                               for group, per_channel in ranges.items()],
        "report": report,
    }


def reductions_from_json(saved: dict) -> tuple[list | None, dict | None, dict]:
    """Inverse of :func:`reductions_to_json`."""
    bounds = saved.get("bounds")
    if bounds is not None:
        bounds = [(_float(lo), _float(hi)) for lo, hi in bounds]
    ranges = saved.get("ranges")
    if ranges is not None:
        ranges = {tuple(group): tuple((float(lo), float(hi)) for lo, hi in per_channel) for group, per_channel in ranges}
    return bounds, ranges, saved.get("report", {})
