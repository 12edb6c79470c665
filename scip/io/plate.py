"""HCS plates: an NGFF plate OME-Zarr, every field of every well one image.

A plate root carries ``plate`` metadata (NGFF 0.4: top-level attrs; 0.5:
under ``ome``) listing its rows, columns and wells; each well group lists
its fields (``well.images``); each field is an OME-Zarr image group. Every
field (and time point) becomes one image of the ``ome_zarr`` reader, its
locator the path of the field's level array from the plate root, so reading
and tiling need nothing more than for one OME-Zarr image. Its metadata:
``row``, ``column``, ``well`` (row and column joined, e.g. ``B3``) and
``field`` (the field's path in the well), so the table has ``meta_row``,
``meta_column``, ``meta_well``, ``meta_field``.

Fields are assumed to share the axes, level paths and channels of the first
field (as every HCS writer makes them); a field with another channel count
is skipped when it is read, with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import zarr

from scip._hints import short
from scip.io.channels import InputError, default_names, select_channels
from scip.io.dataset import Dataset
from scip.io.tiff import is_excluded
from scip.io.zarr_image import _names, _open, ome_axes, ome_channel_labels, ome_level, pixel_size_um
from scip.records import Source

__all__ = ["plate_metadata", "discover_plate"]


def _attrs(group) -> dict:
    attrs = dict(group.attrs)
    return attrs["ome"] if isinstance(attrs.get("ome"), dict) else attrs


def plate_metadata(group) -> dict | None:
    """The NGFF ``plate`` metadata of a group, or ``None`` when it is not a plate root."""
    plate = _attrs(group).get("plate") if isinstance(group, zarr.Group) else None
    return plate if isinstance(plate, dict) else None


def _named(plate: dict, key: str, file: str) -> list[str]:
    entries = plate.get(key)
    if not isinstance(entries, list) or not entries:
        raise InputError(f"input.path: {file}: plate metadata 'plate.{key}' must be a non-empty list, got {short(entries)}")
    names = []
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise InputError(f"input.path: {file}: plate metadata 'plate.{key}[{i}]' must be an object with a "
                             f"'name', got {short(entry)}")
        names.append(name)
    return names


def _wells(plate: dict, rows: list[str], columns: list[str], file: str) -> list[tuple[str, str, str]]:
    """``(path, row, column)`` of every well, checked against the plate's rows and columns."""
    wells = plate.get("wells")
    if not isinstance(wells, list) or not wells:
        raise InputError(f"input.path: {file}: plate metadata 'plate.wells' must be a non-empty list, got {short(wells)}")
    found = []
    for i, well in enumerate(wells):
        path = well.get("path") if isinstance(well, dict) else None
        if not isinstance(path, str) or path.count("/") != 1:
            raise InputError(f"input.path: {file}: plate metadata 'plate.wells[{i}].path' must be '<row>/<column>', "
                             f"got {short(well)}")
        ri, ci = well.get("rowIndex"), well.get("columnIndex")
        row, column = path.split("/")
        if isinstance(ri, int) and 0 <= ri < len(rows):
            row = rows[ri]
        if isinstance(ci, int) and 0 <= ci < len(columns):
            column = columns[ci]
        found.append((path, row, column))
    return found


def _fields(plate_root, well_path: str, root: Path) -> list[str]:
    """Paths (in the well) of a well's fields, from its ``well.images`` metadata."""
    file = f"{root / well_path}"
    try:
        well = plate_root[well_path]
    except KeyError:
        raise InputError(f"input.path: the plate {root} lists well {well_path!r}, which is not in the store") from None
    meta = _attrs(well).get("well")
    images = meta.get("images") if isinstance(meta, dict) else None
    if not isinstance(images, list):
        raise InputError(f"input.path: {file}: well metadata 'well.images' must be a list of fields, got {short(meta)}")
    paths = []
    for i, image in enumerate(images):
        path = image.get("path") if isinstance(image, dict) else None
        if not isinstance(path, str) or not path:
            raise InputError(f"input.path: {file}: well metadata 'well.images[{i}].path' must be a non-empty string, "
                             f"got {short(image)}")
        paths.append(path)
    return paths


def discover_plate(path: Path, level: int, channels: Sequence[str] | None, use_channels: Sequence[str] | None,
                   exclude: Sequence[str] = ()) -> Dataset:
    """Every field of every well of an NGFF plate, as images of the ``ome_zarr`` reader.

    Parameters
    ----------
    path : Path
        The plate root (a zarr group with ``plate`` metadata).
    level : int
        Resolution level of every field (``input.level``).
    channels, use_channels : sequence of str, optional
        ``input.channels`` (names as stored; default: the first field's
        ``omero`` labels) and ``input.use_channels``.
    exclude : sequence of str
        ``input.exclude`` globs, matched against ``<row>/<column>/<field>``.

    Returns
    -------
    Dataset
        Format ``ome_zarr``; ids ``<well>_<field>`` (``_t<t>`` added for time series).

    Raises
    ------
    InputError
        Missing or malformed plate/well/image metadata, naming the file and key.
    """
    root = _open(path)
    plate = plate_metadata(root)
    if plate is None:
        raise InputError(f"input.path: {path} has no NGFF 'plate' metadata")
    file = str(Path(path) / ("zarr.json" if root.metadata.zarr_format == 3 else ".zattrs"))
    rows, columns = _named(plate, "rows", file), _named(plate, "columns", file)
    fields = [(f"{well}/{f}", row, column, f) for well, row, column in _wells(plate, rows, columns, file)
              for f in _fields(root, well, Path(path))]
    kept = [entry for entry in fields if not is_excluded(entry[0], exclude)]
    excluded = tuple(str(Path(path) / e[0]) for e in fields if is_excluded(e[0], exclude))
    if not kept:
        raise InputError(f"input.path: the plate {path} has no field to read ({len(fields)} listed, "
                         f"{len(excluded)} excluded by input.exclude)")
    first_path = kept[0][0]
    try:
        first = root[first_path]
    except KeyError:
        raise InputError(f"input.path: the plate {path} lists field {first_path!r}, which is not in the store") from None
    meta, multiscale, array_path = ome_level(first, Path(path) / first_path, level)
    arr = first[array_path]
    axes = ome_axes(first, Path(path) / first_path, multiscale, arr.ndim)
    if [a for a in ("t", "c", "z", "y", "x") if a in axes] != list(axes) or axes[-2:] != ("y", "x"):
        raise InputError(f"input.path: field {Path(path) / first_path} has axes {list(axes)}; expected OME-Zarr axes "
                         "among t, c, z, y, x, in that order, ending with y, x")
    sizes = dict(zip(axes, arr.shape))
    n_stored = sizes.get("c", 1)
    if channels is None:
        labels = ome_channel_labels(first, Path(path) / first_path, meta) or []
        names = tuple(labels) if len(labels) == n_stored and all(labels) and len(set(labels)) == n_stored \
            else default_names(n_stored)
    else:
        names = _names(channels, n_stored, Path(path) / first_path)
    loaded, index = select_channels(names, use_channels, f"the channels of {Path(path) / first_path}")
    pixel = pixel_size_um(first, Path(path) / first_path, multiscale, level, axes)
    n_t = sizes.get("t", 1)
    sources = []
    for field_path, row, column, f in kept:
        for t in range(n_t):
            info = {"row": row, "column": column, "well": f"{row}{column}", "field": f}
            if n_t > 1:
                info["t"] = str(t)
            sources.append(Source(image_id=f"{row}{column}_{f}" + (f"_t{t}" if n_t > 1 else ""), index=len(sources),
                                  paths=(str(path),), fields=info, locator=(f"{field_path}/{array_path}", t, axes),
                                  pixel_size=pixel))
    return Dataset("ome_zarr", loaded, index, n_stored, tuple(sources), z_planes=sizes.get("z", 1), excluded=excluded)
