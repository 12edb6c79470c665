"""The Python entry point: ``scip.run(config)``.

It validates the config, lists the images, prepares the output folder,
computes the graph on a cluster with a progress bar, and writes the
bookkeeping files: ``cells/part-*.parquet``, ``skipped.csv`` and ``run.json``.
Every file it writes into the output folder is first recorded in
``manifest.json`` (:mod:`scip.io.manifest`), and ``--overwrite`` removes
only recorded files: never the input, never a file of the user's.
"""

from __future__ import annotations

import csv
import errno
import functools
import json
import logging
import math
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from scip import report
from scip.accounting import SKIPPED_COLUMNS, PartitionSummary
from scip.config import Config, ConfigError, check_models, load_config
from scip.engine import cluster, graph, tiles, warm
from scip.engine.compute import compute_partitions
from scip.engine.output import (OUTPUT_FILES, done_partitions, labels_written, new_manifest, partition_entries,
                                planned_files, prepare_output, resumable, versions)
from scip.engine.reduce import REDUCE_STEPS, Reductions, load_illumination, reduce
from scip.failures import DiskFull, RunFailed
from scip.io import InputError, labels, open_dataset
from scip.io.ground_truth import check_template
from scip.io.limits import format_bytes, image_budget
from scip.io.manifest import record_files, reductions_from_json, reductions_to_json, write_manifest
from scip.io.tables import feature_descriptions, write_formats
from scip.steps.evaluate import evaluation_breakdown
from scip.segment.micronuclei import DROP_REASONS
from scip.steps.micronuclei import micronucleus_channel
from scip.steps.project import check_z
from scip.steps.segment import channel_position, segment_positions

log = logging.getLogger("scip")

__all__ = ["RunResult", "Reductions", "run", "prepare", "reduce", "OUTPUT_FILES"]
__all__ += ["RunFailed", "DiskFull"]

#: Cells per run kept (crop and mask) for the montage of report.html.
REPORT_CELLS = 48

#: Errors listed with their tracebacks in run.json (all are counted, and all are in skipped.csv).
REPORTED_ERRORS = 20
#: What a full disk (or a full quota) looks like in an OSError.
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _free_mib(path: Path) -> float | None:
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free / 2**20
            except OSError:
                return None
    return None


def _disk_full_is_one_message(func):
    """Turn a full disk anywhere while the run writes into :class:`DiskFull`, naming the folder."""

    @functools.wraps(func)
    def wrapper(config, *args, **kwargs):
        if not isinstance(config, Config):
            config = load_config(config)
        try:
            return func(config, *args, **kwargs)
        except OSError as e:
            if e.errno not in _FULL:
                raise
            out = Path(config.output.path)
            where = Path(e.filename) if e.filename and not Path(e.filename).resolve().is_relative_to(
                out.resolve()) else out
            raise DiskFull(where, _free_mib(where)) from e
    return wrapper


@dataclass(frozen=True)
class RunResult:
    """Where a run wrote its results, and what it counted."""

    output: Path
    table: Path
    summary: dict

    def read(self, partial: bool = False):
        """The feature table as a pandas DataFrame.

        Parameters
        ----------
        partial : bool
            Read the partitions that verify even when the run did not finish
            (with a warning); by default an incomplete run raises
            :class:`scip.io.manifest.IncompleteRunError`.
        """
        from scip.io.tables import read

        return read(self.table, partial=partial)


def prepare(config: Config | str | Path | dict) -> graph.Plan:
    """Validate ``config`` and list its images, reading no pixels.

    Also reads the model file of a learned segmentation method
    (:func:`scip.config.check_models`; loading the config does not). Every
    problem found here is a configuration problem and raises
    :class:`~scip.config.ConfigError`.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    check_models(config)
    try:
        dataset = open_dataset(config.input)
    except InputError as e:
        raise ConfigError(str(e)) from None
    try:
        segment_positions(dataset.channels, config.segment.channel)
        for i, mask in enumerate(config.masks):
            channel_position(dataset.channels, mask.channel, key=f"masks.{i}.channel")
        if config.micronuclei is not None:
            channel_position(dataset.channels, micronucleus_channel(config.micronuclei, config.segment.channel),
                             key="micronuclei.channel")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        check_z(config.input.z, dataset.z_planes, dataset.sources[0].image_id if dataset.sources else "")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.illumination is not None and dataset.format == "ifc_zarr":
        raise ConfigError("illumination: imaging-flow-cytometry events differ in size, so they have no common "
                          "illumination field; illumination correction needs fields of view of one size")
    if config.evaluate is not None:
        try:
            warning = check_template(config.evaluate.labels, dataset.sources)
        except InputError as e:
            raise ConfigError(str(e)) from None
        if warning:
            log.warning("scip: warning: %s", warning)
    try:
        p = graph.plan(config, dataset)
    except ValueError as e:  # e.g. channel names that make the same column name
        raise ConfigError(f"input.channels: {e}") from None
    if config.evaluate is not None:
        _check_group_by(config.evaluate.group_by, p)
    return p


def _check_group_by(group_by: list[str], p: graph.Plan) -> None:
    """``evaluate.group_by`` names metadata columns the input pattern's fields make."""
    from scip.steps.export import meta_name

    known = sorted({meta_name(k) for s in p.dataset.sources for k in s.fields})
    for i, column in enumerate(group_by):
        if column not in known:
            raise ConfigError(f"evaluate.group_by.{i}: {column!r} is not a metadata column of this input; "
                              f"allowed: {', '.join(known) or 'none (input.pattern has no named groups besides id)'}")


@_disk_full_is_one_message
def run(config: Config | str | Path | dict, client=None, progress: bool = True, resume: bool = False,
        early: warm.EarlyCompile | None = None) -> RunResult:
    """Run the whole pipeline and write the results.

    Parameters
    ----------
    config : Config, path or dict
        A validated :class:`~scip.config.Config`, a YAML file, or a mapping
        with the same structure.
    client : distributed.Client, optional
        Use this client (left open). By default the ``cluster`` section
        decides: a local cluster sized to the machine, SLURM jobs, an existing
        scheduler, or ``synchronous`` in-process computing.
    progress : bool
        Show a progress bar of each pass on standard error (see :mod:`scip.engine.progress`).
    resume : bool
        Continue an interrupted run in the same output folder: the partitions
        already written are kept if they verify (size, SHA-256 and row count
        recorded in their summaries), the others computed, with the reductions
        (thresholds, ranges, illumination) of the first attempt. The config
        may differ only in its ``cluster`` and ``output`` sections; the input
        files, as fingerprinted by ``output.verify``, and the scip version must
        be the same, else :class:`~scip.config.ConfigError` names what changed.
    early : EarlyCompile, optional
        Feature kernels already compiling in a process of their own
        (:func:`scip.engine.warm.start_early`, which ``scip run`` calls
        before its imports); the local cluster's workers compile the others.
        Waited for before the first feature task; stopped when the run has
        no feature task or computes elsewhere than on a local cluster.

    Returns
    -------
    RunResult
        Output folder, table path and the counts written to ``run.json``;
        ``summary["status"]`` is ``ok``, or ``finished_with_errors`` when
        images or cells were stopped by unexpected exceptions (at most
        ``errors.max``; they are in ``summary["errors"]``).

    Raises
    ------
    RunFailed
        More errors than ``errors.max``: the run stopped early, ``run.json``
        has status ``failed`` and the errors.
    DiskFull
        The disk filled up while writing (a :class:`RunFailed`).
    """
    started = time.perf_counter()
    started_at = time.time()  # the task stream's clock
    p = prepare(config)
    config = p.config
    out = Path(config.output.path)
    if (not resume or not (out / "manifest.json").exists()) and tiles.known_early(p):
        # Decided before anything is written when it does not need the workers' memory.
        p = tiles.decide(p, out)
        _no_tiled_micronuclei(p)
    parts = tiles.all_partitions(p)
    # Read first: a missing or broken saved correction is a config error before anything is written.
    saved = None
    if config.illumination is not None and config.illumination.reuse is not None:
        saved = load_illumination(config.illumination.reuse)
    if resume and not (out / "manifest.json").exists() and not any((out / n).exists() for n in OUTPUT_FILES):
        # Nothing was written yet (e.g. a requeued batch job that never started): a first attempt.
        log.info("scip: --resume: %s holds no earlier attempt; starting the run", out)
        resume = False
    if resume:
        manifest = resumable(out, p, parts)
        # The first attempt's tiling, whatever the workers' memory is now: its parts were cut by it.
        p, recorded = tiles.recorded(p, manifest, out)
        parts = tiles.all_partitions(p)
        # output.formats may differ from the first attempt's.
        record_files(out, planned_files(p, parts), manifest)
        cells_dir = out / "cells"
        cells_dir.mkdir(parents=True, exist_ok=True)
        if saved is None and config.illumination is not None and manifest["reductions"] is not None:
            saved = load_illumination(out / "illumination.npz")
    else:
        cells_dir = prepare_output(out, config.output.overwrite, p, parts)
        manifest = new_manifest(p, parts)
        write_manifest(out, manifest)
        recorded = {}
    (out / "progress").mkdir(exist_ok=True)
    if config.output.labels:
        # Recorded in the manifest above; created with scip's marker before any task writes into it.
        labels.create_root(graph.labels_root(config))
    done = done_partitions(out, len(parts)) if resume else {}
    # A partition that had errors is computed again: the bug behind them may be fixed by now.
    done = {i: s for i, s in done.items() if not s.errors}
    if config.output.labels:
        done = labels_written(p, parts, done)
    todo = [i for i in range(len(parts)) if i not in done]
    log.info("scip: %d images (%s), %d channels: %s", len(p.dataset.sources), p.dataset.format,
             len(p.dataset.channels), ", ".join(p.dataset.channels))
    if resume:
        log.info("scip: resuming: %d of %d partitions are complete, %d to compute", len(done), len(parts), len(todo))
    with cluster.connect(config.cluster, client) as session, cluster.task_stream(session) as stream:
        if session.client is not None:
            print(f"scip: dashboard at {session.client.dashboard_link}", file=sys.stderr)
        if early is not None and (not todo or session.kind != "local"):
            early.stop()  # nothing to measure, or workers that may not share this machine's numba cache
            early = None
        # Each worker compiles a share of the feature kernels while the segmentation pass runs.
        warming = warm.start_warming(session, config.features.families, early) if todo else None
        if config.input.max_image_bytes == "auto":
            # Known only now: an image decoding to more than a share of the smallest worker's memory is read in
            # tiles (or skipped, with tiles.mode: never).
            p = replace(p, budget=image_budget("auto", *cluster.worker_memory(session, config.cluster)))
        if p.budget is not None:
            log.info("scip: images that decode to more than %s are %s (%s)", format_bytes(p.budget.bytes),
                     "read in tiles" if config.tiles.mode == "auto" else "skipped", p.budget.origin)
        if not resume and not tiles.known_early(p):
            p = tiles.decide(p, out)
            _no_tiled_micronuclei(p)
            if p.tiled:
                parts = tiles.all_partitions(p)
                todo = list(range(len(parts)))
                manifest.update(partitions=partition_entries(parts), tiles=tiles.to_json(p.tiled))
                record_files(out, planned_files(p, parts), manifest)
        if p.tiled:
            p = tiles.segment(p, session, out, manifest, todo, recorded, resume, progress)
        computed: dict[int, PartitionSummary] = {}
        stopped = False
        if todo:
            reductions = reduce(p, session, progress=progress, output=out, saved=saved,
                                decided=manifest["reductions"])
            if manifest["reductions"] is None:
                manifest["reductions"] = reductions_to_json(reductions.bounds, reductions.ranges, reductions.report)
                write_manifest(out, manifest)
            samples = math.ceil(REPORT_CELLS / max(len(parts), 1))
            tasks = graph.build_writes(p, cells_dir, reductions.cells, reductions.bounds, reductions.ranges,
                                       samples=samples, routing=session.routing, progress=out / "progress",
                                       report_columns=report.run_columns(config.segment.name, p.dataset.channels,
                                                                         config.output.plate_feature,
                                                                         config.output.labels))
            if warming is not None:  # before any feature task, so no worker compiles what another still does
                warming.wait()
            if early is not None:
                early.wait()
            if session.client is not None:  # the driver only waits for the workers: the report's imports are free
                report.import_in_background()
            computed, stopped = compute_partitions(p, session, tasks, todo, parts, reductions, samples, cells_dir,
                                                    out / "progress", progress)
        if p.tiled and not stopped:
            tiles.write_mask_labels(config, p.tiled, out, session, progress)
            tiles.write_pyramids(config, p.tiled, out, session, progress, p.dataset.format == "ome_zarr")
        where = session.describe()
        names = cluster.worker_names(session.client) if session.client is not None else {}
    summaries = {**done, **computed}
    if stopped:
        _stop(p, out, summaries, len(parts), time.perf_counter() - started)
    total = sum((summaries[i] for i in range(len(parts))), PartitionSummary())
    written = write_formats(out, config.output.formats, feature_descriptions(p.dataset.channels, config))
    finished_at = time.time()
    summary = _summary(p, total, time.perf_counter() - started)
    summary["output"] = {"files": {k: str(v) for k, v in written.items()}}
    _, _, reductions_report = reductions_from_json(manifest["reductions"] or {})
    summary["reductions"] = _with_drops(reductions_report, total)
    summary["cluster"] = where
    summary["partitions"] = {"total": len(parts), "computed": len(todo), "reused": len(done), "resumed": resume}
    summary["tiles"] = tiles.report(config, p.tiled)
    if config.micronuclei is not None:
        summary["micronuclei"] = _micronuclei(total)
    if stream is not None:
        summary["timings_s"]["task_stream"] = cluster.task_stream_steps(stream.data, {**graph.STEPS, **REDUCE_STEPS},
                                                                         names, window=(started_at, finished_at))
        summary["timings_s"]["note"] += ("; task_stream: seconds of compute per step from the scheduler's task stream, "
                                         "and each worker's idle seconds from the run's start to its results")
    _write_skipped(out / "skipped.csv", total.skipped)
    (out / "run.json").write_text(json.dumps(summary, indent=2, default=str))
    # The montage's random cells, then those picked for the micronucleus montage (``extra``), each capped.
    report.save_samples(out / report.SAMPLES_FILE, [s for s in total.samples if not s.get("extra")][:REPORT_CELLS]
                        + [s for s in total.samples if s.get("extra")][:REPORT_CELLS])
    for entry in manifest["partitions"]:
        # What scip.read checks of a finished run, without opening every summary.
        entry["bytes"] = (out / entry["part"]).stat().st_size
        entry["rows"] = summaries[entry["index"]].cells_exported
    manifest["complete"] = True
    write_manifest(out, manifest)
    tiles.remove_scratch(out)
    try:
        report.write_report(out, table=_report_table([summaries[i] for i in range(len(parts))]))
    except Exception as e:  # noqa: BLE001 - the table is written; a failed report must not hide it
        log.warning("scip: could not write report.html (%s: %s); the results are complete", type(e).__name__, e)
    return RunResult(output=out, table=cells_dir, summary=summary)


def _report_table(summaries: list[PartitionSummary]):
    """The report's columns of the whole table, from the partitions' summaries in order; None unless every one has
    them (a resumed run, a partition computed image by image: the report then reads the parts)."""
    tables = [s.report_table for s in summaries]
    if not tables or any(t is None for t in tables):
        return None
    import pyarrow as pa

    return pa.concat_tables(tables)


def _stop(p: graph.Plan, out: Path, summaries: dict[int, PartitionSummary], n_parts: int, wall: float) -> None:
    """Too many errors: record the failure in run.json (the manifest stays incomplete) and raise."""
    total = sum(summaries.values(), PartitionSummary())
    summary = _summary(p, total, wall)
    summary["status"] = "failed"
    summary["partitions"] = {"total": n_parts, "done": len(summaries), "not_done": n_parts - len(summaries)}
    (out / "run.json").write_text(json.dumps(summary, indent=2, default=str))
    first = total.errors[0]
    raise RunFailed(
        f"{len(total.errors)} unexpected error(s), more than errors.max = {p.config.errors.max}: stopped early after "
        f"{len(summaries)} of {n_parts} partitions. First: {first['message']} (step {first['step']}, image "
        f"{first['image_id']}). Tracebacks in {out / 'run.json'}; once fixed, --resume computes what is missing")


def _no_tiled_micronuclei(p: graph.Plan) -> None:
    """Micronuclei are found in whole images only: an image read in tiles is a config error naming it."""
    if p.config.micronuclei is not None and p.tiled:
        names = ", ".join(t.job.source.image_id for t in p.tiled[:5]) + (" ..." if len(p.tiled) > 5 else "")
        raise ConfigError(f"micronuclei: not supported for images read in tiles, and {len(p.tiled)} image(s) would "
                          f"be ({names}); set tiles.mode: never and raise input.max_image_bytes, or leave out "
                          "micronuclei")


def _micronuclei(total: PartitionSummary) -> dict:
    """``run.json``'s micronuclei: every detection dropped (by reason), unassigned (by reason) or assigned."""
    m = total.micronuclei
    assigned = m.get("assigned", 0)
    no_nucleus = m.get("no_nucleus", 0)
    return {
        "found": m.get("found", 0),
        "dropped": {reason: m.get(f"dropped: {reason}", 0) for reason in DROP_REASONS},
        "kept": m.get("kept", 0),
        "assigned": assigned,
        "unassigned": {"no nucleus within max_distance": no_nucleus,
                       "nucleus not exported": m.get("kept", 0) - no_nucleus - assigned},
        "note": "found = dropped + kept; kept = assigned + unassigned; assigned: the exported cells' "
                "micronucleus_count summed",
    }


def _with_drops(report: dict, total: PartitionSummary) -> dict:
    """The reductions report, with how many cells each filter dropped."""
    dropped = Counter(r["filter"] for r in total.skipped if r["step"] == "filter")
    for entry in report.get("filters", []):
        entry["cells_dropped"] = dropped.get(entry["filter"], 0)
    return report


def _skip_counts(rows: list[dict], kind: str) -> tuple[dict[str, int], dict[str, int], int]:
    """Skips of one kind counted by step, the most common reasons and the errors among them.

    Reasons are counted by their kind (the reason without the record's
    values), so that cells dropped by one filter count as one reason; the
    values are in skipped.csv.
    """
    rows = [r for r in rows if r["kind"] == kind]
    by_step = Counter(r["step"] for r in rows)
    reasons = Counter(f"{r['step']}: {r.get('reason_kind') or r['reason']}" for r in rows)
    errors = sum(1 for r in rows if r.get("error"))
    return dict(sorted(by_step.items())), dict(reasons.most_common(10)), errors


def _summary(p: graph.Plan, total: PartitionSummary, wall: float) -> dict:
    image_steps, image_reasons, image_errors = _skip_counts(total.skipped, "image")
    cell_steps, cell_reasons, cell_errors = _skip_counts(total.skipped, "cell")
    summary = {
        "status": "finished_with_errors" if total.errors else "ok",
        "config": p.config.model_dump(mode="json"),
        "versions": versions(),
        "input": {
            "format": p.dataset.format,
            "images": len(p.dataset.sources),
            "channels": list(p.dataset.channels),
            "unmatched_files": list(p.dataset.unmatched),
            "excluded_files": len(p.dataset.excluded),
            # Micrometres per pixel of each image whose metadata gives one (the _um/_um2 columns use it).
            "pixel_size_um": {s.image_id: s.pixel_size for s in p.dataset.sources if s.pixel_size},
        },
        "counts": {
            "images": {
                "total": total.images,
                "with_cells": total.images_with_cells,
                "skipped": total.images - total.images_with_cells,
                "skipped_by_step": image_steps,
                "most_common_reasons": image_reasons,
                "errors": image_errors,
            },
            "cells": {
                "found": total.cells_found,
                "exported": total.cells_exported,
                "skipped": total.cells_found - total.cells_exported,
                "skipped_by_step": cell_steps,
                "most_common_reasons": cell_reasons,
                "errors": cell_errors,
            },
            "errors": len(total.errors),
        },
        "errors": total.errors[:REPORTED_ERRORS],
        "errors_max": p.config.errors.max,
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
            **evaluation_breakdown(total.evaluation_images, total.matched_exported_by_image,
                                   p.config.evaluate.group_by),
        }
    return summary


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _write_skipped(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SKIPPED_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["index"], str(r["label"]))))
