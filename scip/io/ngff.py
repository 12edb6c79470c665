"""The label image as OME-Zarr (NGFF): arrays, multiscale pyramid, ``multiscales`` and ``image-label`` metadata.

Layout (NGFF 0.4 in a zarr v2 store, which napari's ome-zarr reader opens;
0.5 in zarr v3 when the labels go into a 0.5 image)::

    labels.zarr/                  a group
      labels/                     attrs {"labels": ["cell"]}
        cell/                     attrs {"multiscales": [...], "image-label": {...}}
          0/                      full resolution, chunked (tile, tile)
          1/ 2/ ...               each half the previous one, same chunk shape

Level ``k+1`` is computed from level ``k`` as stored, one level after the
other, one task per output chunk (:func:`downsample_chunk`): each output
chunk comes from one ``2 x 2``-chunk block of the level below, by the most
frequent label of every ``2 x 2`` pixel block (ties go to the top-left pixel),
so object ids are never averaged into ids that do not exist.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import zarr

__all__ = ["image_key", "create_level", "mode_downsample", "downsample_chunk", "write_label_metadata", "level_shapes"]

_V2_KEYS = {"name": "v2", "separator": "/"}


def image_key(image_id: str) -> str:
    """The name of an image's group in ``labels.zarr``: its id, made safe as a file and URL path segment.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become
    ``_``; a name that changed, or one that could be mistaken for a zarr or
    hidden file (leading ``.``), gets a short hash of the id so that two ids
    never share a group.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", image_id) or "_"
    if safe != image_id or safe.startswith("."):
        digest = hashlib.sha1(image_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe.lstrip('.') or '_'}-{digest}"
    return safe


def _compressors():
    import numcodecs

    # Labels are long runs of equal values: bit shuffling then zstd makes them small.
    return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)


def level_shapes(shape: tuple[int, int], tile: int, levels: int | None) -> list[tuple[int, int]]:
    """Shapes of the pyramid levels: halved (rounded up) until the image fits one tile, or ``levels`` extra levels."""
    shapes = [tuple(shape)]
    while (levels is None and max(shapes[-1]) > tile) or (levels is not None and len(shapes) <= levels):
        shapes.append(tuple(-(-s // 2) for s in shapes[-1]))
        if shapes[-1] == (1, 1):
            break
    return shapes


def create_level(group, name: str, level: int, shape: tuple[int, int], tile: int, dtype) -> zarr.Array:
    """An empty label array ``<name>/<level>`` in ``group``, chunked ``(tile, tile)``, filled with 0."""
    kwargs = {"chunk_key_encoding": _V2_KEYS, "compressors": _compressors()} if group.metadata.zarr_format == 2 else {}
    return group.create_array(f"{name}/{level}", shape=shape, chunks=(tile, tile), dtype=dtype, fill_value=0,
                              overwrite=True, **kwargs)


def mode_downsample(block: np.ndarray) -> np.ndarray:
    """Halve a label block: each output pixel is the most frequent of its ``2 x 2`` input pixels.

    Ties (two pairs, or four different labels) go to the first in raster
    order, the top-left pixel. Odd sides are padded by repeating the last
    row or column, so the output is ``ceil(h / 2) x ceil(w / 2)``.

    Examples
    --------
    >>> mode_downsample(np.array([[1, 2], [2, 0]]))
    array([[2]])
    """
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    v = np.stack([block[0::2, 0::2], block[0::2, 1::2], block[1::2, 0::2], block[1::2, 1::2]])
    counts = (v[:, None] == v[None, :]).sum(axis=1)
    return np.take_along_axis(v, counts.argmax(axis=0)[None], axis=0)[0]


def downsample_chunk(source: str, target: str, row: int, col: int) -> None:
    """Write chunk ``(row, col)`` of pyramid level ``target`` from the ``2 x 2`` chunks below it in ``source``.

    Levels are built one after the other, each task reading its block of
    the finer level back from the zarr store: nothing but one block per task
    is ever in memory, whatever the image size. (One Dask graph over all
    levels kept coarse blocks waiting for their siblings: +630 MiB at 16384².)

    Parameters
    ----------
    source, target : str
        Paths of the zarr arrays of two consecutive levels.
    row, col : int
        The chunk of ``target`` to write.
    """
    src = zarr.open_array(source, mode="r")
    dst = zarr.open_array(target, mode="r+")
    ty, tx = dst.chunks
    y0, x0 = row * ty, col * tx
    y1, x1 = min(y0 + ty, dst.shape[0]), min(x0 + tx, dst.shape[1])
    block = np.asarray(src[2 * y0:min(2 * y1, src.shape[0]), 2 * x0:min(2 * x1, src.shape[1])])
    dst[y0:y1, x0:x1] = mode_downsample(block)


def write_label_metadata(group, name: str, n_levels: int, scale: tuple[float, float] = (1.0, 1.0),
                         units: tuple[str | None, str | None] = (None, None), source_image: str | None = None,
                         version: str | None = None) -> dict:
    """Write the NGFF metadata of the label image ``name`` in ``group`` (the ``labels`` group) and list it there.

    Parameters
    ----------
    group : zarr.Group
        The ``labels`` group.
    name : str
        The label image's name.
    n_levels : int
        Pyramid levels, each half the size of the one before.
    scale : (float, float)
        Physical size of a level-0 pixel along y and x (from the image; 1 px otherwise).
    units : (str or None, str or None)
        Units of y and x (e.g. ``"micrometer"``), when known.
    source_image : str, optional
        Relative path from the label image to its intensity image.
    version : str, optional
        NGFF version, ``"0.4"`` (zarr v2, attributes at the top) or ``"0.5"``
        (zarr v3, under ``ome``); default from the store's zarr format.

    Returns
    -------
    dict
        The label image's attributes as written.
    """
    version = version or ("0.4" if group.metadata.zarr_format == 2 else "0.5")
    axes = [{"name": a, "type": "space", **({"unit": u} if u else {})} for a, u in zip("yx", units)]
    multiscale = {
        "name": name, "axes": axes, "type": "mode",
        "metadata": {"method": "scip.io.ngff.mode_downsample",
                     "description": "most frequent label of each 2x2 block"},
        "datasets": [{"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [float(scale[0] * 2 ** k), float(scale[1] * 2 ** k)]}]}
                     for k in range(n_levels)],
    }
    label = {"version": version, **({"source": {"image": source_image}} if source_image else {})}
    if version == "0.4":
        attrs = {"multiscales": [{"version": version, **multiscale}], "image-label": label}
    else:
        label.pop("version")
        attrs = {"ome": {"version": version, "multiscales": [multiscale], "image-label": label}}
    group[name].attrs.update(attrs)
    listed = dict(group.attrs)
    key = listed.get("ome", listed) if version != "0.4" else listed
    names = list(key.get("labels", []))
    if name not in names:
        names.append(name)
    group.attrs.update({"labels": names} if version == "0.4" else {"ome": {**listed.get("ome", {}), "version": version,
                                                                              "labels": names}})
    return attrs


def relative_path(target: str | os.PathLike, start: str | os.PathLike) -> str:
    """``target`` relative to the folder ``start``, with ``/`` separators (NGFF paths)."""
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()
