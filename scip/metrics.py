"""Compare a predicted label image with a ground truth one, object by object.

Objects are matched one to one when their intersection over union (IoU)
reaches a threshold; matched pairs are true positives, unmatched ground-truth
objects false negatives and unmatched predicted objects false positives. This
is the usual instance-segmentation score (as in the 2018 Data Science Bowl
and StarDist papers), here at a single IoU threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

__all__ = ["MatchResult", "iou_matrix", "match_labels"]


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match_labels`.

    Attributes
    ----------
    n_true, n_pred : int
        Number of objects in the ground truth and in the prediction.
    tp, fp, fn : int
        Matched pairs, unmatched predicted objects, unmatched ground-truth
        objects.
    precision, recall, f1 : float
        ``tp / n_pred``, ``tp / n_true`` and ``2 tp / (n_true + n_pred)``.
        A ratio whose denominator is 0 is 1.0 when both images are empty
        (nothing to find, nothing found: perfect) and 0.0 otherwise.
    iou_threshold : float
        Threshold the pairs were matched at.
    matches : ndarray of int, shape (tp, 2)
        ``(gt_label, pred_label)`` of each matched pair, sorted by gt label.
    ious : ndarray of float, shape (tp,)
        IoU of each pair in ``matches``.
    """

    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    iou_threshold: float
    matches: np.ndarray
    ious: np.ndarray


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, sparse.csr_array]:
    """Intersection over union of every overlapping pair of objects.

    Built from the contingency table of the two label images, so the cost
    grows with the number of pixels, not with the number of object pairs.

    Parameters
    ----------
    gt, pred : ndarray of int
        Label images of the same shape, 0 as background; labels need not be
        consecutive.

    Returns
    -------
    gt_labels : ndarray of int, shape (n,)
        Sorted non-zero labels of ``gt``; row ``i`` of the matrix is
        ``gt_labels[i]``.
    pred_labels : ndarray of int, shape (m,)
        Sorted non-zero labels of ``pred``; the matrix columns.
    iou : scipy.sparse.csr_array, shape (n, m)
        IoU of each pair; pairs that do not overlap are absent (0).
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}")
    # Index 0 stays the background so that object areas include pixels that
    # overlap the other image's background.
    gt_labels, gt_idx = np.unique(gt.ravel(), return_inverse=True)
    pred_labels, pred_idx = np.unique(pred.ravel(), return_inverse=True)
    gt_has_bg = gt_labels.size > 0 and gt_labels[0] == 0
    pred_has_bg = pred_labels.size > 0 and pred_labels[0] == 0
    if not gt_has_bg:
        gt_labels = np.concatenate([[0], gt_labels])
        gt_idx = gt_idx + 1
    if not pred_has_bg:
        pred_labels = np.concatenate([[0], pred_labels])
        pred_idx = pred_idx + 1
    n, m = gt_labels.size, pred_labels.size
    counts = sparse.coo_array(
        (np.ones(gt_idx.size, dtype=np.int64), (gt_idx.ravel(), pred_idx.ravel())), shape=(n, m)
    ).tocsr()  # sums duplicate (gt, pred) entries: the contingency table
    area_gt = np.asarray(counts.sum(axis=1)).ravel()
    area_pred = np.asarray(counts.sum(axis=0)).ravel()
    inter = counts[1:, 1:].tocoo()
    rows, cols = inter.row, inter.col
    union = area_gt[rows + 1] + area_pred[cols + 1] - inter.data
    iou = sparse.csr_array((inter.data / union, (rows, cols)), shape=(n - 1, m - 1))
    return gt_labels[1:], pred_labels[1:], iou


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


def match_labels(gt: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> MatchResult:
    """Match predicted objects to ground-truth objects by IoU.

    Parameters
    ----------
    gt, pred : ndarray of int
        Label images of the same shape, 0 as background; labels need not be
        consecutive.
    iou_threshold : float, optional
        A pair can match only if its IoU is at least this. Above 0.5 each
        object overlaps at most one partner that much, so the matching is
        unique; below, the one-to-one assignment maximising the total IoU is
        taken (Hungarian algorithm).

    Returns
    -------
    MatchResult

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((4, 4), int); gt[:2, :2] = 1
    >>> pred = np.zeros((4, 4), int); pred[:2, :3] = 7
    >>> r = match_labels(gt, pred)
    >>> r.tp, r.matches.tolist(), round(float(r.ious[0]), 3)
    (1, [[1, 7]], 0.667)
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    gt_labels, pred_labels, iou = iou_matrix(gt, pred)
    n_true, n_pred = int(gt_labels.size), int(pred_labels.size)

    coo = iou.tocoo()
    # IoU 0 pairs never count, even at threshold 0: they do not touch.
    keep = (coo.data >= iou_threshold) & (coo.data > 0)
    rows, cols, vals = coo.row[keep], coo.col[keep], coo.data[keep]
    if vals.size:
        # Assign only among objects that have a candidate, which keeps the
        # dense matrix small; 0 marks "not allowed" and is dropped after.
        ur, r_inv = np.unique(rows, return_inverse=True)
        uc, c_inv = np.unique(cols, return_inverse=True)
        dense = np.zeros((ur.size, uc.size))
        dense[r_inv, c_inv] = vals
        ri, ci = linear_sum_assignment(dense, maximize=True)
        ok = dense[ri, ci] > 0
        ri, ci = ri[ok], ci[ok]
        pair_ious = dense[ri, ci]
        matches = np.stack([gt_labels[ur[ri]], pred_labels[uc[ci]]], axis=1).astype(np.int64)
        order = np.argsort(matches[:, 0], kind="stable")
        matches, pair_ious = matches[order], pair_ious[order]
    else:
        matches = np.empty((0, 2), dtype=np.int64)
        pair_ious = np.empty(0, dtype=np.float64)

    tp = int(matches.shape[0])
    both_empty = n_true == 0 and n_pred == 0
    return MatchResult(
        n_true=n_true,
        n_pred=n_pred,
        tp=tp,
        fp=n_pred - tp,
        fn=n_true - tp,
        precision=_ratio(tp, n_pred, both_empty),
        recall=_ratio(tp, n_true, both_empty),
        f1=_ratio(2 * tp, n_true + n_pred, both_empty),
        iou_threshold=float(iou_threshold),
        matches=matches,
        ious=pair_ious,
    )
