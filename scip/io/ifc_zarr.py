"""SCIP's imaging-flow-cytometry zarr layout: read and write.

The layout (written by zarr v2) is a 1-D object array with one flattened
``(C, H, W)`` uint16 image per event, stored with a ``vlen-array`` filter,
plus attributes ``object_number`` (the instrument's event number) and
``shape`` (per-event ``(C, H, W)``). zarr-python 3 cannot decode object
arrays with a ``vlen-array`` filter, so this module reads the v2 metadata and
chunks directly with numcodecs, which both zarr versions use underneath.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numcodecs
import numpy as np

__all__ = ["IfcHeader", "read_ifc_header", "read_ifc_events", "read_ifc_chunks", "write_ifc_zarr", "is_ifc_zarr"]


@dataclass(frozen=True)
class IfcHeader:
    """Metadata of an IFC zarr store; reading it touches no pixel data."""

    path: str
    n_events: int
    chunk_size: int
    shapes: tuple[tuple[int, int, int], ...]
    object_numbers: tuple[int, ...]
    dtype: str


def is_ifc_zarr(path: str | os.PathLike) -> bool:
    """True when ``path`` is a zarr v2 array with SCIP's ragged event layout."""
    meta = Path(path) / ".zarray"
    if not meta.is_file():
        return False
    try:
        zarray = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return zarray.get("dtype") == "|O" and any(
        f.get("id") == "vlen-array" for f in zarray.get("filters") or []
    )


def read_ifc_header(path: str | os.PathLike) -> IfcHeader:
    """Read the array metadata and attributes of an IFC zarr store.

    Raises
    ------
    ValueError
        If the store is not in SCIP's layout; the message names the file and
        the key that is wrong.
    """
    root = Path(path)
    try:
        zarray = json.loads((root / ".zarray").read_text())
    except FileNotFoundError:
        raise ValueError(f"{root}: not a zarr v2 array (no .zarray file)") from None
    except ValueError as e:
        raise ValueError(f"{root / '.zarray'}: invalid JSON ({e})") from None
    try:
        zattrs = json.loads((root / ".zattrs").read_text())
    except FileNotFoundError:
        raise ValueError(f"{root}: no .zattrs file; SCIP's layout needs attributes 'shape' and 'object_number'") from None
    if len(zarray.get("shape", [])) != 1:
        raise ValueError(f"{root / '.zarray'}: 'shape' must be 1-D for SCIP's layout, got {zarray.get('shape')}")
    filters = zarray.get("filters") or []
    vlen = [f for f in filters if f.get("id") == "vlen-array"]
    if not vlen:
        raise ValueError(f"{root / '.zarray'}: expected a 'vlen-array' filter, got {filters}")
    n = int(zarray["shape"][0])
    shapes = zattrs.get("shape")
    if shapes is None:
        raise ValueError(f"{root / '.zattrs'}: missing attribute 'shape' (per-event (C, H, W))")
    if len(shapes) != n:
        raise ValueError(f"{root / '.zattrs'}: attribute 'shape' has {len(shapes)} entries for {n} events")
    numbers = zattrs.get("object_number", list(range(n)))
    if len(numbers) != n:
        raise ValueError(f"{root / '.zattrs'}: attribute 'object_number' has {len(numbers)} entries for {n} events")
    return IfcHeader(
        path=str(root),
        n_events=n,
        chunk_size=int(zarray["chunks"][0]),
        shapes=tuple(tuple(int(v) for v in s) for s in shapes),
        object_numbers=tuple(int(v) for v in numbers),
        dtype=vlen[0].get("dtype", "<u2"),
    )


def _codecs(root: Path):
    zarray = json.loads((root / ".zarray").read_text())
    compressor = numcodecs.get_codec(zarray["compressor"]) if zarray.get("compressor") else None
    filters = [numcodecs.get_codec(f) for f in zarray.get("filters") or []]
    return compressor, filters


def read_ifc_events(header: IfcHeader, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray | str]]:
    """Yield ``(index, image)`` for each requested event, decoding each chunk once.

    ``image`` is the event's ``(C, H, W)`` array, or a string saying why it
    could not be read (missing or corrupt chunk, size that does not match the
    ``shape`` attribute). Errors are returned per event, not raised, so one
    bad chunk does not stop the events around it.
    """
    yield from read_ifc_chunks(header.path, header.chunk_size, {i: header.shapes[i] for i in indices})


def read_ifc_chunks(
    path: str | os.PathLike, chunk_size: int, events: Mapping[int, Sequence[int]]
) -> Iterator[tuple[int, np.ndarray | str]]:
    """Like :func:`read_ifc_events`, given each wanted event's ``(C, H, W)`` shape.

    Workers call this one: it needs no header, so a task carries only the
    shapes of its own events, not those of the whole dataset.
    """
    root = Path(path)
    try:
        compressor, filters = _codecs(root)
    except Exception as e:  # noqa: BLE001 - reported per event below
        for i in events:
            yield i, f"cannot read {root / '.zarray'}: {e}"
        return
    by_chunk: dict[int, list[int]] = {}
    for i in events:
        by_chunk.setdefault(i // chunk_size, []).append(i)
    for chunk, wanted in sorted(by_chunk.items()):
        chunk_path = root / str(chunk)
        try:
            data = chunk_path.read_bytes()
            if compressor is not None:
                data = compressor.decode(data)
            for f in reversed(filters):
                data = f.decode(data)
        except FileNotFoundError:
            for i in wanted:
                yield i, f"chunk file {chunk_path} is missing"
            continue
        except Exception as e:  # noqa: BLE001 - any codec failure means a corrupt chunk
            for i in wanted:
                yield i, f"cannot decode chunk {chunk_path}: {type(e).__name__}: {e}"
            continue
        for i in wanted:
            flat = data[i - chunk * chunk_size]
            shape = tuple(events[i])
            if flat is None or np.size(flat) != int(np.prod(shape)):
                got = 0 if flat is None else np.size(flat)
                yield i, f"event {i} in {chunk_path} has {got} values, attribute 'shape' says {shape}"
                continue
            yield i, np.asarray(flat).reshape(shape)


def write_ifc_zarr(
    path: str | os.PathLike,
    images: Sequence[np.ndarray],
    object_numbers: Sequence[int] | None = None,
    chunk_size: int = 64,
    dtype: str = "<u2",
) -> IfcHeader:
    """Write ``(C, H, W)`` images as an IFC zarr store in SCIP's layout.

    The store is readable by zarr-python 2 (``zarr.open(path)[i]``) and by
    :func:`read_ifc_events`.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    n = len(images)
    if object_numbers is None:
        object_numbers = list(range(n))
    compressor = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    vlen = numcodecs.VLenArray(dtype)
    zarray = {
        "chunks": [chunk_size],
        "compressor": compressor.get_config(),
        "dtype": "|O",
        "fill_value": 0,
        "filters": [vlen.get_config()],
        "order": "C",
        "shape": [n],
        "zarr_format": 2,
    }
    shapes = []
    for start in range(0, n, chunk_size):
        block = images[start:start + chunk_size]
        arr = np.empty(len(block), dtype=object)
        for j, img in enumerate(block):
            img = np.asarray(img)
            if img.ndim != 3:
                raise ValueError(f"image {start + j} has shape {img.shape}; expected (C, H, W)")
            arr[j] = img.astype(dtype).ravel()
            shapes.append([int(s) for s in img.shape])
        (root / str(start // chunk_size)).write_bytes(compressor.encode(vlen.encode(arr)))
    (root / ".zarray").write_text(json.dumps(zarray, indent=4))
    attrs = {"object_number": [int(v) for v in object_numbers], "shape": shapes}
    (root / ".zattrs").write_text(json.dumps(attrs))
    return read_ifc_header(root)
