"""The graph builder: composes the steps into a lazy Dask graph.

Part of :mod:`scip.engine`, the only package that imports Dask.
Nothing here reads pixels: building a graph lists the images (metadata
only) and wires steps; pixels are read when the graph is computed, one
partition of images per task.

The flow of one partition::

    sources ─ load (+ ground truth) ─ [project z] ─ [illumination] ─ check ─ segment (+ evaluate)
            ─ cells ─ [masks] ─ [filter measures] ══ [persist; reductions] ══ [filters] ─ features ─ write

The steps of a partition that run on the same kind of worker share one
task, named for its main step (the task-stream timings of ``run.json`` rest
on these names: :data:`STEPS`): ``segment`` (read, segment), ``cells``
(split into cells, masks, label images, filter measures), ``featurize``
(filters, features) and ``write``. Fewer tasks cost the scheduler less, and
no intermediate result waits in a worker's memory between steps. Tasks carry
the resources of :class:`scip.engine.cluster.Routing`: segmentation asks for
a GPU worker, the steps after it for a CPU worker. The graph is computed
unoptimized, because Dask's fusing would drop those annotations.

Dataset-wide reductions split the work into passes, which :mod:`scip.run`
drives: illumination correction needs the mean image of every group before
any image is corrected (:func:`build_illumination_sums`: pass 1 over the
input); filters and normalization need the measures and pixel quantiles of
all cells before features (:func:`build_cells` is persisted, the reductions
run over the persisted cells, and :func:`build_writes` continues from them:
no second read of the input).
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Sequence
from pathlib import Path

import dask.bag as db
import numpy as np
from dask import delayed

from scip.accounting import PartitionSummary, summarize
from scip.engine import tiles
from scip.engine.cluster import Routing
from scip.engine.tasks import annotate
from scip.config import Config
from scip.io import Dataset, ReadSpec, open_dataset, read_images
from scip.io.ground_truth import attach_truth
from scip.io.limits import ImageBudget, image_budget
from scip.io.manifest import save_partition, summary_name
from scip.io.parquet import arrow_schema, part_table, write_part
from scip.records import CellRecord, ImageRecord, Source, skipped
from scip.steps.cells import split_cells
from scip.steps.check import check_image
from scip.steps.evaluate import evaluate_image
from scip.steps.export import add_polygons, cells_frame, table_columns
from scip.steps.labels import write_image_labels
from scip.io.labels import LABELS
from scip.io.zarr_image import physical_size
from scip.reduce import filters as cell_filters
from scip.reduce import illumination
from scip.steps.features import featurize_cells
from scip.steps.project import STITCH, project_z
from scip.steps.masks import add_masks
from scip.steps.segment import segment_image
from scip.steps.micronuclei import COUNT as MICRONUCLEUS_COUNT, LABELS as MICRONUCLEI, attach_counts, find_micronuclei

__all__ = ["Plan", "plan", "build_illumination_sums", "build_cells", "build_features", "build_dataframe",
           "build_writes", "partition_size", "partitions", "STEPS", "summary_path", "labels_root"]

#: The step each task belongs to, by its function name (``dask.utils.key_split`` of its key).
#: A task may hold several steps (:func:`build_cells`): ``segment`` also reads the images, ``cells`` also makes
#: the masks, writes the label images and takes the filter measures, ``featurize`` also applies the filters.
STEPS = {**tiles.STEPS, "from_sequence": "load", "illumination_sums": "illumination", "segment": "segment",
         "cells": "cells", "featurize": "features", "write": "export", "cells_frame": "export"}


@dataclass(frozen=True)
class Plan:
    """Everything the graph needs that is known before computing: config, images, columns.

    ``budget`` is the most bytes one decoded image may take (``None``: no
    limit): ``input.max_image_bytes`` when it is a number; with ``auto``,
    :func:`scip.run.run` sets it from the workers' memory once they are up.
    ``excluded``: images found to kill the workers that read them, as
    ``(source index, step, reason)``; they become skipped records without
    being read again.
    """

    config: Config
    dataset: Dataset
    columns: dict[str, str]
    budget: ImageBudget | None = None
    excluded: tuple[tuple[int, str, str], ...] = ()
    #: The images read in tiles (:class:`scip.engine.tiles.TiledImage`); their partitions follow the others'.
    tiled: tuple = ()


def plan(config: Config, dataset: Dataset | None = None) -> Plan:
    """List the images and fix the output columns; reads no pixels."""
    dataset = dataset if dataset is not None else open_dataset(config.input)
    fields = {k for s in dataset.sources for k in s.fields}
    columns = table_columns(dataset.channels, fields, config.mask_names, tuple(config.features.families),
                            evaluated=config.evaluate is not None, params=config.features.params(),
                            polygons=config.output.polygons,
                            micrometres=any(s.pixel_size for s in dataset.sources),
                            micronuclei=config.micronuclei is not None)
    setting = config.input.max_image_bytes
    return Plan(config, dataset, columns, image_budget(setting, None) if setting != "auto" else None)


def _reader(p: Plan) -> ReadSpec:
    """What a load task needs to read its images, with the run's per-image budget and missing-chunk policy."""
    return replace(p.dataset.reader, budget=p.budget, missing_chunks=p.config.input.missing_chunks)


def partition_size(images_per_partition: int, chunk_size: int) -> int:
    """Images per partition, rounded up to whole storage chunks so no chunk is read twice."""
    if chunk_size <= 1:
        return images_per_partition
    return math.ceil(images_per_partition / chunk_size) * chunk_size


def _whole(p: Plan) -> list[Source]:
    """The images read whole (not in tiles)."""
    tiled = {t.job.source.index for t in p.tiled}
    return [s for s in p.dataset.sources if s.index not in tiled]


def partitions(p: Plan) -> list[list[Source]]:
    """The images of each partition read whole, in order: what ``part-<index>`` holds (tile partitions follow)."""
    size = partition_size(p.config.input.images_per_partition, p.dataset.chunk_size)
    sources = _whole(p)
    return [sources[i:i + size] for i in range(0, len(sources), size)]


def _read(sources: list[Source], reader: ReadSpec, z: str | int | None,
          excluded: tuple[tuple[int, str, str], ...] = ()) -> list[ImageRecord]:
    start = time.perf_counter()
    skip = {index: (step, reason) for index, step, reason in excluded}
    records = read_images(reader, [s for s in sources if s.index not in skip])
    share = (time.perf_counter() - start) / max(len(records), 1)
    records = iter([project_z(r.with_(timings={**r.timings, "load": share}), z) for r in records])
    return [ImageRecord(s, reader.channels, status=skipped(*skip[s.index], kind="killed the worker"))
            if s.index in skip else next(records) for s in sources]


def _correct(record: ImageRecord, fields: dict, field_channels: list[str], group_by: tuple[str, ...]) -> ImageRecord:
    if not record.status:
        return record
    start = time.perf_counter()
    try:
        key = illumination.group_key(record.source.fields, group_by, record.source.image_id)
        field = illumination.field_for(fields, key, record.channels, field_channels=field_channels)
        pixels = illumination.correct(record.pixels, field)
    except illumination.IlluminationError as e:
        return record.with_(status=skipped("illumination", str(e)))
    return record.with_(pixels=pixels, timings={**record.timings, "illumination": time.perf_counter() - start})


def _load(sources: list[Source], reader: ReadSpec, truth: str | None, z: str | int | None,
          correction: tuple[dict, list[str]] | None, group_by: tuple[str, ...],
          excluded: tuple[tuple[int, str, str], ...] = ()) -> list[ImageRecord]:
    records = _read(sources, reader, z, excluded)
    if correction is not None:
        records = [_correct(r, *correction, group_by) for r in records]
    if truth is not None:
        records = attach_truth(records, truth)
    return [check_image(r, stack=z == STITCH) for r in records]


def _illumination_sums(sources: list[Source], reader: ReadSpec, z: str | int | None,
                       group_by: tuple[str, ...], excluded: tuple[tuple[int, str, str], ...] = ()) -> dict:
    records = [r for r in _read(sources, reader, z, excluded) if r.status]
    return illumination.sums_by_group(records, group_by)


def _source_bag(sources: list[Source], size: int) -> db.Bag:
    """``dask.bag.from_sequence(sources, partition_size=size)``, named by a hash of the sources' text.

    Dask's own name tokenized every Source dataclass field by field: 0.3 s of
    driver time for 5,000 images before the first task could start. The
    name still follows the content (a dataclass's repr shows every field), so
    equal sources give equal keys and different ones different keys.
    """
    name = "from_sequence-" + hashlib.sha1(repr((size, list(sources))).encode()).hexdigest()
    parts = [list(sources[i:i + size]) for i in range(0, len(sources), size)] or [[]]
    return db.Bag({(name, i): part for i, part in enumerate(parts)}, name, len(parts))


def build_illumination_sums(p: Plan) -> list:
    """One delayed task per partition: the per-group sum images (pass 1 over the input)."""
    config, dataset = p.config, p.dataset
    size = partition_size(config.input.images_per_partition, dataset.chunk_size)
    bag = _source_bag(list(dataset.sources), size)
    group_by = tuple(config.illumination.group_by)
    return [delayed(_illumination_sums)(part, _reader(p), config.input.z, group_by, p.excluded)
            for part in bag.to_delayed(optimize_graph=False)]


def _segment(records: list[ImageRecord], config: Config) -> list[ImageRecord]:
    out = [segment_image(r, config.segment) for r in records]
    if config.evaluate is not None:
        out = [evaluate_image(r, config.segment.name, config.evaluate.iou) for r in out]
    if config.micronuclei is not None:
        out = [find_micronuclei(r, config.micronuclei, config.segment.name, config.segment.channel) for r in out]
    return out


def _cells(records: list[ImageRecord], config: Config) -> list[ImageRecord | CellRecord]:
    out: list[ImageRecord | CellRecord] = []
    for r in records:
        parts = split_cells(r, config.segment.name, config.cells.padding, config.segment.remove_border,
                            keep_labels=config.output.labels)
        out.extend(attach_counts(r, parts) if config.micronuclei is not None else parts)
    if config.output.polygons:
        out = add_polygons(out, config.segment.name)
    return out


def _masks(records: list[ImageRecord | CellRecord], config: Config) -> list[ImageRecord | CellRecord]:
    return [add_masks(r, config.segment.name, config.masks) for r in records]


def labels_root(config: Config) -> Path:
    """Where a run writes its label images (``output.labels``): ``labels.zarr`` in the output folder."""
    return Path(config.output.path).resolve() / LABELS


def _labels(records: list[ImageRecord | CellRecord], config: Config, physical: bool,
            owners: dict | None = None) -> list[ImageRecord | CellRecord]:
    if owners:  # cells of images read in tiles: their extra masks are assembled chunk by chunk at the end
        tiles.stash_tile_masks(records, owners, tuple(config.mask_names[1:]))
    return write_image_labels(records, labels_root(config), config.segment.name, config.mask_names[1:],
                              chunk=config.tiles.size, pyramid_levels=config.output.pyramid_levels,
                              physical=physical_size if physical else None,
                              extra=(MICRONUCLEI,) if config.micronuclei is not None else ())


def _measure(records: list[ImageRecord | CellRecord], config: Config) -> list[ImageRecord | CellRecord]:
    out = []
    for r in records:
        start = time.perf_counter()
        r = cell_filters.measure_cell(r, config.filters, config.segment.name)
        if isinstance(r, CellRecord):
            r = r.with_(timings={**r.timings, "filter": r.timings.get("filter", 0.0) + time.perf_counter() - start})
        out.append(r)
    return out


def _pick_samples(records: list[ImageRecord | CellRecord], k: int, cell_mask: str) -> list[ImageRecord | CellRecord]:
    """Keep a copy of the crops of up to ``k`` random ok cells, for the report's montage."""
    ok = [i for i, r in enumerate(records) if isinstance(r, CellRecord) and r.status and r.pixels is not None]
    if not ok or k <= 0:
        return records
    # Seeded by the partition's content, so a rerun picks the same cells.
    first = records[ok[0]]
    rng = np.random.default_rng(zlib.crc32(f"{first.source.image_id}:{first.label}".encode()))
    out = list(records)
    picked = rng.choice(ok, size=min(k, len(ok)), replace=False)
    for i in picked:
        out[i] = records[i].with_(sample=_sample(records[i], cell_mask))
    # Micronucleated cells are few: a random pick would leave the report's micronucleus montage nearly empty.
    chosen = set(picked.tolist())
    micronucleated = [i for i in ok if i not in chosen and records[i].features.get(MICRONUCLEUS_COUNT, 0) > 0]
    for i in rng.choice(micronucleated, size=min(k, len(micronucleated)), replace=False) if micronucleated else ():
        out[i] = records[i].with_(sample={**_sample(records[i], cell_mask), "extra": "micronuclei"})
    return out


def _sample(r: CellRecord, cell_mask: str) -> dict:
    """A cell's crop and mask for the report (and its micronuclei, when the run counts them)."""
    crop, mask = r.pixels, r.masks[cell_mask]
    if crop.ndim == 4:  # a 3-D object is shown as its maximum projection over its planes
        crop, mask = crop.max(axis=1), mask.any(axis=0)
    sample = {"crop": crop.astype(np.float32), "mask": mask.copy()}
    if MICRONUCLEUS_COUNT in r.features and MICRONUCLEI in r.masks:
        sample.update(micronuclei=r.masks[MICRONUCLEI].copy(), micronucleus_count=int(r.features[MICRONUCLEUS_COUNT]))
    return sample


def _filter(records: list[ImageRecord | CellRecord], config: Config, bounds: list | None) -> list[ImageRecord | CellRecord]:
    return [cell_filters.apply_filters(r, config.filters, bounds) for r in records]


def _featurize(records: list[ImageRecord | CellRecord], config: Config, ranges: dict | None,
               samples: int = 0) -> list[ImageRecord | CellRecord]:
    records = _pick_samples(records, samples, config.segment.name)
    group_by = tuple(config.normalize.group_by) if config.normalize is not None else ()
    return featurize_cells(records, config.segment.name, config.mask_names, tuple(config.features.families),
                           config.features.params(), ranges=ranges, range_group_by=group_by)


def build_cells(p: Plan, correction: tuple[dict, list[str]] | None = None, routing: Routing = Routing()) -> db.Bag:
    """Lazy bag of records up to the filters: images read, segmented, split into cells.

    Each image contributes its (pixel-free) image record, then one record per
    cell found, with its crop, masks and (when filters are configured) the
    filters' measures. ``correction`` is the illumination flat fields by
    group and the channel names of their planes; ``routing`` the resources
    the tasks ask for.
    """
    config, dataset = p.config, p.dataset
    size = partition_size(config.input.images_per_partition, dataset.chunk_size)
    truth = config.evaluate.labels if config.evaluate is not None else None
    group_by = tuple(config.illumination.group_by) if config.illumination is not None else ()
    whole = _whole(p)
    tiled = tiles.build_tile_bag(config, p.tiled, Path(config.output.path), routing, dataset.sources)
    bag = _source_bag(whole, size) if whole or tiled is None else None
    after: list[tuple] = []   # the steps after the split into cells, for whole and tiled images alike
    if config.masks:
        after.append((_masks, (config,)))
    if config.output.labels:
        owners = tiles.mask_owners(p.tiled) if config.masks else {}
        after.append((_labels, (config, dataset.format == "ome_zarr", owners)))
    if config.filters:
        after.append((_measure, (config,)))
    if bag is not None:
        load = (_load, (_reader(p), truth, config.input.z, correction, group_by, p.excluded))
        with annotate(routing.segment):
            bag = bag.map_partitions(_steps, (load, (_segment, (config,))), token="segment")
    with annotate(routing.cpu):
        if bag is not None:
            bag = bag.map_partitions(_steps, ((_cells, (config,)), *after), token="cells")
        if tiled is not None and after:
            # Tiled images' partitions come segmented and split into cells; the steps after are the same.
            tiled = tiled.map_partitions(_steps, tuple(after), token="cells")
    return tiled if bag is None else bag if tiled is None else db.concat([bag, tiled])


def _steps(records: list, steps: tuple[tuple[Callable, tuple], ...]) -> list:
    """``steps`` (each a function of the records and its arguments) applied in turn to one partition, in one task."""
    for func, args in steps:
        records = func(records, *args)
    return records


def build_features(p: Plan, cells: db.Bag | None = None, bounds: list | None = None,
                   ranges: dict | None = None, samples: int = 0, routing: Routing = Routing()) -> db.Bag:
    """Lazy bag of records after filters and feature extraction.

    ``cells`` is :func:`build_cells`' bag (possibly persisted); ``bounds`` the
    filters' ``(min, max)`` thresholds and ``ranges`` the normalization
    bounds by group, both decided over the whole dataset beforehand.
    """
    config = p.config
    if config.filters and bounds is None:
        raise ValueError("filters need thresholds decided over the whole dataset: use scip.run, or "
                         "scip.engine.reduce.reduce(plan) for the bounds to pass here")
    if config.normalize is not None and ranges is None:
        raise ValueError("normalize needs quantiles over the whole dataset: use scip.run, or "
                         "scip.engine.reduce.reduce(plan) for the ranges to pass here")
    cells = build_cells(p, routing=routing) if cells is None else cells
    steps = ((_filter, (config, bounds)),) if config.filters else ()
    with annotate(routing.cpu):
        return cells.map_partitions(_steps, (*steps, (_featurize, (config, ranges, samples))), token="featurize")


def build_dataframe(p: Plan, cells: db.Bag | None = None, bounds: list | None = None,
                    ranges: dict | None = None):
    """Lazy Dask DataFrame of the exported cells, one partition per image partition."""
    # Imported here, not with the module: the workers unpickle every task function from this module, and
    # dask.dataframe (with dask.array) took about 0.5 s of each new worker's start, before its first partition.
    import dask.dataframe as dd

    meta = cells_frame([], p.columns)
    parts = [delayed(cells_frame)(part, p.columns)
             for part in build_features(p, cells, bounds, ranges).to_delayed(optimize_graph=False)]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def summary_path(directory: str | Path, index: int) -> Path:
    """Where partition ``index``'s summary (JSON) is kept in the ``progress`` folder ``directory``."""
    return Path(directory) / Path(summary_name(index)).name


def _write(records: list, index: int, directory: str, columns: dict[str, str],
           progress: str | None, report_columns: tuple[str, ...] = ()) -> PartitionSummary:
    start = time.perf_counter()
    frame = cells_frame(records, columns)
    part = write_part(frame, Path(directory) / f"part-{index:05d}.parquet", arrow_schema(columns))
    summary = summarize(records)
    kept = {c: columns[c] for c in report_columns if c in columns}
    if kept:
        # The few columns the report draws travel back with the summary: the driver need not open every part again.
        summary.report_table = part_table(frame, arrow_schema(kept))
    summary.timings["export"] += time.perf_counter() - start
    if progress is not None:
        # After the part, with its size and checksum: what --resume verifies before trusting the part.
        save_partition(progress, index, part, summary)
    return summary


def build_writes(p: Plan, directory: str | Path, cells: db.Bag | None = None, bounds: list | None = None,
                 ranges: dict | None = None, samples: int = 0, routing: Routing = Routing(),
                 progress: str | Path | None = None, report_columns: Sequence[str] = ()) -> list:
    """One delayed task per partition that writes its parquet part and returns its summary.

    ``samples``: cells per partition whose crops travel back in the summary,
    for the report. ``progress``: a folder where each partition's summary is
    also saved (after its part, as JSON with the part's row count, size and
    SHA-256; the sampled crops beside it in ``.npz``), which is what
    ``--resume`` reads and verifies. ``report_columns``: table columns whose
    values travel back in the summary too (its ``report_table``; those not in
    the table are left out). Compute
    only the tasks of the partitions you need: the others are not computed.
    """
    bag = build_features(p, cells, bounds, ranges, samples, routing)
    # The column list (hundreds of entries) travels inside the function, neither walked and hashed by Dask for
    # each partition (seconds of driver time) nor a task of its own: as a task, its sizeof (~270 KB, more than a
    # partition's features by Dask's estimate) drew the writes to the worker that held it, and the features
    # were sent after them.
    write = partial(_write, directory=str(directory), columns=p.columns,
                    progress=str(progress) if progress is not None else None, report_columns=tuple(report_columns))
    with annotate(routing.cpu):
        return [delayed(write, pure=False)(part, i) for i, part in enumerate(bag.to_delayed(optimize_graph=False))]
