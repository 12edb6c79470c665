"""Counting what happened to every image and cell of a run.

Each partition reports a :class:`PartitionSummary`; the run adds them up.
The invariant the tests check: every cell found is either exported or listed
in ``skipped.csv`` with a reason, and every image either gave cells or is
listed there too.

A summary is saved as JSON (:func:`summary_to_json`, :func:`summary_from_json`),
never pickled: a resumed run reads it back from the output folder, which
anyone may have written to, so reading it must not be able to run code, and a
file with the wrong shape must be refused, not half-used.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from scip._jsonvalues import plain
from scip.records import CellRecord, ImageRecord

#: The exported cells' column holding their micronuclei (``scip.steps.micronuclei.COUNT``; not imported, so
#: that reading a summary needs no segmentation code).
MICRONUCLEUS_COUNT = "micronucleus_count"

SKIPPED_COLUMNS = ["kind", "image_id", "index", "path", "label", "truth_label", "step", "reason", "filter", "value",
                   "threshold", "reason_kind", "error"]


@dataclass
class PartitionSummary:
    """What one partition did: counts, skipped rows, step timings, evaluation."""

    images: int = 0
    images_with_cells: int = 0
    cells_found: int = 0
    cells_exported: int = 0
    skipped: list[dict] = field(default_factory=list)
    timings: Counter = field(default_factory=Counter)
    truth_cells: int = 0
    predicted_cells: int = 0
    matched: int = 0
    matched_exported: int = 0
    evaluation_errors: list[str] = field(default_factory=list)
    #: Records stopped by an unexpected exception (a bug, not the data): ``image_id``, ``index``, ``path``,
    #: ``label``, ``step``, ``exception``, ``message``, ``traceback``, all plain strings. They are also in
    #: :attr:`skipped` (they are not in the table), with their ``error`` column set.
    errors: list[dict] = field(default_factory=list)
    #: Exported cells picked for the report: metadata plus ``crop`` and ``mask``.
    samples: list[dict] = field(default_factory=list)
    #: One entry per evaluated image: ``image_id``, ``index``, ``fields`` (the pattern's metadata),
    #: ``truth_cells``, ``found_cells``, ``matched``, ``error`` (why it has no ground truth, or "").
    evaluation_images: list[dict] = field(default_factory=list)
    #: Exported cells that matched a true cell, by the image's ``Source.index`` (as text: a JSON key).
    matched_exported_by_image: Counter = field(default_factory=Counter)
    #: Micronuclei (``micronuclei:``): ``found``, ``kept``, ``no_nucleus``, ``assigned`` (to exported cells)
    #: and ``dropped: <reason>``.
    micronuclei: Counter = field(default_factory=Counter)
    #: This partition's exported cells, only the table columns the run's report draws (a ``pyarrow.Table``, as
    #: written to its part), so that the driver does not read every part again for the report. Per partition:
    #: a sum has None (the run concatenates the partitions' tables in order); None too where unknown (a summary
    #: read back by ``--resume``, a partition computed image by image), and the report then reads the parts.
    report_table: Any = None

    def __add__(self, other: "PartitionSummary") -> "PartitionSummary":
        return PartitionSummary(
            images=self.images + other.images,
            images_with_cells=self.images_with_cells + other.images_with_cells,
            cells_found=self.cells_found + other.cells_found,
            cells_exported=self.cells_exported + other.cells_exported,
            skipped=self.skipped + other.skipped,
            timings=self.timings + other.timings,
            truth_cells=self.truth_cells + other.truth_cells,
            predicted_cells=self.predicted_cells + other.predicted_cells,
            matched=self.matched + other.matched,
            matched_exported=self.matched_exported + other.matched_exported,
            evaluation_errors=self.evaluation_errors + other.evaluation_errors,
            errors=self.errors + other.errors,
            samples=self.samples + other.samples,
            evaluation_images=self.evaluation_images + other.evaluation_images,
            matched_exported_by_image=self.matched_exported_by_image + other.matched_exported_by_image,
            micronuclei=self.micronuclei + other.micronuclei,
            report_table=None,
        )


def _skipped_row(r: ImageRecord | CellRecord) -> dict:
    return {
        "kind": "cell" if isinstance(r, CellRecord) else "image",
        "image_id": r.source.image_id,
        "index": r.source.index,
        "path": ";".join(p for p in r.source.paths if p),
        "label": r.label if isinstance(r, CellRecord) else "",
        "truth_label": r.truth_label if isinstance(r, CellRecord) and r.truth_label is not None else "",
        "step": r.status.step,
        "reason": r.status.reason,
        "filter": "",
        "value": "",
        "threshold": "",
        **dict(r.status.detail),
        "reason_kind": r.status.kind or r.status.reason,
        "error": r.status.error,
    }


def _error_row(r: ImageRecord | CellRecord) -> dict:
    return {
        "image_id": str(r.source.image_id),
        "index": str(r.source.index),
        "path": ";".join(p for p in r.source.paths if p),
        "label": str(r.label) if isinstance(r, CellRecord) else "",
        "step": r.status.step,
        "exception": r.status.error,
        "message": r.status.reason,
        "traceback": r.status.traceback,
    }


def summarize(records: Iterable[ImageRecord | CellRecord]) -> PartitionSummary:
    """Count the records that reach the end of the pipeline in one partition."""
    s = PartitionSummary()
    for r in records:
        s.timings.update(r.timings)
        if isinstance(r, ImageRecord):
            s.images += 1
            if r.status:
                s.images_with_cells += 1
            else:
                s.skipped.append(_skipped_row(r))
                if r.status.is_error:
                    s.errors.append(_error_row(r))
            if r.micronuclei is not None:
                m = r.micronuclei
                s.micronuclei.update({"found": m.found, "kept": m.kept, "no_nucleus": m.no_nucleus,
                                      **{f"dropped: {k}": v for k, v in m.dropped.items()}})
            if r.evaluation is not None:
                s.truth_cells += r.evaluation.n_true
                s.predicted_cells += r.evaluation.n_pred
                s.matched += r.evaluation.tp
                if r.evaluation.error:
                    s.evaluation_errors.append(r.evaluation.error)
                s.evaluation_images.append({"image_id": str(r.source.image_id), "index": int(r.source.index),
                                            "fields": {str(k): str(v) for k, v in r.source.fields.items()},
                                            "truth_cells": r.evaluation.n_true, "found_cells": r.evaluation.n_pred,
                                            "matched": r.evaluation.tp, "error": r.evaluation.error})
            continue
        s.cells_found += 1
        if r.status:
            s.cells_exported += 1
            s.matched_exported += bool(r.truth_label)
            if r.truth_label:
                s.matched_exported_by_image[str(r.source.index)] += 1
            if MICRONUCLEUS_COUNT in r.features:
                s.micronuclei["assigned"] += int(r.features[MICRONUCLEUS_COUNT])
            if r.sample is not None:
                s.samples.append({"image_id": r.source.image_id, "index": r.source.index, "label": r.label,
                                  "truth_label": r.truth_label, "fields": dict(r.source.fields),
                                  "channels": list(r.channels), **r.sample})
        else:
            s.skipped.append(_skipped_row(r))
            if r.status.is_error:
                s.errors.append(_error_row(r))
    return s


#: Fields that are not in the JSON: the samples hold arrays and are saved apart (``report.save_samples``);
#: the report's table is in the partition's part already.
ARRAY_FIELDS = ("samples", "report_table")


def summary_to_json(summary: PartitionSummary) -> dict[str, Any]:
    """A summary as plain JSON types, every field but :data:`ARRAY_FIELDS`.

    Generic over the dataclass's fields, so a field added later is saved
    without touching this function (its type must be one
    :func:`summary_from_json` can check: int, float, str, ``Counter``, dict,
    or a list of those).

    Parameters
    ----------
    summary : PartitionSummary

    Returns
    -------
    dict
        Field name to value; ``Counter`` fields become plain dicts.
    """
    return {f.name: plain(dict(v) if isinstance(v := getattr(summary, f.name), Counter) else v)
            for f in dataclasses.fields(summary) if f.name not in ARRAY_FIELDS}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _checked(value: Any, kind: Any, where: str) -> Any:
    """``value`` if it has type ``kind`` (a field's annotation), else :class:`ValueError` naming ``where``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = _is_number(value)
    elif kind is str:
        ok = isinstance(value, str)
    elif kind is Counter or origin is Counter:
        ok = isinstance(value, dict) and all(isinstance(k, str) and _is_number(v) and not math.isnan(v)
                                             for k, v in value.items())
        if ok:
            return Counter(value)
    elif kind is dict or origin is dict:
        ok = isinstance(value, dict)
    elif kind is list or origin is list:
        ok = isinstance(value, list)
        if ok and args:
            return [_checked(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    elif kind is Any:
        ok = True
    else:
        raise TypeError(f"PartitionSummary.{where}: no JSON check for type {kind!r}; add one to _checked")
    if not ok:
        raise ValueError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def summary_from_json(data: Any) -> PartitionSummary:
    """The inverse of :func:`summary_to_json`, checking every value's type.

    Parameters
    ----------
    data : Any
        Parsed JSON, from a file nobody vouches for.

    Returns
    -------
    PartitionSummary
        With :data:`ARRAY_FIELDS` at their defaults (no samples, no report
        table); fields missing from ``data`` keep their defaults (a summary
        saved before a field was added).

    Raises
    ------
    ValueError
        ``data`` is not a mapping, names an unknown field, or holds a value of
        the wrong type (the message names the field).
    """
    if not isinstance(data, dict):
        raise ValueError(f"a partition summary is a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(PartitionSummary)
    names = {f.name for f in dataclasses.fields(PartitionSummary)} - set(ARRAY_FIELDS)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(str, unknown))}")
    return PartitionSummary(**{name: _checked(value, hints[name], name) for name, value in data.items()})
