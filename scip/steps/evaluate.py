"""Compare an image's segmentation with its ground truth."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from scip.metrics import match_labels
from scip.records import Evaluation, ImageRecord


def evaluate_image(record: ImageRecord, mask: str, iou: float = 0.5) -> ImageRecord:
    """Match ``record.labels[mask]`` against ``record.truth`` at ``iou``.

    Runs on skipped images too: an image where nothing was found, or that
    could not be read, still has ground-truth cells, and they count as
    missed. The ground truth is released afterwards.
    """
    truth = record.truth
    if truth is None:
        return record
    if isinstance(truth, str):
        return record.with_(truth=None, evaluation=Evaluation(error=truth))
    pred = record.labels.get(mask)
    if pred is None:
        pred = np.zeros_like(truth)
    if pred.shape != truth.shape:
        return record.with_(truth=None, evaluation=Evaluation(
            n_true=int(len(np.unique(truth[truth > 0]))),
            error=f"ground truth shape {truth.shape} differs from the image's {pred.shape}"))
    result = match_labels(truth, pred, iou_threshold=iou)
    matches = {int(p): int(t) for t, p in result.matches}
    return record.with_(truth=None, evaluation=Evaluation(n_true=result.n_true, n_pred=result.n_pred, tp=result.tp, matches=matches))


#: Images listed one by one in run.json's ``evaluation.per_image`` (every image counts in the groups and
#: the pooled figures; an imaging-flow-cytometry run has an image per event).
PER_IMAGE_LISTED = 1000


def _scores(truth: int, found: int, matched: int, exported: int) -> dict:
    """Counts and ratios of one image or group; a ratio over 0 is ``None`` (JSON null), as in the pooled figures."""

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {"truth_cells": truth, "found_cells": found, "matched": matched, "recall": ratio(matched, truth),
            "precision": ratio(matched, found), "f1": ratio(2 * matched, truth + found),
            "exported_matched": exported, "exported_recall": ratio(exported, truth)}


def evaluation_breakdown(images: list[dict], exported_by_image: Mapping[str, int],
                         group_by: Sequence[str] = ()) -> dict:
    """The evaluation of every image, and of every group of images sharing a metadata value.

    Parameters
    ----------
    images : list of dict
        ``PartitionSummary.evaluation_images``: per image ``image_id``, ``index``, ``fields``,
        ``truth_cells``, ``found_cells``, ``matched``, ``error``.
    exported_by_image : mapping
        Exported cells that matched a true cell, by the image's index as text.
    group_by : sequence of str
        ``meta_*`` columns (``evaluate.group_by``), each naming a field of the input pattern.

    Returns
    -------
    dict
        ``per_image`` (in input order, at most :data:`PER_IMAGE_LISTED`), ``per_image_total``, and
        ``per_group``: for each column, one entry per value with its ``images`` and the scores. Images
        without ground truth (an ``error``) are listed per image with it, and left out of the groups.
    """
    from scip.steps.export import meta_name

    images = sorted(images, key=lambda e: e["index"])
    rows = []
    for e in images:
        row = {"image_id": e["image_id"], **_scores(e["truth_cells"], e["found_cells"], e["matched"],
                                                    int(exported_by_image.get(str(e["index"]), 0)))}
        if e.get("error"):
            row["error"] = e["error"]
        rows.append(row)
    groups: dict[str, list[dict]] = {}
    for column in group_by:
        totals: dict[str, list[int]] = {}
        for e, row in zip(images, rows):
            if e.get("error"):
                continue
            values = {meta_name(k): v for k, v in e["fields"].items()}
            t = totals.setdefault(values.get(column, ""), [0, 0, 0, 0, 0])
            for i, n in enumerate((1, row["truth_cells"], row["found_cells"], row["matched"], row["exported_matched"])):
                t[i] += n
        groups[column] = [{column: value, "images": t[0], **_scores(*t[1:])} for value, t in sorted(totals.items())]
    return {"per_image": rows[:PER_IMAGE_LISTED], "per_image_total": len(rows), "per_group": groups}
