"""Label images of a run as OME-Zarr (NGFF 0.4): what was segmented, for napari, Fiji or any NGFF reader.

Layout, a zarr v2 store in the output folder::

    labels.zarr/                       attrs {"scip": {"labels": 1}}: scip wrote this tree
      <key>/                           one group per image, key = image_key(image_id), attrs {"scip": {"image_id": ...}}
        labels/                        attrs {"labels": ["cell", "nucleus"]}
          cell/                        attrs {"multiscales": [...], "image-label": {...}}
            0/                         full resolution, (y, x) or (z, y, x), uint32 (uint64 when needed)
            1/ ...                     y and x halved by mode downsampling, while larger than one chunk

A pixel of ``labels.zarr/<key>/labels/<mask>/0`` holds the ``meta_label`` of
the table row (``meta_image_id`` = the image) whose object covers it, 0
elsewhere. Plain numpy and zarr, no Dask: one call writes one image.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import zarr

from scip.io import ngff
from scip.io.ngff import image_key

__all__ = ["LABELS", "MARKER", "DOWNSAMPLING", "image_key", "create_root", "is_scip_labels", "write_labels",
           "read_labels", "label_names", "images"]

#: The label images' folder in a run's output folder.
LABELS = "labels.zarr"

#: Root attribute that marks a ``labels.zarr`` scip wrote (what ``--overwrite`` may remove).
MARKER = "scip"

#: The downsampling the multiscale metadata names.
DOWNSAMPLING = "scip.io.ngff.mode_downsample"


def _open(root: str | os.PathLike, mode: str) -> zarr.Group:
    return zarr.open_group(os.fspath(root), mode=mode, zarr_format=2)


def create_root(root: str | os.PathLike) -> zarr.Group:
    """Create (or open) ``labels.zarr`` at ``root`` with scip's marker, before any image is written.

    Parameters
    ----------
    root : path
        The ``labels.zarr`` folder.

    Returns
    -------
    zarr.Group
        The root group.
    """
    group = _open(root, "a")
    if MARKER not in group.attrs:
        group.attrs[MARKER] = {"labels": 1}
    return group


def is_scip_labels(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a ``labels.zarr`` scip wrote: a zarr v2 group with scip's marker in its attributes."""
    try:
        attrs = _open(root, "r").attrs
    except Exception:  # not a zarr group at all: certainly not scip's
        return False
    return isinstance(attrs.get(MARKER), dict) and attrs[MARKER].get("labels") == 1


def _dtype(mask: np.ndarray) -> np.dtype:
    if mask.dtype.kind not in "biu":
        raise TypeError(f"a label image must hold integers or booleans, not {mask.dtype}")
    if mask.size and mask.dtype.kind == "i" and mask.min() < 0:
        raise ValueError(f"a label image has negative labels (min {mask.min()})")
    return np.dtype(np.uint64) if mask.size and int(mask.max()) > np.iinfo(np.uint32).max else np.dtype(np.uint32)


def write_labels(root: str | os.PathLike, image_id: str, masks: Mapping[str, np.ndarray],
                 scale: Sequence[float] | None = None, units: Sequence[str | None] | None = None,
                 chunk: int = 512, pyramid_levels: int | None = None) -> str:
    """Write one image's label images into ``labels.zarr`` as NGFF 0.4 label images.

    Each mask becomes ``<root>/<key>/labels/<name>`` with its pyramid; the
    ``labels`` group lists every name. Writing an image again replaces its
    arrays (a partition computed again after ``--resume`` writes the same).

    Parameters
    ----------
    root : path
        The ``labels.zarr`` folder (created by :func:`create_root` if missing).
    image_id : str
        The image's ``meta_image_id``; its group is :func:`image_key` of it.
    masks : mapping of str to ndarray
        Mask name to label image, ``(y, x)`` or ``(z, y, x)``, integers
        (0: background) or booleans; all of one image have the same shape.
    scale : sequence of float, optional
        Physical size of a pixel along each axis (default 1 per axis).
    units : sequence of str or None, optional
        Unit of each axis (e.g. ``"micrometer"``), when known.
    chunk : int
        Chunk side along y and x (a 3-D image is chunked one plane at a time).
    pyramid_levels : int, optional
        Downsampled levels to write; default: halve y and x until the image
        fits one chunk (a small image has level 0 only).

    Returns
    -------
    str
        The image's key in ``labels.zarr``.

    Raises
    ------
    ValueError
        A mask is not 2-D or 3-D, masks differ in shape, or ``scale`` / ``units`` do not match the axes.
    """
    arrays = {name: np.asarray(mask) for name, mask in masks.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) > 1:
        raise ValueError(f"the masks of image {image_id!r} differ in shape: "
                         + ", ".join(f"{n} {a.shape}" for n, a in arrays.items()))
    for name, a in arrays.items():
        if a.ndim not in (2, 3):
            raise ValueError(f"mask {name!r} of image {image_id!r} has shape {a.shape}: expected (y, x) or (z, y, x)")
    ndim = len(next(iter(shapes))) if shapes else 2
    scale = tuple(float(s) for s in scale) if scale is not None else (1.0,) * ndim
    units = tuple(units) if units is not None else (None,) * ndim
    if len(scale) != ndim or len(units) != ndim:
        raise ValueError(f"image {image_id!r}: scale {scale} and units {units} need one value per axis ({ndim})")
    key = image_key(image_id)
    image = create_root(root).require_group(key)
    # The key is not reversible: the id itself goes into the image's group, for the report and for users.
    image.attrs[MARKER] = {"image_id": image_id}
    group = image.require_group("labels")
    for name, mask in arrays.items():
        dtype = _dtype(mask)
        plane_shapes = ngff.level_shapes(mask.shape[-2:], chunk, pyramid_levels)
        level = mask.astype(dtype, copy=False)
        for k, plane in enumerate(plane_shapes):
            if k:
                level = ngff.mode_downsample(level)
            ngff.create_level(group, name, k, mask.shape[:-2] + tuple(plane), chunk, dtype)[...] = level
        ngff.write_label_metadata(group, name, len(plane_shapes), scale, units, version="0.4", method=DOWNSAMPLING)
    return key


def images(root: str | os.PathLike) -> dict[str, str]:
    """The images with label images in ``root``: image id to key, in key order (``{}`` when ``root`` is none)."""
    try:
        group = _open(root, "r")
    except Exception:  # no labels.zarr: no images
        return {}
    out = {}
    for key, member in sorted(group.groups()):
        info = member.attrs.get(MARKER)
        if isinstance(info, dict) and isinstance(info.get("image_id"), str):
            out[info["image_id"]] = key
    return out


def label_names(root: str | os.PathLike, image_id: str) -> list[str]:
    """The label images written for an image (``[]`` when none)."""
    try:
        return list(_open(root, "r")[f"{image_key(image_id)}/labels"].attrs.get("labels", []))
    except KeyError:
        return []


def read_labels(root: str | os.PathLike, image_id: str, name: str, level: int = 0) -> np.ndarray:
    """Read back an image's label image ``name`` at pyramid ``level`` (0: full resolution).

    Parameters
    ----------
    root : path
        The ``labels.zarr`` folder.
    image_id : str
        The image's ``meta_image_id``.
    name : str
        The mask name (``segment.name`` or an extra mask's name).
    level : int
        Pyramid level.

    Raises
    ------
    KeyError
        No such image, mask or level in ``root``, naming what was asked.
    """
    path = f"{image_key(image_id)}/labels/{name}/{level}"
    try:
        return np.asarray(_open(root, "r")[path][...])
    except KeyError:
        raise KeyError(f"{os.fspath(root)} has no label image {path!r} (image {image_id!r}, mask {name!r}, "
                       f"level {level})") from None
