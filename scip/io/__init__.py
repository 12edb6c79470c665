"""Readers and writers: the edges of the pipeline.

:func:`open_dataset` lists the images of an input (metadata only);
:func:`read_images` reads the pixels of some of them into
:class:`~scip.records.ImageRecord` objects. A file that cannot be read gives
a skipped record with the reason, never an exception that stops the run:
among those, an image whose declared size is over the per-image memory
budget (refused before decoding) and a Zarr image with a chunk missing
from the store (see :mod:`scip.io.limits`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from scip.config import InputConfig
from scip.io import bioio_image, ifc_zarr, plate, tiff, zarr_image
from scip.io.channels import InputError, default_names, select_channels
from scip.io.dataset import Dataset, ReadSpec
from scip.io.limits import ImageSkip
from scip.records import ImageRecord, Source, skipped

__all__ = ["Dataset", "ReadSpec", "InputError", "open_dataset", "read_images", "detect_format"]


def detect_format(path: Path) -> str:
    """Guess the input format from what is at ``path``."""
    if path.is_dir():
        if ifc_zarr.is_ifc_zarr(path):
            return "ifc_zarr"
        if any((path / f).exists() for f in (".zarray", ".zgroup", "zarr.json")):
            node = zarr_image._open(path)
            if hasattr(node, "attrs") and not hasattr(node, "shape") and zarr_image.ome_metadata(node) is not None:
                return "ome_zarr"
            if hasattr(node, "attrs") and not hasattr(node, "shape") and plate.plate_metadata(node) is not None:
                return "plate"
            return "zarr"
    if _bioio_files(path):
        return "bioio"
    return "tiff"


def _bioio_files(path: Path) -> bool:
    """Whether ``auto`` reads ``path`` through bioio.

    CZI, ND2, LIF files always (a missing plugin is then an error naming the
    pip command); OME-TIFF when bioio-ome-tiff is installed (else tifffile
    reads it as TIFF); a folder when its files are all of those.
    """
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (".tif", ".tiff", ".czi", ".nd2", ".lif")]
    else:
        return False
    if not files or not all(bioio_image.is_bioio_file(f) for f in files):
        return False
    return not all(f.name.lower().endswith((".ome.tif", ".ome.tiff")) for f in files) or bioio_image.bioio_available()


def open_dataset(cfg: InputConfig) -> Dataset:
    """List the images of the configured input, without reading pixels.

    Raises
    ------
    InputError
        When the input cannot be used as configured (no files, pattern that
        matches nothing, unknown channel...): a configuration problem.
    """
    fmt = cfg.format if cfg.format != "auto" else detect_format(cfg.path)
    if fmt == "bioio":
        return bioio_image.discover_bioio(cfg.path, cfg.pattern, cfg.channels, cfg.use_channels, cfg.exclude)
    if fmt == "tiff":
        return tiff.discover_tiff(cfg.path, cfg.pattern, cfg.channels, cfg.use_channels, cfg.exclude)
    if fmt == "ifc_zarr":
        return _discover_ifc(cfg)
    if fmt == "zarr":
        return zarr_image.discover_zarr(cfg.path, cfg.array, cfg.channels, cfg.use_channels)
    if fmt == "plate" or (fmt == "ome_zarr" and plate.plate_metadata(zarr_image._open(cfg.path)) is not None):
        return plate.discover_plate(cfg.path, cfg.level, cfg.channels, cfg.use_channels, cfg.exclude)
    return zarr_image.discover_ome_zarr(cfg.path, cfg.level, cfg.channels, cfg.use_channels)


def _discover_ifc(cfg: InputConfig) -> Dataset:
    try:
        header = ifc_zarr.read_ifc_header(cfg.path)
    except ValueError as e:
        raise InputError(f"input.path: {e}") from None
    if header.n_events == 0:
        raise InputError(f"input.path: {cfg.path} holds no events")
    counts = [s[0] for s in header.shapes]
    n_stored = len(cfg.channels) if cfg.channels else max(set(counts), key=counts.count)
    names = tuple(cfg.channels) if cfg.channels else default_names(n_stored)
    loaded, index = select_channels(names, cfg.use_channels, f"the channels of {cfg.path}")
    sources = tuple(
        Source(image_id=str(i), index=i, paths=(str(cfg.path),), fields={"object_number": str(num)},
               locator=(i, header.shapes[i]))
        for i, num in enumerate(header.object_numbers)
    )
    return Dataset("ifc_zarr", loaded, index, n_stored, sources, chunk_size=header.chunk_size)


def read_images(dataset: Dataset | ReadSpec, sources: Sequence[Source]) -> list[ImageRecord]:
    """Read the pixels of ``sources``; failures become skipped records.

    A :class:`ReadSpec` may carry a per-image memory ``budget`` and the
    ``missing_chunks`` policy; a :class:`Dataset` reads with neither limit
    nor fill (no budget, missing chunks skipped).
    """
    if dataset.format == "ifc_zarr":
        return _read_ifc(dataset, sources)
    spec = dataset.reader if isinstance(dataset, Dataset) else dataset
    budget, missing_chunks = spec.budget, spec.missing_chunks
    records = []
    for source in sources:
        try:
            if dataset.format == "tiff":
                pixels = tiff.read_tiff(source, dataset.channel_index, dataset.n_stored_channels, budget)
            elif dataset.format == "tiff_channels":
                pixels = tiff.read_tiff_channels(source, dataset.channels, budget)
            elif dataset.format == "bioio":
                pixels = bioio_image.read_bioio(source, dataset.channel_index, dataset.n_stored_channels, budget)
            elif dataset.format == "zarr":
                pixels = zarr_image.read_zarr(source, dataset.channel_index, budget, missing_chunks)
            else:
                pixels = zarr_image.read_ome_zarr(source, dataset.channel_index, budget, missing_chunks)
        except ImageSkip as e:  # its message is the whole reason, naming the file or chunk
            records.append(ImageRecord(source, dataset.channels, status=skipped("load", str(e))))
            continue
        except Exception as e:  # noqa: BLE001 - any reader failure is this image's problem only
            where = ", ".join(p for p in source.paths if p) or "?"
            records.append(ImageRecord(source, dataset.channels, status=skipped(
                "load", f"cannot read {where}: {_describe(e)}", kind="cannot read the file")))
            continue
        records.append(ImageRecord(source, dataset.channels, pixels=pixels))
    return records


def _read_ifc(dataset: Dataset, sources: Sequence[Source]) -> list[ImageRecord]:
    by_index = {s.locator[0]: s for s in sources}
    path = sources[0].paths[0] if sources else ""
    records = []
    for i, result in ifc_zarr.read_ifc_chunks(path, dataset.chunk_size, {i: s.locator[1] for i, s in by_index.items()}):
        source = by_index[i]
        if isinstance(result, str):
            records.append(ImageRecord(source, dataset.channels, status=skipped("load", result, kind="cannot read the event")))
        elif result.shape[0] != dataset.n_stored_channels:
            records.append(ImageRecord(source, dataset.channels, status=skipped(
                "load", f"event {i} of {path} has {result.shape[0]} channels, expected {dataset.n_stored_channels}",
                kind="event has another number of channels")))
        else:
            records.append(ImageRecord(source, dataset.channels, pixels=result[list(dataset.channel_index)]))
    return records


def _describe(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"
