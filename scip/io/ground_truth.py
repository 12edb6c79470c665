"""Ground-truth label images, for evaluating a run against known cells."""

from __future__ import annotations

import os
import string
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from scip._hints import short
from scip.io import ifc_zarr
from scip.io.channels import InputError
from scip.records import ImageRecord, Source


def template_fields(template: str) -> set[str]:
    """Names used in a ``{field}`` path template."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def truth_kind(template: str) -> str:
    """How ``evaluate.labels`` is read: ``template`` (per image), ``file`` (one TIFF) or ``ifc`` (zarr by index)."""
    if "{" in template:
        return "template"
    return "file" if Path(template).is_file() else "ifc"


def check_template(template: str, sources: tuple[Source, ...]) -> str | None:
    """Fail early (a configuration error) when the ground truth cannot serve these images.

    Parameters
    ----------
    template : str
        ``evaluate.labels``: an IFC zarr store, a label TIFF or a path template.
    sources : tuple of Source
        The images of the run.

    Returns
    -------
    str or None
        A warning when the ground truth covers only some of the images (those
        without are evaluated as having no ground truth), else ``None``.

    Raises
    ------
    InputError
        The ground truth covers none of the images, or cannot be used at all;
        the message names the template and an image and the path it gave.
    """
    kind = truth_kind(template)
    if kind != "template":
        if kind == "file" and len(sources) == 1:
            return None  # one image, one label file
        if not ifc_zarr.is_ifc_zarr(template):
            raise InputError(
                f"evaluate.labels: {template} is not an IFC zarr store; give an IFC zarr with one label "
                "image per event, a path template such as 'labels/{image_id}.tiff', or, for a single "
                "input image, its label TIFF"
            )
        return _check_ifc(template, sources)
    known = {"image_id", "index"} | set(sources[0].fields if sources else ())
    unknown = template_fields(template) - known
    if unknown:
        raise InputError(
            f"evaluate.labels: template {short(template, 300)} uses unknown field(s) {', '.join(sorted(unknown))}; "
            f"available: {', '.join(sorted(known))}"
        )
    missing: list[tuple[Source, str]] = []
    for source in sources:
        try:
            path = _truth_path(template, source)
        except (ValueError, IndexError, KeyError) as e:  # a format spec that does not fit, e.g. {image_id:d}
            raise InputError(f"evaluate.labels: template {short(template, 300)} cannot be filled in for image "
                             f"{source.image_id!r}: {type(e).__name__}: {e}") from None
        if not os.path.isfile(path):  # False, not an exception, for a name the file system refuses
            missing.append((source, path))
    if not missing:
        return None
    example, path = missing[0]
    if len(missing) == len(sources):
        raise InputError(
            f"evaluate.labels: template {short(template, 300)} matches no file for any of the {len(sources)} images "
            f"(image {example.image_id!r} gives {path}, which does not exist); check the folder and the fields"
        )
    return (f"evaluate.labels: template {short(template, 300)} has no file for {len(missing)} of the {len(sources)} images "
            f"(e.g. image {example.image_id!r}: {path}); those are counted as having no ground truth")


def _check_ifc(template: str, sources: tuple[Source, ...]) -> str | None:
    try:
        n_events = _ifc_truth(template).n_events
    except ValueError as e:
        raise InputError(f"evaluate.labels: {e}") from None
    beyond = [s for s in sources if s.index >= n_events]
    if not beyond:
        return None
    if len(beyond) == len(sources):
        raise InputError(f"evaluate.labels: {template} holds {n_events} label images, none for the "
                         f"{len(sources)} input images (e.g. event {beyond[0].index})")
    return (f"evaluate.labels: {template} holds {n_events} label images, none for {len(beyond)} of the "
            f"{len(sources)} input images (e.g. event {beyond[0].index}); those are counted as having no ground truth")


def _truth_path(template: str, source: Source) -> str:
    return template.format(image_id=source.image_id, index=source.index, **source.fields)


@dataclass(frozen=True)
class _IfcTruth:
    """What reading events of an IFC ground-truth store takes: its size, chunking and every event's shape.

    The shapes are kept as one ``(n_events, 3)`` array rather than the
    header's tuples (unless they differ in length): a worker may hold this
    for a million events.
    """

    n_events: int
    chunk_size: int
    shapes: np.ndarray | tuple

    def shape(self, index: int) -> tuple[int, ...]:
        """Event ``index``'s ``(C, H, W)``, as Python ints (they appear in error messages)."""
        return tuple(int(v) for v in self.shapes[index])


#: Parsed IFC ground-truth headers of this process, by store and the state of its metadata files.
_IFC_TRUTH: OrderedDict[tuple, _IfcTruth] = OrderedDict()
_IFC_TRUTH_KEPT = 4
_IFC_TRUTH_LOCK = threading.Lock()


def _metadata_state(template: str) -> tuple | None:
    """``(mtime_ns, size, inode)`` of the store's ``.zarray`` and ``.zattrs``; ``None`` if one cannot be read."""
    try:
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino)
                     for st in (os.stat(os.path.join(template, name)) for name in (".zarray", ".zattrs")))
    except OSError:
        return None


def _ifc_truth(template: str) -> _IfcTruth:
    """The header of an IFC ground-truth store, parsed once per process while its metadata files stay the same.

    Every partition's load task needs it, and parsing the whole ``.zattrs``
    (every event's shape) each time made a run's cost grow with the square
    of its events. The key holds the metadata files' mtime, size and inode,
    so a store rewritten in place is read again.

    Raises
    ------
    ValueError
        As :func:`scip.io.ifc_zarr.read_ifc_header`, for a store not in SCIP's layout.
    """
    state = _metadata_state(template)
    key = (os.path.abspath(template), state)
    if state is not None:
        with _IFC_TRUTH_LOCK:
            cached = _IFC_TRUTH.get(key)
            if cached is not None:
                _IFC_TRUTH.move_to_end(key)
                return cached
    header = ifc_zarr.read_ifc_header(template)
    try:
        shapes = np.array(header.shapes, dtype=np.int64)
    except ValueError:  # shapes of different lengths: kept as they are, each event's read reports its own
        shapes = header.shapes
    store = _IfcTruth(header.n_events, header.chunk_size, shapes)
    if state is not None:  # a missing metadata file has raised above; this is a race with its removal
        with _IFC_TRUTH_LOCK:
            _IFC_TRUTH[key] = store
            while len(_IFC_TRUTH) > _IFC_TRUTH_KEPT:
                _IFC_TRUTH.popitem(last=False)
    return store


def attach_truth(records: list[ImageRecord], template: str) -> list[ImageRecord]:
    """Read the ground truth of each record into ``record.truth``.

    ``template`` is an IFC zarr store (event ``index`` holds the labels of
    image ``index``; read chunk by chunk for the whole list) or a path
    template formatted with each record's ``image_id``, ``index`` and
    metadata fields. A missing or unreadable file is recorded as a string
    reason instead of raising. A record holding a z stack ``(C, Z, H, W)``
    takes 3-D truth ``(Z, H, W)``.
    """
    if truth_kind(template) != "ifc":
        return [_attach_tiff(r, template) for r in records]
    try:
        store = _ifc_truth(template)
    except ValueError as e:
        return [r.with_(truth=f"cannot read ground truth: {e}") for r in records]
    wanted = {r.source.index: store.shape(r.source.index) for r in records if r.source.index < store.n_events}
    results = dict(ifc_zarr.read_ifc_chunks(template, store.chunk_size, wanted))
    out = []
    for r in records:
        result = results.get(r.source.index, f"ground truth {template} has no event {r.source.index}")
        out.append(r.with_(truth=result if isinstance(result, str) else _plane(result[0], r.source, _is_stack(r))))
    return out


def _plane(truth: np.ndarray, source: Source, stack: bool = False) -> np.ndarray | str:
    # A z stack kept whole (input.z: stitch) is scored in 3-D; a one-plane image then is a stack of one plane.
    if stack and truth.ndim == 2:
        truth = truth[None]
    if truth.ndim != (3 if stack else 2):
        expected = "(Z, H, W), the image being a z stack" if stack else "(H, W)"
        return f"ground truth for image {source.image_id!r} has shape {truth.shape}; expected {expected}"
    return np.asarray(truth)


def _is_stack(record: ImageRecord) -> bool:
    return record.pixels is not None and record.pixels.ndim == 4


def _attach_tiff(record: ImageRecord, template: str) -> ImageRecord:
    source = record.source
    path = _truth_path(template, source)
    try:
        truth = tifffile.imread(path)
    except Exception as e:  # noqa: BLE001 - reported as this image's evaluation error
        return record.with_(truth=f"cannot read ground truth {path}: {type(e).__name__}: {e}")
    return record.with_(truth=_plane(truth, source, _is_stack(record)))
