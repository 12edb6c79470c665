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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from scip.io.channels import InputError, default_names, select_channels
from scip.io.dataset import Dataset
from scip.records import Source


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


def ome_level(group, path: Path, level: int) -> tuple[dict, dict, str]:
    """OME-Zarr metadata of ``group``, its first multiscale, and the array path of resolution ``level``.

    Raises :class:`InputError` naming ``input.path`` or ``input.level``.
    """
    meta = ome_metadata(group) if isinstance(group, zarr.Group) else None
    if meta is None:
        raise InputError(f"input.path: {path} has no OME-Zarr 'multiscales' metadata")
    multiscale = meta["multiscales"][0]
    datasets = multiscale.get("datasets", [])
    if level >= len(datasets):
        raise InputError(f"input.level: {level} is not a level of {path}; it has levels 0..{len(datasets) - 1}")
    return meta, multiscale, datasets[level]["path"]


def discover_ome_zarr(path: Path, level: int, channels, use_channels) -> Dataset:
    """Images of an OME-Zarr image group, one per time point."""
    group = _open(path)
    meta, multiscale, array_path = ome_level(group, path, level)
    axes = [a["name"] if isinstance(a, dict) else a for a in multiscale.get("axes", ["t", "c", "z", "y", "x"])]
    arr = group[array_path]
    sizes = dict(zip(axes, arr.shape))
    # NGFF orders axes t, c, z, y, x; reading relies on that order (channels first, then z).
    ordered = [a for a in ("t", "c", "z", "y", "x") if a in axes]
    if list(axes) != ordered or len(axes) != len(arr.shape) or ordered[-2:] != ["y", "x"]:
        raise InputError(f"input.path: {path} has axes {axes} for an array of shape {arr.shape}; "
                         "expected OME-Zarr axes among t, c, z, y, x, in that order, ending with y, x")
    n_stored = sizes.get("c", 1)
    if channels is None:
        labels = [c.get("label") for c in meta.get("omero", {}).get("channels", [])]
        names = tuple(labels) if len(labels) == n_stored and all(labels) and len(set(labels)) == n_stored else default_names(n_stored)
    else:
        names = _names(channels, n_stored, path)
    loaded, index = select_channels(names, use_channels, f"the channels of {path}")
    n_t = sizes.get("t", 1)
    sources = tuple(
        Source(image_id=str(t) if n_t > 1 else Path(path).stem, index=t, paths=(str(path),), fields={"t": str(t)} if n_t > 1 else {},
               locator=(array_path, t, tuple(axes)))
        for t in range(n_t)
    )
    return Dataset("ome_zarr", loaded, index, n_stored, sources, z_planes=sizes.get("z", 1))


def read_zarr(source: Source, channel_index: tuple[int, ...]) -> np.ndarray:
    """Pixels ``(C, H, W)`` of one image of a plain zarr array."""
    array, i, ndim = source.locator
    node = zarr.open(source.paths[0], mode="r")
    if array is not None:
        node = node[array]
    if ndim == 4:
        return np.asarray(node.oindex[i, list(channel_index)])
    if ndim == 3:
        return np.asarray(node.oindex[list(channel_index)])
    return np.asarray(node[...])[None]


def read_ome_zarr(source: Source, channel_index: tuple[int, ...]) -> np.ndarray:
    """Pixels of one time point of an OME-Zarr image.

    ``(C, H, W)``, or ``(C, Z, H, W)`` when the image has more than one z
    plane (NGFF orders the axes t, c, z, y, x, so no transpose is needed).
    """
    array_path, t, axes = source.locator
    arr = zarr.open(source.paths[0], mode="r")[array_path]
    stack = "z" in axes and arr.shape[axes.index("z")] > 1
    selection = []
    for name in axes:
        if name == "t":
            selection.append(t)
        elif name == "z":
            selection.append(slice(None) if stack else 0)
        elif name == "c":
            selection.append(list(channel_index))
        else:
            selection.append(slice(None))
    pixels = np.asarray(arr.oindex[tuple(selection)])
    if "c" not in axes:
        pixels = pixels[None]
    return pixels
