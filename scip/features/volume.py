"""Size, position and intensity of 3-D objects (z stacks segmented with ``input.z: stitch``).

The one family that measures objects of a ``(Z, H, W)`` label image (a 2-D
label image is a stack of one plane: ``voxels`` is then the area and
``z_extent`` 1). All objects at once: voxels are grouped by label a single
time (:class:`~._objects.Objects`), every quantity is a segmented reduction.

``voxels``
    Number of voxels of the object.
``z_extent``
    Number of planes the object has a voxel on (for a stitched object, the
    planes it spans: stitching joins neighbouring planes only).
``min_z``, ``min_row``, ``min_col``, ``max_z``, ``max_row``, ``max_col``
    The 3-D bounding box in image coordinates, ``max_*`` exclusive.
``centroid_z``, ``centroid_row``, ``centroid_col``
    Mean plane, row and column of the object's voxels, in image coordinates.
Per channel
    The :data:`~._stats.STATISTICS` (mean, median, std, min, max, quartiles,
    sum, MAD, skewness, kurtosis) of the values of the object's voxels, as
    the ``intensity`` family's object view defines them for pixels.

Sizes are in voxels and planes: scip does not read the voxel size, so
anisotropic stacks are measured in their own grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ._objects import FeatureParams, Objects
from ._stats import STATISTICS, stats_by_run

__all__ = ["NAME", "describe", "compute", "extract_volumes"]

NAME = "volume"

_GEOMETRY: tuple[tuple[str, str, str], ...] = (
    ("voxels", "Number of voxels of the object (its volume in voxels; its area in a 2-D image).", "voxel"),
    ("z_extent", "Number of planes holding at least one voxel of the object.", "plane"),
    ("min_z", "First plane of the bounding box (inclusive), in image coordinates.", "plane"),
    ("min_row", "First row of the bounding box (inclusive), in image coordinates.", "px"),
    ("min_col", "First column of the bounding box (inclusive), in image coordinates.", "px"),
    ("max_z", "Plane after the last plane of the bounding box (exclusive), in image coordinates.", "plane"),
    ("max_row", "Row after the last row of the bounding box (exclusive), in image coordinates.", "px"),
    ("max_col", "Column after the last column of the bounding box (exclusive), in image coordinates.", "px"),
    ("centroid_z", "Mean plane of the object's voxels, in image coordinates.", "plane"),
    ("centroid_row", "Mean row of the object's voxels, in image coordinates.", "px"),
    ("centroid_col", "Mean column of the object's voxels, in image coordinates.", "px"),
)


def describe(channel_names: Sequence[str], params: FeatureParams) -> list[tuple[str, str | None, str, str]]:
    """Features of this family: ``(feature, channel, definition, unit)``."""
    out: list[tuple[str, str | None, str, str]] = [(f, None, d, u) for f, d, u in _GEOMETRY]
    of = "the values of the object's voxels"
    for channel in channel_names:
        out += [(name, channel, template.format(of=of), unit) for name, template, unit in STATISTICS]
    return out


def compute(objects: Objects, params: FeatureParams) -> dict[tuple[str, str | None], np.ndarray]:
    """Geometry and per-channel statistics of every object, offset into image coordinates."""
    seg = objects.seg
    coords = (objects.planes + objects.z_shift[seg], objects.rows + objects.row_shift[seg],
              objects.cols + objects.col_shift[seg])
    channels = [objects.values(c) for c in range(len(objects.channel_names))]
    return _measure(coords, channels, objects.channel_names, objects.groups.starts, objects.groups.counts, seg)


def _measure(coords: tuple[np.ndarray, np.ndarray, np.ndarray], channels: list[np.ndarray],
             channel_names: Sequence[str], starts: np.ndarray, counts: np.ndarray,
             seg: np.ndarray) -> dict[tuple[str, str | None], np.ndarray]:
    """The family's values from voxels grouped by object, in raster order within an object.

    ``coords`` are (plane, row, column) image coordinates of each voxel,
    ``channels`` its values, ``seg`` its object (0 .. n-1).
    """
    size = counts.astype(np.float64)
    values: dict[tuple[str, str | None], np.ndarray] = {("voxels", None): size}
    planes = coords[0]
    # Raster order within an object: its planes come sorted, and a new plane
    # starts wherever the plane changes within the object's run.
    new_plane = np.ones(planes.size, bool)
    new_plane[1:] = planes[1:] != planes[:-1]
    new_plane[starts] = True
    values[("z_extent", None)] = np.add.reduceat(new_plane, starts).astype(np.float64)
    for axis, coord in zip(("z", "row", "col"), coords):
        low = np.minimum.reduceat(coord, starts)
        # Summed relative to the box corner, then the corner (an exact
        # integer) added: the centroid keeps its precision far from the origin.
        local = np.add.reduceat((coord - low[seg]).astype(np.float64), starts) / size
        values[(f"min_{axis}", None)] = low.astype(np.float64)
        values[(f"max_{axis}", None)] = (np.maximum.reduceat(coord, starts) + 1).astype(np.float64)
        values[(f"centroid_{axis}", None)] = local + low
    for channel, v in zip(channel_names, channels):
        stats = stats_by_run(v, starts, counts)
        values.update({(name, channel): stats[name] for name, _, _ in STATISTICS})
    return values


def extract_volumes(
    crops: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    channel_names: Sequence[str],
    mask_name: str = "cell",
    origins: Sequence[tuple[int, int, int]] | None = None,
) -> pd.DataFrame:
    """The ``volume`` features of one 3-D object per crop, all crops measured together.

    Unlike the 2-D families, this one needs no neighbourhood (no edge ring,
    background band or texture), so crops are not packed into one image: the
    voxels of every mask are gathered and measured as one label image.

    Parameters
    ----------
    crops : sequence of ndarray, each (C, z, h, w)
        Pixels of each crop; every crop has the same channels.
    masks : sequence of ndarray of bool, each (z, h, w)
        The object in each crop. An empty mask gives a row of NaN.
    channel_names : sequence of str
        One name per channel.
    mask_name : str, optional
        Name of the mask; part of every column name.
    origins : sequence of (int, int, int), optional
        ``(plane, row, col)`` of each crop's first voxel in its image; added to
        coordinate features. Default ``(0, 0, 0)``.

    Returns
    -------
    pandas.DataFrame
        One row per crop, in order, with the columns of
        :func:`scip.features.columns` for ``families=("volume",)`` (no ``label``).

    Raises
    ------
    ValueError
        If the sequences differ in length, a crop is not 4-D, a mask does not
        match its crop, or the number of channel names differs from a crop's
        channels.
    """
    from . import columns

    names = list(channel_names)
    cols = columns(names, (NAME,), mask_name)
    n = len(crops)
    if len(masks) != n or (origins is not None and len(origins) != n):
        raise ValueError(f"got {len(masks)} masks and {len(origins) if origins is not None else n} origins "
                         f"for {n} crops")
    out = np.full((n, len(cols)), np.nan)
    if n == 0:
        return pd.DataFrame(out, columns=[c.name for c in cols])
    for i, (crop, mask) in enumerate(zip(crops, masks)):
        if np.ndim(crop) != 4 or np.shape(crop)[0] != len(names):
            raise ValueError(f"crop {i} must be (C, z, h, w) with C = {len(names)} channels, got shape {np.shape(crop)}")
        if np.shape(mask) != np.shape(crop)[1:]:
            raise ValueError(f"mask {i} has shape {np.shape(mask)}, its crop is {np.shape(crop)[1:]}")
    present = [i for i in range(n) if np.any(masks[i])]
    if not present:
        return pd.DataFrame(out, columns=[c.name for c in cols])
    # Each mask's voxels in raster order, one object after the other: the
    # grouping Objects makes of a label image, without building one.
    sizes = np.array([np.count_nonzero(masks[i]) for i in present], np.intp)
    starts = np.zeros(len(present), np.intp)
    np.cumsum(sizes[:-1], out=starts[1:])
    voxels = np.empty((len(names), int(sizes.sum())), np.float64)
    coords = np.empty((3, int(sizes.sum())), np.int64)
    for i, at, size in zip(present, starts, sizes):
        mask = np.asarray(masks[i], bool)
        voxels[:, at:at + size] = np.asarray(crops[i])[:, mask]
        origin = origins[i] if origins is not None else (0, 0, 0)
        coords[:, at:at + size] = np.nonzero(mask) + np.asarray(origin, np.int64)[:, None]
    seg = np.repeat(np.arange(len(present), dtype=np.intp), sizes)
    values = _measure(tuple(coords), list(voxels), names, starts, sizes, seg)
    table = np.column_stack([values[(c.feature, c.channel)] for c in cols])
    out[present] = table
    return pd.DataFrame(out, columns=[c.name for c in cols])
