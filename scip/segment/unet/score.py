"""Segmentation scores of a set of images: object F1 at an IoU threshold and Jaccard indices.

``object_jaccard`` is the mean, over ground-truth objects, of the IoU with
the predicted object that overlaps it most (0 when none does): it falls
both for missed objects and for poorly drawn ones. ``pixel_jaccard`` is
the IoU of the foreground masks (object identity ignored), the Jaccard
index of the M2U-Net paper. Counts are pooled over the images of a set,
so a set's F1 is ``2 TP / (n_true + n_pred)`` over all its objects.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from scip.metrics import iou_matrix, match_labels

__all__ = ["score_image", "pool"]


def score_image(gt: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> dict:
    """Counts and sums of one image, to be pooled by :func:`pool`.

    Returns
    -------
    dict
        ``n_true``, ``n_pred``, ``tp``, ``iou_sum`` (best IoU per true
        object, summed), ``fg_intersection``, ``fg_union`` and the image's
        own ``f1``, ``object_jaccard``, ``pixel_jaccard``.
    """
    match = match_labels(gt, pred, iou_threshold)
    _, _, iou = iou_matrix(gt, pred)
    best = np.asarray(iou.max(axis=1).todense()).ravel() if iou.shape[1] else np.zeros(iou.shape[0])
    inter = int(np.count_nonzero((gt > 0) & (pred > 0)))
    union = int(np.count_nonzero((gt > 0) | (pred > 0)))
    out = {"n_true": match.n_true, "n_pred": match.n_pred, "tp": match.tp, "iou_sum": float(best.sum()),
           "fg_intersection": inter, "fg_union": union}
    return {**out, **_ratios(out)}


def _ratios(c: dict) -> dict:
    n = c["n_true"] + c["n_pred"]
    return {
        "f1": 2 * c["tp"] / n if n else 1.0,
        "precision": c["tp"] / c["n_pred"] if c["n_pred"] else float(c["n_true"] == 0),
        "recall": c["tp"] / c["n_true"] if c["n_true"] else float(c["n_pred"] == 0),
        "object_jaccard": c["iou_sum"] / c["n_true"] if c["n_true"] else float(c["n_pred"] == 0),
        "pixel_jaccard": c["fg_intersection"] / c["fg_union"] if c["fg_union"] else 1.0,
    }


def pool(scores: Iterable[dict]) -> dict:
    """Scores of a set of images from their :func:`score_image` results (pooled counts)."""
    keys = ("n_true", "n_pred", "tp", "iou_sum", "fg_intersection", "fg_union")
    total = {k: 0 for k in keys}
    for s in scores:
        for k in keys:
            total[k] += s[k]
    return {**total, **_ratios(total)}
