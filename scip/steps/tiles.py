"""Images read in tiles: window reads of a run's images, the tiling decision, and a tile's records (no Dask).

An image too large to hold whole in a worker (or every image, with
``tiles.mode: always``) is segmented tile by tile with margins
(:mod:`scip.segment.tiling`: ownership by centroid, global label offsets) and
then goes through the same downstream steps as a whole image. This module
holds the pure pieces:

- :func:`window_reader`: how to read a window ``(C, h, w)`` of one image of a
  run's dataset (TIFF, one TIFF per channel, Zarr, OME-Zarr), with the
  dataset's channel selection and z projection, and the image's declared
  size (metadata only) for the tiling decision;
- :func:`choose_tiled`: which images are read in tiles;
- :func:`tile_records`: the records of one tile after pass 1, the same
  :class:`~scip.records.CellRecord` objects :func:`scip.steps.cells.split_cells`
  makes for a whole image (it makes them), with global labels and image
  coordinates; :func:`tiled_image_record`: the one pixel-free image record
  that counts a tiled image once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scip.config import TilesConfig
from scip.io.dataset import Dataset
from scip.io.limits import ImageBudget
from scip.records import CellRecord, Evaluation, ImageRecord, Source, skipped
from scip.io.windows import SlideSource
from scip.io.zarr_image import chunk_missing_message
from scip.steps.cells import split_cells
from scip.steps.project import _project

__all__ = ["WindowReader", "WindowError", "window_reader", "choose_tiled", "tile_records", "tiled_image_record",
           "tile_partitions", "TILED_FORMATS", "NOT_EVALUATED"]

#: Dataset formats whose images can be read window by window.
TILED_FORMATS = ("tiff", "tiff_channels", "zarr", "ome_zarr", "bioio")
#: The evaluation error of a tiled image: ground truth is compared image by image, in memory.
NOT_EVALUATED = "read in tiles: not evaluated (evaluation compares whole images in memory)"


class WindowError(ValueError):
    """An image cannot be read window by window (its layout); the message says why."""


@dataclass(frozen=True)
class WindowReader:
    """How to read windows of one image of a run: small and picklable, opened lazily in each process.

    Attributes
    ----------
    image_id : str
        The image's id (``Source.image_id``), for messages.
    shape : (int, int)
        ``(H, W)`` of the image.
    dtype : str
        Stored pixel dtype.
    planes : tuple of tuple of (SlideSource, tuple of int)
        One entry per z plane read (one without z stack): the pieces whose
        windows, stacked along the channel axis, give the loaded channels,
        each a 2-D view with the stored positions of its channels.
    z_projection : str or None
        How several planes become one (``max``, ``mean``, ``median``).
    declared_bytes : int
        What reading the image whole decodes, from its metadata.
    """

    image_id: str
    shape: tuple[int, int]
    dtype: str
    planes: tuple[tuple[tuple[SlideSource, tuple[int, ...]], ...], ...]
    z_projection: str | None
    declared_bytes: int

    def missing_chunks(self) -> str | None:
        """Why the image cannot be read as stored: the zarr chunks it needs that are missing; None if none is.

        A window read would take zarr's fill value there, silently: the run
        skips the image instead, as it does a whole image (``input.missing_chunks: skip``).
        """
        # The planes of a z stack are views of one array: list each store once.
        views = {(view.path, view.array, view.series): view for pieces in self.planes for view, _ in pieces}
        if all(view.complete() for view in views.values()):
            return None
        missing, fill = [], 0
        for pieces in self.planes:
            for view, positions in pieces:
                keys = view.missing_chunks(positions)
                if keys:
                    missing += keys
                    fill = view.fill_value
        return chunk_missing_message(missing, fill) if missing else None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``(C, y1 - y0, x1 - x0)`` of the loaded channels (projected over z for a z stack)."""
        stack = [np.concatenate([view.read(list(positions), y0, y1, x0, x1) for view, positions in pieces])
                 for pieces in self.planes]
        if len(stack) == 1:
            return stack[0]
        return _project(np.stack(stack, axis=1), self.z_projection)


def _tiff_view(path: str, channels: tuple[str, ...], series: int = 0) -> tuple[SlideSource, tuple[int, ...], int, int]:
    """A 2-D view of a TIFF's series (default the first), its shape, the channel axis's length and its z planes."""
    import tifffile
    import zarr

    from scip.io.tiff import channel_axis, z_planes

    with tifffile.TiffFile(path) as tif:
        found = tif.series[series]
        shape, letters, dtype = tuple(found.shape), found.axes, str(found.dtype)
    store = tifffile.imread(path, aszarr=True, series=series)
    try:
        arr = zarr.open_array(store, mode="r")
        stored, chunks = tuple(arr.shape), tuple(arr.chunks)
    finally:
        store.close()
    if stored != shape:
        raise WindowError(f"{path}: tifffile's window view has shape {stored}, the series {shape} ({letters})")
    n_z = z_planes(shape, letters)
    if n_z > 1:
        axes = tuple({"S": "c", "C": "c", "Y": "y", "X": "x", "Z": "z"}.get(a, a.lower()) for a in letters)
        if [a for a, n in zip(axes, shape) if a not in "czyx" and n > 1]:
            raise WindowError(f"{path}: axes {letters} of shape {shape}: expected Z, Y, X and at most one channel axis")
    else:
        try:
            c = channel_axis(shape, letters)
        except ValueError as e:
            raise WindowError(f"{path} {e}") from None
        axes = ("y", "x") if c is None else ("y", "x", "c") if c == -1 else ("c", "y", "x")
    sizes = dict(zip(axes, shape))
    fixed = tuple((a, 0) for a in axes if a not in ("c", "y", "x"))
    view = SlideSource(path, "tiff", None, series, 0, axes, fixed, (sizes["y"], sizes["x"]),
                       (int(dict(zip(axes, chunks))["y"]), int(dict(zip(axes, chunks))["x"])), channels, dtype)
    return view, shape, sizes.get("c", 1), n_z


def _zarr_view(path: str, array: str | None, axes: tuple[str, ...], fixed: dict, channels: tuple[str, ...]):
    import zarr

    node = zarr.open(path, mode="r")
    arr = node[array] if array is not None else node
    sizes = dict(zip(axes, arr.shape))
    chunks = dict(zip(axes, arr.chunks))
    view = SlideSource(path, "zarr", array, 0, 0, axes, tuple((a, fixed.get(a, 0)) for a in axes
                                                                if a not in ("c", "y", "x")),
                       (int(sizes["y"]), int(sizes["x"])), (int(chunks["y"]), int(chunks["x"])), channels,
                       str(arr.dtype))
    return view, sizes


def _with_plane(view: SlideSource, z: int) -> SlideSource:
    return dataclasses.replace(view, fixed=tuple((a, z if a == "z" else i) for a, i in view.fixed))


def _planes_of(z: str | int | None, n_z: int, where: str) -> tuple[list[int], str | None]:
    """The z planes to read and how to project them, for ``input.z`` (a projection or one plane)."""
    if n_z <= 1:
        return [0], None
    if isinstance(z, int) and not isinstance(z, bool):
        if z >= n_z:
            raise WindowError(f"input.z: {z} is beyond the {n_z} planes of {where} (0..{n_z - 1})")
        return [z], None
    if z in ("max", "mean", "median"):
        return list(range(n_z)), z
    raise WindowError(f"{where} is a z stack of {n_z} planes; set input.z to a projection (max, mean, median) "
                      "or a plane to read it in tiles")


def window_reader(dataset: Dataset, source: Source, z: str | int | None = None) -> WindowReader:
    """How to read windows of ``source``, an image of ``dataset``; reads metadata only.

    Parameters
    ----------
    dataset : Dataset
        The run's dataset (format, loaded channels and their stored positions).
    source : Source
        One of its images.
    z : str or int, optional
        ``input.z``: ``max``/``mean``/``median`` project a z stack window by
        window; a number reads that plane.

    Returns
    -------
    WindowReader

    Raises
    ------
    WindowError
        The image cannot be read in windows (IFC events, a layout the window
        view does not support, a z stack without a projection); the message
        names the file.
    """
    fmt, channels = dataset.format, dataset.channels
    where = ", ".join(p for p in source.paths if p) or source.image_id
    if fmt not in TILED_FORMATS:
        raise WindowError(f"{where}: {fmt} images are not read in tiles")
    if fmt == "bioio":
        # An OME-TIFF scene is a series of the file, which tifffile's zarr view reads window by window;
        # other bioio formats have no dask-free window read here and are read whole.
        scene, t = source.locator
        if not source.paths[0].lower().endswith((".ome.tif", ".ome.tiff")) or t:
            raise WindowError(f"{where}: of the bioio formats, only OME-TIFF scenes without time points are read in tiles")
        fmt = "tiff"
    if fmt == "tiff":
        view, shape, _, n_z = _tiff_view(source.paths[0], channels, series=scene if dataset.format == "bioio" else 0)
        planes, projection = _planes_of(z, n_z, where)
        per_plane = ((view, tuple(dataset.channel_index)),)
        # As read_tiff: a 2-D series is decoded whole, a z stack only in its selected channels.
        decoded = math.prod(shape) if n_z == 1 else len(dataset.channel_index) * n_z * math.prod(view.shape)
    elif fmt == "tiff_channels":
        if source.locator and source.locator[0] == "missing":
            raise WindowError(f"{where}: no file for channel(s) {', '.join(source.locator[1])}")
        views = [_tiff_view(p, (name,)) for p, name in zip(source.paths, channels)]
        shapes = {v[0].shape for v in views}
        if len(shapes) > 1 or any(v[2] != 1 for v in views):
            raise WindowError(f"{where}: channel files of different shapes or with several channels")
        n_z = max(v[3] for v in views)
        planes, projection = _planes_of(z, n_z, where)
        view = views[0][0]
        per_plane = tuple((v[0], (0,)) for v in views)
        decoded = len(views) * n_z * math.prod(view.shape)
    elif fmt == "zarr":
        array, i, ndim = source.locator
        axes = {2: ("y", "x"), 3: ("c", "y", "x"), 4: ("n", "c", "y", "x")}[ndim]
        view, _ = _zarr_view(source.paths[0], array, axes, {"n": i}, channels)
        n_z, planes, projection = 1, [0], None
        positions = tuple(dataset.channel_index) if "c" in axes else (0,) * len(channels)
        per_plane = ((view, positions),)
        decoded = len(positions) * math.prod(view.shape)
    else:
        array, t, axes = source.locator
        view, sizes = _zarr_view(source.paths[0], array, tuple(axes), {"t": t}, channels)
        n_z = int(sizes.get("z", 1))
        planes, projection = _planes_of(z, n_z, where)
        positions = tuple(dataset.channel_index) if "c" in axes else (0,) * len(channels)
        per_plane = ((view, positions),)
        decoded = len(positions) * n_z * math.prod(view.shape)
    itemsize = np.dtype(view.dtype).itemsize
    stack = tuple(tuple((_with_plane(v, k) if n_z > 1 else v, pos) for v, pos in per_plane) for k in planes)
    return WindowReader(source.image_id, view.shape, view.dtype, stack, projection, int(decoded) * itemsize)


def choose_tiled(dataset: Dataset, tiles: TilesConfig, budget: ImageBudget | None, z: str | int | None = None,
                 readers: dict[int, WindowReader] | None = None) -> tuple[int, ...]:
    """The images (``Source.index``) read in tiles.

    Parameters
    ----------
    dataset : Dataset
        The run's images.
    tiles : TilesConfig
        ``mode``: ``always`` (every image that can be read in windows),
        ``auto`` (those whose declared decoded size is over ``budget``),
        ``never`` (none).
    budget : ImageBudget or None
        The per-image budget (``None``: no limit, so ``auto`` tiles nothing).
    z : str or int, optional
        ``input.z``; ``stitch`` tiles nothing (3-D objects are segmented whole).
    readers : dict, optional
        Filled with the :class:`WindowReader` of every image chosen, by index.

    Returns
    -------
    tuple of int
        Source indices, in dataset order. An image that cannot be read in
        windows is read whole (and, over the budget, skipped by its reader).
    """
    if tiles.mode == "never" or dataset.format not in TILED_FORMATS or z == "stitch":
        return ()
    if tiles.mode == "auto" and budget is None:
        return ()
    chosen = []
    for source in dataset.sources:
        try:
            reader = window_reader(dataset, source, z)
        except Exception:  # noqa: BLE001 - an unreadable image is read whole: its reader gives the skip reason
            continue
        if tiles.mode == "always" or reader.declared_bytes > budget.bytes:
            chosen.append(source.index)
            if readers is not None:
                readers[source.index] = reader
    return tuple(chosen)


def tiled_image_record(source: Source, channels: tuple[str, ...], objects: int, method: str,
                       timings: dict[str, float] | None = None, evaluated: bool = False) -> ImageRecord:
    """The one pixel-free image record of a tiled image: counts it once, as :func:`split_cells` does a whole one.

    Parameters
    ----------
    source : Source
        The image.
    channels : tuple of str
        Its loaded channels.
    objects : int
        Objects found in it (owned by its tiles, border objects included).
    method : str
        The segmentation method, for the reason when nothing was found.
    timings : dict, optional
        Seconds per step spent on the whole image (segmentation of all tiles).
    evaluated : bool, optional
        The run evaluates against ground truth: the image is counted as
        not evaluated (:data:`NOT_EVALUATED`).
    """
    record = ImageRecord(source, channels, timings=dict(timings or {}),
                         evaluation=Evaluation(error=f"{source.image_id}: {NOT_EVALUATED}") if evaluated else None)
    if objects == 0:
        record = record.with_(status=skipped("segment", f"no cells found ({method}, read in tiles)",
                                             kind="no cells found"))
    return record


def tile_records(source: Source, channels: tuple[str, ...], pixels: np.ndarray, labels: np.ndarray, owned: int,
                 window: tuple[int, int, int, int], image_shape: tuple[int, int], offset: int, mask: str,
                 padding: int = 5, remove_border: bool = True) -> list[CellRecord]:
    """The cell records of the objects one tile owns, as a whole-image run makes them.

    Parameters
    ----------
    source : Source
        The image the tile belongs to.
    channels : tuple of str
        The loaded channels (of ``pixels``).
    pixels : ndarray, shape (C, h, w)
        The tile's window.
    labels : ndarray of int, shape (h, w)
        The window's labels from pass 1: owned objects ``1..owned``, the
        other objects seen after them.
    owned : int
        Objects the tile owns.
    window : (y0, y1, x0, x1)
        The window in image coordinates.
    image_shape : (int, int)
        ``(H, W)`` of the image, to tell the image border from a cut window edge.
    offset : int
        Global label of the tile's object 1, minus one.
    mask : str
        Name of the segmentation mask (``segment.name``).
    padding : int, optional
        ``cells.padding``.
    remove_border : bool, optional
        Objects touching the image border become skipped records
        (``touches the image border``), as in a whole image.

    Returns
    -------
    list of CellRecord
        One per owned object, ordered by label, with global ``label``,
        ``bbox`` and ``origin`` in image coordinates. The crops come from
        :func:`scip.steps.cells.split_cells` on the window, so ``others``
        marks every other object seen, owned or not.
    """
    if owned == 0:
        return []
    wy0, _, wx0, _ = window
    height, width = image_shape
    window_record = ImageRecord(source, channels, pixels=pixels, labels={mask: np.asarray(labels)})
    out: list[CellRecord] = []
    for cell in split_cells(window_record, mask, padding, remove_border=False)[1:]:
        if cell.label > owned:
            continue
        r0, c0, r1, c1 = cell.bbox
        bbox = (r0 + wy0, c0 + wx0, r1 + wy0, c1 + wx0)
        label = offset + cell.label
        if remove_border and (bbox[0] == 0 or bbox[1] == 0 or bbox[2] == height or bbox[3] == width):
            out.append(CellRecord(source=source, channels=channels, label=label, bbox=bbox, origin=(bbox[0], bbox[1]),
                                  status=skipped("cells", "touches the image border")))
            continue
        out.append(cell.with_(label=label, bbox=bbox, origin=(cell.origin[0] + wy0, cell.origin[1] + wx0)))
    return out


def tile_partitions(tiles: Sequence[tuple[int, int]], per_partition: int) -> list[list[tuple[int, int]]]:
    """Tiles grouped ``per_partition`` at a time, in raster order: the partitions of one tiled image."""
    tiles = list(tiles)
    return [tiles[i:i + per_partition] for i in range(0, len(tiles), max(per_partition, 1))]
