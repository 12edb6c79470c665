"""Label images step: write each segmented image's labels (and its extra masks) into ``labels.zarr``.

Runs on a partition after the cells were split and their extra masks
added. The segmentation's label image is written as segmented (every object,
also those skipped for touching the border); an extra mask's label image
is assembled from the cells' own masks, each painted with its cell's
label, so a table row (``meta_image_id``, ``meta_label``) finds its pixels
in every label image of its image.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence

import numpy as np

from scip.io.labels import write_labels
from scip.records import CellRecord, ImageRecord, Source

__all__ = ["assemble_mask", "write_image_labels"]


def assemble_mask(shape: tuple[int, ...], cells: Sequence[CellRecord], name: str) -> np.ndarray:
    """The label image of mask ``name``: each cell's mask painted with its label, 0 elsewhere.

    Parameters
    ----------
    shape : tuple of int
        The image's shape, ``(y, x)`` or ``(z, y, x)``.
    cells : sequence of CellRecord
        The image's cells; those without mask ``name`` are left out.
    name : str
        The mask.

    Returns
    -------
    ndarray
        ``uint32`` (``uint64`` when a label needs it).
    """
    top = max((c.label for c in cells), default=0)
    out = np.zeros(shape, np.uint64 if top > np.iinfo(np.uint32).max else np.uint32)
    for cell in cells:
        mask = cell.masks.get(name)
        if mask is None:
            continue
        window = tuple(slice(o, o + s) for o, s in zip(cell.origin, mask.shape))
        out[window][mask] = cell.label
    return out


def write_image_labels(records: list[ImageRecord | CellRecord], root: str | os.PathLike, segmentation: str,
                       masks: Sequence[str], chunk: int = 512, pyramid_levels: int | None = None,
                       physical: Callable[[Source], dict[str, tuple[float, str | None]]] | None = None,
                       extra: Sequence[str] = ()) -> list[ImageRecord | CellRecord]:
    """Write the label images of every image of a partition that still carries its labels.

    An image record carries its label images past :func:`scip.steps.cells.split_cells`
    only when asked (``keep_labels``); they are written here and dropped, so
    nothing downstream holds them.

    Parameters
    ----------
    records : list
        A partition: each image record followed by its cell records.
    root : path
        The run's ``labels.zarr``.
    segmentation : str
        The segmentation's mask name (``segment.name``).
    masks : sequence of str
        The extra masks' names (``masks:``), assembled from the cells.
    chunk : int
        Chunk side (y, x) of the label arrays; larger images get a pyramid.
    pyramid_levels : int, optional
        Downsampled levels (``output.pyramid_levels``); default until one chunk.
    physical : callable, optional
        Source to ``{axis: (pixel size, unit)}`` (OME-Zarr input); 1 px otherwise.
    extra : sequence of str, optional
        Other label images of the image record written as they are (``micronuclei``); absent ones are left out.

    Returns
    -------
    list
        The records, image records without their label images, each with a ``labels`` timing.
    """
    cells: dict[int, list[CellRecord]] = {}
    for r in records:
        if isinstance(r, CellRecord) and r.status and r.masks:
            cells.setdefault(r.source.index, []).append(r)
    out = []
    for r in records:
        if not isinstance(r, ImageRecord) or segmentation not in r.labels:
            out.append(r)
            continue
        start = time.perf_counter()
        labelled = r.labels[segmentation]
        mine = cells.get(r.source.index, [])
        images = {segmentation: labelled, **{m: assemble_mask(labelled.shape, mine, m) for m in masks},
                  **{name: r.labels[name] for name in extra if name in r.labels}}
        axes = "zyx"[-labelled.ndim:]
        sizes = physical(r.source) if physical is not None else {}
        scale = [sizes.get(a, (1.0, None))[0] for a in axes]
        units = [sizes.get(a, (1.0, None))[1] for a in axes]
        write_labels(root, r.source.image_id, images, scale=scale, units=units, chunk=chunk,
                     pyramid_levels=pyramid_levels)
        timings = {**r.timings, "labels": r.timings.get("labels", 0.0) + time.perf_counter() - start}
        out.append(r.with_(labels={}, timings=timings))
    return out
