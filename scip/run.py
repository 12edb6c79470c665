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
import dataclasses
import errno
import functools
import json
import logging
import math
import platform
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from scip import cluster, graph, report
from scip.engine import tiles
from scip.steps.tiles import choose_tiled
from scip.accounting import SKIPPED_COLUMNS, PartitionSummary
from scip.config import Config, ConfigError, load_config
from scip.failures import DiskFull, RunFailed
from scip.io import InputError, open_dataset
from scip.io.ground_truth import check_template
from scip.io.limits import format_bytes, image_budget
from scip.io.manifest import (LAYOUT, ManifestError, PartitionUnverified, changed_inputs, differences, fingerprint,
                              input_stats, load_partition, part_name, read_manifest, record_files, recorded_files,
                              reductions_from_json, reductions_to_json, samples_name, summarize_changes,
                              summary_name, write_manifest)
from scip.io.tables import FILES, feature_descriptions, write_formats
from scip.records import CellRecord, ImageRecord, skipped
from scip.reduce import filters as cell_filters
from scip.reduce import illumination
from scip.reduce.quantiles import QuantileSearch
from scip.steps.segment import channel_position, segment_positions

log = logging.getLogger("scip")

__all__ = ["RunResult", "Reductions", "run", "prepare", "reduce", "OUTPUT_FILES"]
__all__ += ["RunFailed", "DiskFull"]

#: Cells per run kept (crop and mask) for the montage of report.html.
REPORT_CELLS = 48

#: Names a run, ``scip classify`` and ``scip predict`` write at the top of an output folder.
OUTPUT_FILES = (tiles.SCRATCH, "cells", "run.json", "skipped.csv", "illumination.npz", "cells.h5ad", "cells.csv", "report.html",
                "report_cells.npz", "classification", "predictions.csv", "manifest.json", "progress")
#: Folders of ours that ``--overwrite`` removes once the files recorded in them are gone, if nothing else is left.
_OUR_FOLDERS = ("cells", "progress", "classification")
#: Steps of the reductions' own tasks, by function name (with :data:`scip.graph.STEPS`).
_REDUCE_STEPS = {"measures_of": "reduce", "groups_of": "reduce", "partials_of": "reduce"}
_VERSIONS = ("scip", "numpy", "scipy", "scikit-image", "pandas", "pyarrow", "dask", "distributed", "zarr",
             "numcodecs", "tifffile", "pydantic", "dask-jobqueue")


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
        segment_positions(dataset.channels, config.segment.channel)
        for i, mask in enumerate(config.masks):
            channel_position(dataset.channels, mask.channel, key=f"masks.{i}.channel")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if dataset.z_planes is not None and dataset.z_planes > 1 and config.input.z_projection is None:
        raise ConfigError(f"input.z_projection: the images are z stacks ({dataset.z_planes} planes in the first one); "
                          "set input.z_projection to max, mean or median to project each to one plane")
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
        return graph.plan(config, dataset)
    except ValueError as e:  # e.g. channel names that make the same column name
        raise ConfigError(f"input.channels: {e}") from None


def _input_paths(p: graph.Plan, out: Path) -> list[tuple[str, Path]]:
    """What this run reads, as ``(config key, path)``: input folder, labels, saved correction, and the input files
    themselves when they could lie inside ``out``."""
    config = p.config
    paths = [("input.path", Path(config.input.path))]
    if config.illumination is not None and config.illumination.reuse is not None:
        paths.append(("illumination.reuse", Path(config.illumination.reuse)))
    if config.evaluate is not None:
        template = config.evaluate.labels
        if "{" not in template:
            paths.append(("evaluate.labels", Path(template)))
        else:
            for s in p.dataset.sources:
                try:
                    paths.append(("evaluate.labels", Path(template.format(image_id=s.image_id, index=s.index,
                                                                          **s.fields))))
                except (KeyError, IndexError, ValueError):
                    continue
    root = Path(config.input.path).resolve()
    if out == root or out.is_relative_to(root):
        # Only then can input files lie in the output folder.
        paths += [("input file", Path(f)) for s in p.dataset.sources for f in s.paths if f]
    return paths


def _check_overlap(p: graph.Plan, out: Path, ours: set[str]) -> None:
    """Refuse an output folder where writing or removing our files could touch the input."""
    for key, path in _input_paths(p, out):
        path = path.resolve()
        if path == out:
            raise ConfigError(f"output.path: {out} is also {key}; write the results to another folder, "
                              "never into the input itself")
        if path.is_relative_to(out):
            top = path.relative_to(out).parts[0]
            if top in ours:
                raise ConfigError(f"{key}: {path} lies in the output folder {out}, under {top!r}, a name scip "
                                  "writes and --overwrite removes; move it out of the output folder, or choose "
                                  "another output.path")


def _planned_files(p: graph.Plan, parts: list) -> list[str]:
    """Every file this run writes into the output folder, relative to it."""
    config = p.config
    files = [name for i in range(len(parts)) for name in (part_name(i), summary_name(i), samples_name(i))]
    files += ["run.json", "skipped.csv", report.SAMPLES_FILE, report.REPORT_FILE]
    if config.illumination is not None and config.illumination.reuse is None:
        files.append("illumination.npz")
    files += [FILES[f] for f in config.output.formats if f != "parquet"]
    return files


def _existing(out: Path, p: graph.Plan, parts: list) -> list[str]:
    """Files in ``out`` at names this run writes, or that would pass for its results."""
    found = [name for name in ("manifest.json", *_planned_files(p, parts)) if "/" not in name
             and (out / name).exists()]
    for folder in ("cells", "progress"):
        if (out / folder).is_dir():
            found += [f"{folder}/{f.name}" for f in sorted((out / folder).iterdir())
                      if f.name.startswith(("part-", ".part-"))]
        elif (out / folder).exists():
            found.append(folder)
    # A classification in the folder would be shown in the new report as if it described the new table.
    if (out / report.CLASSIFICATION_FILE).exists():
        found.append(report.CLASSIFICATION_FILE.as_posix())
    return found


def _removable(out: Path, manifest: dict) -> set[str]:
    """The recorded files of an earlier run that may go: regular files inside ``out`` under names of ours."""
    out_ok = set()
    for rel in recorded_files(manifest):
        if rel.split("/")[0] not in OUTPUT_FILES:
            log.warning("scip: manifest.json lists %s, not a name scip writes; it is left alone", rel)
            continue
        for name in (rel, str(Path(rel).with_name(f".{Path(rel).name}.tmp").as_posix())):
            target = out / name
            if target.is_file() and not target.is_symlink() and target.resolve().is_relative_to(out):
                out_ok.add(name)
    return out_ok


def _prepare_output(path: Path, overwrite: bool, p: graph.Plan, parts: list) -> Path:
    """Make ``path`` ready for a new run; with ``overwrite``, remove exactly what the earlier run recorded.

    Nothing is removed before every check has passed: the input must not lie
    under a name we write, and every file at such a name must be one the
    earlier run's manifest recorded (else the user's, and we refuse).
    """
    out = path.resolve()
    manifest, why = None, ""
    if (out / "manifest.json").exists():
        try:
            manifest = read_manifest(out)
        except ManifestError as e:
            why = f" ({e})"
    else:
        why = " (there is no manifest.json)"
    recorded = recorded_files(manifest) if manifest is not None else []
    _check_overlap(p, out, set(OUTPUT_FILES) | {r.split("/")[0] for r in recorded})
    existing = _existing(out, p, parts)
    if existing and not overwrite:
        raise ConfigError(
            f"output.path: {path} already holds results ({summarize_changes(existing)}); "
            "choose another folder, or set output.overwrite: true (--overwrite)"
        )
    removable = _removable(out, manifest) if overwrite and manifest is not None else set()
    foreign = [name for name in existing if name not in removable and name != "manifest.json"]
    if manifest is None and existing:
        foreign = existing
    if foreign:
        raise ConfigError(
            f"output.path: {path} holds {summarize_changes(foreign)}, which no scip run recorded writing{why}; "
            "--overwrite removes only the files a scip run recorded in the folder's manifest.json, so these are "
            "left alone: move or delete them yourself, or choose another folder"
        )
    # The old manifest last: until then it still records what is left, should this be interrupted.
    for name in sorted(removable, key=lambda n: (n == "manifest.json", n)):
        (out / name).unlink(missing_ok=True)
    for folder in _OUR_FOLDERS:
        target = out / folder
        if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
            target.rmdir()
    cells = path / "cells"
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


@dataclass
class Reductions:
    """What the dataset-wide reductions decided, and the cells they were decided on.

    Attributes
    ----------
    correction : (dict, list of str) or None
        Illumination flat fields by group (``scip.reduce.illumination``) and
        the channel names of their planes.
    cells : dask.bag.Bag
        :func:`scip.graph.build_cells`, persisted when filters or
        normalization needed a look at every cell first.
    bounds : list of (float, float) or None
        ``(min, max)`` threshold of each filter, NaN where unbounded.
    ranges : dict or None
        Normalization ``(low, high)`` per channel, by group.
    input_passes : int
        How many times the input images are read: 2 with a computed
        illumination correction, else 1.
    report : dict
        The ``reductions`` section of ``run.json``.
    """

    correction: tuple | None
    cells: object
    bounds: list | None
    ranges: dict | None
    input_passes: int
    report: dict


def _illumination(p: graph.Plan, session, progress: bool, saved: tuple[dict, dict] | None,
                  output: Path | None) -> tuple[tuple[dict, list[str]] | None, dict, graph.Plan]:
    """The flat fields and their report, and ``p`` with the images that killed workers set aside."""
    cfg = p.config.illumination
    if cfg is None:
        return None, {}, p
    if saved is not None:
        fields, meta = saved
        if list(meta.get("group_by", [])) != list(cfg.group_by):
            raise ConfigError(f"illumination.reuse: {cfg.reuse} was computed with group_by {meta.get('group_by')}, "
                              f"this config groups by {list(cfg.group_by)}")
        return (fields, list(meta["channels"])), {"reused": str(cfg.reuse), "input_passes": 0,
                                                   "groups": {"/".join(g["key"]) or "all": g["n_images"]
                                                              for g in meta.get("groups", [])}}, p
    start = time.perf_counter()
    by_partition: dict[int, dict] = {}
    parts = graph.partitions(p)
    try:
        for index, part in cluster.completed(graph.build_illumination_sums(p), session, progress=progress):
            if isinstance(part, cluster.Killed):
                found = _killers(p, parts[index], lambda one: graph.build_illumination_sums(one)[0], session, part,
                                 index, "the illumination sums were computed")
                p = dataclasses.replace(p, excluded=p.excluded + tuple(found))
                ((_, part),) = cluster.completed([graph.build_illumination_sums(p)[index]], session, progress=False)
                if isinstance(part, cluster.Killed):
                    raise RunFailed(f"partition {index} killed workers again without its images that kill them "
                                    "alone: give the workers more memory (--memory-limit), then run again")
            by_partition[index] = part
        sums: dict = {}
        # In partition order, whatever order they finished in: the same sums, to the last bit, every run.
        for index in sorted(by_partition):
            sums = illumination.merge_groups(sums, by_partition[index])
        if not sums:
            raise ConfigError("illumination: no image could be read to compute the correction")
        fields = illumination.flat_fields(sums, cfg.smooth, cfg.size)
    except illumination.IlluminationError as e:
        raise ConfigError(f"illumination: {e}") from None
    channels = list(p.dataset.channels)
    report = {"file": None, "groups": {"/".join(key) or "all": total.count for key, total in sums.items()},
              "smooth": cfg.smooth, "size": cfg.size, "seconds": round(time.perf_counter() - start, 3),
              "input_passes": 1}
    if output is not None:
        path = output / "illumination.npz"
        illumination.save(path, fields, illumination.correction_meta(
            sums, group_by=list(cfg.group_by), channels=channels, smooth=cfg.smooth, size=cfg.size))
        report["file"] = str(path)
    return (fields, channels), report, p


def _measures_of(records: list, names: list[str]) -> list[dict[str, list[float]]]:
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in records:
        if isinstance(r, CellRecord) and r.status:
            for n in names:
                out[n].append(r.measures[n])
    return [out]


def _filter_bounds(p: graph.Plan, cells, session) -> tuple[list, list[dict], float]:
    """Every filter's thresholds, decided from all cells' measures (collected per partition)."""
    start = time.perf_counter()
    filters = p.config.filters
    names = [f.name for f in filters]
    parts = cluster.compute(cells.map_partitions(_measures_of, names).to_delayed(optimize_graph=False), session,
                            progress=False)
    values = {n: np.array([v for part in parts for v in part[0][n]], dtype=np.float64) for n in names}
    bounds = cell_filters.thresholds(filters, values)
    report = [
        {"filter": f.name, "min": cell_filters.rule_text(f.min) if f.min is not None else None,
         "max": cell_filters.rule_text(f.max) if f.max is not None else None,
         "min_threshold": None if np.isnan(lo) else lo, "max_threshold": None if np.isnan(hi) else hi,
         "cells_measured": int(values[f.name].size)}
        for f, (lo, hi) in zip(filters, bounds)
    ]
    return bounds, report, round(time.perf_counter() - start, 3)


def _normalize_values(records: list, cell_mask: str, group_by: tuple[str, ...], key) -> np.ndarray:
    group, channel = key
    parts = [r.pixels[channel][r.masks[cell_mask]] for r in records
             if isinstance(r, CellRecord) and r.status
             and tuple(str(r.source.fields.get(g, "")) for g in group_by) == group]
    return np.concatenate(parts).astype(np.float64) if parts else np.empty(0)


def _partials_of(records: list, requests: dict, cell_mask: str, group_by: tuple[str, ...]) -> list[dict]:
    return [{key: QuantileSearch.partial(request, _normalize_values(records, cell_mask, group_by, key))
             for key, request in requests.items()}]


def _groups_of(records: list, group_by: tuple[str, ...]) -> list[set]:
    return [{tuple(str(r.source.fields.get(g, "")) for g in group_by) for r in records
             if isinstance(r, CellRecord) and r.status}]


def _normalization(p: graph.Plan, cells, session) -> tuple[dict | None, dict]:
    cfg = p.config.normalize
    if cfg is None:
        return None, {}
    start = time.perf_counter()
    group_by = tuple(cfg.group_by)
    parts = cluster.compute(cells.map_partitions(_groups_of, group_by).to_delayed(optimize_graph=False), session,
                            progress=False)
    groups = sorted(set().union(*(g for part in parts for g in part)))
    n_channels = len(p.dataset.channels)
    searches = {(g, c): QuantileSearch((cfg.lower, cfg.upper)) for g in groups for c in range(n_channels)}
    cell_mask = p.config.segment.name
    rounds = 0
    while True:
        requests = {key: s.request() for key, s in searches.items()}
        requests = {key: r for key, r in requests.items() if r is not None}
        if not requests:
            break
        rounds += 1
        tasks = cells.map_partitions(_partials_of, requests, cell_mask, group_by).to_delayed(optimize_graph=False)
        per_partition = [part[0] for part in cluster.compute(tasks, session, progress=False)]
        for key in requests:
            searches[key].update(QuantileSearch.combine([part[key] for part in per_partition]))
    ranges: dict = {}
    report_groups: dict = {}
    for g in groups:
        bounds = []
        for c, channel in enumerate(p.dataset.channels):
            result = searches[(g, c)].result
            lo, hi = result[cfg.lower], result[cfg.upper]
            if not hi > lo:
                # A channel constant over the dataset: every pixel gets one level.
                hi = float(np.nextafter(lo, np.inf))
            bounds.append((float(lo), float(hi)))
            report_groups.setdefault("/".join(g) or "all", {})[channel] = [float(lo), float(hi)]
        ranges[g] = tuple(bounds)
    report = {"lower": cfg.lower, "upper": cfg.upper, "group_by": list(group_by), "ranges": report_groups,
              "rounds_over_cells": rounds, "exact": True, "seconds": round(time.perf_counter() - start, 3)}
    return ranges, report


def _as_session(client) -> cluster.Session:
    if client is None or isinstance(client, cluster.Session):
        return client if client is not None else cluster.Session(None)
    return cluster.Session(client, kind="client")


def reduce(p: graph.Plan, client=None, progress: bool = True, output: Path | None = None,
           saved: tuple[dict, dict] | None = None, decided: dict | None = None) -> Reductions:
    """Run the dataset-wide reductions of ``p.config`` and return what they decided.

    Illumination correction reads the input once for the mean images (unless
    a saved correction is reused); the cells are then built once and, when
    filters or normalization are configured, persisted, so thresholds and
    quantiles are computed over the kept cells without reading the input again.
    Pass the result's ``cells``, ``bounds`` and ``ranges`` to
    :func:`scip.graph.build_writes` or :func:`scip.graph.build_dataframe`.

    ``client`` is a :class:`scip.cluster.Session`, a ``distributed.Client`` or
    ``None`` (in-process). ``decided``: reductions an earlier, interrupted
    run already decided (from its manifest); they are used as they are.
    """
    session = _as_session(client)
    config = p.config
    if config.illumination is not None and config.illumination.reuse is not None and saved is None:
        saved = _load_illumination(config.illumination.reuse)
    correction, illumination_report, p = _illumination(p, session, progress, saved, output)
    cells = graph.build_cells(p, correction, session.routing)
    if decided is not None:
        bounds, ranges, report = reductions_from_json(decided)
        return Reductions(correction, cells, bounds, ranges, report.get("input_passes", 1), report)
    bounds = ranges = None
    report: dict = {}
    if illumination_report:
        report["illumination"] = illumination_report
    if config.filters or config.normalize is not None:
        cells = cluster.persist(cells, session, progress=progress)
        cells = _without_killers(p, cells, correction, session, progress)
    if config.filters:
        bounds, report["filters"], report["filters_seconds"] = _filter_bounds(p, cells, session)
    ranges, normalize_report = _normalization(p, cells, session)
    if normalize_report:
        report["normalize"] = normalize_report
    passes = 1 + (1 if illumination_report.get("input_passes") == 1 else 0)
    report["input_passes"] = passes
    return Reductions(correction, cells, bounds, ranges, passes, report)


#: Rounds of looking for images that kill workers while the cells are persisted for the reductions.
_KILLER_ROUNDS = 3


def _without_killers(p: graph.Plan, cells, correction, session: cluster.Session, progress: bool):
    """The persisted ``cells``, rebuilt without the images that kill the workers reading them.

    The reductions need every partition of the persisted cells. A partition
    whose task kept killing workers is computed again image by image; each
    image that still kills a worker on its own becomes a skipped record (it
    is not read again), and the cells are persisted again without it.
    """
    for _ in range(_KILLER_ROUNDS):
        killed = cluster.killed_partitions(cells, session)
        if not killed:
            return cells
        parts = graph.partitions(p)
        excluded = list(p.excluded)
        for index, how in sorted(killed.items()):
            if index >= len(parts):
                raise RunFailed(f"a tile partition of image {tiles.partitions(p.tiled)[index - len(parts)][0].image_id}"
                                f" (read in tiles) killed {how.workers} workers while the cells were computed for "
                                "the dataset-wide reductions; give the workers more memory (--memory-limit) or "
                                "lower tiles.size, then --resume")
            excluded += _killers(p, parts[index], lambda one: graph.build_cells(one, correction, session.routing)
                                 .to_delayed(optimize_graph=False)[0], session, how, index,
                                 "the cells were computed for the dataset-wide reductions")
        cluster.release(cells, session)
        p = dataclasses.replace(p, excluded=tuple(excluded))
        cells = cluster.persist(graph.build_cells(p, correction, session.routing), session, progress=progress)
    if cluster.killed_partitions(cells, session):
        raise RunFailed(f"workers kept dying after {_KILLER_ROUNDS} rounds of setting aside the images that killed "
                        "them; give the workers more memory (--memory-limit), then --resume")
    return cells


def _killers(p: graph.Plan, sources: list, task_of, session: cluster.Session, how: cluster.Killed, index: int,
             during: str) -> list[tuple[int, str, str]]:
    """The images of partition ``index`` that kill a worker on their own, as ``(source index, step, reason)``.

    ``task_of`` gives the task of a one-image plan. Raises
    :class:`~scip.failures.RunFailed` when none does: the partition as a
    whole is too much for the workers.
    """
    log.warning("scip: partition %d killed %d workers (step %s) while %s; computing its %d images one by one",
                index, how.workers, graph.STEPS.get(how.task, how.task), during, len(sources))
    one_by_one = [task_of(_one_image_plan(p, s)) for s in sources]
    found = [(sources[position].index, *_killed_reason(sources[position], result))
             for position, result in cluster.completed(one_by_one, session, progress=False)
             if isinstance(result, cluster.Killed)]
    if not found:
        raise RunFailed(f"partition {index} ({', '.join(s.image_id for s in sources)}) killed {how.workers} "
                        "workers, but none of its images does alone: give the workers more memory "
                        "(--memory-limit) or lower input.images_per_partition, then --resume")
    return found


def _one_image_plan(p: graph.Plan, source) -> graph.Plan:
    """``p`` restricted to one image, for finding the image that kills workers."""
    return dataclasses.replace(p, dataset=dataclasses.replace(p.dataset, sources=(source,)))


def _killed_reason(source, killed: cluster.Killed) -> tuple[str, str]:
    """Step and ``skipped.csv`` reason of an image that killed ``killed.workers`` workers on its own."""
    where = ", ".join(str(x) for x in source.paths if x) or source.image_id
    times = f"{killed.workers} time{'s' if killed.workers > 1 else ''}"
    return (graph.STEPS.get(killed.task, killed.task),
            f"{where} killed the worker {times}; likely more memory than a worker has "
            f"(memory_limit {killed.memory_limit})")


def _load_illumination(path: Path) -> tuple[dict, dict]:
    try:
        return illumination.load(path)
    except illumination.IlluminationError as e:
        raise ConfigError(f"illumination.reuse: {e}") from None


def _images(p: graph.Plan) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.image_id, tuple(str(x) for x in s.paths)) for s in p.dataset.sources]


def _input_files(p: graph.Plan) -> list[str]:
    return list(dict.fromkeys(f for s in p.dataset.sources for f in s.paths if f))


def _new_manifest(p: graph.Plan, parts: list, stats: bool = True) -> dict:
    config = p.config
    dumped = config.model_dump(mode="json")
    verify = config.output.verify
    return {
        "layout": LAYOUT,
        "scip": _versions()["scip"],
        "fingerprint": fingerprint(dumped, _images(p), _versions()["scip"]),
        "inputs": {"verify": verify,
                   "files": input_stats(_input_files(p), content=verify == "content") if stats else {}},
        "config": dumped,
        "partitions": [{"index": i, "images": len(part), "first_image": part[0].image_id,
                        "last_image": part[-1].image_id, "part": part_name(i),
                        "summary": summary_name(i)} for i, part in enumerate(parts)],
        "files": ["manifest.json", *_planned_files(p, parts)],
        "reductions": None,
        # Which images are read in tiles, and pass 1's counts: what --resume must do the same way.
        "tiles": tiles.to_json(p.tiled),
        "complete": False,
    }


def _resumable(out: Path, p: graph.Plan, parts: list) -> dict:
    """The manifest of the interrupted run in ``out``, checked against this run."""
    try:
        manifest = read_manifest(out)
    except ManifestError as e:
        raise ConfigError(f"--resume: {e}") from None
    new = _new_manifest(p, parts, stats=False)
    old_print, new_print = manifest["fingerprint"], new["fingerprint"]
    if old_print != new_print:
        changed = differences(manifest["config"], new["config"])
        if old_print.get("images") != new_print["images"]:
            changed.append(f"the input images ({old_print.get('n_images')} then, "
                           f"{new_print['n_images']} now, or other files)")
        if old_print.get("scip") != new_print["scip"]:
            changed.append(f"the scip version ({old_print.get('scip')} then, {new_print['scip']} now)")
        raise ConfigError(f"--resume: {out} was computed with a different run: " + "; ".join(changed or ["(format)"])
                          + ". Resume with the same config and input, or run again with --overwrite")
    inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
    recorded = inputs.get("files") if isinstance(inputs.get("files"), dict) else {}
    content = inputs.get("verify") == "content"
    if p.config.output.verify == "content" and not content:
        log.warning("scip: --resume: the first attempt recorded no content hashes (output.verify: stat); "
                    "the input is checked by size and modification time only")
    changed = changed_inputs(recorded, input_stats(_input_files(p), content=content))
    if changed:
        raise ConfigError(f"--resume: {len(changed)} input file(s) changed since the first attempt in {out}: "
                          f"{summarize_changes(changed)}. Its partitions would mix old and new input: restore the "
                          "input, or run again with --overwrite")
    return manifest


def _done(out: Path, n: int) -> dict[int, PartitionSummary]:
    """Summaries of the partitions already complete in ``out``: those whose part verifies against its summary."""
    done, redo = {}, []
    for i in range(n):
        try:
            done[i] = load_partition(out, i)
        except PartitionUnverified as e:
            if (out / summary_name(i)).exists() or (out / part_name(i)).exists():
                redo.append(f"part-{i:05d} ({e})")
    if redo:
        log.info("scip: --resume: %d partition(s) do not verify and are computed again: %s", len(redo),
                 summarize_changes(redo))
    return done


def _tiles_known(p: graph.Plan) -> bool:
    """Whether the tiling decision can be made before the workers are up (it needs no worker memory)."""
    return p.config.tiles.mode != "auto" or p.config.input.max_image_bytes != "auto"


def _decide_tiles(p: graph.Plan, out: Path) -> graph.Plan:
    """``p`` with the images read in tiles planned (``tiles.mode``, the per-image budget)."""
    readers: dict = {}
    chosen = choose_tiled(p.dataset, p.config.tiles, p.budget, p.config.input.z, readers)
    if chosen:
        log.info("scip: %d image(s) read in tiles of %d px (margin %d px): %s", len(chosen), p.config.tiles.size,
                 p.config.tiles.margin_px, summarize_changes([readers[i].image_id for i in chosen]))
    return replace(p, tiled=tiles.plan_tiles(p.config, p.dataset, chosen, out, readers))


def _all_partitions(p: graph.Plan) -> list:
    """The whole images' partitions, then the tile partitions: the index of each ``part-N``."""
    return graph.partitions(p) + tiles.partitions(p.tiled)


def _segment_tiles(p: graph.Plan, session, out: Path, manifest: dict, parts: list, todo: list[int],
                   recorded: dict, resume: bool, progress: bool) -> graph.Plan:
    """Statistics and pass 1 of the tiled images with partitions left; offsets recorded in the manifest."""
    first = len(graph.partitions(p))
    left, position = set(), first
    for t in p.tiled:
        if t.job.key not in recorded or any(i in todo for i in range(position, position + len(t.groups))):
            left.add(t.job.key)
        position += len(t.groups)
    needed = tuple(t for t in p.tiled if t.job.key in left)
    needed = tiles.run_statistics(p.config, needed, session, progress)
    needed = {t.job.key: t for t in tiles.run_pass1(needed, session, progress, recorded)}
    # Images whose partitions are all done keep the first attempt's counts: their offsets are what the parts hold.
    tiled = tuple(needed.get(t.job.key) or replace(t, owned=tuple(recorded.get(t.job.key, ())))
                  for t in p.tiled)
    tiles.create_label_arrays(p.config, tiled, out, keep=resume)
    manifest["tiles"] = tiles.to_json(tiled)
    write_manifest(out, manifest)
    return replace(p, tiled=tiled)


@_disk_full_is_one_message
def run(config: Config | str | Path | dict, client=None, progress: bool = True, resume: bool = False) -> RunResult:
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
        Show a progress bar on the terminal.
    resume : bool
        Continue an interrupted run in the same output folder: the partitions
        already written are kept if they verify (size, SHA-256 and row count
        recorded in their summaries), the others computed, with the reductions
        (thresholds, ranges, illumination) of the first attempt. The config
        may differ only in its ``cluster`` and ``output`` sections; the input
        files, as fingerprinted by ``output.verify``, and the scip version must
        be the same, else :class:`~scip.config.ConfigError` names what changed.

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
    p = prepare(config)
    config = p.config
    out = Path(config.output.path)
    if not resume or not (out / "manifest.json").exists():
        # Decided now when it does not depend on the workers' memory (else once they are up).
        p = _decide_tiles(p, out) if _tiles_known(p) else p
    parts = _all_partitions(p)
    # Read first: a missing or broken saved correction is a config error before anything is written.
    saved = None
    if config.illumination is not None and config.illumination.reuse is not None:
        saved = _load_illumination(config.illumination.reuse)
    if resume and not (out / "manifest.json").exists() and not any((out / n).exists() for n in OUTPUT_FILES):
        # Nothing was written yet (e.g. a requeued batch job that never started): a first attempt.
        log.info("scip: --resume: %s holds no earlier attempt; starting the run", out)
        resume = False
    if resume:
        manifest = _resumable(out, p, parts)
        # The first attempt's tiling, whatever the workers' memory is now: its parts were cut by it.
        indices, recorded_owned = tiles.from_json(manifest.get("tiles"))
        p = replace(p, tiled=tiles.plan_tiles(config, p.dataset, indices, out))
        parts = _all_partitions(p)
        # output.formats may differ from the first attempt's.
        record_files(out, _planned_files(p, parts), manifest)
        cells_dir = out / "cells"
        cells_dir.mkdir(parents=True, exist_ok=True)
        if saved is None and config.illumination is not None and manifest["reductions"] is not None:
            saved = _load_illumination(out / "illumination.npz")
    else:
        cells_dir = _prepare_output(out, config.output.overwrite, p, parts)
        manifest = _new_manifest(p, parts)
        write_manifest(out, manifest)
        recorded_owned = {}
    (out / "progress").mkdir(exist_ok=True)
    done = _done(out, len(parts)) if resume else {}
    # A partition that had errors is computed again: the bug behind them may be fixed by now.
    done = {i: s for i, s in done.items() if not s.errors}
    todo = [i for i in range(len(parts)) if i not in done]
    log.info("scip: %d images (%s), %d channels: %s", len(p.dataset.sources), p.dataset.format,
             len(p.dataset.channels), ", ".join(p.dataset.channels))
    if resume:
        log.info("scip: resuming: %d of %d partitions are complete, %d to compute", len(done), len(parts), len(todo))
    with cluster.connect(config.cluster, client) as session, cluster.task_stream(session) as stream:
        if session.client is not None:
            print(f"scip: dashboard at {session.client.dashboard_link}", file=sys.stderr)
        if config.input.max_image_bytes == "auto":
            # Known only now: an image decoding to more than a share of the smallest worker's memory is skipped.
            p = replace(p, budget=image_budget("auto", *cluster.worker_memory(session, config.cluster)))
        if p.budget is not None:
            log.info("scip: images that decode to more than %s are %s (%s)", format_bytes(p.budget.bytes),
                     "read in tiles" if config.tiles.mode == "auto" else "skipped", p.budget.origin)
        if not resume and not _tiles_known(p):
            p = _decide_tiles(p, out)
            if p.tiled:
                parts = _all_partitions(p)
                todo = list(range(len(parts)))
                manifest["partitions"] = _new_manifest(p, parts, stats=False)["partitions"]
                manifest["tiles"] = tiles.to_json(p.tiled)
                record_files(out, _planned_files(p, parts), manifest)
        if p.tiled:
            p = _segment_tiles(p, session, out, manifest, parts, todo, recorded_owned, resume, progress)
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
                                       samples=samples, routing=session.routing, progress=out / "progress")
            computed, stopped = _compute_partitions(p, session, tasks, todo, parts, reductions, samples, cells_dir,
                                                    out / "progress", progress)
        if p.tiled and not stopped:
            tiles.write_pyramids(config, p.tiled, out, session, progress)
        where = session.describe()
        names = cluster.worker_names(session.client) if session.client is not None else {}
    summaries = {**done, **computed}
    if stopped:
        _stop(p, out, summaries, len(parts), time.perf_counter() - started)
    total = sum((summaries[i] for i in range(len(parts))), PartitionSummary())
    written = write_formats(out, config.output.formats, feature_descriptions(p.dataset.channels, config))
    summary = _summary(p, total, time.perf_counter() - started)
    summary["output"] = {"files": {k: str(v) for k, v in written.items()}}
    _, _, reductions_report = reductions_from_json(manifest["reductions"] or {})
    summary["reductions"] = _with_drops(reductions_report, total)
    summary["cluster"] = where
    summary["partitions"] = {"total": len(parts), "computed": len(todo), "reused": len(done), "resumed": resume}
    summary["tiles"] = tiles.report(config, p.tiled)
    if stream is not None:
        summary["timings_s"]["task_stream"] = cluster.task_stream_steps(stream.data, {**graph.STEPS, **_REDUCE_STEPS},
                                                                         names)
        summary["timings_s"]["note"] += "; task_stream: seconds of compute per step from the scheduler's task stream"
    _write_skipped(out / "skipped.csv", total.skipped)
    (out / "run.json").write_text(json.dumps(summary, indent=2, default=str))
    report.save_samples(out / report.SAMPLES_FILE, total.samples[:REPORT_CELLS])
    for entry in manifest["partitions"]:
        # What scip.read checks of a finished run, without opening every summary.
        entry["bytes"] = (out / entry["part"]).stat().st_size
        entry["rows"] = summaries[entry["index"]].cells_exported
    manifest["complete"] = True
    write_manifest(out, manifest)
    tiles.remove_scratch(out)
    try:
        report.write_report(out)
    except Exception as e:  # noqa: BLE001 - the table is written; a failed report must not hide it
        log.warning("scip: could not write report.html (%s: %s); the results are complete", type(e).__name__, e)
    return RunResult(output=out, table=cells_dir, summary=summary)




def _compute_partitions(p: graph.Plan, session: cluster.Session, tasks: list, todo: list[int], parts: list,
                        reductions: Reductions, samples: int, cells_dir: Path, progress_dir: Path,
                        progress: bool) -> tuple[dict[int, PartitionSummary], bool]:
    """Compute the write tasks of the partitions ``todo`` as they complete.

    Returns the summaries by partition and whether the run stopped early
    because the errors exceeded ``errors.max`` (the tasks left are then
    cancelled). A partition whose task kept killing workers is computed
    again image by image (:func:`_isolate`).
    """
    summaries: dict[int, PartitionSummary] = {}
    errors = 0
    whole = len(graph.partitions(p))
    killed_tiles: list[str] = []
    results = cluster.completed([tasks[i] for i in todo], session, progress=progress)
    try:
        for position, result in results:
            index = todo[position]
            if isinstance(result, cluster.Killed) and index >= whole:
                # A tile partition holds part of one image: nothing to isolate, and the other partitions go on.
                killed_tiles.append(f"part-{index:05d} ({parts[index][0].image_id}; {result.workers} workers, "
                                    f"memory_limit {result.memory_limit})")
                continue
            if isinstance(result, cluster.Killed):
                result = _isolate(p, index, parts[index], result, session, reductions, samples, cells_dir,
                                  progress_dir)
            summaries[index] = result
            errors += len(result.errors)
            if errors > p.config.errors.max:
                return summaries, True
    finally:
        results.close()
    if killed_tiles:
        raise RunFailed(f"tile partition(s) of images read in tiles killed their workers: "
                        f"{summarize_changes(killed_tiles)}; give the workers more memory (--memory-limit) or lower "
                        "tiles.size, then --resume (the other partitions are kept)")
    return summaries, False


def _one_image(p: graph.Plan, source, reductions: Reductions, samples: int, routing: cluster.Routing):
    """The task computing the records of one image alone: the graph of the plan restricted to it."""
    one = _one_image_plan(p, source)
    cells = graph.build_cells(one, reductions.correction, routing)
    bag = graph.build_features(one, cells, reductions.bounds, reductions.ranges, samples, routing)
    return bag.to_delayed(optimize_graph=False)[0]


def _isolate(p: graph.Plan, index: int, sources: list, killed: cluster.Killed, session: cluster.Session,
             reductions: Reductions, samples: int, cells_dir: Path, progress_dir: Path) -> PartitionSummary:
    """Partition ``index`` killed its workers: compute its images one by one, skip those that still kill them.

    The other images' cells are written as the partition's part, as if the
    partition had run normally; each image that kills workers on its own is
    a skipped image record naming the file.
    """
    step = graph.STEPS.get(killed.task, killed.task)
    log.warning("scip: partition %d killed %d workers (step %s); computing its %d images one by one",
                index, killed.workers, step, len(sources))
    tasks = [_one_image(p, s, reductions, samples, session.routing) for s in sources]
    records: list = [None] * len(sources)
    for position, result in cluster.completed(tasks, session, progress=False):
        records[position] = result
    suspects = [i for i, r in enumerate(records) if isinstance(r, cluster.Killed)]
    if len(suspects) > 1:
        # A task dies with the worker it shares with a killer: each suspect gets another try on its own.
        for i in suspects:
            ((_, records[i]),) = cluster.completed([tasks[i]], session, progress=False)
    for position, result in enumerate(records):
        if isinstance(result, cluster.Killed):
            source = sources[position]
            log.warning("scip: image %s killed %d workers; skipped", source.image_id, result.workers)
            result = [ImageRecord(source, p.dataset.channels,
                                  status=skipped(*_killed_reason(source, result), kind="killed the worker"))]
        records[position] = result
    return graph._write([r for image in records for r in image], index, str(cells_dir), p.columns, str(progress_dir))


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
        }
    return summary


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _write_skipped(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SKIPPED_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["index"], str(r["label"]))))
