"""Plain Zarr arrays and OME-Zarr (NGFF) images, v2 or v3 stores.

A plain array is ``(H, W)``, ``(C, H, W)`` or a stack ``(N, C, H, W)`` of
images. A plain array has no axis names, so it cannot carry a z axis
unambiguously: a 4-D array is always ``(N, C, H, W)``, never a z stack
(store z stacks as OME-Zarr, whose axes metadata names ``z``).

An OME-Zarr image is read at one resolution level; its ``t`` axis (if any)
gives one image per time point, ``c`` the channels (named from the
``omero`` metadata when present), and a ``z`` axis longer than 1 makes each
image a z stack ``(C, Z, H, W)``, to be projected by
:func:`scip.steps.project.project_z`. Each image record reads only the
chunks of its own slice and selected channels.

zarr reads a chunk that is not in the store as the array's fill value;
here a chunk missing from an image's region makes that image a skipped
record (``chunk missing: <store>/<key>``) instead of an image of zeros,
unless ``input.missing_chunks: fill`` (for stores whose writer left out
chunks that held only the fill value, as zarr-python 3 does by default).
An image whose selected pixels are over the per-image memory budget is
refused from its metadata, before any chunk is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr
from zarr.storage import LocalStore, WrapperStore

from scip._hints import short
from scip.io.channels import InputError, default_names, select_channels
from scip.io.dataset import Dataset
from scip.io.limits import ChunkMissing, ImageBudget, ImageSkip, check_size
from scip.records import Source

#: Names of zarr metadata documents: a read that finds none of these is not a missing chunk.
_METADATA = (".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json")


def ome_metadata(group) -> dict | None:
    """The NGFF image metadata of a group (0.4: top-level attrs; 0.5: under ``ome``)."""
    attrs = dict(group.attrs)
    if "ome" in attrs and isinstance(attrs["ome"], dict):
        attrs = attrs["ome"]
    return attrs if "multiscales" in attrs else None


def _open(path: Path):
    try:
        return zarr.open(str(path), mode="r")
    except Exception as e:  # noqa: BLE001 - zarr raises several types for "not a store"
        raise InputError(f"input.path: cannot open {path} as zarr ({type(e).__name__}: {e})") from None


def discover_zarr(path: Path, array: str | None, channels, use_channels) -> Dataset:
    """Images of a plain zarr array: ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``."""
    node = _open(path)
    if isinstance(node, zarr.Group):
        if array is None:
            names = sorted(k for k, _ in node.arrays())
            raise InputError(f"input.array: {path} is a zarr group; name the array to read (arrays here: {', '.join(names) or 'none'})")
        if array not in node:
            names = sorted(k for k, _ in node.arrays())
            raise InputError(f"input.array: no array {array!r} in {path}; arrays here: {', '.join(names) or 'none'}")
        node = node[array]
    shape = node.shape
    if len(shape) not in (2, 3, 4):
        raise InputError(f"input.path: zarr array {path} has shape {shape}; expected (H, W), (C, H, W) or (N, C, H, W)")
    n_images = shape[0] if len(shape) == 4 else 1
    n_stored = shape[-3] if len(shape) >= 3 else 1
    names = _names(channels, n_stored, path)
    loaded, index = select_channels(names, use_channels, f"the {n_stored} channels of {path}")
    sources = tuple(
        Source(image_id=str(i), index=i, paths=(str(path),), locator=(array, i if len(shape) == 4 else None, len(shape)))
        for i in range(n_images)
    )
    chunk = node.chunks[0] if len(shape) == 4 else 1
    return Dataset("zarr", loaded, index, n_stored, sources, chunk_size=chunk)


def _names(channels, n_stored: int, path) -> tuple[str, ...]:
    if channels is None:
        return default_names(n_stored)
    if len(channels) != n_stored:
        raise InputError(f"input.channels: {len(channels)} names given but {path} has {n_stored} channels")
    return tuple(channels)


class _Where:
    """Names the metadata document and key of an OME-Zarr image in error messages."""

    def __init__(self, group, path: Path):
        self.path = path
        self.prefix = "ome." if "ome" in group.attrs else ""
        self.file = Path(path) / (".zattrs" if group.metadata.zarr_format == 2 else "zarr.json")

    def error(self, key: str, problem: str, config_key: str = "input.path") -> InputError:
        return InputError(f"{config_key}: {self.file}: OME-Zarr metadata '{self.prefix}{key}' {problem}")


def ome_level(group, path: Path, level: int) -> tuple[dict, dict, str]:
    """OME-Zarr metadata of ``group``, its first multiscale, and the array path of resolution ``level``.

    Every part of the ``multiscales`` metadata that is used is checked, so
    that broken metadata gives a message naming the file and the key, not a
    ``KeyError`` from deep inside a reader.

    Raises
    ------
    InputError
        Naming ``input.path`` (missing or malformed metadata, a dataset path
        that is not an array of the store) or ``input.level`` (no such level).
    """
    meta = ome_metadata(group) if isinstance(group, zarr.Group) else None
    if meta is None:
        raise InputError(f"input.path: {path} has no OME-Zarr 'multiscales' metadata")
    where = _Where(group, path)
    multiscales = meta["multiscales"]
    if not isinstance(multiscales, list) or not multiscales:
        raise where.error("multiscales", f"must be a non-empty list, got {short(multiscales)}")
    multiscale = multiscales[0]
    if not isinstance(multiscale, dict):
        raise where.error("multiscales[0]", f"must be an object, got {short(multiscale)}")
    if "datasets" not in multiscale:
        raise where.error("multiscales[0].datasets", "is missing (the list of resolution levels)")
    datasets = multiscale["datasets"]
    if not isinstance(datasets, list) or not datasets:
        raise where.error("multiscales[0].datasets", f"must be a non-empty list, got {short(datasets)}")
    if level >= len(datasets):
        raise InputError(f"input.level: {level} is not a level of {path}; it has levels 0..{len(datasets) - 1}")
    dataset = datasets[level]
    key = f"multiscales[0].datasets[{level}]"
    if not isinstance(dataset, dict) or "path" not in dataset:
        raise where.error(key, f"must be an object with a 'path', got {short(dataset)}")
    array_path = dataset["path"]
    if not isinstance(array_path, str) or not array_path:
        raise where.error(f"{key}.path", f"must be a non-empty string, got {short(array_path)}")
    try:
        node = group[array_path]
    except KeyError:
        node = None
    if not isinstance(node, zarr.Array):
        arrays = sorted(k for k, _ in group.arrays())
        raise where.error(f"{key}.path", f"is {array_path!r}, which is not an array of {path} "
                                         f"(arrays here: {', '.join(arrays) or 'none'})")
    return meta, multiscale, array_path


def ome_axes(group, path: Path, multiscale: dict, ndim: int) -> tuple[str, ...]:
    """Axis names of a multiscale (NGFF 0.4+: objects with a ``name``; 0.3: strings), checked against ``ndim``.

    Without ``axes`` (NGFF before 0.3) the array is read as the last
    ``ndim`` of ``t, c, z, y, x``. Raises :class:`InputError` naming the file and key.
    """
    where = _Where(group, path)
    if "axes" not in multiscale:
        return tuple("tczyx"[-ndim:])
    axes = multiscale["axes"]
    if not isinstance(axes, list):
        raise where.error("multiscales[0].axes", f"must be a list, got {short(axes)}")
    names = []
    for i, axis in enumerate(axes):
        name = axis.get("name") if isinstance(axis, dict) else axis
        if not isinstance(name, str) or not name:
            raise where.error(f"multiscales[0].axes[{i}]", f"must be a name or an object with a 'name', got {short(axis)}")
        names.append(name)
    if len(set(names)) != len(names):
        raise where.error("multiscales[0].axes", f"names an axis twice: {names}")
    if len(names) != ndim:
        raise where.error("multiscales[0].axes", f"names {len(names)} axes {names} for an array of {ndim} dimensions")
    return tuple(names)


def ome_scale(group, path: Path, multiscale: dict, level: int, n_axes: int) -> list[float] | None:
    """The ``scale`` transformation of resolution ``level`` (one number per axis), or ``None`` without one.

    Raises :class:`InputError` naming the file and key when it is malformed.
    """
    where = _Where(group, path)
    key = f"multiscales[0].datasets[{level}].coordinateTransformations"
    transforms = multiscale["datasets"][level].get("coordinateTransformations", [])
    if not isinstance(transforms, list):
        raise where.error(key, f"must be a list, got {short(transforms)}")
    for i, t in enumerate(transforms):
        if not isinstance(t, dict):
            raise where.error(f"{key}[{i}]", f"must be an object, got {short(t)}")
        if t.get("type") != "scale":
            continue
        scale = t.get("scale")
        if (not isinstance(scale, list) or len(scale) != n_axes
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)):
            raise where.error(f"{key}[{i}].scale", f"must be {n_axes} numbers, one per axis, got {short(scale)}")
        return [float(v) for v in scale]
    return None


#: Micrometres per unit of the NGFF/OME length units a pixel size is given in.
LENGTH_UNITS_UM = {"micrometer": 1.0, "micron": 1.0, "µm": 1.0, "um": 1.0, "nanometer": 1e-3, "nm": 1e-3,
                   "millimeter": 1e3, "mm": 1e3, "centimeter": 1e4, "meter": 1e6, "m": 1e6, "angstrom": 1e-4}


def um_per_pixel(size_y: float | None, size_x: float | None, unit_y: str | None, unit_x: str | None) -> float | None:
    """One pixel size in micrometres from the sizes along y and x and their units; ``None`` when unknown.

    Pixels that are not square get the geometric mean of their sides (exact
    for areas, approximate for lengths). A size without a known length unit
    is not guessed to be micrometres.
    """
    if not size_y or not size_x or size_y <= 0 or size_x <= 0:
        return None
    fy, fx = LENGTH_UNITS_UM.get(str(unit_y).lower()), LENGTH_UNITS_UM.get(str(unit_x).lower())
    if fy is None or fx is None:
        return None
    return float((size_y * fy * size_x * fx) ** 0.5)


def pixel_size_um(group, path: Path, multiscale: dict, level: int, axes: tuple[str, ...]) -> float | None:
    """Pixel size (µm) of resolution ``level`` of an OME-Zarr image: its ``scale`` on y, x with the axes' units."""
    scale = ome_scale(group, path, multiscale, level, len(axes))
    if scale is None:
        return None
    units = {a.get("name"): a.get("unit") for a in multiscale.get("axes", []) if isinstance(a, dict)}
    sizes = dict(zip(axes, scale))
    return um_per_pixel(sizes.get("y"), sizes.get("x"), units.get("y"), units.get("x"))


def physical_size(source: Source) -> dict[str, tuple[float, str | None]]:
    """Pixel size and unit along each spatial axis (``z``, ``y``, ``x``) of an OME-Zarr source's level.

    What the label images of this source are scaled by, so that they
    overlay the image in a viewer. Axes without a ``scale`` get 1 and no unit.

    Parameters
    ----------
    source : Source
        An image of an OME-Zarr input (its locator names the level's array).

    Returns
    -------
    dict
        Axis name to ``(size, unit or None)``, for the spatial axes the image has.
    """
    array_path, _, axes = source.locator
    # A plate's field: the image group is the array's parent, below the plate root.
    image, _, array_path = array_path.rpartition("/")
    path = Path(source.paths[0]) / image if image else Path(source.paths[0])
    group = _open(path)
    meta = ome_metadata(group) or {}
    multiscale = (meta.get("multiscales") or [{}])[0]
    datasets = multiscale.get("datasets", []) if isinstance(multiscale, dict) else []
    level = next((i for i, d in enumerate(datasets) if isinstance(d, dict) and d.get("path") == array_path), None)
    scale = ome_scale(group, path, multiscale, level, len(axes)) if level is not None else None
    units = {a.get("name"): a.get("unit") for a in multiscale.get("axes", []) if isinstance(a, dict)}
    sizes = dict(zip(axes, scale or [1.0] * len(axes)))
    return {a: (sizes[a], units.get(a) if scale else None) for a in axes if a in ("z", "y", "x")}


def ome_channel_labels(group, path: Path, meta: dict) -> list | None:
    """The ``omero`` channel labels, or ``None`` when the image has none.

    Raises :class:`InputError` naming the file and key when ``omero`` is
    malformed: the channel names become column names, so they are not guessed.
    """
    if "omero" not in meta:
        return None
    where = _Where(group, path)
    hint = "; or name the channels with input.channels"
    omero = meta["omero"]
    if not isinstance(omero, dict):
        raise where.error("omero", f"must be an object, got {short(omero)}{hint}")
    channels = omero.get("channels", [])
    if not isinstance(channels, list):
        raise where.error("omero.channels", f"must be a list, got {short(channels)}{hint}")
    for i, c in enumerate(channels):
        if not isinstance(c, dict):
            raise where.error(f"omero.channels[{i}]", f"must be an object, got {short(c)}{hint}")
    return [c.get("label") for c in channels]


def discover_ome_zarr(path: Path, level: int, channels, use_channels) -> Dataset:
    """Images of an OME-Zarr image group, one per time point."""
    group = _open(path)
    meta, multiscale, array_path = ome_level(group, path, level)
    arr = group[array_path]
    axes = list(ome_axes(group, path, multiscale, arr.ndim))
    sizes = dict(zip(axes, arr.shape))
    # NGFF orders axes t, c, z, y, x; reading relies on that order (channels first, then z).
    ordered = [a for a in ("t", "c", "z", "y", "x") if a in axes]
    if list(axes) != ordered or len(axes) != len(arr.shape) or ordered[-2:] != ["y", "x"]:
        raise InputError(f"input.path: {path} has axes {axes} for an array of shape {arr.shape}; "
                         "expected OME-Zarr axes among t, c, z, y, x, in that order, ending with y, x")
    n_stored = sizes.get("c", 1)
    if channels is None:
        labels = ome_channel_labels(group, path, meta) or []
        names = tuple(labels) if len(labels) == n_stored and all(labels) and len(set(labels)) == n_stored else default_names(n_stored)
    else:
        names = _names(channels, n_stored, path)
    loaded, index = select_channels(names, use_channels, f"the channels of {path}")
    n_t = sizes.get("t", 1)
    pixel = pixel_size_um(group, path, multiscale, level, tuple(axes))
    sources = tuple(
        Source(image_id=str(t) if n_t > 1 else Path(path).stem, index=t, paths=(str(path),), fields={"t": str(t)} if n_t > 1 else {},
               locator=(array_path, t, tuple(axes)), pixel_size=pixel)
        for t in range(n_t)
    )
    return Dataset("ome_zarr", loaded, index, n_stored, sources, z_planes=sizes.get("z", 1))


class _MissingChunks(WrapperStore):
    """A read-only store that notes every key zarr asked for and did not find.

    zarr reads a chunk that is not in the store as the array's fill value,
    with no sign of it; this store lets the reader tell. Reading costs
    nothing more: the keys noted are those zarr fetches anyway.
    """

    def __init__(self, store, missing: list[str] | None = None):
        super().__init__(store)
        # Shared with the copies zarr makes of a store (``with_read_only``), which note into the same list.
        self.missing = [] if missing is None else missing

    def _with_store(self, store):
        return type(self)(store, self.missing)

    def _note(self, key: str, found) -> None:
        if found is None and key.rsplit("/", 1)[-1] not in _METADATA:
            self.missing.append(key)

    async def get(self, key, prototype, byte_range=None):
        found = await self._store.get(key, prototype, byte_range)
        self._note(key, found)
        return found

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        found = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), value in zip(key_ranges, found):
            self._note(key, value)
        return found


def _open_array(path: str, array: str | None) -> tuple[Any, _MissingChunks]:
    """The zarr array at ``path`` (``array`` inside it), read through a store that notes missing chunks."""
    store = _MissingChunks(LocalStore(path, read_only=True))
    node = zarr.open(store=store, mode="r")
    if array is not None:
        try:
            node = node[array]
        except KeyError:
            raise ImageSkip(f"{path} has no array {array!r}") from None
    return node, store


def _read_checked(node, store: _MissingChunks, selection, path: str, missing_chunks: str) -> np.ndarray:
    """``node.oindex[selection]``; a chunk of it missing from the store raises :class:`ChunkMissing` (unless ``fill``)."""
    store.missing.clear()
    pixels = np.asarray(node.oindex[selection])
    if store.missing and missing_chunks == "skip":
        raise ChunkMissing(chunk_missing_message([f"{path.rstrip('/')}/{k}" for k in store.missing], node.fill_value))
    return pixels


def chunk_missing_message(keys: Sequence[str], fill_value) -> str:
    """Why an image is skipped: the first of the chunks ``keys`` (paths) missing from its store, and how many more."""
    keys = sorted(set(keys))
    more = f" (and {len(keys) - 1} more missing chunk{'s' if len(keys) > 2 else ''})" if len(keys) > 1 else ""
    return (f"chunk missing: {keys[0]}{more}; zarr would read it as the fill value {fill_value} "
            "(input.missing_chunks: fill accepts that)")


def read_zarr(source: Source, channel_index: tuple[int, ...], budget: ImageBudget | None = None,
              missing_chunks: str = "skip") -> np.ndarray:
    """Pixels ``(C, H, W)`` of one image of a plain zarr array.

    Raises :class:`~scip.io.limits.ImageTooLarge` before reading when the
    selected pixels are over ``budget``, and :class:`~scip.io.limits.ChunkMissing`
    when a chunk of the image is not in the store (with ``missing_chunks="skip"``).
    """
    array, i, ndim = source.locator
    path = source.paths[0]
    node, store = _open_array(path, array)
    height, width = node.shape[-2:]
    if ndim == 4:
        selection = (i, list(channel_index))
    elif ndim == 3:
        selection = (list(channel_index),)
    else:
        selection = (slice(None), slice(None))
    check_size(path, (len(channel_index) if ndim > 2 else 1, height, width), node.dtype, budget)
    pixels = _read_checked(node, store, selection, path, missing_chunks)
    return pixels if ndim > 2 else pixels[None]


def read_ome_zarr(source: Source, channel_index: tuple[int, ...], budget: ImageBudget | None = None,
                  missing_chunks: str = "skip") -> np.ndarray:
    """Pixels of one time point of an OME-Zarr image.

    ``(C, H, W)``, or ``(C, Z, H, W)`` when the image has more than one z
    plane (NGFF orders the axes t, c, z, y, x, so no transpose is needed).
    Raises as :func:`read_zarr` for images over ``budget`` and missing chunks.
    """
    array_path, t, axes = source.locator
    path = source.paths[0]
    arr, store = _open_array(path, array_path)
    stack = "z" in axes and arr.shape[axes.index("z")] > 1
    selection = []
    shape = []
    for name, size in zip(axes, arr.shape):
        if name == "t":
            selection.append(t)
        elif name == "z":
            selection.append(slice(None) if stack else 0)
            shape.append(size if stack else 1)
        elif name == "c":
            selection.append(list(channel_index))
            shape.append(len(channel_index))
        else:
            selection.append(slice(None))
            shape.append(size)
    check_size(path, shape, arr.dtype, budget)
    pixels = _read_checked(arr, store, tuple(selection), path, missing_chunks)
    if "c" not in axes:
        pixels = pixels[None]
    return pixels
