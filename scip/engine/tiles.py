"""Images read in tiles inside ``scip run``: statistics, pass 1, offsets, and pass 2 as Bag partitions.

An image chosen by :func:`scip.steps.tiles.choose_tiled` is not read whole.
Per tiled image, in bounded memory per task (a window, never the image):

0. **statistics** (``tiles.statistics: image``, for methods that read a
   statistic of the whole image): per tile, a summary of the core's values,
   merged in a tree, turned into a fixed ``level`` / ``norm_range``
   (:mod:`scip.segment.image_statistics`), so tiles agree with a whole-image
   segmentation; then, for ``unet`` with its shape-gated split/merge, the
   median area of the objects of up to :data:`AREA_TILES` windows segmented
   without it (``median_area``);
1. **segment** (pass 1, on ``routing.segment``): segment a tile's window,
   decide which objects the tile owns (:func:`scip.segment.tiling.segment_window`),
   store the window's labels in a scratch zarr under the output folder
   (``.tiles/<image>.zarr``, one chunk per tile); counts come back;
2. the driver turns the counts into label offsets (:class:`TiledImage`);
3. **cells** (pass 2, on ``routing.cpu``): one Bag partition per group of
   tiles (``tiles.per_partition``... see :data:`TILES_PER_PARTITION`), whose
   records are the tiles' cells (:func:`scip.steps.tiles.tile_records`, with
   global labels and image coordinates) and, in the image's first tile, its
   one pixel-free image record. The partitions are concatenated after the
   whole images' partitions, so masks, filter measures, reductions,
   filters, features and the writer are the same code for both. With
   ``output.labels`` the task also writes the label chunks of its tiles'
   cores into ``labels.zarr/<key>/labels/<name>/0``; each chunk is written
   by exactly one task;
4. **pyramid** (after the last partition): the downsampled levels and the
   NGFF metadata of each tiled image's label image.

The decision and the per-tile counts are recorded in ``manifest.json``
(:func:`to_json`), so ``--resume`` tiles the same images, recomputes pass 1
only for images with partitions left, and checks it gives the same counts.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from scip.config import Config, ConfigError
from scip.failures import RunFailed
from scip.records import EXPECTED, CellRecord, Source, failed, skipped
from scip.segment.image_statistics import image_statistic
from scip.engine.tasks import task as _task
from scip.io import labels as labels_io
from scip.io import ngff
from scip.io.zarr_image import physical_size
from scip.segment.tiling import Tiling, assemble_core, segment_window
from scip.steps.segment import segment_positions
from scip.io.manifest import summarize_changes, write_manifest
from scip.steps.export import add_polygons
from scip.steps.tiles import (WindowReader, choose_tiled, tile_partitions, tile_records, tiled_image_record,
                              window_reader)

__all__ = ["TileJob", "TiledImage", "plan_tiles", "run_statistics", "run_pass1", "build_tile_bag", "partitions",
           "write_pyramids", "write_mask_labels", "mask_owners", "stash_tile_masks", "to_json", "from_json", "report", "known_early", "decide", "recorded", "all_partitions",
           "segment", "remove_scratch", "SCRATCH", "TILES_PER_PARTITION", "STEPS"]

log = logging.getLogger("scip")

#: Scratch folder (pass 1 labels) in the output folder; removed once the run is complete.
SCRATCH = ".tiles"
#: Tiles per Bag partition (and per ``part-N.parquet``) of a tiled image.
TILES_PER_PARTITION = 4
#: Most windows whose objects give a tiled image's median object area (``unet``'s split/merge): every window of
#: an image with at most this many tiles, so the figure equals the whole image's; else this many spread over it,
#: each segmented twice (here without split/merge, then in pass 1).
AREA_TILES = 16
#: Steps of the tile tasks, by function name (with :data:`scip.graph.STEPS`).
STEPS = {"tile_statistics": "segment", "tile_merge": "segment", "tile_areas": "segment", "tile_concat": "segment",
         "tile_segment": "segment", "tile_cells": "cells",
         "tile_pyramid": "labels", "tile_mask_chunk": "labels"}


@dataclass(frozen=True)
class TileJob:
    """What every task of one tiled image needs: small and picklable."""

    source: Source
    channels: tuple[str, ...]
    reader: WindowReader
    tiling: Tiling
    segment_channels: tuple[int, ...]
    multichannel: bool
    method: str
    params: dict
    scratch: str
    key: str


@dataclass(frozen=True)
class TiledImage:
    """One tiled image: its job, its tile partitions and, after pass 1, its per-tile counts.

    Attributes
    ----------
    job : TileJob
    groups : tuple of tuple of (int, int)
        The tiles of each of the image's partitions, in raster order.
    owned : tuple of int or None
        Objects owned by each tile (raster order); ``None`` before pass 1.
    counts : dict
        ``found``, ``cut`` (owned objects touching a window's cut edge),
        ``seconds`` (pass 1, summed over tiles).
    statistics : dict
        The image-wide parameters the windows used (``level``, ``norm_range``).
    failure : tuple or None
        ``(kind, message, traceback)`` when pass 1 failed on a tile, or
        (``load``) when chunks of the image are missing from its store: the
        image is then a skipped (``skip``, ``killed``, ``load``) or error
        (``error``) record.
    """

    job: TileJob
    groups: tuple[tuple[tuple[int, int], ...], ...]
    owned: tuple[int, ...] | None = None
    counts: dict = dataclasses.field(default_factory=dict)
    statistics: dict = dataclasses.field(default_factory=dict)
    failure: tuple | None = None

    @property
    def total(self) -> int:
        """Objects owned by all tiles."""
        return int(sum(self.owned or ()))

    @property
    def dtype(self) -> str:
        """Label dtype: ``uint32``, or ``uint64`` past 4,294,967,294 objects."""
        return "uint32" if self.total < np.iinfo(np.uint32).max else "uint64"

    def offsets(self) -> dict[tuple[int, int], int]:
        """Global label of each tile's object 1, minus one."""
        out, total = {}, 0
        for tile, n in zip(self.job.tiling.tiles(), self.owned or ()):
            out[tile] = total
            total += n
        return out


def plan_tiles(config: Config, dataset, indices: tuple[int, ...], out: Path,
               readers: dict[int, WindowReader] | None = None) -> tuple[TiledImage, ...]:
    """The tiled images of a run, before any pass: tiling, tile partitions, what the tasks need.

    Raises
    ------
    ConfigError
        Illumination correction with a tiled image (it needs the whole
        image's mean), naming the image.
    """
    if not indices:
        return ()
    by_index = {s.index: s for s in dataset.sources}
    if config.illumination is not None:
        first = by_index[indices[0]]
        raise ConfigError(f"illumination: image {first.image_id} ({', '.join(p for p in first.paths if p)}) is read "
                          f"in tiles ({len(indices)} image(s) are), and illumination correction needs whole images; "
                          "remove the illumination section, or set tiles.mode: never with a larger "
                          "input.max_image_bytes")
    tiles_cfg, seg = config.tiles, config.segment
    positions = tuple(segment_positions(dataset.channels, seg.channel))
    out_images = []
    for index in indices:
        source = by_index[index]
        reader = (readers or {}).get(index) or window_reader(dataset, source, config.input.z)
        tiling = Tiling(reader.shape, tiles_cfg.size, tiles_cfg.margin_px)
        params = seg.method_params()
        if seg.method == "unet" and params.get("tile", 0) < tiling.frame:
            # The image is already tiled: the U-Net's own tiling would cut each window again, where a whole
            # image is not cut. One forward pass per window (side rounded up to the network's 16).
            params["tile"] = -(-tiling.frame // 16) * 16
        key = ngff.image_key(source.image_id)
        job = TileJob(source, dataset.channels, reader, tiling, positions, isinstance(seg.channel, list), seg.method,
                      params, str(Path(out) / SCRATCH / f"{key}.zarr"), key)
        groups = tuple(tuple(g) for g in tile_partitions(tiling.tiles(), TILES_PER_PARTITION))
        missing = reader.missing_chunks() if config.input.missing_chunks == "skip" else None
        if missing:
            # Skipped before any pass, as a whole image would be when read: no statistics, no tiles segmented.
            log.warning("scip: %s is skipped: %s", source.image_id, missing)
            out_images.append(TiledImage(job, groups, owned=(0,) * len(tiling.tiles()), failure=("load", missing, "")))
            continue
        out_images.append(TiledImage(job, groups))
    return tuple(out_images)


def partitions(tiled: tuple[TiledImage, ...]) -> list[list[Source]]:
    """The sources of each tile partition, in order (one image each), after the whole images' partitions."""
    return [[t.job.source] for t in tiled for _ in t.groups]


# ---- pass 0: image-wide statistics -------------------------------------------------------------------------------

def _segment_input(job: TileJob, pixels: np.ndarray) -> np.ndarray:
    """The window's pixels as the segmentation method takes them (as :func:`scip.steps.segment.segment_image`)."""
    chosen = pixels[list(job.segment_channels)] if job.multichannel else pixels[job.segment_channels[0]]
    return chosen.astype(np.float32)


def _core_values(job: TileJob, stat, row: int, col: int) -> np.ndarray:
    tiling = job.tiling
    wy0, wy1, wx0, wx1 = tiling.window(row, col)
    image = _segment_input(job, job.reader.read(wy0, wy1, wx0, wx1))
    values = stat.transform(image if image.ndim == 3 else image[None])
    y0, y1, x0, x1 = tiling.core(row, col)
    return values[:, y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]


def tile_statistics(job: TileJob, stat, ranges, row: int, col: int):
    """One tile's summary: of its core's range (``ranges`` None), else its histogram over ``ranges``."""
    values = _core_values(job, stat, row, col)
    return stat.summarize_range(values) if ranges is None else stat.summarize_histogram(values, ranges)


def tile_merge(*summaries):
    """Merge summaries (associative)."""
    merged = summaries[0]
    for other in summaries[1:]:
        merged = merged.merge(other)
    return merged


def _segment_tile(job: TileJob, row: int, col: int, **params):
    """Read and segment one tile's window (the job's parameters, ``params`` over them); which objects it owns."""
    from functools import partial

    from scip.segment import METHODS

    tiling = job.tiling
    wy0, wy1, wx0, wx1 = tiling.window(row, col)
    image = _segment_input(job, job.reader.read(wy0, wy1, wx0, wx1))
    # Objects at the image border stay owned: like a whole image's, they become skipped cell records.
    return segment_window(image, tiling, row, col, partial(METHODS[job.method], **{**job.params, **params}), False)


def tile_areas(job: TileJob, row: int, col: int) -> tuple[np.ndarray, int]:
    """Areas of the objects one tile owns, segmented without split/merge (what the median area is taken over),
    and 1 if the window could not be segmented (else 0)."""
    try:
        result = _segment_tile(job, row, col, split_merge=False)
    except Exception:  # noqa: BLE001 - pass 1 segments this window again and reports the failure with its record
        return np.zeros(0, np.int64), 1
    # segment_window numbers the owned objects first.
    return np.bincount(result.labels.ravel(), minlength=result.owned + 1)[1:result.owned + 1].astype(np.int64), 0


def tile_concat(*found):
    """Join tiles' object areas and failure counts (associative)."""
    return np.concatenate([areas for areas, _ in found]), sum(n for _, n in found)


def area_tiles(tiling: Tiling) -> list[tuple[int, int]]:
    """The tiles whose objects give the median area: all, or :data:`AREA_TILES` evenly spaced in raster order."""
    tiles = list(tiling.tiles())
    if len(tiles) <= AREA_TILES:
        return tiles
    return [tiles[round(k * (len(tiles) - 1) / (AREA_TILES - 1))] for k in range(AREA_TILES)]


def _needs_median_area(job: TileJob) -> bool:
    if job.method != "unet" or job.params.get("median_area") is not None:
        return False
    from scip.segment.unet import modelfile
    from scip.segment.unet.predict import postprocess, splits_and_merges

    model = modelfile.load(job.params.get("model", "nuclei"))
    return splits_and_merges(postprocess(model, job.params.get("split_merge")))


def _tree(tasks: list, name: str, resources, fan_in: int = 16, merge=tile_merge):
    level = 0
    while len(tasks) > 1:
        tasks = [_task(merge, f"{merge.__name__}-{name}-{level}-{i}", resources, *tasks[i:i + fan_in])
                 for i in range(0, len(tasks), fan_in)]
        level += 1
    return tasks[0]


def run_statistics(config: Config, tiled: tuple[TiledImage, ...], session, progress: bool) -> tuple[TiledImage, ...]:
    """Pass 0 for every tiled image whose method reads an image-wide statistic (``tiles.statistics: image``)."""
    from scip.engine.cluster import compute

    if config.tiles.statistics != "image" or not tiled:
        return tiled
    stats = [image_statistic(t.job.method, t.job.params) for t in tiled]
    todo = [i for i, s in enumerate(stats) if s is not None and not tiled[i].failure]
    if not todo:
        return _median_areas(tiled, session, progress)
    cpu = session.routing.cpu
    for i in todo:
        if stats[i].reach > tiled[i].job.tiling.margin:
            log.warning("scip: %s: tiles.margin (%d px) is smaller than the %d px the %s statistic's smoothing "
                        "reaches: values near tile edges differ slightly from the whole image's",
                        tiled[i].job.source.image_id, tiled[i].job.tiling.margin, stats[i].reach, tiled[i].job.method)

    def round_(number: int, indices: list[int], ranges_of):
        return compute([_tree([_task(tile_statistics, f"tile_statistics-{tiled[i].job.source.index}-{number}-{r}-{c}",
                                     cpu, tiled[i].job, stats[i], ranges_of(i), r, c)
                               for r, c in tiled[i].job.tiling.tiles()], f"{tiled[i].job.source.index}-{number}", cpu)
                         for i in indices], session, progress,
                       label="statistics" if number == 0 else "statistics (histograms)")

    ranges = dict(zip(todo, round_(0, todo, lambda i: None)))
    need = [i for i in todo if stats[i].needs_histogram]
    histograms = dict(zip(need, round_(1, need, lambda i: ranges[i]))) if need else {}
    out = list(tiled)
    for i in todo:
        fixed = stats[i].finish(ranges[i], histograms.get(i) if stats[i].needs_histogram else None)
        job = dataclasses.replace(tiled[i].job, params={**tiled[i].job.params, **fixed})
        out[i] = dataclasses.replace(tiled[i], job=job, statistics={"statistic": stats[i].kind, **fixed})
        log.info("scip: %s: image-wide %s statistic over %d tiles: %s", job.source.image_id, stats[i].kind,
                 len(job.tiling.tiles()), fixed)
    return _median_areas(tuple(out), session, progress)


def _median_areas(tiled: tuple[TiledImage, ...], session, progress: bool) -> tuple[TiledImage, ...]:
    """The median object area of each tiled ``unet`` image with split/merge, fixed as ``median_area``.

    After the pixel statistics, since the windows are segmented with the image-wide normalization.
    """
    from scip.engine.cluster import compute

    todo = [i for i, t in enumerate(tiled) if not t.failure and _needs_median_area(t.job)]
    if not todo:
        return tiled
    seg = session.routing.segment
    sampled = {i: area_tiles(tiled[i].job.tiling) for i in todo}
    areas = compute([_tree([_task(tile_areas, f"tile_areas-{tiled[i].job.source.index}-{r}-{c}", seg,
                                  tiled[i].job, r, c) for r, c in sampled[i]],
                           f"areas-{tiled[i].job.source.index}", seg, merge=tile_concat)
                     for i in todo], session, progress, label="statistics (object areas)")
    out = list(tiled)
    for i, (found, unsegmented) in zip(todo, areas):
        job = tiled[i].job
        n_tiles = len(sampled[i])
        if not found.size:
            why = (f"{unsegmented} of them could not be segmented (pass 1 reports why)" if unsegmented
                   else "no object in them")
            log.warning("scip: %s: no median object area from the %d window(s) sampled, %s: each window of the unet "
                        "split/merge uses its own", job.source.image_id, n_tiles, why)
            continue
        median = float(np.median(found))
        out[i] = dataclasses.replace(
            tiled[i], job=dataclasses.replace(job, params={**job.params, "median_area": median}),
            statistics={**tiled[i].statistics, "median_area": median, "median_area_objects": int(found.size),
                        "median_area_tiles": n_tiles - unsegmented})
        log.info("scip: %s: median object area %.1f px over %d objects of %d of %d tiles (unet split/merge)",
                 job.source.image_id, median, found.size, n_tiles - unsegmented, len(job.tiling.tiles()))
    return tuple(out)


# ---- pass 1: segment windows --------------------------------------------------------------------------------------

def tile_segment(job: TileJob, row: int, col: int) -> dict:
    """Segment one tile's window, store its labels in the scratch zarr, return counts (or the failure)."""
    start = time.perf_counter()
    tiling = job.tiling
    wy0, wy1, wx0, wx1 = tiling.window(row, col)
    try:
        result = _segment_tile(job, row, col)
    except EXPECTED as e:
        return {"tile": [row, col], "failure": ["skip", f"{job.method} failed on tile ({row}, {col}): "
                                                f"{type(e).__name__}: {e}", ""]}
    except Exception as e:  # noqa: BLE001 - an error of this image, reported with its traceback
        status = failed("segment", e)
        return {"tile": [row, col], "failure": ["error", f"tile ({row}, {col}): {status.reason}", status.traceback]}
    oy, ox = tiling.frame_origin(row, col)
    frame = np.zeros((tiling.frame, tiling.frame), np.uint32)
    frame[wy0 - oy:wy1 - oy, wx0 - ox:wx1 - ox] = result.labels
    # The whole frame is one chunk of the scratch array: written once, by this task only.
    zarr.open_array(job.scratch, mode="r+")[row, col] = frame
    return {"tile": [row, col], "owned": result.owned, "found": result.found, "cut": result.cut,
            "seconds": time.perf_counter() - start}


def run_pass1(tiled: tuple[TiledImage, ...], session, progress: bool, recorded: dict | None = None,
              only: set[str] | None = None) -> tuple[TiledImage, ...]:
    """Pass 1 of every tiled image (or of the images keyed in ``only``); counts checked against ``recorded``.

    ``recorded``: the per-tile counts of the first attempt by image key
    (``--resume``): pass 1 is deterministic, so it must give them again,
    else :class:`~scip.failures.RunFailed` names the image. A tile whose
    task kills its workers, or whose method fails, fails its image (a
    skipped or error record), not the run.
    """
    from scip.engine.cluster import Killed, completed

    # An image skipped when planned (chunks missing from its store) is not read.
    todo = [t for t in tiled if (only is None or t.job.key in only) and not t.failure]
    tasks = []
    for t in todo:
        tiling = t.job.tiling
        ny, nx = tiling.grid
        zarr.create_array(t.job.scratch, shape=(ny, nx, tiling.frame, tiling.frame),
                          chunks=(1, 1, tiling.frame, tiling.frame), dtype="uint32", fill_value=0, overwrite=True)
        tasks.append([_task(tile_segment, f"tile_segment-{t.job.source.index}-{r}-{c}", session.routing.segment, t.job, r, c)
                      for r, c in tiling.tiles()])
    flat = [task for image in tasks for task in image]
    results: list = [None] * len(flat)
    for position, result in completed(flat, session, progress, label="segment tiles", unit="tiles"):
        results[position] = result
    out, position = {}, 0
    for t, image in zip(todo, tasks):
        counts = results[position:position + len(image)]
        for k, (count, tile) in enumerate(zip(counts, t.job.tiling.tiles())):
            if isinstance(count, Killed):
                # As a whole image that kills its workers: the image is skipped, naming its file; the run goes on.
                where = ", ".join(p for p in t.job.source.paths if p) or t.job.source.image_id
                counts[k] = {"tile": list(tile), "failure": [
                    "killed", f"{where} tile {tile} killed the worker {count.workers} time"
                              f"{'s' if count.workers > 1 else ''}; likely more memory than a worker has (memory_limit "
                              f"{count.memory_limit}): lower tiles.size or give the workers more memory", ""]}
        position += len(image)
        failure = next((tuple(c["failure"]) for c in counts if "failure" in c), None)
        owned = tuple(int(c.get("owned", 0)) for c in counts)
        new = dataclasses.replace(t, owned=owned, failure=failure, counts={
            "found": int(sum(c.get("found", 0) for c in counts)), "cut": int(sum(c.get("cut", 0) for c in counts)),
            "seconds": float(sum(c.get("seconds", 0.0) for c in counts))})
        if recorded is not None and t.job.key in recorded and list(recorded[t.job.key]) != list(owned):
            raise RunFailed(f"--resume: segmenting image {t.job.source.image_id} tile by tile again gave other "
                            "object counts than the first attempt recorded in manifest.json; its labels would not "
                            "match the parts already written: run again with --overwrite")
        out[t.job.key] = new
    return tuple(out.get(t.job.key, t) for t in tiled)


# ---- pass 2: the tiles' cell records, as Bag partitions -----------------------------------------------------------

def tile_cells(job: TileJob, tiles: tuple, around: dict, first: bool, image: dict, labels_path: str | None,
               dtype: str, mask: str, padding: int, remove_border: bool, polygons: bool = False) -> list:
    """The records of one tile partition: the image record (first partition only), then each tile's cells.

    ``around`` maps each tile of ``tiles`` to ``[(row, col, owned, offset)]``
    of itself and the neighbours whose windows reach its core. With
    ``labels_path``, each tile's core is assembled from them and written
    to the label image (each chunk by this task only). ``polygons``: each
    cell gets its outline, as a whole image's cells do (``output.polygons``).
    """
    tiling = job.tiling
    records: list = []
    if first:
        record = tiled_image_record(job.source, job.channels, image["objects"], job.method,
                                    {"segment": image["seconds"]}, image["evaluated"])
        if image.get("failure"):
            kind, message, trace = image["failure"]
            if kind == "error":
                status = dataclasses.replace(failed("segment", RuntimeError(message)), traceback=trace, reason=message)
            elif kind == "load":
                status = skipped("load", message)  # as a whole image that cannot be read as stored
            else:
                status = skipped("segment", message, kind="killed the worker" if kind == "killed" else
                                 f"{job.method} failed")
            record = record.with_(status=status)
        records.append(record)
    if image.get("failure"):
        return records
    scratch = zarr.open_array(job.scratch, mode="r")
    for row, col in tiles:
        start = time.perf_counter()
        pieces, frames = [], {}
        for r, c, owned, offset in around[(row, col)]:
            if owned and (labels_path is not None or (r, c) == (row, col)):
                frames[(r, c)] = np.asarray(scratch[r, c])
                pieces.append((frames[(r, c)], tiling.frame_origin(r, c), owned, offset))
        if labels_path is not None:
            y0, y1, x0, x1 = tiling.core(row, col)
            chunk, _ = assemble_core((y0, y1, x0, x1), pieces, np.dtype(dtype))
            zarr.open_array(labels_path, mode="r+")[y0:y1, x0:x1] = chunk
        _, _, owned, offset = around[(row, col)][0]
        if not owned:
            continue
        wy0, wy1, wx0, wx1 = tiling.window(row, col)
        oy, ox = tiling.frame_origin(row, col)
        labels = frames[(row, col)][wy0 - oy:wy1 - oy, wx0 - ox:wx1 - ox]
        cells = tile_records(job.source, job.channels, job.reader.read(wy0, wy1, wx0, wx1), labels, owned,
                             (wy0, wy1, wx0, wx1), tiling.shape, offset, mask, padding, remove_border)
        if polygons:
            cells = add_polygons(cells, mask)
        share = (time.perf_counter() - start) / max(len(cells), 1)
        records += [c.with_(timings={**c.timings, "cells": share}) for c in cells]
    return records


def labels_array_path(out: Path, key: str, name: str, level: int = 0) -> Path:
    """Where level ``level`` of an image's label image ``name`` is: ``labels.zarr/<key>/labels/<name>/<level>``."""
    return Path(out) / labels_io.LABELS / key / "labels" / name / str(level)


def _label_group(out: Path, job: TileJob):
    """The image's ``labels`` group in ``labels.zarr`` (scip's marker on the root, the image id on its group)."""
    image = labels_io.create_root(Path(out) / labels_io.LABELS).require_group(job.key)
    image.attrs[labels_io.MARKER] = {"image_id": job.source.image_id}
    return image.require_group("labels")


def create_label_arrays(config: Config, tiled: tuple[TiledImage, ...], out: Path, keep: bool) -> None:
    """Level 0 (and the empty levels above) of each tiled image's label image; ``keep`` existing ones (resume)."""
    if not config.output.labels:
        return
    for t in tiled:
        if t.failure:
            continue
        # The segmentation's label image, then one per extra mask (each mask painted with its cell's label).
        for name in config.mask_names:
            path = labels_array_path(out, t.job.key, name)
            if keep and path.exists():
                continue
            group = _label_group(out, t.job)
            size = t.job.tiling.size
            for k, shape in enumerate(ngff.level_shapes(t.job.tiling.shape, size, config.output.pyramid_levels)):
                ngff.create_level(group, name, k, shape, size, t.dtype)


def build_tile_bag(config: Config, tiled: tuple[TiledImage, ...], out: Path | None, routing, sources=None):
    """The tile partitions of the tiled images among ``sources`` (all by default) as one Bag, or ``None``."""
    import dask.bag as db

    wanted = None if sources is None else {s.index for s in sources}
    parts = []
    evaluated = config.evaluate is not None
    for t in tiled:
        if wanted is not None and t.job.source.index not in wanted:
            continue
        if t.owned is None:
            raise ValueError(f"tiled image {t.job.source.image_id}: pass 1 has not run")
        offsets, owned = t.offsets(), dict(zip(t.job.tiling.tiles(), t.owned))
        labels_path = None
        if config.output.labels and out is not None and not t.failure:
            labels_path = str(labels_array_path(out, t.job.key, config.segment.name))
        image = {"objects": t.total, "seconds": t.counts.get("seconds", 0.0), "evaluated": evaluated,
                 "failure": t.failure}
        for g, group in enumerate(t.groups):
            around = {tile: [(r, c, owned[(r, c)], offsets[(r, c)]) for r, c in t.job.tiling.neighbours(*tile)]
                      for tile in group}
            parts.append(_task(tile_cells, f"tile_cells-{t.job.source.index}-{g}", routing.cpu, t.job, group, around, g == 0,
                               image, labels_path, t.dtype, config.segment.name, config.cells.padding,
                               config.segment.remove_border, config.output.polygons))
    return db.from_delayed(parts) if parts else None


# ---- pyramid and bookkeeping --------------------------------------------------------------------------------------

def tile_pyramid(below: str, level: str, row: int, col: int) -> None:
    """One chunk of a pyramid level from the level below (:func:`scip.io.ngff.downsample_chunk`)."""
    ngff.downsample_chunk(below, level, row, col)


def write_pyramids(config: Config, tiled: tuple[TiledImage, ...], out: Path, session, progress: bool,
                   physical: bool = False) -> None:
    """The downsampled levels and NGFF metadata of every tiled image's label image (after the last partition)."""
    from scip.engine.cluster import compute

    if not config.output.labels:
        return
    names = config.mask_names
    todo = [t for t in tiled if not t.failure]
    shapes = {t.job.key: ngff.level_shapes(t.job.tiling.shape, t.job.tiling.size, config.output.pyramid_levels)
              for t in todo}
    for k in range(1, max((len(s) for s in shapes.values()), default=0)):
        tasks = []
        for t in todo:
            if k >= len(shapes[t.job.key]):
                continue
            size = t.job.tiling.size
            rows, cols = (-(-n // size) for n in shapes[t.job.key][k])
            for m, name in enumerate(names):
                below, level = (str(labels_array_path(out, t.job.key, name, j)) for j in (k - 1, k))
                tasks += [_task(tile_pyramid, f"tile_pyramid-{t.job.source.index}-{m}-{k}-{r}-{c}", session.routing.cpu,
                                below, level, r, c) for r in range(rows) for c in range(cols)]
        compute(tasks, session, progress, label=f"pyramid level {k}")
    for t in todo:
        # As a whole image's (scip.io.labels.write_labels): scaled by the input's pixel size when it is OME-Zarr.
        sizes = physical_size(t.job.source) if physical else {}
        for name in names:
            ngff.write_label_metadata(_label_group(out, t.job), name, len(shapes[t.job.key]),
                                      tuple(sizes.get(a, (1.0, None))[0] for a in "yx"),
                                      tuple(sizes.get(a, (1.0, None))[1] for a in "yx"), version="0.4",
                                      method=labels_io.DOWNSAMPLING)


# ---- extra masks as label images ----------------------------------------------------------------------------------
# A cell's extra mask may cross into a neighbour tile's core, whose chunk another task writes: each partition
# saves its cells' masks per owning tile (one writer per file), and once every partition is done one task per
# chunk paints the masks of the tiles whose windows reach it, as pass 2 assembles the cell labels.

def _masks_folder(job: TileJob) -> Path:
    return Path(job.scratch).with_name(f"{job.key}-masks")


def mask_owners(tiled: tuple[TiledImage, ...]) -> dict[int, tuple[str, np.ndarray, list]]:
    """Per tiled image (``Source.index``): its masks folder, each tile's label offset (sorted) and the tiles."""
    out = {}
    for t in tiled:
        if t.failure or t.owned is None:
            continue
        offsets = t.offsets()
        tiles = list(offsets)
        out[t.job.source.index] = (str(_masks_folder(t.job)), np.array([offsets[k] for k in tiles]), tiles)
    return out


def stash_tile_masks(records: list, owners: dict[int, tuple[str, np.ndarray, list]], masks: tuple[str, ...]) -> None:
    """Save the extra masks of a partition's cells of tiled images, one file per owning tile."""
    by_tile: dict[tuple[str, tuple[int, int]], list] = {}
    for r in records:
        if not isinstance(r, CellRecord) or r.source.index not in owners or not r.status or not r.masks:
            continue
        folder, offsets, tiles = owners[r.source.index]
        # Tile k owns labels offsets[k] + 1 ...; a tile that owns nothing shares its offset with the next one.
        tile = tiles[int(np.searchsorted(offsets, r.label - 1, side="right")) - 1]
        by_tile.setdefault((folder, tile), []).append(r)
    for (folder, (row, col)), cells in by_tile.items():
        arrays = {}
        for name in masks:
            have = [c for c in cells if c.masks.get(name) is not None]
            arrays[f"{name}_labels"] = np.array([c.label for c in have], np.int64)
            arrays[f"{name}_origins"] = np.array([c.origin for c in have], np.int64).reshape(-1, 2)
            arrays[f"{name}_shapes"] = np.array([c.masks[name].shape for c in have], np.int64).reshape(-1, 2)
            arrays[f"{name}_pixels"] = (np.concatenate([np.ravel(c.masks[name]) for c in have]).astype(bool)
                                        if have else np.zeros(0, bool))
        Path(folder).mkdir(parents=True, exist_ok=True)
        partial = Path(folder) / f"{row}-{col}.partial.npz"
        np.savez(partial, **arrays)
        partial.replace(Path(folder) / f"{row}-{col}.npz")  # a file with the final name is complete


def tile_mask_chunk(folder: str, path: str, tiling: Tiling, row: int, col: int, name: str, dtype: str) -> None:
    """Chunk ``(row, col)`` of mask ``name``'s label image, from the masks saved by the tiles reaching it."""
    y0, y1, x0, x1 = tiling.core(row, col)
    chunk = np.zeros((y1 - y0, x1 - x0), np.dtype(dtype))
    for r, c in tiling.neighbours(row, col):
        saved = Path(folder) / f"{r}-{c}.npz"
        if not saved.exists():
            continue
        with np.load(saved) as z:
            labels, origins, shapes, pixels = (z[f"{name}_{k}"] for k in ("labels", "origins", "shapes", "pixels"))
        starts = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])])
        for label, (oy, ox), (h, w), start in zip(labels, origins, shapes, starts):
            ya, yb, xa, xb = max(oy, y0), min(oy + h, y1), max(ox, x0), min(ox + w, x1)
            if ya >= yb or xa >= xb:
                continue
            mask = pixels[start:start + h * w].reshape(h, w)[ya - oy:yb - oy, xa - ox:xb - ox]
            chunk[ya - y0:yb - y0, xa - x0:xb - x0][mask] = label
    zarr.open_array(path, mode="r+")[y0:y1, x0:x1] = chunk


def write_mask_labels(config: Config, tiled: tuple[TiledImage, ...], out: Path, session, progress: bool) -> None:
    """Level 0 of every tiled image's extra-mask label images, chunk by chunk (after the last partition)."""
    from scip.engine.cluster import compute

    masks = config.mask_names[1:]
    if not config.output.labels or not masks:
        return
    tasks = []
    for t in tiled:
        if t.failure:
            continue
        folder = str(_masks_folder(t.job))
        for name in masks:
            path = str(labels_array_path(out, t.job.key, name))
            tasks += [_task(tile_mask_chunk, f"tile_mask_chunk-{t.job.source.index}-{name}-{r}-{c}", session.routing.cpu,
                            folder, path, t.job.tiling, r, c, name, t.dtype) for r, c in t.job.tiling.tiles()]
    if tasks:
        compute(tasks, session, progress, label="mask label images")


def remove_scratch(out: Path) -> None:
    """Remove the pass-1 scratch labels (once the run is complete)."""
    shutil.rmtree(Path(out) / SCRATCH, ignore_errors=True)


def to_json(tiled: tuple[TiledImage, ...]) -> dict[str, Any]:
    """What ``manifest.json`` records of the tiling: which images, how cut, and pass 1's counts (for ``--resume``)."""
    return {"images": [{"index": t.job.source.index, "image_id": t.job.source.image_id, "key": t.job.key,
                        "shape": list(t.job.tiling.shape), "size": t.job.tiling.size, "margin": t.job.tiling.margin,
                        "partitions": len(t.groups), "owned": list(t.owned) if t.owned is not None else None,
                        "counts": t.counts, "statistics": t.statistics}
                       for t in tiled]}


def from_json(data: dict | None) -> tuple[tuple[int, ...], dict[str, list[int]]]:
    """The tiled images' indices and the recorded per-tile counts by image key, from :func:`to_json`."""
    if not isinstance(data, dict):
        return (), {}
    images = [i for i in data.get("images", []) if isinstance(i, dict)]
    return (tuple(int(i["index"]) for i in images),
            {str(i["key"]): [int(n) for n in i["owned"]] for i in images if isinstance(i.get("owned"), list)})


def report(config: Config, tiled: tuple[TiledImage, ...]) -> dict[str, Any]:
    """The ``tiles`` section of ``run.json``: the mode and every tiled image with its tile counts."""
    return {"mode": config.tiles.mode, "statistics": config.tiles.statistics, "images": [
        {"image_id": t.job.source.image_id, "index": t.job.source.index, "shape": list(t.job.tiling.shape),
         "size": t.job.tiling.size, "margin": t.job.tiling.margin, "tiles": len(t.job.tiling.tiles()),
         "grid": list(t.job.tiling.grid), "partitions": len(t.groups), "objects": t.total,
         "found_in_windows": t.counts.get("found"), "cut": t.counts.get("cut"), "statistics": t.statistics,
         "method": t.job.method, "params": t.job.params,
         "label_dtype": t.dtype, **({"failure": t.failure[1]} if t.failure else {})} for t in tiled]}


# ---- the driver's steps (scip.run) -------------------------------------------------------------------------------

def known_early(p) -> bool:
    """Whether the tiling decision can be made before the workers are up (it needs no worker memory)."""
    return p.config.tiles.mode != "auto" or p.config.input.max_image_bytes != "auto"


def decide(p, out: Path):
    """``p`` (a :class:`scip.engine.graph.Plan`) with its images read in tiles planned (``tiles.mode``, budget)."""
    readers: dict = {}
    chosen = choose_tiled(p.dataset, p.config.tiles, p.budget, p.config.input.z, readers)
    if chosen:
        log.info("scip: %d image(s) read in tiles of %d px (margin %d px): %s", len(chosen), p.config.tiles.size,
                 p.config.tiles.margin_px, summarize_changes([readers[i].image_id for i in chosen]))
    return dataclasses.replace(p, tiled=plan_tiles(p.config, p.dataset, chosen, out, readers))


def recorded(p, manifest: dict, out: Path):
    """``p`` tiled as the first attempt recorded in ``manifest``, and pass 1's recorded counts by image key."""
    indices, owned = from_json(manifest.get("tiles"))
    entries = {str(i.get("key")): i for i in (manifest.get("tiles") or {}).get("images", []) if isinstance(i, dict)}
    tiled = []
    for t in plan_tiles(p.config, p.dataset, indices, out):
        entry = entries.get(t.job.key, {})
        if t.job.key in owned:
            # What run.json reports of an image whose partitions are all done (its pass 1 is not run again).
            t = dataclasses.replace(t, owned=tuple(owned[t.job.key]), counts=_mapping(entry.get("counts")),
                                    statistics=_mapping(entry.get("statistics")))
        tiled.append(t)
    return dataclasses.replace(p, tiled=tuple(tiled)), owned


def _mapping(value: Any) -> dict:
    return dict(value) if isinstance(value, dict) else {}


def all_partitions(p) -> list[list[Source]]:
    """The whole images' partitions, then the tile partitions: the sources of each ``part-N``."""
    from scip.engine import graph

    return graph.partitions(p) + partitions(p.tiled)


def segment(p, session, out: Path, manifest: dict, todo: list[int], owned: dict, resume: bool, progress: bool):
    """Statistics and pass 1 of the tiled images with partitions left; the counts recorded in ``manifest``.

    Images whose partitions are all done keep the first attempt's counts
    (``owned``, by image key): their offsets are what the parts hold.
    """
    from scip.engine import graph

    position, left, todo = len(graph.partitions(p)), set(), set(todo)
    for t in p.tiled:
        if t.job.key not in owned or any(i in todo for i in range(position, position + len(t.groups))):
            left.add(t.job.key)
        position += len(t.groups)
    needed = tuple(t for t in p.tiled if t.job.key in left)
    needed = {t.job.key: t for t in run_pass1(run_statistics(p.config, needed, session, progress), session, progress,
                                               owned)}
    tiled = tuple(needed.get(t.job.key) or t for t in p.tiled)
    create_label_arrays(p.config, tiled, out, keep=resume)
    manifest["tiles"] = to_json(tiled)
    write_manifest(out, manifest)
    return dataclasses.replace(p, tiled=tiled)
