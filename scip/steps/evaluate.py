"""Compare an image's segmentation with its ground truth."""

from __future__ import annotations

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
