"""Per-object feature extraction.

:func:`extract` turns a ``(C, H, W)`` image and a label image into a table with
one row per object. :func:`columns` lists the same columns without reading
pixels, so the pipeline can declare its output schema up front.

Features come in families, one module each (:mod:`.shape`, :mod:`.intensity`,
:mod:`.texture`, :mod:`.bbox`, and :mod:`.volume` for 3-D objects). A family
module exposes ``NAME``, ``describe(channel_names, params)`` and
``compute(objects, params)``, where ``objects`` is an
:class:`~._objects.Objects` built once per call; adding a family means adding
such a module and one entry to the registry below.
"""

from __future__ import annotations

import importlib
from dataclasses import fields as dataclass_fields
from functools import lru_cache
from types import ModuleType
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from scip._featureparams import COMPILED_FAMILIES, DEFAULT_FAMILIES, FAMILIES, FAMILIES_3D, needs_compiler
from scip._hints import did_you_mean

from ._columns import MICROMETRE_SUFFIX, FeatureColumn, column_name, micrometre_columns
from ._groups import Groups, bounding_boxes
from ._objects import BandRegions, FeatureParams, Objects, Scratch

__all__ = ["FAMILIES", "DEFAULT_FAMILIES", "FAMILIES_3D", "FeatureColumn", "FeatureParams", "MICROMETRE_SUFFIX",
           "check_3d", "column_name", "columns", "extract", "micrometre_columns", "needs_compiler", "COMPILED_FAMILIES"]

# Each family of FAMILIES is the module of its name, imported on first use: a run
# that measures only `bbox` never imports the compiled families, and so never numba.

_PARAM_NAMES = tuple(f.name for f in dataclass_fields(FeatureParams))


def _resolve_families(families: Sequence[str]) -> list[ModuleType]:
    # A bare string would otherwise be iterated character by character.
    if isinstance(families, str):
        families = (families,)
    seen: set[str] = set()
    modules = []
    for name in families:
        if name not in FAMILIES:
            allowed = ", ".join(repr(f) for f in FAMILIES)
            raise ValueError(f"unknown feature family {name!r}; available families: {allowed}"
                             + did_you_mean(name, FAMILIES))
        if name in seen:
            raise ValueError(f"feature family {name!r} is listed more than once in {tuple(families)}")
        seen.add(name)
        modules.append(importlib.import_module(f"{__name__}.{name}"))
    return modules


def _resolve_params(params: FeatureParams | None, overrides: Mapping[str, Any]) -> FeatureParams:
    unknown = [k for k in overrides if k not in _PARAM_NAMES]
    if unknown:
        raise TypeError(f"unknown feature parameter {unknown[0]!r}; parameters: {', '.join(_PARAM_NAMES)}"
                        + did_you_mean(unknown[0], _PARAM_NAMES))
    params = params if params is not None else FeatureParams()
    if overrides:
        params = FeatureParams(**{**{k: getattr(params, k) for k in _PARAM_NAMES}, **overrides})
    return params


def columns(
    channel_names: Sequence[str],
    families: Sequence[str] = DEFAULT_FAMILIES,
    mask_name: str = "cell",
    params: FeatureParams | None = None,
    **kwargs: Any,
) -> list[FeatureColumn]:
    """List the feature columns :func:`extract` returns, without any pixels.

    Parameters
    ----------
    channel_names : sequence of str
        One name per image channel.
    families : sequence of str, optional
        Feature families, in column order; see :data:`FAMILIES`.
    mask_name : str, optional
        Name of the mask the objects come from; part of every column name.
    params : FeatureParams, optional
        Feature parameters; keyword arguments override single fields.

    Returns
    -------
    list of FeatureColumn
        In the order of the table's feature columns (``label`` excluded).

    Raises
    ------
    ValueError
        For an unknown or repeated family, a channel or mask name with no
        alphanumeric character, or channel names that give the same column
        name once sanitized (e.g. ``"GFP 488"`` and ``"GFP-488"``).
    """
    params = _resolve_params(params, kwargs)
    key = (tuple(channel_names), families if isinstance(families, str) else tuple(families), mask_name, params)
    try:
        hash(key)
    except TypeError:  # e.g. an intensity_range given as lists: nothing to remember it by
        return list(_columns(*key))
    return list(_columns_cached(*key))


def _columns(channel_names: tuple[str, ...], families: Sequence[str] | str, mask_name: str,
             params: FeatureParams) -> tuple[FeatureColumn, ...]:
    channel_names = list(channel_names)
    out: list[FeatureColumn] = []
    for module in _resolve_families(families):
        for feature, channel, definition, unit in module.describe(channel_names, params):
            name = column_name(mask_name, module.NAME, feature, channel)
            out.append(FeatureColumn(name, module.NAME, feature, channel, definition, unit))
    seen: dict[str, FeatureColumn] = {}
    for col in out:
        if col.name in seen:
            raise ValueError(
                f"channel names {seen[col.name].channel!r} and {col.channel!r} both give column {col.name!r}; "
                "channel names must differ in their letters and digits"
            )
        seen[col.name] = col
    return tuple(out)


# The workers ask for the same few column lists once per partition and mask, and
# naming ~700 columns costs ~5 ms each time. A pure function of its arguments
# (FeatureColumn is frozen; callers get a list of their own); errors are not cached.
_columns_cached = lru_cache(maxsize=32)(_columns)


def check_3d(families: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the families of ``families`` that cannot measure 3-D objects."""
    flat = [families] if isinstance(families, str) else list(families)
    planar = [f for f in flat if f not in FAMILIES_3D]
    if planar:
        raise ValueError(f"feature families {', '.join(repr(f) for f in planar)} measure 2-D objects only; "
                         f"3-D labels (Z, H, W) take {', '.join(repr(f) for f in FAMILIES_3D)}")


def _check_inputs(pixels: np.ndarray, labels: np.ndarray, channel_names: Sequence[str] | None,
                  background: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    pixels = np.asarray(pixels)
    labels = np.asarray(labels)
    if labels.ndim == 3:
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be 4-D (C, Z, H, W) for 3-D labels {labels.shape}, got shape {pixels.shape}")
    elif pixels.ndim != 3:
        raise ValueError(f"pixels must be 3-D (C, H, W), got shape {pixels.shape}")
    if not (np.issubdtype(pixels.dtype, np.number) or pixels.dtype == bool) or np.iscomplexobj(pixels):
        raise ValueError(f"pixels must have a real numeric dtype, got {pixels.dtype}")
    if labels.shape != pixels.shape[1:]:
        raise ValueError(f"labels shape {labels.shape} does not match pixels spatial shape {pixels.shape[1:]} (pixels {pixels.shape})")
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer label image, got dtype {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError(f"labels must be >= 0 (0 is background), got minimum {labels.min()}")
    n_channels = pixels.shape[0]
    if channel_names is None:
        channel_names = [f"ch{i}" for i in range(n_channels)]
    else:
        channel_names = list(channel_names)
        if len(channel_names) != n_channels:
            raise ValueError(f"got {len(channel_names)} channel names {channel_names} for {n_channels} channels (pixels shape {pixels.shape})")
    if background is None:
        background = labels == 0
    else:
        background = np.asarray(background, dtype=bool)
        if background.shape != labels.shape:
            raise ValueError(f"background shape {background.shape} does not match labels shape {labels.shape}")
        background = background & (labels == 0)
    # Pixels keep their dtype: families gather the values they need as
    # float64, which for a large image costs far less than converting it.
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8 if pixels.dtype == bool else None)
    # Labels keep their integer dtype here: Objects gives the compiled kernels
    # the one they are built for (int32 as a rule), without the int64 copy of
    # the whole image this used to make (165 MB on the benchmark mosaic).
    labels = np.ascontiguousarray(labels)
    return pixels, labels, channel_names, background


def extract(
    pixels: np.ndarray,
    labels: np.ndarray,
    channel_names: Sequence[str] | None = None,
    families: Sequence[str] = DEFAULT_FAMILIES,
    mask_name: str = "cell",
    offset: tuple[int, ...] | None = None,
    background: np.ndarray | None = None,
    params: FeatureParams | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """Compute features of every labeled object.

    Parameters
    ----------
    pixels : ndarray, shape (C, H, W) or (C, Z, H, W)
        Image, any real numeric dtype; values are measured as float64.
    labels : ndarray of int, shape (H, W) or (Z, H, W)
        Label image; 0 is background, each positive value one object.
        Labels need not be consecutive. 3-D labels take only the families
        of :data:`FAMILIES_3D`.
    channel_names : sequence of str, optional
        One name per channel; default ``("ch0", "ch1", ...)``.
    families : sequence of str, optional
        Feature families, in column order; see :data:`FAMILIES`.
    mask_name : str, optional
        Name of the mask the objects come from; part of every column name.
    offset : tuple of int, optional
        ``(row, col)`` of the image's top-left pixel in a larger image
        (``(plane, row, col)`` for 3-D labels); added to every coordinate
        feature (bounding box, centroid, centers of mass). Default: zeros.
    background : ndarray of bool, shape (H, W), optional
        Pixels that may serve as local background around objects; default
        every pixel with label 0. Pixels with a label never count.
    params : FeatureParams, optional
        Feature parameters (texture distances and gray levels, edge and
        background widths, Zernike degree).
    **kwargs
        Override single fields of ``params``, e.g. ``distances=(1, 2)``.

    Returns
    -------
    pandas.DataFrame
        One row per label present, ascending; column ``label`` (int64) first,
        then float64 feature columns in the order of :func:`columns`. Without
        objects, zero rows but the same columns and dtypes.

    Raises
    ------
    ValueError
        If ``pixels`` is not 3-D (4-D for 3-D labels), ``labels`` or
        ``background`` does not match its spatial shape, ``labels`` is not
        integer or has negative values, the number of channel names differs
        from the number of channels, a family is unknown (or 2-D only with
        3-D labels), a parameter is out of range or ``offset`` is not in
        whole pixels or has not one value per axis of ``labels``.
    TypeError
        For an unknown parameter name.

    Notes
    -----
    A 2-D image whose objects hold more than :data:`STRIP_PIXELS` pixels
    (2**19) is measured a strip of objects at a time, each strip seeing the
    whole image: the values are the same bit for bit, the peak memory stays
    near that of one strip (112 instead of 308 MiB over the input for 5,000
    cells of 64 x 64 px and 3 channels) and no call maps hundreds of MiB of
    fresh arrays, which on a virtual machine cost up to a second of system
    time per call (``benchmarks/ab_strips.py``).

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((8, 8), dtype=int)
    >>> labels[2:5, 3:7] = 4
    >>> pixels = np.ones((1, 8, 8))
    >>> df = extract(pixels, labels, families=["bbox"])
    >>> df[["label", "feat_cell_bbox_min_row", "feat_cell_bbox_width"]].to_numpy().tolist()
    [[4.0, 2.0, 4.0]]
    """
    params = _resolve_params(params, kwargs)
    if np.ndim(labels) == 3:
        check_3d(families)
    pixels, labels, channel_names, background = _check_inputs(pixels, labels, channel_names, background)
    cols = columns(channel_names, families, mask_name, params)
    offset = (0,) * labels.ndim if offset is None else tuple(offset)
    if len(offset) != labels.ndim:
        raise ValueError(f"offset {tuple(offset)} must have one value per axis of labels {labels.shape}")
    objects = Objects(pixels, labels, background, tuple(channel_names), row_offset=offset[-2], col_offset=offset[-1],
                      z_offset=offset[0] if labels.ndim == 3 else 0, compiled=needs_compiler(families))
    return _table(objects, families, cols, params)


#: Object pixels above which a 2-D image's objects are measured in strips of
#: about this many pixels. Each family keeps a few arrays as large as its
#: objects' pixels (float64 values of every channel, the band's scratch); for
#: all objects of a large image at once those were fresh mappings of tens to
#: hundreds of MiB, which the kernel zeroed on every call: on a virtual
#: machine that cost from 0.03 to over 1 s per 5,000 cells, as the host had
#: taken the freed pages back or not. A strip's arrays are kept from strip to
#: strip (``Scratch``), and the peak memory no longer grows with the image.
#: 2**19 pixels are 4 MiB of float64 values per channel: up to 7 channels stay
#: under the 32 MiB up to which glibc serves (and keeps) memory from its heap
#: rather than mapping it afresh; with 2**20 a call now and then paid 0.1 s of
#: page faults again. Smaller strips cost more: the families' fixed costs are
#: paid per strip (2**18: +40 ms per 5,000 cells of 3 channels).
STRIP_PIXELS = 1 << 19


def _strip_margin(params: FeatureParams) -> int:
    """Rows around a strip's objects whose objects can claim the strip's band pixels.

    A band pixel lies within ``background_width`` of its object and goes to
    the nearest object, so objects up to twice that far compete for it; one
    row more for good measure.
    """
    return 2 * int(params.background_width) + 1


def _strip_cuts(first_row: np.ndarray, last_row: np.ndarray, before: np.ndarray, budget: int) -> list[int]:
    """Where to cut objects taken in first-row order into strips of about ``budget`` pixels.

    ``before`` holds the pixels of the objects before each one. A strip is
    cut where the pixels reach the next multiple of ``budget``, or a little
    later (up to half a budget) where no object before the cut reaches the
    rows of the next one: strips that share no rows convert no row of the
    image twice for the Sobel gradient, and their band margins hold fewer
    objects of the neighbouring strips.
    """
    plain = np.flatnonzero(np.diff(before // budget)) + 1
    clean = np.flatnonzero(first_row[1:] > np.maximum.accumulate(last_row)[:-1]) + 1
    cuts: list[int] = []
    for p in plain.tolist():
        k = np.searchsorted(clean, p)
        q = int(clean[k]) if k < len(clean) and before[clean[k]] - before[p] <= budget // 2 else p
        if not cuts or q > cuts[-1]:
            cuts.append(q)
    return cuts


def _strips(objects: Objects, params: FeatureParams) -> Iterator[tuple[slice | np.ndarray, Objects]]:
    """``objects`` a strip at a time: the positions of each strip's objects in ``objects`` and the strip's Objects.

    Objects are taken in the order of their first row, about
    :data:`STRIP_PIXELS` pixels at a time (``objects`` itself when its
    objects hold no more). Each strip is an :class:`~._objects.Objects` of
    the same 2-D image whose groups hold that strip's objects only; the other
    objects stay in the label image (never background, their pixels never
    the strip's), and those within :func:`_strip_margin` of the strip's rows
    are the band's other regions, their boxes cut to those rows. So every
    value is the one the whole image gives. The strips share one
    :class:`~._objects.Scratch`. Positions are a slice where the strip's
    objects are consecutive labels (numbered in raster order, as a rule).
    """
    groups = objects.groups
    n = len(groups)
    # Strips for one 2-D image with the compiled families and whole-image
    # offsets, as extract gives; packed crops (extract_crops) are small batches.
    if (groups.index.size <= STRIP_PIXELS or objects.labels.ndim != 2 or not objects.compiled
            or objects.band_labels is not objects.labels or objects.outside is not None
            or np.ndim(objects.row_offset) or np.ndim(objects.col_offset)):
        yield slice(0, n), objects
        return
    labels = objects.labels
    index = groups.index
    first_row, min_col, last_row, max_col = bounding_boxes(groups, labels.shape[1])
    margin = _strip_margin(params)
    order = np.argsort(first_row, kind="stable")
    before = np.cumsum(groups.counts[order]) - groups.counts[order]
    cuts = _strip_cuts(first_row[order], last_row[order], before, max(STRIP_PIXELS, 1))
    scratch = Scratch()
    for members in np.split(order, cuts):
        own = np.sort(members)   # positions in label order: ids ascending
        lo = int(first_row[own].min()) - margin
        hi = int(last_row[own].max()) + 1 + margin
        counts = groups.counts[own]
        starts = np.zeros(len(own), np.intp)
        np.cumsum(counts[:-1], out=starts[1:])
        consecutive = own[-1] - own[0] + 1 == len(own)
        if consecutive:
            a = groups.starts[own[0]]
            run_index = index[a:a + int(counts.sum())]
        else:
            run_index = index[np.repeat(groups.starts[own] - starts, counts) + np.arange(int(counts.sum()))]
        near = np.flatnonzero((first_row < hi) & (last_row >= lo))
        regions = BandRegions(ids=groups.ids[near], min_row=np.maximum(first_row[near], lo), min_col=min_col[near],
                              max_row=np.minimum(last_row[near], hi - 1), max_col=max_col[near])
        strip = Objects(objects.pixels, labels, objects.background, objects.channel_names,
                        row_offset=objects.row_offset, col_offset=objects.col_offset,
                        groups=Groups(ids=groups.ids[own], starts=starts, counts=counts, index=run_index),
                        band_regions=regions, scratch=scratch)
        yield (slice(int(own[0]), int(own[-1]) + 1) if consecutive else own), strip


def _block(objects: Objects, families: Sequence[str], cols: list[FeatureColumn], params: FeatureParams,
           out: np.ndarray | None = None, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
    """Run the families over ``objects``: the values of ``cols``, one row per object (float64, column-major).

    Written into ``out[rows]`` when ``out`` is given (a strip's objects in
    the whole image's table), which is returned.
    """
    n = len(objects)
    # One column-major float64 block, the DataFrame's own: pandas builds a table
    # of hundreds of separate columns at about 10 us each, some 7 ms a call,
    # a quarter of the features' time on a partition's ~70 cells.
    block = np.empty((n, len(cols)), dtype=np.float64, order="F") if out is None else out
    position = {(c.family, c.feature, c.channel): k for k, c in enumerate(cols)}
    filled = np.zeros(len(cols), dtype=bool)
    for module in _resolve_families(families):
        if not n:
            continue
        for (feature, channel), values in module.compute(objects, params).items():
            k = position.get((module.NAME, feature, channel))
            if k is not None:
                block[rows, k] = values
                filled[k] = True
    if n and not filled.all():
        missing = [cols[k].name for k in np.flatnonzero(~filled)[:5]]
        raise RuntimeError(f"feature families computed no values for columns {missing}")
    return block


def _table(objects: Objects, families: Sequence[str], cols: list[FeatureColumn], params: FeatureParams) -> pd.DataFrame:
    """Run the families over ``objects``, a strip at a time when they are many (:func:`_strips`), and assemble the table of :func:`extract`."""
    block = np.empty((len(objects), len(cols)), dtype=np.float64, order="F")
    for rows, strip in _strips(objects, params):
        _block(strip, families, cols, params, out=block, rows=rows)
    table = pd.DataFrame(block, columns=[c.name for c in cols], copy=False)
    table.insert(0, "label", objects.ids.astype(np.int64))
    return table
