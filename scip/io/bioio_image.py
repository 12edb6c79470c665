"""Microscope files through bioio: CZI, ND2, LIF, OME-TIFF and any format a bioio plugin reads.

`bioio <https://github.com/bioio-devs/bioio>`_ reads a file through the
plugin installed for it (``bioio-czi``, ``bioio-nd2``, ``bioio-lif``,
``bioio-ome-tiff``, ...; ``pip install 'scip[formats]'``). Every scene
(position, tile region, series) of every file, and every time point of it,
is one image: ``meta_scene`` holds the scene's name. Channels are named from
the file's metadata (``input.channels`` renames them, ``input.use_channels``
selects); the physical pixel size (µm) becomes :attr:`Source.pixel_size`,
which gives the micrometre versions of size features. A scene with a ``Z``
axis longer than 1 is read as a z stack ``(C, Z, H, W)``.

bioio and its plugins are imported only when such an input is used. Reading
goes through bioio's ``get_image_data``, which returns numpy arrays (a
plugin may use Dask inside it, in the calling thread); only ``scip/engine``
composes Dask graphs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scip.io.channels import InputError, default_names, select_channels
from scip.io.dataset import Dataset, compile_pattern, match_name
from scip.io.limits import ImageBudget, check_size
from scip.io.tiff import is_excluded, relative_name
from scip.records import Source

__all__ = ["BIOIO_SUFFIXES", "PLUGINS", "discover_bioio", "read_bioio", "is_bioio_file", "bioio_available"]

#: The plugin that reads each file suffix, named in the message when it is missing.
PLUGINS = {".czi": "bioio-czi", ".nd2": "bioio-nd2", ".lif": "bioio-lif", ".ome.tif": "bioio-ome-tiff",
           ".ome.tiff": "bioio-ome-tiff"}
#: Suffixes ``input.format: auto`` reads through bioio (OME-TIFF only when bioio-ome-tiff is installed).
BIOIO_SUFFIXES = tuple(PLUGINS)
_OPEN: "OrderedDict[str, Any]" = OrderedDict()
_OPEN_LOCK = threading.Lock()
_LOCKS: dict[str, threading.Lock] = {}
#: Files kept open per process: a partition reads its images file by file, scene by scene.
_KEEP_OPEN = 4


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(PLUGINS, key=len, reverse=True) if name.endswith(s)), path.suffix.lower())


def is_bioio_file(path: Path) -> bool:
    """Whether ``path``'s name ends with a suffix of :data:`BIOIO_SUFFIXES`."""
    return path.name.lower().endswith(BIOIO_SUFFIXES)


def bioio_available(plugin: str = "bioio_ome_tiff") -> bool:
    """Whether bioio and the plugin module ``plugin`` can be imported (checked without importing them)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("bioio", plugin))


def _install_hint(path: Path) -> str:
    plugin = PLUGINS.get(_suffix(path), "the bioio plugin for this format")
    return f"pip install 'scip[formats]' (or: pip install bioio {plugin})"


def open_image(path: str | Path):
    """A ``bioio.BioImage`` of ``path``, opened once per process (a few kept open).

    Raises
    ------
    InputError
        bioio or the plugin for the file is not installed, or no plugin reads
        it: the message names the file and the pip command.
    """
    key = str(path)
    with _OPEN_LOCK:
        if key in _OPEN:
            _OPEN.move_to_end(key)
            return _OPEN[key]
    try:
        from bioio import BioImage
        from bioio_base.exceptions import UnsupportedFileFormatError
    except ImportError:
        raise InputError(f"input.path: reading {path} needs bioio and its plugin: {_install_hint(Path(path))}") from None
    try:
        image = BioImage(key)
    except UnsupportedFileFormatError:
        raise InputError(f"input.path: no installed bioio plugin reads {path}: {_install_hint(Path(path))}") from None
    with _OPEN_LOCK:
        _OPEN[key] = image
        while len(_OPEN) > _KEEP_OPEN:
            _OPEN.popitem(last=False)
    return image


def list_files(path: Path, recursive: bool) -> list[Path]:
    """The file ``path``, or the files of a folder (its subfolders too when ``recursive``) that bioio reads."""
    if path.is_file():
        return [path]
    found = path.rglob("*") if recursive else path.iterdir()
    return sorted((p for p in found if p.is_file() and is_bioio_file(p)), key=lambda p: str(p))


def _pixel_size(image) -> float | None:
    sizes = image.physical_pixel_sizes
    y, x = sizes.Y, sizes.X
    # bioio gives micrometres; a missing or non-positive size is unknown, never guessed.
    if not y or not x or y <= 0 or x <= 0:
        return None
    return float((y * x) ** 0.5)


def _scene_info(image, scene: str, path: Path) -> tuple[dict[str, int], list[str], float | None]:
    try:
        image.set_scene(scene)
        dims = {d: int(n) for d, n in zip(image.dims.order, image.dims.shape)}
        names = [str(c) for c in (image.channel_names or [])]
        return dims, names, _pixel_size(image)
    except Exception as e:  # noqa: BLE001 - any plugin failure on the header is this file's configuration problem
        raise InputError(f"input.path: cannot read the metadata of scene {scene!r} of {path} "
                         f"({type(e).__name__}: {str(e)[:200]})") from None


def discover_bioio(path: Path, pattern: str | None, channels: Sequence[str] | None,
                   use_channels: Sequence[str] | None, exclude: Sequence[str] = ()) -> Dataset:
    """Every scene (and time point) of the files at ``path`` as images; reads metadata only.

    Parameters
    ----------
    path : Path
        A file, or a folder of files with a suffix of :data:`BIOIO_SUFFIXES`.
    pattern : str, optional
        ``input.pattern``, as for TIFF input (file name, or relative path when
        it contains ``/``); its groups become metadata. No ``channel`` group:
        the channels are in the file.
    channels, use_channels : sequence of str, optional
        ``input.channels`` (names as stored; default: the file's channel
        names) and ``input.use_channels``.
    exclude : sequence of str
        ``input.exclude`` globs over the relative path.

    Returns
    -------
    Dataset
        Format ``bioio``; ids: the file stem (with a pattern: its groups'
        values), ``_s<scene index>`` added when a file has several scenes,
        ``_t<t>`` for time series.
    """
    nested = pattern is not None and "/" in pattern
    found = list_files(path, nested)
    excluded = tuple(str(f) for f in found if is_excluded(relative_name(f, path), exclude))
    files = [f for f in found if str(f) not in excluded]
    if not files:
        raise InputError(f"input.path: no file that bioio reads ({', '.join(BIOIO_SUFFIXES)}) at {path}"
                         + (f" ({len(excluded)} excluded by input.exclude)" if excluded else ""))
    groups: dict[Path, dict[str, str]] = {f: {} for f in files}
    unmatched: list[str] = []
    if pattern is not None:
        compiled = compile_pattern(pattern)
        if "channel" in compiled.groupindex:
            raise InputError("input.pattern: a 'channel' group means one file per channel, which bioio input does not "
                             "read (the channels are inside each file); rename the group")
        kept = {}
        for f in files:
            m = match_name(compiled, relative_name(f, path) if nested else f.name)
            if m is None:
                unmatched.append(str(f))
            else:
                kept[f] = {k: v for k, v in m.groupdict().items() if v is not None}
        if not kept:
            raise InputError(f"input.pattern: {pattern} matches none of the {len(files)} files at {path}")
        groups = kept
    sources: list[Source] = []
    first: tuple[dict[str, int], list[str]] | None = None
    for f, fields in groups.items():
        image = open_image(f)
        scenes = list(image.scenes)
        stem = _stem(f) if not fields else "_".join(fields.values())
        for scene_index, scene in enumerate(scenes):
            dims, names, pixel = _scene_info(image, scene, f)
            first = first or (dims, names)
            n_t = dims.get("T", 1)
            for t in range(n_t):
                image_id = stem + (f"_s{scene_index}" if len(scenes) > 1 else "") + (f"_t{t}" if n_t > 1 else "")
                info = {**fields, "scene": str(scene)} | ({"t": str(t)} if n_t > 1 else {})
                sources.append(Source(image_id=image_id, index=len(sources), paths=(str(f),), fields=info,
                                      locator=(scene_index, t), pixel_size=pixel))
    assert first is not None
    dims, stored = first
    n_stored = dims.get("C", 1)
    if channels is not None:
        if len(channels) != n_stored:
            raise InputError(f"input.channels: {len(channels)} names given but {files[0]} has {n_stored} channels "
                             f"({', '.join(stored)})")
        names = tuple(channels)
    elif len(stored) == n_stored and all(stored) and len(set(stored)) == n_stored:
        names = tuple(stored)
    else:
        names = default_names(n_stored)
    loaded, index = select_channels(names, use_channels, f"the channels of {files[0]}")
    ids = [s.image_id for s in sources]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"input.pattern: image id {twice!r} is given to two images; add named groups that tell "
                         "the files apart")
    return Dataset("bioio", loaded, index, n_stored, tuple(sources), tuple(unmatched), z_planes=dims.get("Z", 1),
                   excluded=excluded)


def _stem(path: Path) -> str:
    return path.name[: -len(_suffix(path))] if is_bioio_file(path) else path.stem


def read_bioio(source: Source, channel_index: tuple[int, ...], n_stored: int,
               budget: ImageBudget | None = None) -> np.ndarray:
    """Pixels of one scene and time point: ``(C, H, W)``, or ``(C, Z, H, W)`` with several z planes.

    Only the channels at ``channel_index`` are requested from the plugin. The
    declared size is checked against ``budget`` before any pixel is read.

    Raises
    ------
    ValueError
        The scene has another number of channels than the first one.
    scip.io.limits.ImageTooLarge
        Over ``budget``.
    """
    scene_index, t = source.locator
    path = source.paths[0]
    image = open_image(path)
    # set_scene and the read belong together: the image object is shared by the threads of a worker.
    with _LOCKS.setdefault(path, threading.Lock()):
        image.set_scene(image.scenes[scene_index])
        dims = {d: int(n) for d, n in zip(image.dims.order, image.dims.shape)}
        if dims.get("C", 1) != n_stored:
            raise ValueError(f"scene {image.scenes[scene_index]!r} of {path} has {dims.get('C', 1)} channels, "
                             f"expected {n_stored}")
        n_z = dims.get("Z", 1)
        check_size(path, (len(channel_index), n_z, dims["Y"], dims["X"]), np.dtype(image.dtype), budget)
        pixels = np.asarray(image.get_image_data("CZYX", T=t, C=list(channel_index)))
    return pixels if n_z > 1 else pixels[:, 0]
