"""Tiled segmentation of one large image on Dask: two passes, a pyramid, a cell table.

:func:`segment_slide` runs its graphs with one task per tile (or per
output chunk), so memory per task is bounded by the tile and the driver never
holds pixels:

0. **statistics** (``tiles.statistics: slide``, for methods that read a
   statistic of the whole image: a threshold, normalization percentiles):
   per tile, a summary of the core's values (range, then histograms over the
   slide-wide range), merged in a tree, turned into a fixed ``level`` or
   ``norm_range`` for every window (:mod:`scip.segment.image_statistics`).
1. **segment** (pass 1): read a tile's window, segment it with the
   configured method, decide which objects the tile owns
   (:func:`scip.segment.tiling.segment_window`) and write the window's labels
   to a scratch zarr, one chunk per tile. Returns counts only.
2. The driver turns the per-tile counts into label offsets (a cumulative
   sum), and picks ``uint32`` labels, or ``uint64`` past 4 294 967 295 objects.
3. **write** (pass 2): per output chunk, assemble the global labels of the
   owned objects of the tile and its neighbours
   (:func:`scip.segment.tiling.assemble_core`) and write the chunk; then write
   the tile's cell table part (centroid, bbox, area, tile, optional WKB
   polygons and features from :func:`scip.features.extract` on the window).
4. **pyramid**: the downsampled levels, one after the other, each chunk
   from the stored level below (:func:`scip.io.ngff.downsample_chunk`).

Output folder::

    labels.zarr/labels/<name>/0, 1, ...   OME-Zarr label image (see scip.io.ngff)
    cells/part-<tile>.parquet             one row per object, one part per tile
    slide.json                            config, image, counts, timings (written last)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from scip.config import ConfigError, check_models
from scip.io.atomic import atomic_path
from scip.io.channels import InputError
from scip.engine.tasks import task as _task
from scip.segment.image_statistics import image_statistic

from scip.io import ngff
from .config import SlideConfig, load_slide_config
from scip.io.windows import SlideSource, open_slide
from scip.segment.tiling import TABLE_COLUMNS, Tiling, assemble_core, object_table, segment_window

__all__ = ["segment_slide", "SlideResult", "OUTPUT_FILES"]

log = logging.getLogger("scip")

#: What a slide run writes into its output folder (``slide.json`` last: its presence means done).
OUTPUT_FILES = ("slide.json", "labels.zarr", "cells", ".scratch.zarr")
_SCRATCH = ".scratch.zarr"


@dataclass(frozen=True)
class SlideResult:
    """Where a slide run wrote its results, and its summary (``slide.json``)."""

    output: Path
    labels: Path
    table: Path
    summary: dict

    def read_table(self) -> pd.DataFrame:
        """The cell table, one row per object, ordered by label."""
        return pd.read_parquet(self.table).sort_values("label", ignore_index=True)

    def read_labels(self, level: int = 0) -> np.ndarray:
        """One level of the label image, whole, into memory (for small images and tests)."""
        return np.asarray(zarr.open_array(str(self.labels / str(level)), mode="r")[...])


@dataclass(frozen=True)
class _Plan:
    """What every task needs, small and picklable."""

    source: SlideSource
    tiling: Tiling
    segment_channels: tuple[int, ...]
    method: str
    params: dict
    remove_border: bool
    scratch: str
    feature_channels: tuple[int, ...]
    mask_name: str


def _core_values(plan: _Plan, stat, row: int, col: int) -> np.ndarray:
    """The statistic's values ``(C, h, w)`` over one tile's core, computed on its window for context."""
    tiling = plan.tiling
    wy0, wy1, wx0, wx1 = tiling.window(row, col)
    values = stat.transform(plan.source.read(plan.segment_channels, wy0, wy1, wx0, wx1))
    y0, y1, x0, x1 = tiling.core(row, col)
    return values[:, y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]


def _range_summary(plan: _Plan, stat, row: int, col: int):
    return stat.summarize_range(_core_values(plan, stat, row, col))


def _histogram_summary(plan: _Plan, stat, ranges, row: int, col: int):
    return stat.summarize_histogram(_core_values(plan, stat, row, col), ranges)


def _merge(*summaries):
    merged = summaries[0]
    for other in summaries[1:]:
        merged = merged.merge(other)
    return merged


def _tree_merge(tasks: list, name: str, resources: dict | None, fan_in: int = 16):
    """One delayed summary of many, merged ``fan_in`` at a time (the driver never gathers them all)."""
    level = 0
    while len(tasks) > 1:
        tasks = [_task(_merge, f"{name}-{level}-{i}", resources, *tasks[i:i + fan_in])
                 for i in range(0, len(tasks), fan_in)]
        level += 1
    return tasks[0]


def _slide_statistics(plan: _Plan, stat, session, routing, progress: bool) -> dict:
    """The statistic of the whole slide, as the method's keyword arguments (e.g. ``{"level": 812.4}``)."""
    from scip.engine.cluster import compute

    tiles = plan.tiling.tiles()
    ranges = compute([_tree_merge([_task(_range_summary, f"slide-stats-range-{r}-{c}", routing.cpu, plan, stat, r, c)
                                   for r, c in tiles], "slide-stats-range-merge", routing.cpu)], session, progress)[0]
    histograms = None
    if stat.needs_histogram:
        histograms = compute([_tree_merge(
            [_task(_histogram_summary, f"slide-stats-histogram-{r}-{c}", routing.cpu, plan, stat, ranges, r, c)
             for r, c in tiles], "slide-stats-histogram-merge", routing.cpu)], session, progress)[0]
    return stat.finish(ranges, histograms)


def _segment_fn(plan: _Plan):
    from scip.segment import METHODS

    return partial(METHODS[plan.method], **plan.params)


def _pass1(plan: _Plan, row: int, col: int) -> dict:
    """Segment one tile's window, write its frame of labels to the scratch zarr, return counts."""
    t0 = time.perf_counter()
    tiling = plan.tiling
    wy0, wy1, wx0, wx1 = tiling.window(row, col)
    pixels = plan.source.read(plan.segment_channels, wy0, wy1, wx0, wx1)
    image = pixels[0] if len(plan.segment_channels) == 1 else pixels
    result = segment_window(image, tiling, row, col, _segment_fn(plan), plan.remove_border)
    oy, ox = tiling.frame_origin(row, col)
    frame = np.zeros((tiling.frame, tiling.frame), np.uint32)
    frame[wy0 - oy:wy1 - oy, wx0 - ox:wx1 - ox] = result.labels
    # The whole frame is one chunk of the scratch array: written once, by this task only.
    zarr.open_array(plan.scratch, mode="r+")[row, col] = frame
    return {"tile": (row, col), "owned": result.owned, "found": result.found, "cut": result.cut,
            "border": result.border, "seconds": time.perf_counter() - t0}


def _pass2(plan: _Plan, row: int, col: int, around: list, labels_path: str, dtype: str, part: str, schema,
           polygons: bool, features: dict | None) -> dict:
    """Write one output chunk of global labels and the table part of the tile's own objects.

    ``around`` lists ``(row, col, owned, offset)`` of the tile itself, then
    of the neighbours whose windows reach its core.
    """
    from scip.io.parquet import write_part

    t0 = time.perf_counter()
    tiling = plan.tiling
    scratch = zarr.open_array(plan.scratch, mode="r")
    frames = {}
    pieces = []
    for r, c, n_owned, offset in around:
        if n_owned:
            frames[(r, c)] = np.asarray(scratch[r, c])
            pieces.append((frames[(r, c)], tiling.frame_origin(r, c), n_owned, offset))
    y0, y1, x0, x1 = tiling.core(row, col)
    chunk, conflicts = assemble_core((y0, y1, x0, x1), pieces, np.dtype(dtype))
    zarr.open_array(labels_path, mode="r+")[y0:y1, x0:x1] = chunk

    n, own_offset = around[0][2], around[0][3]
    window = tiling.window(row, col)
    wy0, wy1, wx0, wx1 = window
    oy, ox = tiling.frame_origin(row, col)
    own = frames.get((row, col), np.zeros((tiling.frame, tiling.frame), np.uint32))
    labels = own[wy0 - oy:wy1 - oy, wx0 - ox:wx1 - ox]
    table = object_table(labels, n, window, tiling.shape, (row, col), own_offset, polygons=polygons)
    if features is not None and n:
        from scip.features import extract

        pixels = plan.source.read(plan.feature_channels, *window)
        mine = np.where(labels <= n, labels, 0)
        feats = extract(pixels, mine, channel_names=[plan.source.channels[i] for i in plan.feature_channels],
                        families=features["families"], mask_name=plan.mask_name, offset=(wy0, wx0),
                        background=labels == 0, params=features["params"])
        feats = feats.set_index("label").reindex(np.arange(1, n + 1))
        table = pd.concat([table, feats.reset_index(drop=True)], axis=1)
    # A tile without objects still writes its part, with every column of the schema.
    write_part(table.reindex(columns=schema.names), part, schema)
    return {"tile": (row, col), "conflicts": conflicts, "rows": len(table), "seconds": time.perf_counter() - t0}


def _schema(plan: _Plan, polygons: bool, features: dict | None):
    import pyarrow as pa

    types = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
    fields = [(name, types[kind]) for name, kind in TABLE_COLUMNS.items()]
    metadata = {}
    if polygons:
        fields.append(("geometry", pa.binary()))
        # GeoParquet 1.0 column metadata: readers such as geopandas.read_parquet take the WKB column as geometry.
        metadata[b"geo"] = json.dumps({"version": "1.0.0", "primary_column": "geometry", "columns": {
            "geometry": {"encoding": "WKB", "geometry_types": ["Polygon", "MultiPolygon"], "crs": None}}}).encode()
    if features is not None:
        from scip.features import columns

        names = [plan.source.channels[i] for i in plan.feature_channels]
        fields += [(c.name, pa.float64()) for c in columns(names, features["families"], plan.mask_name,
                                                          features["params"])]
    return pa.schema(fields, metadata=metadata or None)


#: What a slide run records it wrote, before writing it: ``--overwrite`` removes only what is listed there.
RECORD = ".scip-slide.json"


def _recorded(path: Path) -> set[str]:
    """Top-level names an earlier slide run in ``path`` recorded writing (never paths elsewhere)."""
    try:
        names = json.loads((path / RECORD).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if isinstance(n, str) and n in OUTPUT_FILES}


def _prepare_output(path: Path, overwrite: bool, source_path: str | Path) -> None:
    """Make ``path`` ready; with ``overwrite``, remove only what an earlier slide run recorded writing there.

    Refuses (:class:`~scip.config.ConfigError`) an output folder that is the
    input, lies inside it, or holds it under a name a slide run writes, and a
    folder whose results no slide run recorded: those are the user's, and
    nothing is removed.
    """
    out, source = path.resolve(), Path(source_path).resolve()
    if out == source or out.is_relative_to(source):
        raise ConfigError(f"output.path: {path} is the input image {source_path} or lies inside it; "
                          "write the results to a folder outside the input")
    if source.is_relative_to(out) and source.relative_to(out).parts[0] in OUTPUT_FILES:
        raise ConfigError(f"input.path: {source_path} lies in the output folder {path} under "
                          f"{source.relative_to(out).parts[0]!r}, a name scip slide writes and --overwrite removes; "
                          "move it out of the output folder, or choose another output.path")
    existing = [name for name in OUTPUT_FILES if (path / name).exists()
                and not (name == "cells" and not any((path / name).glob("part-*.parquet")))]
    if existing and not overwrite:
        raise ConfigError(f"output.path: {path} already holds results ({', '.join(existing)}); "
                          "choose another folder, or set output.overwrite: true (--overwrite)")
    recorded = _recorded(path)
    foreign = [name for name in existing if name not in recorded]
    if foreign:
        raise ConfigError(f"output.path: {path} holds {', '.join(foreign)}, which no scip slide run recorded writing "
                          f"(in {RECORD}); --overwrite removes only what scip recorded, so these are left alone: "
                          "move or delete them yourself, or choose another folder")
    for name in existing:
        target = path / name
        if name == "cells":
            # Only our own part files go: the folder may hold things the user put there.
            for part in target.glob("part-*.parquet"):
                part.unlink()
        elif target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / RECORD) as tmp:
        tmp.write_text(json.dumps({"files": list(OUTPUT_FILES)}))
    (path / "cells").mkdir(parents=True, exist_ok=True)


def _written_by_scip(label: Path) -> bool:
    """Whether the label image at ``label`` is one scip slide wrote (its multiscale names scip's downsampling)."""
    try:
        attrs = dict(zarr.open_group(str(label), mode="r").attrs)
    except Exception:  # noqa: BLE001 - anything unreadable is not provably ours
        return False
    multiscales = attrs.get("ome", attrs).get("multiscales") or [{}]
    return isinstance(multiscales, list) and isinstance(multiscales[0], dict) and \
        str((multiscales[0].get("metadata") or {}).get("method", "")).startswith(("scip.slide.", "scip.io.ngff."))


def _open(config: SlideConfig) -> tuple[SlideSource, tuple[int, ...], tuple[int, ...]]:
    """The source and the stored positions of the channels to segment and to measure."""
    i = config.input
    try:
        source = open_slide(i.path, i.format, i.array, i.series, i.level, i.t, i.z, i.channels)
        wanted = config.segment.channel if isinstance(config.segment.channel, list) else [config.segment.channel]
        segment_channels = tuple(source.channel_index(c) for c in wanted)
        names = i.use_channels if i.use_channels is not None else source.channels
        feature_channels = tuple(source.channel_index(c, "input.use_channels") for c in names)
    except InputError as e:
        raise ConfigError(str(e)) from None
    if np.dtype(source.dtype).kind not in "uif":
        raise ConfigError(f"input.path: {i.path} holds {source.dtype} pixels; expected integers or floats")
    if config.output.labels_into_input:
        if source.kind != "ome_zarr":
            raise ConfigError(f"output.labels_into_input: {source.path} is not an OME-Zarr image; "
                              "labels can only be added to an OME-Zarr image's labels/ group")
        existing = Path(source.path) / "labels" / config.segment.name
        if existing.exists() and not config.output.overwrite:
            raise ConfigError(f"output.labels_into_input: {existing} already exists; choose another segment.name, "
                              "or set output.overwrite: true")
        if existing.exists() and not _written_by_scip(existing):
            # Inside the input: only a label image scip itself wrote may be replaced.
            raise ConfigError(f"output.labels_into_input: {existing} already exists and was not written by scip "
                              "slide; it is left alone even with output.overwrite: choose another segment.name")
    return source, segment_channels, feature_channels


def _physical(source: SlideSource) -> tuple[tuple[float, float], tuple[str | None, str | None]]:
    """Pixel size and units along y, x of the segmented level of an OME-Zarr input (1 px otherwise)."""
    if source.kind != "ome_zarr":
        return (1.0, 1.0), (None, None)
    from scip.io.zarr_image import ome_metadata, ome_scale

    group = zarr.open_group(source.path, mode="r")
    multiscale = ome_metadata(group)["multiscales"][0]
    units = {a["name"]: a.get("unit") for a in multiscale.get("axes", []) if isinstance(a, dict)}
    scale = ome_scale(group, Path(source.path), multiscale, source.level, len(source.axes)) or [1.0] * len(source.axes)
    by_name = {name: (s, units.get(name)) for name, s in zip(source.axes, scale)}
    (sy, uy), (sx, ux) = by_name.get("y", (1.0, None)), by_name.get("x", (1.0, None))
    return (sy, sx), (uy, ux)


def _label_group(config: SlideConfig, source: SlideSource) -> tuple[Any, Path, str | None]:
    """The ``labels`` group to write into, the label image's path, and the relative path to the intensity image."""
    name = config.segment.name
    if config.output.labels_into_input:
        image = zarr.open_group(source.path, mode="r+")
        return image.require_group("labels"), Path(source.path) / "labels" / name, "../../"
    root = zarr.open_group(str(config.output.path / "labels.zarr"), mode="w", zarr_format=2)
    path = config.output.path / "labels.zarr" / "labels" / name
    image = ngff.relative_path(source.path, path) if source.kind == "ome_zarr" else None
    return root.require_group("labels"), path, image


def segment_slide(config: SlideConfig | dict | str | Path, *, client=None, progress: bool = True) -> SlideResult:
    """Segment one large image tile by tile and write its label image, pyramid and cell table.

    Parameters
    ----------
    config : SlideConfig, dict or path
        A validated config, a mapping or a YAML file (see ``docs/config.md``,
        ``scip slide``); a mapping's relative paths are relative to the
        current directory.
    client : distributed.Client, optional
        Use this Dask client instead of what ``config.cluster`` describes.
    progress : bool, optional
        Show a progress bar per pass.

    Returns
    -------
    SlideResult
        Paths of the outputs and the summary written to ``slide.json``.

    Raises
    ------
    ConfigError
        For a bad config or input (missing file, unknown channel, a z stack
        without a plane, tile smaller than twice the margin, an output folder
        holding results without ``overwrite``); the message names the key.
    """
    from scip.engine.cluster import compute, connect

    if not isinstance(config, SlideConfig):
        config = load_slide_config(config)
    check_models(config)
    started = time.perf_counter()
    source, segment_channels, feature_channels = _open(config)
    out = config.output.path
    _prepare_output(out, config.output.overwrite, source.path)
    tiling = Tiling(source.shape, config.tiles.size, config.tiles.margin_px)
    seg = config.segment
    params = seg.method_params()
    if seg.method == "unet" and params["tile"] < tiling.frame:
        # The slide is already tiled: the U-Net's own tiling would cut each window again, at other places
        # than a whole-image run does. One forward pass per window (side rounded up to the network's 16).
        params["tile"] = -(-tiling.frame // 16) * 16
    plan = _Plan(source, tiling, segment_channels, seg.method, params, seg.remove_border,
                 str(out / _SCRATCH), feature_channels, seg.name)
    ny, nx = tiling.grid
    zarr.create_array(plan.scratch, shape=(ny, nx, tiling.frame, tiling.frame),
                      chunks=(1, 1, tiling.frame, tiling.frame), dtype="uint32", fill_value=0, overwrite=True)
    features = None if config.features is None else {"families": list(config.features.families),
                                                     "params": config.features.params()}
    timings: dict[str, float] = {}
    log.info("scip: %s: %d x %d px, %d x %d tiles of %d px, margin %d px, method %s",
             source.path, *source.shape, ny, nx, tiling.size, tiling.margin, seg.method)
    stat = image_statistic(seg.method, plan.params) if config.tiles.statistics == "slide" else None
    statistics: dict[str, Any] = {"mode": config.tiles.statistics}
    if stat is not None and stat.reach > tiling.margin:
        log.warning("scip: tiles.margin (%d px) is smaller than the %d px the %s statistic's smoothing reaches: "
                    "values near tile edges differ slightly from the whole image's", tiling.margin, stat.reach,
                    seg.method)
    with connect(config.cluster, client) as session:
        routing = session.routing
        if stat is not None:
            t0 = time.perf_counter()
            fixed = _slide_statistics(plan, stat, session, routing, progress)
            timings["statistics"] = time.perf_counter() - t0
            plan = replace(plan, params={**plan.params, **fixed})
            statistics.update({"statistic": stat.kind, **fixed})
            log.info("scip: slide-wide %s statistic: %s", stat.kind, fixed)
        t0 = time.perf_counter()
        first = [_task(_pass1, f"slide-segment-{r}-{c}", routing.segment, plan, r, c) for r, c in tiling.tiles()]
        counts = compute(first, session, progress)
        timings["segment"] = time.perf_counter() - t0

        owned = {tuple(c["tile"]): c["owned"] for c in counts}
        offsets, total = {}, 0
        for tile in tiling.tiles():
            offsets[tile] = total
            total += owned[tile]
        dtype = "uint32" if total < np.iinfo(np.uint32).max else "uint64"
        group, label_path, source_image = _label_group(config, source)
        shapes = ngff.level_shapes(source.shape, tiling.size, config.output.pyramid_levels)
        levels = [ngff.create_level(group, seg.name, k, s, tiling.size, dtype) for k, s in enumerate(shapes)]
        schema = _schema(plan, config.output.polygons, features)
        t0 = time.perf_counter()
        second = [_task(_pass2, f"slide-write-{r}-{c}", routing.cpu, plan, r, c,
                        around=[(i, j, owned[(i, j)], offsets[(i, j)]) for i, j in tiling.neighbours(r, c)],
                        labels_path=str(label_path / "0"), dtype=dtype,
                        part=str(out / "cells" / f"part-{k:06d}.parquet"),
                        schema=schema, polygons=config.output.polygons, features=features)
                  for k, (r, c) in enumerate(tiling.tiles())]
        written = compute(second, session, progress)
        timings["write"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        for k in range(1, len(levels)):
            rows, cols = (-(-n // tiling.size) for n in shapes[k])
            below, level = str(label_path / str(k - 1)), str(label_path / str(k))
            compute([_task(ngff.downsample_chunk, f"slide-pyramid-{k}-{r}-{c}", routing.cpu, below, level, r, c)
                     for r in range(rows) for c in range(cols)], session, progress)
        timings["pyramid"] = time.perf_counter() - t0
        cluster = session.describe()
    scale, units = _physical(source)
    ngff.write_label_metadata(group, seg.name, len(levels), scale, units, source_image)
    shutil.rmtree(plan.scratch, ignore_errors=True)
    timings["total"] = time.perf_counter() - started
    summary = _summary(config, plan, source, tiling, counts, written, total, dtype, shapes, timings, cluster, label_path,
                       statistics)
    with atomic_path(out / "slide.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    c = summary["counts"]
    log.info("scip: %d objects in %d tiles (%d cut by a window's edge, %d dropped at the image border, "
             "%d conflicting pixels); %.1f s", c["objects"], ny * nx, c["cut"], c["border_dropped"],
             c["conflict_pixels"], timings["total"])
    return SlideResult(out, label_path, out / "cells", summary)


def _summary(config: SlideConfig, plan: _Plan, source: SlideSource, tiling: Tiling, counts: list, written: list,
             total: int, dtype: str, shapes: list, timings: dict, cluster: dict, label_path: Path,
             statistics: dict) -> dict:
    seconds = [c["seconds"] for c in counts]
    return {
        "config": json.loads(config.model_dump_json()),
        "image": {"path": source.path, "format": source.kind, "shape": list(source.shape),
                  "channels": list(source.channels), "dtype": source.dtype},
        "tiles": {"size": tiling.size, "margin": tiling.margin, "grid": list(tiling.grid), "count": len(counts),
                  "segment_seconds_per_tile": {"mean": float(np.mean(seconds)), "max": float(np.max(seconds))}},
        "counts": {"objects": total, "found_in_windows": int(sum(c["found"] for c in counts)),
                   "cut": int(sum(c["cut"] for c in counts)),
                   "border_dropped": int(sum(c["border"] for c in counts)),
                   "conflict_pixels": int(sum(w["conflicts"] for w in written)),
                   "table_rows": int(sum(w["rows"] for w in written))},
        "labels": {"path": str(label_path), "dtype": dtype, "levels": [list(s) for s in shapes]},
        "statistics": statistics,
        "segment": {"method": plan.method, "params": plan.params},
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "cluster": cluster,
    }
