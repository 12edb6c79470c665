"""Typed records that travel through the pipeline.

An :class:`ImageRecord` is one field of view or one imaging-flow-cytometry
event; segmentation turns it into :class:`CellRecord` objects, one per object
found. Both carry a :class:`Status`: a record that cannot go on is kept, marked
skipped with a reason, and ends up in ``skipped.csv`` instead of vanishing.

Records are plain dataclasses of numpy arrays and strings, so every step is a
pure function that can be called on one record in a notebook, without Dask.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

__all__ = ["Source", "Status", "Evaluation", "ImageRecord", "CellRecord", "OK", "skipped", "failed", "DataError",
           "EXPECTED", "Micronuclei"]


class DataError(Exception):
    """The data of one record cannot be processed: the record is skipped with this message as its reason.

    Readers, segmentation methods and feature families raise it (or a
    subclass) for a problem of the image itself (unreadable, too small,
    degenerate). Any other exception inside a step is a bug, not the data's
    fault: the record becomes an *error* (:func:`failed`), which is counted,
    reported with its traceback and makes the run exit non-zero.
    """


#: Exceptions a step turns into a skip rather than an error. ``MemoryError``:
#: an image too large for the worker is the data's size, not a bug.
EXPECTED: tuple[type[BaseException], ...] = (DataError, MemoryError)


@dataclass(frozen=True)
class Source:
    """Where one image comes from; cheap to build and ship, holds no pixels.

    Parameters
    ----------
    image_id : str
        Identifier unique within the dataset (file stem, regex ``id`` group,
        or event index).
    index : int
        Position of the image in the dataset, 0-based.
    paths : tuple of str
        File(s) or store the pixels are read from (several for one file per
        channel, in channel order).
    fields : mapping of str to str
        Metadata: named regex groups, the IFC ``object_number``, ...
    locator : tuple
        Reader-specific address inside ``paths`` (e.g. the event index in a
        zarr array); opaque to everything but the reader.
    pixel_size : float or None
        Edge of one pixel in micrometres, from the file's metadata (``None``:
        unknown); gives the ``_um``/``_um2`` versions of size features.
    """

    image_id: str
    index: int
    paths: tuple[str, ...]
    fields: Mapping[str, str] = field(default_factory=dict)
    locator: tuple = ()
    pixel_size: float | None = None


@dataclass(frozen=True)
class Status:
    """Whether a record goes on; if not, which step stopped it and why.

    A record that does not go on is either *skipped* (a data problem, e.g. no
    object found) or an *error* (an unexpected exception in a step: ``error``
    holds the exception's type, ``traceback`` its formatted traceback).
    """

    ok: bool = True
    step: str = ""
    reason: str = ""
    #: Machine-readable details of a skip, as ``(key, value)`` pairs: a
    #: filter records its name, the cell's value and the threshold here.
    detail: tuple[tuple[str, object], ...] = ()
    #: The reason without this record's values (``area below min (30)`` for
    #: ``area = 12 below min 30 (30)``): ``run.json`` counts reasons by it.
    kind: str = ""
    #: Type of the unexpected exception that stopped the record; empty for a skip.
    error: str = ""
    traceback: str = ""

    def __bool__(self) -> bool:  # lets steps write ``if not record.status``
        return self.ok

    @property
    def is_error(self) -> bool:
        """Whether an unexpected exception (a bug), not the data, stopped the record."""
        return bool(self.error)


OK = Status()


def skipped(step: str, reason: str, *, kind: str = "", **detail: object) -> Status:
    """Status of a record that ``step`` could not process, for ``reason``.

    ``kind`` is the reason without the record's values, the same for every
    record skipped for the same cause; by default the reason itself.
    """
    return Status(ok=False, step=step, reason=reason, detail=tuple(detail.items()), kind=kind or reason)


def failed(step: str, error: BaseException) -> Status:
    """Status of a record that ``step`` could not process because of an unexpected exception.

    Parameters
    ----------
    step : str
        The step that raised.
    error : BaseException
        The exception, caught by the step; its traceback is kept as text.

    Returns
    -------
    Status
        Not ok, with ``error`` (the exception's type) and ``traceback`` set.
    """
    name = type(error).__name__
    return Status(ok=False, step=step, reason=f"error: {name}: {error}", kind=f"error: {name}", error=name,
                  traceback="".join(traceback.format_exception(error)))


@dataclass(frozen=True)
class Evaluation:
    """Segmentation of one image compared with its ground truth.

    ``matches`` maps a found label to the ground-truth label it matched
    (IoU at or above the threshold). ``error`` says why no comparison was
    possible (ground truth missing or unreadable); the counts are then 0.
    """

    n_true: int = 0
    n_pred: int = 0
    tp: int = 0
    matches: Mapping[int, int] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Micronuclei:
    """The micronuclei of one image (``micronuclei:`` in the config): what was found and where it went.

    ``found`` counts the detections; ``dropped`` those that are not
    micronuclei, by reason; ``no_nucleus`` the micronuclei without a nucleus
    within ``max_distance``. ``owner[k]`` is the nucleus of micronucleus ``k``
    (0: none) and ``per_nucleus`` maps a nucleus label to its micronuclei's
    ``(count, area)``; both are needed only until the image is split into
    cells, and are emptied then.
    """

    found: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    no_nucleus: int = 0
    owner: np.ndarray | None = None
    per_nucleus: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        """Detections kept as micronuclei."""
        return self.found - sum(self.dropped.values())


@dataclass
class ImageRecord:
    """One image: metadata, pixels ``(C, H, W)`` and the label images found.

    ``pixels`` is ``None`` until the image is loaded and after it was split
    into cells; ``(C, Z, H, W)`` for a z stack kept whole (``input.z:
    stitch``). ``labels`` maps a mask name to an integer label image
    ``(H, W)`` (``(Z, H, W)`` for a stack) with 0 as background. ``timings`` holds the seconds each step
    spent on this record. ``truth`` is a ground-truth label image, when the
    run is evaluated.
    """

    source: Source
    channels: tuple[str, ...]
    pixels: np.ndarray | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    status: Status = OK
    timings: dict[str, float] = field(default_factory=dict)
    truth: np.ndarray | str | None = None
    evaluation: Evaluation | None = None
    #: The micronuclei found in the image, when the run looks for them.
    micronuclei: Micronuclei | None = None

    def with_(self, **changes) -> "ImageRecord":
        """Copy with some fields changed; records are treated as immutable."""
        return replace(self, **changes)


@dataclass
class CellRecord:
    """One object found in an image.

    ``pixels`` is the crop ``(C, h, w)`` around the object (its bounding box
    plus padding, clipped to the image); ``masks`` maps a mask name to a
    boolean ``(h, w)`` mask of this object in the crop; ``others`` marks
    pixels of the crop that belong to other objects (excluded from any
    background estimate). ``truth_label`` is the ground-truth object this one
    matched (0: none) when the run is evaluated. ``bbox`` is ``(min_row, min_col, max_row, max_col)``
    of the object in image coordinates (max exclusive) and ``origin`` is the
    image coordinate of the crop's top-left pixel. A 3-D object (from a z
    stack) has a ``(C, z, h, w)`` crop, ``(z, h, w)`` masks, ``bbox``
    ``(min_z, min_row, min_col, max_z, max_row, max_col)`` and ``origin``
    ``(plane, row, col)``.
    """

    source: Source
    channels: tuple[str, ...]
    label: int
    bbox: tuple[int, ...]
    origin: tuple[int, ...]
    pixels: np.ndarray | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    others: np.ndarray | None = None
    status: Status = OK
    timings: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    truth_label: int | None = None
    #: Per-cell values the dataset-wide filters decide on (``scip.reduce.filters``).
    measures: dict[str, float] = field(default_factory=dict)
    #: For the few cells picked for the run report: ``{"crop": (C, h, w) float32, "mask": (h, w) bool}``,
    #: kept after the crop itself is released.
    sample: dict | None = None
    #: The object's outline as WKB in image coordinates (``output.polygons``), kept after the masks are released.
    geometry: bytes | None = None

    def with_(self, **changes) -> "CellRecord":
        """Copy with some fields changed; records are treated as immutable."""
        return replace(self, **changes)
