"""One large 2-D image, read window by window from OME-Zarr, Zarr or (tiled) TIFF.

:func:`open_slide` reads metadata only and returns a :class:`SlideSource`: a
small, picklable description (path, axes, plane, channel names) that any
process can use to read a window ``(C, h, w)`` of chosen channels. Only the
storage chunks (zarr) or TIFF tiles/strips that overlap the window are
decoded, through zarr or tifffile's zarr view of the TIFF. Opened arrays are
cached per process, so the thousands of window reads of a slide run open
each file once per worker.

Axes: OME-Zarr names them (``t, c, z, y, x``); a plain Zarr array is
``(H, W)`` or ``(C, H, W)``; a TIFF series names them in its metadata
(``YX``, ``CYX``, ``YXS`` for RGB, ``ZCYX``, ...). A ``t`` or ``z`` axis is
reduced to one plane (``t``, ``z``); a z stack without a chosen plane is
refused, since segmentation here is 2-D.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import zarr

from scip._hints import did_you_mean
from scip.io.channels import InputError
from scip.io.zarr_image import ome_axes, ome_channel_labels, ome_level, ome_metadata, ome_scale

__all__ = ["ChannelView", "SlideSource", "open_slide"]

_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs", ".ndpi", ".scn")
_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class SlideSource:
    """Where one 2-D image is and how to read windows of it.

    Attributes
    ----------
    path : str
        The zarr store or TIFF file.
    kind : str
        ``"ome_zarr"``, ``"zarr"`` or ``"tiff"``.
    array : str or None
        Zarr: path of the array inside the store (``None``: the store is the array).
    series, level : int
        TIFF: series and pyramid level.
    axes : tuple of str
        Names of the stored array's axes, among ``t, c, z, y, x``.
    fixed : tuple of (str, int)
        The plane read on each axis other than ``c, y, x``.
    shape : (int, int)
        ``(H, W)`` of the image.
    chunks : (int, int)
        Storage chunk (tile) shape along ``y, x``.
    channels : tuple of str
        Channel names, in stored order.
    dtype : str
        Pixel dtype.
    """

    path: str
    kind: str
    array: str | None
    series: int
    level: int
    axes: tuple[str, ...]
    fixed: tuple[tuple[str, int], ...]
    shape: tuple[int, int]
    chunks: tuple[int, int]
    channels: tuple[str, ...]
    dtype: str

    def channel_index(self, channel: str | int, key: str = "segment.channel") -> int:
        """Stored position of ``channel``: a name, or a position (also as a string of digits).

        Raises
        ------
        InputError
            Naming ``key``, the channels of the image and the closest name.
        """
        if isinstance(channel, str) and channel in self.channels:
            return self.channels.index(channel)
        if isinstance(channel, int) or (isinstance(channel, str) and channel.isdigit()):
            position = int(channel)
            if position < len(self.channels):
                return position
        raise InputError(f"{key}: no channel {channel!r} in {self.path} (channels: {', '.join(self.channels)}; "
                         f"or a position 0..{len(self.channels) - 1})" + did_you_mean(channel, self.channels))

    def read(self, channels: Sequence[int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels ``(C, y1 - y0, x1 - x0)`` of the channels at stored positions ``channels``."""
        arr = _open_array(self)
        fixed = dict(self.fixed)
        selection: list = []
        for name in self.axes:
            if name == "y":
                selection.append(slice(y0, y1))
            elif name == "x":
                selection.append(slice(x0, x1))
            elif name == "c":
                selection.append(list(channels))
            else:
                selection.append(fixed[name])
        pixels = np.asarray(arr.oindex[tuple(selection)])
        kept = [a for a in self.axes if a in ("c", "y", "x")]
        if "c" not in kept:
            return np.broadcast_to(pixels[None], (len(channels), *pixels.shape)).copy()
        return np.moveaxis(pixels, kept.index("c"), 0)

    def complete(self) -> bool:
        """Whether the store holds every chunk of the array (one listing of it); TIFF files always do."""
        if self.kind == "tiff":
            return True
        arr = _open_array(self)
        return arr.nchunks_initialized == arr.nchunks

    def missing_chunks(self, channels: Sequence[int]) -> list[str]:
        """Paths of the storage chunks the image's channels ``channels`` need that are not in the store.

        zarr reads such a chunk as the array's fill value, with no sign of
        it; a run refuses the image instead (``input.missing_chunks: skip``).
        One file check per chunk of the image: ask :meth:`complete` first,
        which answers the usual case with one listing. TIFF files have no
        missing chunks (empty): tifffile reads what the file holds.
        """
        if self.kind == "tiff":
            return []
        arr = _open_array(self)
        grid = arr.shards or arr.chunks
        fixed = dict(self.fixed)
        ranges = []
        for name, size, step in zip(self.axes, arr.shape, grid):
            if name in ("y", "x"):
                ranges.append(range(-(-size // step)))
            elif name == "c":
                ranges.append(sorted({int(c) // step for c in channels}))
            else:
                ranges.append([int(fixed[name]) // step])
        root = Path(self.path) / (self.array or "")
        keys = (root / arr.metadata.encode_chunk_key(coords) for coords in itertools.product(*ranges))
        return [str(key) for key in keys if not key.exists()]

    @property
    def fill_value(self):
        """What zarr reads where a chunk is missing (0 for TIFF)."""
        return 0 if self.kind == "tiff" else _open_array(self).fill_value


class ChannelView:
    """One channel of a :class:`SlideSource` as a 2-D array-like (for :func:`scip.engine.arrays.to_dask`)."""

    def __init__(self, source: SlideSource, channel: int):
        self.source, self.channel = source, channel
        self.shape, self.dtype, self.ndim = source.shape, np.dtype(source.dtype), 2

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        (y0, y1, _), (x0, x1, _) = (k.indices(n) for k, n in zip(key, self.shape))
        return self.source.read([self.channel], y0, y1, x0, x1)[0]


def _open_array(source: SlideSource):
    """The zarr array (or tifffile's zarr view) of ``source``, opened once per process."""
    key = (source.path, source.kind, source.array, source.series, source.level)
    with _CACHE_LOCK:
        if key not in _CACHE:
            if source.kind == "tiff":
                import tifffile

                store = tifffile.imread(source.path, aszarr=True, series=source.series, level=source.level)
                _CACHE[key] = zarr.open_array(store, mode="r")
            else:
                node = zarr.open(source.path, mode="r")
                _CACHE[key] = node[source.array] if source.array is not None else node
        return _CACHE[key]


def _detect(path: Path) -> str:
    if path.is_dir():
        if not any((path / f).exists() for f in (".zarray", ".zgroup", "zarr.json")):
            raise InputError(f"input.path: {path} is a folder but not a zarr store (no .zgroup, .zarray or zarr.json)")
        try:
            node = zarr.open(str(path), mode="r")
        except Exception as e:  # noqa: BLE001 - zarr raises several types for "not a store"
            raise InputError(f"input.path: cannot open {path} as zarr ({type(e).__name__}: {e})") from None
        return "ome_zarr" if isinstance(node, zarr.Group) and ome_metadata(node) is not None else "zarr"
    if path.name.lower().endswith(_TIFF_SUFFIXES):
        return "tiff"
    raise InputError(f"input.path: {path} is neither a zarr store nor a TIFF file ({', '.join(_TIFF_SUFFIXES)}); "
                     "set input.format if it is one")


def _plane(axes: tuple[str, ...], shape: tuple[int, ...], t: int, z: int | None, path: Path) -> tuple:
    """The fixed index of every axis other than c, y, x, checked against the array's shape."""
    fixed = []
    for name, size in zip(axes, shape):
        if name in ("c", "y", "x"):
            continue
        if name == "z" and size > 1 and z is None:
            raise InputError(f"input.z: {path} is a z stack of {size} planes; segmentation here is 2-D: "
                             f"choose a plane with input.z (0..{size - 1})")
        index = {"t": t, "z": z or 0}.get(name, 0)
        if index >= size:
            key = f"input.{name}" if name in ("t", "z") else f"axis {name!r}"
            raise InputError(f"{key}: {index} is beyond the {size} planes of {path} (0..{size - 1})")
        if name not in ("t", "z") and size > 1:
            raise InputError(f"input.path: {path} has an axis {name!r} of size {size} that is neither t, c, z, y "
                             "nor x; store one 2-D image (with channels) per array")
        fixed.append((name, index))
    return tuple(fixed)


def _names(given: Sequence[str] | None, stored: Sequence[str] | None, n: int, path: Path) -> tuple[str, ...]:
    if given is not None:
        if len(given) != n:
            raise InputError(f"input.channels: {len(given)} names given but {path} has {n} channel(s)")
        if len(set(given)) != n:
            raise InputError(f"input.channels: names repeat: {list(given)}")
        return tuple(given)
    if stored is not None and len(stored) == n and all(stored) and len(set(stored)) == n:
        return tuple(str(s) for s in stored)
    return tuple(f"ch{i}" for i in range(n))


def open_slide(path: str | Path, format: str = "auto", array: str | None = None, series: int = 0, level: int = 0,
               t: int = 0, z: int | None = None, channels: Sequence[str] | None = None) -> SlideSource:
    """Describe a large 2-D image for window reads; reads metadata only.

    Parameters
    ----------
    path : str or Path
        An OME-Zarr image group, a Zarr array or group, or a TIFF file.
    format : {"auto", "ome_zarr", "zarr", "tiff"}, optional
        ``auto`` recognises OME-Zarr by its ``multiscales`` metadata, other
        zarr stores, and TIFF by the file name.
    array : str, optional
        Zarr group: the array inside it. OME-Zarr: ignored (``level`` picks it).
    series, level : int, optional
        TIFF series; TIFF or OME-Zarr resolution level (0 is full resolution).
    t, z : int, optional
        Time point and z plane, for images with those axes.
    channels : sequence of str, optional
        Channel names in stored order (default: OME-Zarr ``omero`` labels,
        else ``ch0, ch1, ...``).

    Returns
    -------
    SlideSource

    Raises
    ------
    InputError
        A message naming the config key (``input.path``, ``input.array``,
        ``input.level``, ``input.z``, ...), the file and what it holds.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input.path: path does not exist: {path}")
    kind = _detect(path) if format == "auto" else format
    stored_names = None
    if kind == "tiff":
        arr, axes, array = _tiff_array(path, series, level)
    else:
        node = _open_zarr(path)
        if kind == "ome_zarr":
            meta, multiscale, array = ome_level(node, path, level)
            arr = node[array]
            axes = ome_axes(node, path, multiscale, arr.ndim)
            if axes[-2:] != ("y", "x") or not set(axes) <= set("tczyx"):
                raise InputError(f"input.path: {path} has axes {list(axes)} for an array of shape {arr.shape}; "
                                 "expected OME-Zarr axes among t, c, z, y, x, ending with y, x")
            # Checked now, not when the finished labels get their metadata.
            ome_scale(node, path, multiscale, level, len(axes))
            stored_names = ome_channel_labels(node, path, meta) if channels is None else None
        else:
            if isinstance(node, zarr.Group):
                names = sorted(k for k, _ in node.arrays())
                if array is None or array not in node:
                    what = "name the array to read" if array is None else f"no array {array!r} there"
                    raise InputError(f"input.array: {path} is a zarr group; {what} (arrays here: "
                                     f"{', '.join(names) or 'none'})" + (did_you_mean(array, names) if array else ""))
                arr = node[array]
            else:
                arr, array = node, None
            if arr.ndim not in (2, 3):
                raise InputError(f"input.path: zarr array {path} has shape {arr.shape}; expected (H, W) or (C, H, W) "
                                 "(store z stacks and time series as OME-Zarr, whose axes are named)")
            axes = ("y", "x") if arr.ndim == 2 else ("c", "y", "x")
    shape = tuple(int(s) for s in arr.shape)
    fixed = _plane(axes, shape, t, z, path)
    sizes = dict(zip(axes, shape))
    chunks = dict(zip(axes, arr.chunks))
    names = _names(channels, stored_names, sizes.get("c", 1), path)
    return SlideSource(str(path), kind, array, series, level, axes, fixed, (sizes["y"], sizes["x"]),
                       (int(chunks["y"]), int(chunks["x"])), names, str(arr.dtype))


def _open_zarr(path: Path):
    try:
        return zarr.open(str(path), mode="r")
    except Exception as e:  # noqa: BLE001 - zarr raises several types for "not a store"
        raise InputError(f"input.path: cannot open {path} as zarr ({type(e).__name__}: {e})") from None


def _tiff_array(path: Path, series: int, level: int):
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if series >= len(tif.series):
                raise InputError(f"input.series: {series} is not a series of {path}; it has series "
                                 f"0..{len(tif.series) - 1}")
            s = tif.series[series]
            if level >= len(s.levels):
                raise InputError(f"input.level: {level} is not a level of series {series} of {path}; "
                                 f"it has levels 0..{len(s.levels) - 1}")
            letters = s.levels[level].axes
    except tifffile.TiffFileError as e:
        raise InputError(f"input.path: {path} is not a readable TIFF ({e})") from None
    if "C" in letters and "S" in letters:
        raise InputError(f"input.path: {path} has both channel (C) and sample (S) axes ({letters}); not supported")
    axes = tuple({"S": "c", "C": "c", "Y": "y", "X": "x", "Z": "z", "T": "t"}.get(a, a.lower()) for a in letters)
    if axes[-2:] not in (("y", "x"),) and axes[-3:-1] != ("y", "x"):
        raise InputError(f"input.path: {path} has axes {letters}; expected Y and X (and optionally C/S, Z, T)")
    store = tifffile.imread(path, aszarr=True, series=series, level=level)
    try:
        arr = zarr.open_array(store, mode="r")
        # Only the metadata is needed here; window reads reopen the file in each process.
        meta = SimpleNamespace(shape=arr.shape, chunks=arr.chunks, dtype=arr.dtype, ndim=arr.ndim)
    finally:
        store.close()
    return meta, axes, None
