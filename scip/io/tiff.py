"""TIFF input: one multi-channel file per image, or one file per channel.

An image is ``(C, H, W)``; a file whose series has a ``Z`` axis longer than
1 (named by ImageJ hyperstack, OME-TIFF or tifffile ``axes`` metadata, e.g.
``ZCYX``, ``CZYX``, ``ZYX``, ``TZCYX`` with one time point) is read as a z
stack ``(C, Z, H, W)``, to be projected by :func:`scip.steps.project.project_z`.
A stack saved without axes metadata has no ``Z`` to find: a 3-D one is read
as channels, as before.

Discovery lists files and reads one TIFF header (to count channels when
the config does not name them, and the z planes reported in
:attr:`~scip.io.dataset.Dataset.z_planes`); pixels are read only by
:func:`read_tiff`, inside the graph, and only after the size the header
declares has been checked against the per-image memory budget (a small
compressed file can decode to many GiB).
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
import zarr

from scip._hints import short
from scip.io.channels import InputError, default_names, select_channels
from scip.io.dataset import Dataset, compile_pattern, match_name
from scip.io.limits import ImageBudget, check_size
from scip.records import Source

TIFF_SUFFIXES = (".tif", ".tiff")


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def list_tiffs(path: Path, recursive: bool = False) -> list[Path]:
    """TIFF files at ``path``: the file itself, a folder's TIFFs, or a glob's matches.

    ``recursive`` lists the TIFFs of a folder's subfolders too (for a pattern
    over relative paths, see :func:`relative_name`).
    """
    if path.is_file():
        return [path]
    if path.is_dir():
        found = path.rglob("*") if recursive else path.iterdir()
        files = [p for p in found if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES]
    else:
        files = [p for p in Path(path.anchor or ".").glob(str(path.relative_to(path.anchor))) if p.is_file()]
    return sorted(files, key=lambda p: _natural_key(str(p)))


def relative_name(file: Path, root: Path) -> str:
    """``file``'s path relative to ``input.path`` with ``/`` separators; its name when ``root`` is not a folder above it.

    What ``input.exclude`` globs and a pattern containing ``/`` are matched against.
    """
    try:
        return file.relative_to(root).as_posix() if root.is_dir() else file.name
    except ValueError:
        return file.name


def is_excluded(name: str, exclude: Sequence[str]) -> bool:
    """Whether the relative path ``name`` matches one of the ``input.exclude`` globs.

    Globs follow :func:`fnmatch.fnmatchcase`: case-sensitive, and ``*`` also
    matches ``/``, so ``*_nuclei.tif`` excludes such files in every subfolder.
    """
    return any(fnmatch.fnmatchcase(name, glob) for glob in exclude)


def channel_axis(shape: tuple[int, ...], axes: str) -> int | None:
    """Axis of a TIFF series without z planes that holds the channels; ``None`` for a 2-D image.

    RGB(A) samples (``YXS``) and otherwise a leading page, channel or sample
    axis are channels. Deeper stacks without a ``Z`` axis (time series,
    stacks saved without axes metadata) raise ``ValueError``. Series with
    more than one z plane are arranged by :func:`to_czyx` instead.
    """
    if len(shape) == 2:
        return None
    if len(shape) == 3:
        return -1 if axes.endswith("S") else 0
    raise ValueError(
        f"has {len(shape)} dimensions (axes {axes!r}); expected (C, H, W), (H, W), "
        "or a z stack whose axes metadata (ImageJ or OME) names a 'Z' axis"
    )


def z_planes(shape: tuple[int, ...], axes: str) -> int:
    """Number of z planes of a TIFF series: the length of its ``Z`` axis, 1 without one."""
    i = axes.find("Z")
    return shape[i] if i >= 0 else 1


def _czyx_order(shape: tuple[int, ...], axes: str) -> tuple[list[int], int | None]:
    """Positions of (C,) Z, Y, X in a z-stack series, and the channel axis (``None``: one channel).

    Axes of length 1 (e.g. a single time point) are ignored; a channel axis
    is ``C`` or RGB samples ``S``. Any other axis longer than 1 (time, a
    second channel axis...) cannot be told apart from the channels and
    raises ``ValueError``.
    """
    extra = [a for a, n in zip(axes, shape) if a not in "ZYX" and n > 1]
    channel = [a for a in extra if a in "CS"]
    if len(channel) != len(extra) or len(channel) > 1 or "Y" not in axes or "X" not in axes:
        raise ValueError(
            f"is a z stack with axes {axes!r} (shape {tuple(shape)}); expected Z, Y, X and at most one "
            "channel axis (C or S) of length > 1"
        )
    c = axes.index(channel[0]) if channel else None
    return [i for i in (c, axes.index("Z"), axes.index("Y"), axes.index("X")) if i is not None], c


def to_czyx(array: np.ndarray, axes: str) -> np.ndarray:
    """Arrange a z-stack TIFF series as ``(C, Z, H, W)`` (see :func:`_czyx_order`)."""
    order, c = _czyx_order(array.shape, axes)
    kept = sorted(order)
    # Drop the length-1 axes not in ``order`` (a reshape keeps the data order), then transpose.
    array = array.reshape([array.shape[i] for i in kept])
    array = np.transpose(array, [kept.index(i) for i in order])
    return array if c is not None else array[None]


def to_cyx(array: np.ndarray, axes: str) -> np.ndarray:
    """Arrange a TIFF series without z planes as ``(C, H, W)`` (see :func:`channel_axis`)."""
    axis = channel_axis(array.shape, axes)
    return array[None] if axis is None else np.moveaxis(array, axis, 0)


def _header(path: Path) -> tuple[tuple[int, ...], str]:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return tuple(series.shape), series.axes


def _header_channels(path: Path, header: tuple[tuple[int, ...], str] | None = None) -> int:
    try:
        shape, axes = header if header is not None else _header(path)
    except Exception as e:  # noqa: BLE001 - any unreadable header; the count is needed before the run
        raise InputError(f"input.path: cannot read {path} to count its channels ({type(e).__name__}: {str(e)[:200]}); "
                         "fix or remove the file, or list the channels in input.channels") from None
    try:
        if z_planes(shape, axes) > 1:
            _, c = _czyx_order(shape, axes)
            return 1 if c is None else shape[c]
        axis = channel_axis(shape, axes)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    return 1 if axis is None else shape[axis]


def _try_header(path: Path) -> tuple[tuple[int, ...], str] | None:
    """Header of the first image for reporting its z planes; ``None`` when it cannot be read here.

    An unreadable file is not a discovery error: reading it gives that image's skip reason.
    """
    try:
        return _header(path)
    except Exception:  # noqa: BLE001
        return None


def discover_tiff(path: Path, pattern: str | None, channels: list[str] | None, use_channels: list[str] | None,
                  exclude: Sequence[str] = ()) -> Dataset:
    """Find the images of a TIFF dataset.

    Without ``pattern`` every TIFF is one image, its id the file stem. With a
    pattern (a regex with named groups), the groups become metadata; a
    ``channel`` group means one file per channel, and files that share all
    other groups form one image. A pattern without ``/`` is matched against
    the whole file name (a folder's top level only, as always); a pattern with
    ``/`` against the whole path relative to ``path``, found in every
    subfolder, so folder names can be groups (``(?P<set>[^/]+)/(?P<id>[^/]+)/image[.]tif``).
    Files whose relative path matches a glob of ``exclude`` are left out
    before matching, and counted in :attr:`Dataset.excluded`.
    """
    nested = pattern is not None and "/" in pattern
    found = list_tiffs(path, recursive=nested)
    out = [is_excluded(relative_name(f, path), exclude) for f in found]
    excluded = tuple(str(f) for f, x in zip(found, out) if x)
    files = [f for f, x in zip(found, out) if not x]
    if not files:
        where = " or its subfolders" if nested else ""
        left = f" ({len(excluded)} excluded by input.exclude)" if excluded else ""
        raise InputError(f"input.path: no .tif/.tiff files found at {path}{where}{left}")
    if pattern is None:
        return _multichannel(files, {}, channels, use_channels, (), excluded)
    regex = compile_pattern(pattern)
    matched: list[tuple[Path, dict[str, str]]] = []
    unmatched = []
    for f in files:
        m = match_name(regex, relative_name(f, path) if nested else f.name)
        if m is None:
            unmatched.append(str(f))
        else:
            matched.append((f, m.groupdict()))
    if not matched:
        what = (f"paths relative to {path} (e.g. {relative_name(files[0], path)!r}); a pattern with '/' must match "
                "the whole relative path" if nested else
                f"TIFF files in {path} (e.g. {files[0].name!r}); the pattern must match the whole file name")
        raise InputError(f"input.pattern: {short(pattern, 200)} matches none of the {len(files)} {what}")
    if "channel" in regex.groupindex:
        return _per_channel(matched, channels, use_channels, tuple(unmatched), pattern, excluded)
    return _multichannel([f for f, _ in matched], {f: g for f, g in matched}, channels, use_channels, tuple(unmatched),
                         excluded)


def _image_id(groups: dict[str, str], fallback: str) -> str:
    # All groups together, so that e.g. plate + id names an image even when ids repeat across plates.
    values = [v for v in groups.values() if v is not None]
    return "_".join(values) if values else fallback


def _check_unique(sources: list[Source]) -> None:
    seen: dict[str, Source] = {}
    for s in sources:
        if s.image_id in seen:
            raise InputError(
                f"input.pattern: image id {s.image_id!r} is given to two images "
                f"({seen[s.image_id].paths[0]} and {s.paths[0]}); add named groups that tell them apart"
            )
        seen[s.image_id] = s


def _multichannel(files, groups, channels, use_channels, unmatched, excluded=()) -> Dataset:
    header = _try_header(files[0])
    n_stored = len(channels) if channels else _header_channels(files[0], header)
    n_z = z_planes(*header) if header is not None else None
    names = tuple(channels) if channels else default_names(n_stored)
    loaded, index = select_channels(names, use_channels, f"the {n_stored} channels of {files[0].name}")
    sources = [
        Source(image_id=_image_id(groups.get(f, {}), f.stem), index=i, paths=(str(f),), fields=dict(groups.get(f, {})))
        for i, f in enumerate(files)
    ]
    _check_unique(sources)
    return Dataset("tiff", loaded, index, n_stored, tuple(sources), unmatched, z_planes=n_z, excluded=excluded)


def _per_channel(matched, channels, use_channels, unmatched, pattern, excluded=()) -> Dataset:
    found_channels = sorted({g["channel"] for _, g in matched}, key=_natural_key)
    stored = tuple(channels) if channels else tuple(found_channels)
    extra = [c for c in found_channels if c not in stored]
    if extra:
        raise InputError(
            f"input.channels: files have channel values {short(extra, 200)} (group 'channel' of {short(pattern, 200)}) "
            f"that are not listed; listed: {', '.join(stored)}"
        )
    loaded, index = select_channels(stored, use_channels, "the channel values found in the file names")
    images: dict[tuple, dict[str, Path]] = defaultdict(dict)
    image_groups: dict[tuple, dict[str, str]] = {}
    for f, groups in matched:
        key = tuple((k, v) for k, v in groups.items() if k != "channel")
        if groups["channel"] in images[key]:
            raise InputError(
                f"input.pattern: two files for channel {groups['channel']!r} of one image: "
                f"{images[key][groups['channel']]} and {f}"
            )
        images[key][groups["channel"]] = f
        image_groups[key] = {k: v for k, v in groups.items() if k != "channel"}
    sources = []
    for i, key in enumerate(sorted(images, key=lambda k: _natural_key("\x00".join(str(v) for _, v in k)))):
        by_channel = images[key]
        missing = [c for c in (stored[j] for j in index) if c not in by_channel]
        paths = tuple(str(by_channel[stored[j]]) if stored[j] in by_channel else "" for j in index)
        sources.append(
            Source(
                image_id=_image_id(image_groups[key], Path(next(iter(by_channel.values()))).stem),
                index=i,
                paths=paths,
                fields=image_groups[key],
                locator=("missing", tuple(missing)) if missing else (),
            )
        )
    _check_unique(sources)
    # Each loaded channel is its own file, so positions index ``paths`` directly.
    first = next((p for s in sources for p in s.paths if p), None)
    header = _try_header(Path(first)) if first is not None else None
    return Dataset("tiff_channels", loaded, tuple(range(len(loaded))), len(loaded), tuple(sources), unmatched,
                   z_planes=z_planes(*header) if header is not None else None, excluded=excluded)


def _decoded_shape(shape: tuple[int, ...], axes: str, channel_index: tuple[int, ...]) -> tuple[int, ...]:
    """What :func:`read_tiff` decodes: the whole series, but only the selected channels of a z stack."""
    if z_planes(shape, axes) > 1:
        try:
            _, c = _czyx_order(shape, axes)
        except ValueError:  # reading raises it, with the reason
            return shape
        if c is not None and list(channel_index) != list(range(shape[c])):
            return tuple(len(channel_index) if i == c else n for i, n in enumerate(shape))
    return shape


def read_tiff(source: Source, channel_index: tuple[int, ...], n_stored: int,
              budget: ImageBudget | None = None) -> np.ndarray:
    """Pixels of one multi-channel TIFF image, selected channels only.

    ``(C, H, W)``, or ``(C, Z, H, W)`` when the series has a ``Z`` axis
    longer than 1 (from ImageJ, OME or tifffile ``axes`` metadata). For a z
    stack with a channel subset, only the pages of the selected channels are
    decoded. Raises :class:`~scip.io.limits.ImageTooLarge`, decoding
    nothing, when what would be decoded is over ``budget``.
    """
    with tifffile.TiffFile(source.paths[0]) as tif:
        series = tif.series[0]
        shape, axes = tuple(series.shape), series.axes
        check_size(source.paths[0], _decoded_shape(shape, axes, channel_index), series.dtype, budget)
        if z_planes(shape, axes) > 1:
            return _read_zstack(series, shape, axes, channel_index, n_stored)
        pixels = to_cyx(series.asarray(), axes)
    if pixels.shape[0] != n_stored:
        raise ValueError(f"has {pixels.shape[0]} channels, expected {n_stored}")
    return pixels[list(channel_index)]


def _read_zstack(series, shape, axes, channel_index, n_stored) -> np.ndarray:
    _, c = _czyx_order(shape, axes)
    n = 1 if c is None else shape[c]
    if n != n_stored:
        raise ValueError(f"has {n} channels, expected {n_stored}")
    if c is None or list(channel_index) == list(range(n)):
        return to_czyx(series.asarray(), axes)[list(channel_index)]
    # Read through tifffile's zarr view: one chunk per page (or tile), so unselected channels stay on disk.
    store = series.aszarr()
    try:
        arr = zarr.open_array(store, mode="r")
        if tuple(arr.shape) != shape:  # a layout the view does not squeeze like the series: read it all
            return to_czyx(series.asarray(), axes)[list(channel_index)]
        selection = tuple(list(channel_index) if i == c else slice(None) for i in range(len(shape)))
        return to_czyx(np.asarray(arr.oindex[selection]), axes)
    finally:
        store.close()


def read_tiff_channels(source: Source, channel_names: tuple[str, ...], budget: ImageBudget | None = None) -> np.ndarray:
    """Pixels of one image stored as one TIFF per channel.

    Each file is a 2-D image, giving ``(C, H, W)``, or a z stack whose axes
    metadata names a ``Z`` axis (e.g. ``ZYX``), giving ``(C, Z, H, W)``.
    Raises :class:`~scip.io.limits.ImageTooLarge`, decoding nothing, when
    the files together are over ``budget``.
    """
    if source.locator and source.locator[0] == "missing":
        raise ValueError(f"no file for channel(s) {', '.join(source.locator[1])}")
    if budget is not None:
        headers = []
        for path in source.paths:
            with tifffile.TiffFile(path) as tif:
                headers.append((tuple(tif.series[0].shape), tif.series[0].dtype))
        # Channel files must have one shape (checked after reading); counting each as the largest keeps a
        # huge odd one from being decoded before that check.
        shape, dtype = max(headers, key=lambda h: int(np.prod(h[0])) * h[1].itemsize)
        n = len(source.paths)
        check_size(source.paths[0] + (f" and {n - 1} more channel file(s)" if n > 1 else ""), (n, *shape), dtype,
                   budget)
    planes = []
    for name, path in zip(channel_names, source.paths):
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            plane, axes = series.asarray(), series.axes
        if plane.ndim != 2:
            if z_planes(plane.shape, axes) <= 1:
                raise ValueError(f"channel {name!r} file {path} has shape {plane.shape} (axes {axes!r}); "
                                 "expected a 2-D image or a z stack with a 'Z' axis in its metadata")
            try:
                czyx = to_czyx(plane, axes)
            except ValueError as e:
                raise ValueError(f"channel {name!r} file {path} {e}") from None
            if czyx.shape[0] != 1:
                raise ValueError(f"channel {name!r} file {path} has {czyx.shape[0]} channels (axes {axes!r}); "
                                 "expected one channel per file")
            plane = czyx[0]
        planes.append(plane)
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise ValueError(f"channel files have different shapes: {', '.join(f'{n}={p.shape}' for n, p in zip(channel_names, planes))}")
    return np.stack(planes)
