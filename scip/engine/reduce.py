"""The driver of the dataset-wide reductions: what the whole dataset decides before features.

Illumination correction reads the input once for the per-group mean images
(pass 1); filters and normalization look at every cell: the cells are built
once, persisted on the workers, and the thresholds and exact quantiles are
computed over them in a few rounds of small per-partition summaries
(:mod:`scip.reduce` holds the pure summarize / merge / decide functions).
Images that kill the workers reading them are found image by image and set
aside (``Plan.excluded``), so one bad file does not stop the reductions.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scip.config import ConfigError
from scip.engine import cluster, graph, tiles
from scip.failures import RunFailed
from scip.io.manifest import reductions_from_json
from scip.records import CellRecord
from scip.reduce import filters as cell_filters
from scip.reduce import illumination
from scip.reduce.quantiles import QuantileSearch

log = logging.getLogger("scip")

__all__ = ["Reductions", "reduce", "REDUCE_STEPS", "load_illumination", "one_image_plan", "killed_reason"]


@dataclass
class Reductions:
    """What the dataset-wide reductions decided, and the cells they were decided on.

    Attributes
    ----------
    correction : (dict, list of str) or None
        Illumination flat fields by group (``scip.reduce.illumination``) and
        the channel names of their planes.
    cells : dask.bag.Bag
        :func:`scip.engine.graph.build_cells`, persisted when filters or
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
        for index, part in cluster.completed(graph.build_illumination_sums(p), session, progress=progress,
                                              label="illumination"):
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
    :func:`scip.engine.graph.build_writes` or :func:`scip.engine.graph.build_dataframe`.

    ``client`` is a :class:`scip.engine.cluster.Session`, a ``distributed.Client`` or
    ``None`` (in-process). ``decided``: reductions an earlier, interrupted
    run already decided (from its manifest); they are used as they are.
    """
    session = _as_session(client)
    config = p.config
    if config.illumination is not None and config.illumination.reuse is not None and saved is None:
        saved = load_illumination(config.illumination.reuse)
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
        cells = cluster.persist(cells, session, progress=progress, label="cells")
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
        cells = cluster.persist(graph.build_cells(p, correction, session.routing), session, progress=progress,
                                label="cells (again, without the images set aside)")
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
    one_by_one = [task_of(one_image_plan(p, s)) for s in sources]
    found = [(sources[position].index, *killed_reason(sources[position], result))
             for position, result in cluster.completed(one_by_one, session, progress=False)
             if isinstance(result, cluster.Killed)]
    if not found:
        raise RunFailed(f"partition {index} ({', '.join(s.image_id for s in sources)}) killed {how.workers} "
                        "workers, but none of its images does alone: give the workers more memory "
                        "(--memory-limit) or lower input.images_per_partition, then --resume")
    return found


def one_image_plan(p: graph.Plan, source) -> graph.Plan:
    """``p`` restricted to one image, for finding the image that kills workers."""
    return dataclasses.replace(p, dataset=dataclasses.replace(p.dataset, sources=(source,)))


def killed_reason(source, killed: cluster.Killed) -> tuple[str, str]:
    """Step and ``skipped.csv`` reason of an image that killed ``killed.workers`` workers on its own."""
    where = ", ".join(str(x) for x in source.paths if x) or source.image_id
    times = f"{killed.workers} time{'s' if killed.workers > 1 else ''}"
    return (graph.STEPS.get(killed.task, killed.task),
            f"{where} killed the worker {times}; likely more memory than a worker has "
            f"(memory_limit {killed.memory_limit})")


def load_illumination(path: Path) -> tuple[dict, dict]:
    try:
        return illumination.load(path)
    except illumination.IlluminationError as e:
        raise ConfigError(f"illumination.reuse: {e}") from None


#: Steps of the reductions' own tasks, by function name (with :data:`scip.engine.graph.STEPS`).
REDUCE_STEPS = {"measures_of": "reduce", "groups_of": "reduce", "partials_of": "reduce"}
