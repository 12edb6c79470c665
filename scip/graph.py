"""The graph builder: composes the steps into a lazy Dask graph.

This module and :mod:`scip.cluster` are the only ones that import Dask.
Nothing here reads pixels: building a graph lists the images (metadata
only) and wires steps; pixels are read when the graph is computed, one
partition of images per task.

The flow of one partition::

    sources ─ load (+ ground truth) ─ check ─ segment (+ evaluate) ─ cells ─ [masks] ─ features ─ write
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import dask.bag as db
import dask.dataframe as dd
from dask import delayed

from scip.accounting import PartitionSummary, summarize
from scip.config import Config
from scip.io import Dataset, ReadSpec, open_dataset, read_images
from scip.io.ground_truth import attach_truth
from scip.io.parquet import arrow_schema, write_part
from scip.records import CellRecord, ImageRecord, Source
from scip.steps.cells import split_cells
from scip.steps.check import check_image
from scip.steps.evaluate import evaluate_image
from scip.steps.export import cells_frame, table_columns
from scip.steps.features import featurize_cells
from scip.steps.masks import add_masks
from scip.steps.segment import segment_image

__all__ = ["Plan", "plan", "build_cells", "build_dataframe", "build_writes", "partition_size"]


@dataclass(frozen=True)
class Plan:
    """Everything the graph needs that is known before computing: config, images, columns."""

    config: Config
    dataset: Dataset
    columns: dict[str, str]


def plan(config: Config, dataset: Dataset | None = None) -> Plan:
    """List the images and fix the output columns; reads no pixels."""
    dataset = dataset if dataset is not None else open_dataset(config.input)
    fields = {k for s in dataset.sources for k in s.fields}
    columns = table_columns(dataset.channels, fields, config.mask_names, tuple(config.features.families),
                            evaluated=config.evaluate is not None, params=config.features.params())
    return Plan(config, dataset, columns)


def partition_size(images_per_partition: int, chunk_size: int) -> int:
    """Images per partition, rounded up to whole storage chunks so no chunk is read twice."""
    if chunk_size <= 1:
        return images_per_partition
    return math.ceil(images_per_partition / chunk_size) * chunk_size


def _load(sources: list[Source], reader: ReadSpec, truth: str | None) -> list[ImageRecord]:
    start = time.perf_counter()
    records = read_images(reader, list(sources))
    share = (time.perf_counter() - start) / max(len(records), 1)
    records = [r.with_(timings={**r.timings, "load": share}) for r in records]
    if truth is not None:
        records = attach_truth(records, truth)
    return [check_image(r) for r in records]


def _segment(records: list[ImageRecord], config: Config) -> list[ImageRecord]:
    out = [segment_image(r, config.segment) for r in records]
    if config.evaluate is not None:
        out = [evaluate_image(r, config.segment.name, config.evaluate.iou) for r in out]
    return out


def _cells(records: list[ImageRecord], config: Config) -> list[ImageRecord | CellRecord]:
    out: list[ImageRecord | CellRecord] = []
    for r in records:
        out.extend(split_cells(r, config.segment.name, config.cells.padding, config.segment.remove_border))
    return out


def _masks(records: list[ImageRecord | CellRecord], config: Config) -> list[ImageRecord | CellRecord]:
    return [add_masks(r, config.segment.name, config.masks) for r in records]


def _features(records: list[ImageRecord | CellRecord], config: Config) -> list[ImageRecord | CellRecord]:
    return featurize_cells(records, config.segment.name, config.mask_names, tuple(config.features.families),
                           config.features.params())


def build_cells(p: Plan) -> db.Bag:
    """Lazy bag of records after feature extraction.

    Each image contributes its (pixel-free) image record, then one record
    per cell found, with features for the cells that made it.
    """
    config, dataset = p.config, p.dataset
    size = partition_size(config.input.images_per_partition, dataset.chunk_size)
    truth = config.evaluate.labels if config.evaluate is not None else None
    bag = db.from_sequence(dataset.sources, partition_size=size)
    bag = bag.map_partitions(_load, dataset.reader, truth)
    bag = bag.map_partitions(_segment, config)
    bag = bag.map_partitions(_cells, config)
    if config.masks:
        bag = bag.map_partitions(_masks, config)
    return bag.map_partitions(_features, config)


def build_dataframe(p: Plan) -> dd.DataFrame:
    """Lazy Dask DataFrame of the exported cells, one partition per image partition."""
    meta = cells_frame([], p.columns)
    parts = [delayed(cells_frame)(part, p.columns) for part in build_cells(p).to_delayed()]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def _write(records: list, index: int, directory: str, columns: dict[str, str]) -> PartitionSummary:
    start = time.perf_counter()
    frame = cells_frame(records, columns)
    write_part(frame, Path(directory) / f"part-{index:05d}.parquet", arrow_schema(columns))
    summary = summarize(records)
    summary.timings["export"] += time.perf_counter() - start
    return summary


def build_writes(p: Plan, directory: str | Path) -> list:
    """One delayed task per partition that writes its parquet part and returns its summary."""
    return [delayed(_write)(part, i, str(directory), p.columns) for i, part in enumerate(build_cells(p).to_delayed())]
