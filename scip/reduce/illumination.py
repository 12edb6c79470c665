"""Illumination correction: a flat field per group, from the mean of its images.

This is the retrospective method of Jones et al. (2006) as CellProfiler's
``CorrectIlluminationCalculate`` runs it with "Each/All images", "average",
then "smooth": every image of a group is summed, pixel by pixel and per
channel; the mean image is smoothed, so cells (which sit at random places)
average out and only the slowly varying illumination remains; the result,
scaled to mean 1, is the *flat field* each image of the group is divided by.

The work splits as a Dask graph needs it, and every function here is pure
and works without Dask:

1. :func:`sums_by_group` summarizes one partition of
   :class:`~scip.records.ImageRecord` objects into one :class:`ImageSum` per
   group (:func:`group_key`);
2. :func:`merge_groups` (built on :func:`merge`) combines the summaries of
   partitions, in any order and any tree shape: sums of integer pixels in
   float64 are exact (see :class:`ImageSum`), so the result does not depend on
   how the dataset was partitioned;
3. :func:`flat_field` (or :func:`flat_fields` for all groups) turns a group's
   summary into its field, once, on the driver;
4. :func:`field_for` finds an image's field and :func:`correct` divides the
   image by it.

:func:`save` and :func:`load` keep the fields in one ``.npz`` file, so a
correction computed once can be reused for another run (``illumination.reuse``
in the configuration).

References
----------
T. R. Jones, A. E. Carpenter, D. M. Sabatini, P. Golland, "Methods for
high-content, high-throughput image-based cell screening", Proceedings of the
Workshop on Microscopic Image Analysis with Applications in Biology (MIAAB),
2006 (the reference CellProfiler gives for this method); A. E. Carpenter et
al., "CellProfiler: image analysis software for identifying and quantifying
cell phenotypes", Genome Biology 7:R100 (2006).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from scip.io.atomic import atomic_path
from scip.records import ImageRecord

__all__ = [
    "IlluminationError",
    "GroupKey",
    "SMOOTHING",
    "FLOOR",
    "group_key",
    "ImageSum",
    "summarize",
    "merge",
    "sums_by_group",
    "merge_groups",
    "flat_field",
    "flat_fields",
    "correct",
    "correction_meta",
    "save",
    "load",
    "field_for",
]

#: A group: the values of the ``group_by`` metadata fields, in order.
GroupKey = tuple[str, ...]

#: Smoothing methods :func:`flat_field` knows.
SMOOTHING: tuple[str, ...] = ("gaussian", "median")

#: Smallest value of a flat field, relative to its mean of 1; see :func:`flat_field`.
FLOOR = 1e-6

# The median filter runs directly for windows up to this many pixels a side;
# larger windows run on a block-averaged image (see flat_field).
_MEDIAN_MAX_WINDOW = 7

_FORMAT = "scip-illumination"
_VERSION = 1
_META_NAME = "meta"
_RESERVED_META = ("format", "version", "groups")
_MAX_LISTED = 10  # groups named in an error message


class IlluminationError(ValueError):
    """Illumination correction cannot be computed, saved, loaded or applied as asked."""


# ---------------------------------------------------------------------------
# Groups


def group_key(fields: Mapping[str, str], group_by: Sequence[str], image_id: str | None = None) -> GroupKey:
    """The group an image belongs to.

    Parameters
    ----------
    fields : mapping of str to str
        The image's metadata (:attr:`scip.records.Source.fields`).
    group_by : sequence of str
        Names of the metadata fields that define a group
        (``illumination.group_by``); empty puts all images in one group.
    image_id : str, optional
        The image's identifier, named in the error message.

    Returns
    -------
    tuple of str
        The values of the ``group_by`` fields, in the order of ``group_by``,
        as strings; ``()`` when ``group_by`` is empty.

    Raises
    ------
    IlluminationError
        If the image lacks one of the ``group_by`` fields; the message names
        the field, the image and the fields the image has.

    Examples
    --------
    >>> group_key({"plate": "P1", "well": "A01", "site": "3"}, ["plate", "well"])
    ('P1', 'A01')
    >>> group_key({"plate": "P1"}, [])
    ()
    """
    key = []
    for name in group_by:
        if name not in fields:
            image = f"image {image_id!r}" if image_id is not None else "an image"
            have = ", ".join(repr(f) for f in fields) or "none"
            raise IlluminationError(
                f"illumination.group_by names the metadata field {name!r}, but {image} has no such field "
                f"(its fields: {have})"
            )
        key.append(str(fields[name]))
    return tuple(key)


def _describe_key(key: GroupKey) -> str:
    return "() (all images, no group_by)" if key == () else repr(tuple(key))


def _list_keys(keys: Iterable[GroupKey]) -> str:
    keys = list(keys)
    if not keys:
        return "none"
    shown = ", ".join(_describe_key(k) for k in keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------
# Mergeable summary


@dataclass(frozen=True, eq=False)
class ImageSum:
    """Sum of a group's images, per channel and pixel, and how many there are.

    Sums are float64. A float64 holds every integer up to ``2**53`` exactly,
    so summing integer pixels (``uint8``, ``uint16``, ...) is exact, and
    therefore independent of the order and grouping of the additions, as long
    as every partial sum stays below ``2**53`` (for ``uint16`` images: up to
    about 1.3e11 images per group). :func:`merge` of partition summaries thus
    gives bit for bit what one sum over all images gives. Floating-point
    pixels are summed with ordinary rounding, so results may then differ in
    the last bits between partitionings.

    Attributes
    ----------
    sum : ndarray
        ``(C, H, W)`` float64 sum of the images.
    count : int
        Number of images summed.
    image_id : str
        One image of the group (the first summarized), named in error
        messages; empty if unknown.
    """

    sum: np.ndarray
    count: int
    image_id: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape ``(C, H, W)`` of the images summed."""
        return tuple(self.sum.shape)


def _shape_mismatch(a_shape, a_id: str, b_shape, b_id: str) -> IlluminationError:
    a_name = f"image {a_id!r}" if a_id else "an image"
    b_name = f"image {b_id!r}" if b_id else "another image"
    return IlluminationError(
        f"{a_name} has shape {tuple(a_shape)} (C, H, W) but {b_name} of the same group has shape "
        f"{tuple(b_shape)}: illumination correction averages the fields of view of a group pixel by pixel, "
        f"so all images of a group must have one shape. Imaging-flow-cytometry events, whose size varies, "
        f"cannot be illumination-corrected; for fields of view, group images of different sizes apart "
        f"(illumination.group_by)"
    )


def summarize(image: ImageRecord | np.ndarray) -> ImageSum:
    """Summary of one image: its pixels as float64, with a count of 1.

    Parameters
    ----------
    image : ImageRecord or ndarray
        A loaded record, or its ``(C, H, W)`` pixels.

    Returns
    -------
    ImageSum

    Raises
    ------
    IlluminationError
        If the record holds no pixels or they are not ``(C, H, W)``.
    """
    image_id = ""
    if isinstance(image, ImageRecord):
        image_id = image.source.image_id
        pixels = image.pixels
        if pixels is None:
            raise IlluminationError(
                f"image {image_id!r} holds no pixels; illumination is summarized from loaded images"
            )
    else:
        pixels = image
    pixels = np.asarray(pixels)
    if pixels.ndim != 3:
        name = f"image {image_id!r}" if image_id else "an image"
        raise IlluminationError(f"{name} has shape {pixels.shape}; expected pixels of shape (C, H, W)")
    return ImageSum(pixels.astype(np.float64), 1, image_id)


def merge(a: ImageSum, b: ImageSum) -> ImageSum:
    """Summary of the images of ``a`` and ``b`` together; neither is modified.

    Raises
    ------
    IlluminationError
        If the images of ``a`` and ``b`` differ in shape; the message names
        both shapes and an image of each.
    """
    if a.sum.shape != b.sum.shape:
        raise _shape_mismatch(a.sum.shape, a.image_id, b.sum.shape, b.image_id)
    return ImageSum(a.sum + b.sum, a.count + b.count, a.image_id or b.image_id)


def _in_group(key: GroupKey, error: IlluminationError) -> IlluminationError:
    return IlluminationError(f"illumination group {_describe_key(key)}: {error}")


def sums_by_group(records: Iterable[ImageRecord], group_by: Sequence[str]) -> dict[GroupKey, ImageSum]:
    """Summarize a partition: one :class:`ImageSum` per group.

    Records that were skipped (``not record.status``, e.g. unreadable
    images) are left out; they are not corrected either.

    Parameters
    ----------
    records : iterable of ImageRecord
        Loaded, uncorrected images.
    group_by : sequence of str
        Metadata fields defining the groups, see :func:`group_key`.

    Returns
    -------
    dict of tuple of str to ImageSum
        Groups in the order they were first met; empty for no records.

    Raises
    ------
    IlluminationError
        If a record lacks a ``group_by`` field, holds no pixels although not
        skipped, or a group holds images of different shapes.
    """
    out: dict[GroupKey, ImageSum] = {}
    for record in records:
        if not record.status:
            continue
        key = group_key(record.source.fields, group_by, record.source.image_id)
        one = summarize(record)
        if key not in out:
            out[key] = one
            continue
        group = out[key]
        if group.sum.shape != one.sum.shape:
            raise _in_group(key, _shape_mismatch(group.sum.shape, group.image_id, one.sum.shape, one.image_id))
        # In place: the sums made here are new arrays, not shared with anyone.
        np.add(group.sum, one.sum, out=group.sum)
        out[key] = ImageSum(group.sum, group.count + 1, group.image_id)
    return out


def merge_groups(a: Mapping[GroupKey, ImageSum], b: Mapping[GroupKey, ImageSum]) -> dict[GroupKey, ImageSum]:
    """Combine two partitions' summaries, group by group; neither is modified.

    Associative and, up to the order of the keys, commutative, so it can be
    used in any reduction tree (e.g. ``dask.bag.Bag.reduction`` or
    ``functools.reduce``); ``{}`` is its identity.

    Raises
    ------
    IlluminationError
        If a group's images differ in shape between ``a`` and ``b``.
    """
    out = dict(a)
    for key, summary in b.items():
        if key in out:
            try:
                out[key] = merge(out[key], summary)
            except IlluminationError as e:
                raise _in_group(key, e) from None
        else:
            out[key] = summary
    return out


# ---------------------------------------------------------------------------
# Flat field


def _odd(x: float) -> int:
    """The odd integer nearest ``x`` (upward on ties), at least 1."""
    return max(1, 2 * int(math.floor((x - 1) / 2 + 0.5)) + 1)


def _median_smooth(plane: np.ndarray, size: float) -> np.ndarray:
    """Median filter of the odd window nearest ``size``, on a block-averaged image when large."""
    # Odd windows are centred on their pixel; an even one would shift the
    # result by half a window pixel (half a block on the reduced image).
    window = _odd(size)
    if window <= _MEDIAN_MAX_WINDOW:
        return ndi.median_filter(plane, size=window, mode="nearest")
    block = math.ceil(window / _MEDIAN_MAX_WINDOW)
    small_window = _odd(window / block)
    h, w = plane.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.pad(plane, ((0, hb * block - h), (0, wb * block - w)), mode="edge")
    small = padded.reshape(hb, block, wb, block).mean(axis=(1, 3))
    small = ndi.median_filter(small, size=small_window, mode="nearest")
    # Pixel i lies at (i + 0.5) / block - 0.5 in block coordinates (block
    # centres at integers); linear interpolation between block centres.
    rows = (np.arange(h) + 0.5) / block - 0.5
    cols = (np.arange(w) + 0.5) / block - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    return ndi.map_coordinates(small, grid, order=1, mode="nearest")


def flat_field(total: ImageSum, smooth: str = "gaussian", size: float = 50.0) -> np.ndarray:
    """The flat field of a group: its smoothed mean image, scaled to mean 1.

    Per channel:

    1. the mean image ``total.sum / total.count``;
    2. smoothed:

       ``"gaussian"``
           :func:`scipy.ndimage.gaussian_filter` with ``sigma=size`` pixels
           and ``mode="nearest"`` (edge pixels repeated beyond the border);
       ``"median"``
           a median filter of a square window of ``w`` pixels, ``w`` the odd
           integer nearest ``size`` (odd, so the window is centred; upward on
           ties), with :func:`scipy.ndimage.median_filter` and
           ``mode="nearest"``. For ``w`` up to 7 it runs on the mean image
           itself. For larger windows, which would be slow (already about 4 s
           for a 2048 x 2048 plane and an 8 x 8 window), it runs on a reduced
           image: the mean image is cut into ``b x b`` blocks,
           ``b = ceil(w / 7)`` (the last row and column of blocks padded by
           repeating the edge pixels), each block replaced by its mean; that
           image is median-filtered with a window of the odd number of
           blocks nearest ``w / b`` (so 3 to 7 blocks) and brought back to full
           size by linear interpolation between block centres (edge values
           repeated beyond the outermost centres). This loses only detail
           finer than a block, which is far finer than the window;

    3. divided by its mean, so the field has mean 1. Dividing an image by such
       a field removes the spatial pattern but keeps the dataset's intensity
       scale: a corrected image's mean stays about that of the uncorrected
       one, so intensities, thresholds and saturation levels keep their
       meaning in counts (a field scaled to a maximum or minimum of 1 would
       brighten or darken every image instead);
    4. values below :data:`FLOOR` (1e-6 of the mean) raised to it, so that
       dividing by the field never divides by zero or explodes where a
       channel is dark (e.g. outside a circular aperture).

    A channel whose smoothed mean image is zero everywhere (an empty
    channel) gets a field of ones: nothing to correct.

    Parameters
    ----------
    total : ImageSum
        The group's summary, from :func:`merge_groups`.
    smooth : {"gaussian", "median"}, optional
        Smoothing method (``illumination.smooth``).
    size : float, optional
        Gaussian sigma or median window, in pixels (``illumination.size``).
        Should be large against a cell (CellProfiler suggests about the
        diameter of the largest objects or more), small against the
        illumination's variation.

    Returns
    -------
    ndarray
        ``(C, H, W)`` float64 field, mean 1 per channel, all values >= FLOOR.

    Raises
    ------
    IlluminationError
        If ``total`` holds no image, ``smooth`` or ``size`` is invalid, or a
        channel's mean image is not finite or has a negative mean.
    """
    if smooth not in SMOOTHING:
        raise IlluminationError(f"unknown illumination smoothing {smooth!r}; expected one of {', '.join(SMOOTHING)}")
    if not (isinstance(size, (int, float)) and math.isfinite(size) and size > 0):
        raise IlluminationError(f"illumination smoothing size must be a positive number of pixels, got {size!r}")
    if total.count < 1:
        raise IlluminationError("cannot compute a flat field from no images")
    mean = total.sum / total.count
    field = np.empty(mean.shape, dtype=np.float64)
    for c, plane in enumerate(mean):
        if not np.all(np.isfinite(plane)):
            raise IlluminationError(
                f"channel {c}: the mean image holds NaN or infinite values; illumination cannot be estimated"
            )
        if smooth == "gaussian":
            smoothed = ndi.gaussian_filter(plane, sigma=float(size), mode="nearest")
        else:
            smoothed = _median_smooth(plane, float(size))
        level = float(smoothed.mean())
        if not np.any(smoothed):
            field[c] = 1.0
            continue
        if level <= 0:
            raise IlluminationError(
                f"channel {c}: the smoothed mean image has mean {level:g} <= 0; a flat field needs positive "
                f"intensities (were the images background-subtracted?)"
            )
        np.maximum(smoothed / level, FLOOR, out=field[c])
    return field


def flat_fields(
    totals: Mapping[GroupKey, ImageSum], smooth: str = "gaussian", size: float = 50.0
) -> dict[GroupKey, np.ndarray]:
    """:func:`flat_field` of every group."""
    out = {}
    for key, total in totals.items():
        try:
            out[key] = flat_field(total, smooth, size)
        except IlluminationError as e:
            raise _in_group(key, e) from None
    return out


def correct(pixels: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Divide an image by its flat field.

    Parameters
    ----------
    pixels : ndarray
        ``(C, H, W)`` image, any real dtype.
    field : ndarray
        ``(C, H, W)`` flat field of the image's group (from :func:`flat_field`
        or :func:`field_for`).

    Returns
    -------
    ndarray
        ``pixels / field`` as float32. Corrected values are no longer
        integers, so they cannot stay in the image's integer dtype; float32
        holds them to about 7 significant digits (far beyond the precision of
        a camera count) at half the memory of float64.

    Raises
    ------
    IlluminationError
        If the shapes differ; the message names both.
    """
    pixels = np.asarray(pixels)
    field = np.asarray(field)
    if pixels.shape != field.shape:
        raise IlluminationError(
            f"image of shape {pixels.shape} cannot be corrected with a flat field of shape {field.shape} "
            f"(C, H, W): they must be equal"
        )
    return np.divide(pixels, field, dtype=np.float32)


# ---------------------------------------------------------------------------
# Saving and reuse


def correction_meta(
    totals: Mapping[GroupKey, ImageSum],
    *,
    group_by: Sequence[str],
    channels: Sequence[str],
    smooth: str,
    size: float,
) -> dict[str, Any]:
    """Metadata to :func:`save` with the fields computed from ``totals``.

    Returns
    -------
    dict
        ``group_by`` (list), ``channels`` (list), ``smooth``, ``size`` and
        ``n_images`` (group key to number of images), exactly as
        :func:`load` returns them.
    """
    return {
        "group_by": list(group_by),
        "channels": list(channels),
        "smooth": str(smooth),
        "size": float(size),
        "n_images": {tuple(key): int(total.count) for key, total in totals.items()},
    }


def _check_field(field: np.ndarray, key: GroupKey, meta: Mapping[str, Any], where: str) -> None:
    if field.ndim != 3 or field.dtype.kind != "f":
        raise IlluminationError(f"{where}: field of group {_describe_key(key)} is not a (C, H, W) float array")
    if not np.all(np.isfinite(field)) or not np.all(field > 0):
        raise IlluminationError(
            f"{where}: field of group {_describe_key(key)} has values that are not finite and positive"
        )
    if field.shape[0] != len(meta["channels"]):
        raise IlluminationError(
            f"{where}: field of group {_describe_key(key)} has {field.shape[0]} channel(s) but the channels "
            f"are {list(meta['channels'])}"
        )
    if len(key) != len(meta["group_by"]):
        raise IlluminationError(
            f"{where}: group {_describe_key(key)} does not match group_by {list(meta['group_by'])}"
        )


def save(path: str | os.PathLike, fields: Mapping[GroupKey, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write flat fields and their metadata to one ``.npz`` file.

    The file holds one float64 array ``field_<i>`` per group, ``i`` being the
    group's position in ``fields``, and a JSON string ``meta`` with the given
    metadata plus ``format`` (``"scip-illumination"``), ``version`` and
    ``groups``: one entry per field, in the same order, with its ``key`` (the
    group key as a list) and, when ``meta`` has ``n_images``, its number of
    images. The file is written to a temporary file next to ``path`` and
    renamed, so a reader never sees half a file; ``path`` is used exactly as
    given (no ``.npz`` is appended).

    Parameters
    ----------
    path : str or os.PathLike
        File to write; its folder is created if needed.
    fields : mapping of tuple of str to ndarray
        ``(C, H, W)`` flat field per group.
    meta : mapping
        JSON-serializable metadata with at least ``group_by`` and
        ``channels``; typically :func:`correction_meta`. ``n_images`` may map
        group keys (tuples) to counts. Tuples come back as lists.

    Raises
    ------
    IlluminationError
        If ``meta`` lacks ``group_by`` or ``channels``, uses a reserved name,
        is not JSON-serializable, or a field does not fit it.
    """
    path = Path(path)
    where = f"illumination correction {path}"
    missing = [k for k in ("group_by", "channels") if k not in meta]
    if missing:
        raise IlluminationError(f"{where}: meta lacks {', '.join(missing)}")
    reserved = [k for k in _RESERVED_META if k in meta]
    if reserved:
        raise IlluminationError(f"{where}: meta may not use the reserved name(s) {', '.join(reserved)}")
    counts = meta.get("n_images")
    groups = []
    arrays = {}
    for i, (key, field) in enumerate(fields.items()):
        key = tuple(str(k) for k in key)
        field = np.asarray(field)
        _check_field(field, key, meta, where)
        entry: dict[str, Any] = {"key": list(key)}
        if counts is not None:
            if key not in counts:
                raise IlluminationError(f"{where}: meta n_images has no count for group {_describe_key(key)}")
            entry["n_images"] = int(counts[key])
        groups.append(entry)
        arrays[f"field_{i}"] = field.astype(np.float64, copy=False)
    document = {k: v for k, v in meta.items() if k != "n_images"}
    document.update(format=_FORMAT, version=_VERSION, groups=groups)
    try:
        text = json.dumps(document)
    except (TypeError, ValueError) as e:
        raise IlluminationError(f"{where}: meta is not JSON-serializable ({e})") from None
    arrays[_META_NAME] = np.array(text)

    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)


def load(path: str | os.PathLike) -> tuple[dict[GroupKey, np.ndarray], dict[str, Any]]:
    """Read flat fields written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    fields : dict of tuple of str to ndarray
        ``(C, H, W)`` float64 flat field per group.
    meta : dict
        The metadata given to :func:`save` (tuples turned into lists), with
        ``n_images`` mapping group keys (tuples) to counts when it was saved.

    Raises
    ------
    IlluminationError
        If the file is missing, is not an ``.npz`` file, or does not hold an
        illumination correction saved by :func:`save`; the message names the
        file.
    """
    path = Path(path)
    where = f"illumination correction {path}"
    if not path.is_file():
        raise IlluminationError(f"{where}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise IlluminationError(f"{where}: a single .npy array, not an .npz file saved by scip")
        with data:
            members = {name: data[name] for name in data.files}
    except IlluminationError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise IlluminationError(f"{where}: not an .npz file saved by scip ({type(e).__name__}: {e})") from None

    try:
        document = json.loads(str(members.pop(_META_NAME)[()]))
    except KeyError:
        raise IlluminationError(
            f"{where}: no '{_META_NAME}' entry; not an illumination correction saved by scip"
        ) from None
    except (ValueError, IndexError, TypeError) as e:
        raise IlluminationError(f"{where}: its '{_META_NAME}' entry is not valid JSON ({e})") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise IlluminationError(f"{where}: not an illumination correction saved by scip (format is not {_FORMAT!r})")
    if document.get("version") != _VERSION:
        raise IlluminationError(
            f"{where}: saved in format version {document.get('version')!r}; this scip reads version {_VERSION}"
        )
    groups = document.pop("groups", None)
    for name in ("format", "version"):
        document.pop(name)
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("key"), list) for g in groups
    ):
        raise IlluminationError(f"{where}: its metadata lists no valid groups")
    missing = [k for k in ("group_by", "channels") if not isinstance(document.get(k), list)]
    if missing:
        raise IlluminationError(f"{where}: its metadata lacks {', '.join(missing)}")
    names = {f"field_{i}" for i in range(len(groups))}
    if set(members) != names:
        raise IlluminationError(
            f"{where}: holds arrays {sorted(members)} but its metadata lists {len(groups)} group(s)"
        )
    fields: dict[GroupKey, np.ndarray] = {}
    counts: dict[GroupKey, int] = {}
    for i, entry in enumerate(groups):
        key = tuple(str(k) for k in entry["key"])
        field = members[f"field_{i}"]
        _check_field(field, key, document, where)
        fields[key] = field
        if "n_images" in entry:
            counts[key] = int(entry["n_images"])
    if counts:
        document["n_images"] = counts
    return fields, document


def field_for(
    fields: Mapping[GroupKey, np.ndarray],
    key: GroupKey,
    channels: Sequence[str],
    *,
    field_channels: Sequence[str] | None = None,
) -> np.ndarray:
    """The flat field for an image of group ``key`` with ``channels``.

    Parameters
    ----------
    fields : mapping of tuple of str to ndarray
        Flat field per group (from :func:`flat_fields` or :func:`load`).
    key : tuple of str
        The image's group (:func:`group_key`).
    channels : sequence of str
        The image's channels, in the order of its planes.
    field_channels : sequence of str, optional
        The channels of ``fields``, in the order of their planes (``meta
        ["channels"]`` of a loaded correction). When given, the field's
        planes are picked by channel name, so a correction saved for
        ``("DNA", "cyto", "marker")`` serves an image of ``("cyto", "DNA")``.
        When not given, the field's planes are taken to be ``channels`` and
        only their number is checked.

    Returns
    -------
    ndarray
        ``(C, H, W)`` field with the planes in the order of ``channels``.

    Raises
    ------
    IlluminationError
        If there is no field for ``key`` (the message names the group and the
        groups available: a correction reused from another dataset, or saved
        with another ``group_by``), or the channels do not match.
    """
    key = tuple(key)
    if key not in fields:
        raise IlluminationError(
            f"no illumination correction for group {_describe_key(key)}; the correction holds group(s) "
            f"{_list_keys(fields)} (a correction reused from another dataset, or computed with another "
            f"illumination.group_by, does not cover this image)"
        )
    field = fields[key]
    channels = list(channels)
    if field_channels is None:
        if field.shape[0] != len(channels):
            raise IlluminationError(
                f"illumination correction of group {_describe_key(key)} has {field.shape[0]} channel(s) but "
                f"the image has {len(channels)}: {channels}"
            )
        return field
    field_channels = list(field_channels)
    if field_channels == channels:
        return field
    missing = [c for c in channels if c not in field_channels]
    if missing:
        raise IlluminationError(
            f"illumination correction of group {_describe_key(key)} was computed for channels {field_channels}; "
            f"the image's channels {channels} include {missing}, which it does not cover"
        )
    return field[[field_channels.index(c) for c in channels]]
