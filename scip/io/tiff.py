"""TIFF input: one multi-channel file per image, or one file per channel.

Discovery lists files and reads at most one TIFF header (to count channels
when the config does not name them); pixels are read only by
:func:`read_tiff`, inside the graph.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import tifffile

from scip.io.channels import InputError, default_names, select_channels
from scip.io.dataset import Dataset
from scip.records import Source

TIFF_SUFFIXES = (".tif", ".tiff")


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def list_tiffs(path: Path) -> list[Path]:
    """TIFF files at ``path``: the file itself, a folder's TIFFs, or a glob's matches."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES]
    else:
        files = [p for p in Path(path.anchor or ".").glob(str(path.relative_to(path.anchor))) if p.is_file()]
    return sorted(files, key=lambda p: _natural_key(str(p)))


def channel_axis(shape: tuple[int, ...], axes: str) -> int | None:
    """Axis of a TIFF series that holds the channels; ``None`` for a 2-D image.

    RGB(A) samples (``YXS``) and otherwise a leading page, channel or sample
    axis are channels. Deeper stacks (z-stacks, time series) are not images of
    this pipeline yet and raise ``ValueError``.
    """
    if len(shape) == 2:
        return None
    if len(shape) == 3:
        return -1 if axes.endswith("S") else 0
    raise ValueError(f"has {len(shape)} dimensions (axes {axes!r}); expected (C, H, W) or (H, W)")


def to_cyx(array: np.ndarray, axes: str) -> np.ndarray:
    """Arrange a TIFF series as ``(C, H, W)`` (see :func:`channel_axis`)."""
    axis = channel_axis(array.shape, axes)
    return array[None] if axis is None else np.moveaxis(array, axis, 0)


def _header_channels(path: Path) -> int:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, axes = series.shape, series.axes
    try:
        axis = channel_axis(shape, axes)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    return 1 if axis is None else shape[axis]


def discover_tiff(path: Path, pattern: str | None, channels: list[str] | None, use_channels: list[str] | None) -> Dataset:
    """Find the images of a TIFF dataset.

    Without ``pattern`` every TIFF is one image, its id the file stem. With a
    pattern (a regex with named groups, matched against the whole file
    name), the groups become metadata; a ``channel`` group means one file per
    channel, and files that share all other groups form one image.
    """
    files = list_tiffs(path)
    if not files:
        raise InputError(f"input.path: no .tif/.tiff files found at {path}")
    if pattern is None:
        return _multichannel(files, {}, channels, use_channels, ())
    regex = re.compile(pattern)
    matched: list[tuple[Path, dict[str, str]]] = []
    unmatched = []
    for f in files:
        m = regex.fullmatch(f.name)
        if m is None:
            unmatched.append(str(f))
        else:
            matched.append((f, m.groupdict()))
    if not matched:
        raise InputError(
            f"input.pattern: {pattern!r} matches none of the {len(files)} TIFF files in {path} "
            f"(e.g. {files[0].name!r}); the pattern must match the whole file name"
        )
    if "channel" in regex.groupindex:
        return _per_channel(matched, channels, use_channels, tuple(unmatched), pattern)
    return _multichannel([f for f, _ in matched], {f: g for f, g in matched}, channels, use_channels, tuple(unmatched))


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


def _multichannel(files, groups, channels, use_channels, unmatched) -> Dataset:
    n_stored = len(channels) if channels else _header_channels(files[0])
    names = tuple(channels) if channels else default_names(n_stored)
    loaded, index = select_channels(names, use_channels, f"the {n_stored} channels of {files[0].name}")
    sources = [
        Source(image_id=_image_id(groups.get(f, {}), f.stem), index=i, paths=(str(f),), fields=dict(groups.get(f, {})))
        for i, f in enumerate(files)
    ]
    _check_unique(sources)
    return Dataset("tiff", loaded, index, n_stored, tuple(sources), unmatched)


def _per_channel(matched, channels, use_channels, unmatched, pattern) -> Dataset:
    found_channels = sorted({g["channel"] for _, g in matched}, key=_natural_key)
    stored = tuple(channels) if channels else tuple(found_channels)
    extra = [c for c in found_channels if c not in stored]
    if extra:
        raise InputError(
            f"input.channels: files have channel values {extra} (group 'channel' of {pattern!r}) "
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
    return Dataset("tiff_channels", loaded, tuple(range(len(loaded))), len(loaded), tuple(sources), unmatched)


def read_tiff(source: Source, channel_index: tuple[int, ...], n_stored: int) -> np.ndarray:
    """Pixels ``(C, H, W)`` of one multi-channel TIFF image, selected channels only."""
    with tifffile.TiffFile(source.paths[0]) as tif:
        series = tif.series[0]
        pixels = to_cyx(series.asarray(), series.axes)
    if pixels.shape[0] != n_stored:
        raise ValueError(f"has {pixels.shape[0]} channels, expected {n_stored}")
    return pixels[list(channel_index)]


def read_tiff_channels(source: Source, channel_names: tuple[str, ...]) -> np.ndarray:
    """Pixels ``(C, H, W)`` of one image stored as one 2-D TIFF per channel."""
    if source.locator and source.locator[0] == "missing":
        raise ValueError(f"no file for channel(s) {', '.join(source.locator[1])}")
    planes = []
    for name, path in zip(channel_names, source.paths):
        plane = tifffile.imread(path)
        if plane.ndim != 2:
            raise ValueError(f"channel {name!r} file {path} has shape {plane.shape}; expected a 2-D image")
        planes.append(plane)
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise ValueError(f"channel files have different shapes: {', '.join(f'{n}={p.shape}' for n, p in zip(channel_names, planes))}")
    return np.stack(planes)
