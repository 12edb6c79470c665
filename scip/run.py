"""The Python entry point: ``scip.run(config)``.

It validates the config, lists the images, prepares the output folder,
computes the graph on a cluster with a progress bar, and writes the
bookkeeping files: ``cells/part-*.parquet``, ``skipped.csv`` and ``run.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from scip import cluster, graph
from scip.accounting import SKIPPED_COLUMNS, PartitionSummary
from scip.config import Config, ConfigError, load_config
from scip.io import InputError, open_dataset
from scip.io.ground_truth import check_template
from scip.steps.segment import channel_position

log = logging.getLogger("scip")

__all__ = ["RunResult", "run", "prepare", "OUTPUT_FILES"]

OUTPUT_FILES = ("cells", "run.json", "skipped.csv")
_VERSIONS = ("scip", "numpy", "scipy", "scikit-image", "pandas", "pyarrow", "dask", "distributed", "zarr",
             "numcodecs", "tifffile", "pydantic")


@dataclass(frozen=True)
class RunResult:
    """Where a run wrote its results, and what it counted."""

    output: Path
    table: Path
    summary: dict

    def read(self):
        """The feature table as a pandas DataFrame."""
        import pandas as pd

        return pd.read_parquet(self.table)


def prepare(config: Config | str | Path | dict) -> graph.Plan:
    """Validate ``config`` and list its images, reading no pixels.

    Every problem found here is a configuration problem and raises
    :class:`~scip.config.ConfigError`.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    try:
        dataset = open_dataset(config.input)
    except InputError as e:
        raise ConfigError(str(e)) from None
    try:
        channel_position(dataset.channels, config.segment.channel)
        for i, mask in enumerate(config.masks):
            channel_position(dataset.channels, mask.channel, key=f"masks.{i}.channel")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.evaluate is not None:
        try:
            check_template(config.evaluate.labels, dataset.sources)
        except InputError as e:
            raise ConfigError(str(e)) from None
    try:
        return graph.plan(config, dataset)
    except ValueError as e:  # e.g. channel names that make the same column name
        raise ConfigError(f"input.channels: {e}") from None


def _prepare_output(path: Path, overwrite: bool) -> Path:
    existing = [name for name in OUTPUT_FILES if (path / name).exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"output.path: {path} already holds results ({', '.join(existing)}); "
            "choose another folder, or set output.overwrite: true (--overwrite)"
        )
    cells = path / "cells"
    if cells.exists():
        # Only our own part files go: the folder may hold things the user put there.
        for part in cells.glob("part-*.parquet"):
            part.unlink()
    for name in OUTPUT_FILES[1:]:
        (path / name).unlink(missing_ok=True)
    cells.mkdir(parents=True, exist_ok=True)
    return cells


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run(config: Config | str | Path | dict, client=None, progress: bool = True) -> RunResult:
    """Run the whole pipeline and write the results.

    Parameters
    ----------
    config : Config, path or dict
        A validated :class:`~scip.config.Config`, a YAML file, or a mapping
        with the same structure.
    client : distributed.Client, optional
        Use this client (left open). By default the ``cluster`` section
        decides: a local cluster sized to the machine, an existing
        scheduler, or ``synchronous`` in-process computing.
    progress : bool
        Show a progress bar on the terminal.

    Returns
    -------
    RunResult
        Output folder, table path and the counts written to ``run.json``.
    """
    started = time.perf_counter()
    p = prepare(config)
    config = p.config
    out = Path(config.output.path)
    cells_dir = _prepare_output(out, config.output.overwrite)
    log.info("scip: %d images (%s), %d channels: %s", len(p.dataset.sources), p.dataset.format,
             len(p.dataset.channels), ", ".join(p.dataset.channels))
    with cluster.connect(config.cluster, client) as c:
        if c is not None:
            print(f"scip: dashboard at {c.dashboard_link}", file=sys.stderr)
        tasks = graph.build_writes(p, cells_dir)
        summaries = cluster.compute(tasks, c, progress=progress)
    total = sum(summaries, PartitionSummary())
    summary = _summary(p, total, time.perf_counter() - started)
    _write_skipped(out / "skipped.csv", total.skipped)
    (out / "run.json").write_text(json.dumps(summary, indent=2, default=str))
    return RunResult(output=out, table=cells_dir, summary=summary)


def _skip_counts(rows: list[dict], kind: str) -> tuple[dict[str, int], dict[str, int]]:
    """Skips of one kind counted by step, and the most common exact reasons (all are in skipped.csv)."""
    rows = [r for r in rows if r["kind"] == kind]
    by_step = Counter(r["step"] for r in rows)
    reasons = Counter(f"{r['step']}: {r['reason']}" for r in rows)
    return dict(sorted(by_step.items())), dict(reasons.most_common(10))


def _summary(p: graph.Plan, total: PartitionSummary, wall: float) -> dict:
    image_steps, image_reasons = _skip_counts(total.skipped, "image")
    cell_steps, cell_reasons = _skip_counts(total.skipped, "cell")
    summary = {
        "config": p.config.model_dump(mode="json"),
        "versions": _versions(),
        "input": {
            "format": p.dataset.format,
            "images": len(p.dataset.sources),
            "channels": list(p.dataset.channels),
            "unmatched_files": list(p.dataset.unmatched),
        },
        "counts": {
            "images": {
                "total": total.images,
                "with_cells": total.images_with_cells,
                "skipped": total.images - total.images_with_cells,
                "skipped_by_step": image_steps,
                "most_common_reasons": image_reasons,
            },
            "cells": {
                "found": total.cells_found,
                "exported": total.cells_exported,
                "skipped": total.cells_found - total.cells_exported,
                "skipped_by_step": cell_steps,
                "most_common_reasons": cell_reasons,
            },
        },
        "timings_s": {
            "wall": round(wall, 3),
            "steps": {k: round(v, 3) for k, v in sorted(total.timings.items())},
            "note": "steps: seconds of task time summed over all workers",
        },
    }
    if p.config.evaluate is not None:
        n_true = total.truth_cells
        summary["evaluation"] = {
            "iou_threshold": p.config.evaluate.iou,
            "truth_cells": n_true,
            "found_cells": total.predicted_cells,
            "matched": total.matched,
            "recall": _ratio(total.matched, n_true),
            "precision": _ratio(total.matched, total.predicted_cells),
            "f1": _ratio(2 * total.matched, n_true + total.predicted_cells),
            "exported_matched": total.matched_exported,
            "exported_recall": _ratio(total.matched_exported, n_true),
            "images_without_truth": len(total.evaluation_errors),
            "errors": total.evaluation_errors[:20],
        }
    return summary


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _write_skipped(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SKIPPED_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["index"], str(r["label"]))))
