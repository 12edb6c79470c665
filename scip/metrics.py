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


#: A label image's values index lookup tables directly when its largest
#: label is at most this or its pixel count (whichever is larger); beyond,
#: labels are ranked by sorting (e.g. labels such as 2**40).
_DENSE_LABELS = 1 << 16
#: The contingency table is counted densely (``np.bincount``) when it has at
#: most this many cells or one per pixel (so it never takes more memory than
#: the pixels' codes); beyond, its non-zero cells are found by sorting the
#: pairs' codes (many objects in each image).
_DENSE_TABLE = 1 << 16


def _ranks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank each pixel's label among the image's labels, 0 being the background.

    Returns the labels (index 0 the background, which need not occur), the
    rank of each pixel in that list, and the number of pixels of each.
    """
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if (flat.dtype.kind in "ui" and top <= max(_DENSE_LABELS, flat.size)
            and (flat.dtype.kind == "u" or flat.size == 0 or int(flat.min()) >= 0)):
        idx = flat.astype(np.intp, copy=False)  # small values: exact, and uint64 would not index
        area = np.bincount(idx, minlength=top + 1)
        present = np.flatnonzero(area[1:]) + 1
        # The list of labels takes the dtype np.unique and a prepended 0 gave
        # it before, so that iou_matrix returns what it always returned.
        dtype = flat.dtype if area[0] else np.concatenate([[0], flat[:0]]).dtype
        values = np.concatenate([[0], present]).astype(dtype, copy=False)
        if present.size == top:  # labels 1..top, all present: a pixel's label is its rank
            return values, idx, area
        lut = np.zeros(top + 1, dtype=np.intp)
        lut[present] = np.arange(1, present.size + 1)
        return values, lut[idx], np.concatenate([area[:1], area[present]])
    if flat.dtype.kind in "ui":
        # The inverse np.unique would return, without its argsort of every
        # pixel: a plain sort and a binary search are ~3x faster.
        values = np.unique(flat)
        idx = np.searchsorted(values, flat)
    else:
        values, idx = np.unique(flat, return_inverse=True)
        idx = idx.ravel()
    # Index 0 stays the background so that object areas include pixels that
    # overlap the other image's background.
    if not (values.size > 0 and values[0] == 0):
        values = np.concatenate([[0], values])
        idx = idx + 1
    return values, idx, np.bincount(idx, minlength=values.size)


def _overlaps(gt: np.ndarray, pred: np.ndarray):
    """Labels of both images and the IoU of each overlapping pair of objects.

    Returns ``gt_labels``, ``pred_labels`` (background excluded), then the
    pairs' row and column in them and their IoU, in row-major order.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}")
    gt_labels, gt_idx, area_gt = _ranks(gt)
    pred_labels, pred_idx, area_pred = _ranks(pred)
    n, m = gt_labels.size, pred_labels.size
    code = gt_idx * m + pred_idx
    if n * m <= max(_DENSE_TABLE, code.size):
        counts = np.bincount(code, minlength=n * m).reshape(n, m)
        rows, cols = np.nonzero(counts[1:, 1:])
        inter = counts[rows + 1, cols + 1]
    else:
        pairs, inter = np.unique(code, return_counts=True)
        rows, cols = np.divmod(pairs, m)
        keep = (rows > 0) & (cols > 0)
        rows, cols, inter = rows[keep] - 1, cols[keep] - 1, inter[keep]
    union = area_gt[rows + 1] + area_pred[cols + 1] - inter
    return gt_labels[1:], pred_labels[1:], rows, cols, inter / union


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
    gt_labels, pred_labels, rows, cols, iou = _overlaps(gt, pred)
    return gt_labels, pred_labels, sparse.csr_array((iou, (rows, cols)), shape=(gt_labels.size, pred_labels.size))


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


def _one_to_one(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> bool:
    """True when no row and no column holds two of the pairs (rows sorted)."""
    return bool(np.all(rows[1:] != rows[:-1]) and np.bincount(cols, minlength=n_cols).max() <= 1)


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
    gt_labels, pred_labels, rows, cols, iou = _overlaps(gt, pred)
    n_true, n_pred = int(gt_labels.size), int(pred_labels.size)

    # IoU 0 pairs never count, even at threshold 0: they do not touch.
    keep = (iou >= iou_threshold) & (iou > 0)
    rows, cols, vals = rows[keep], cols[keep], iou[keep]
    if vals.size and _one_to_one(rows, cols, pred_labels.size):
        # Each object has at most one candidate: the assignment of largest
        # total IoU takes them all (any other leaves one out), so the
        # Hungarian algorithm would return exactly these pairs.
        matches = np.stack([gt_labels[rows], pred_labels[cols]], axis=1).astype(np.int64)
        order = np.argsort(matches[:, 0], kind="stable")
        matches, pair_ious = matches[order], vals[order]
    elif vals.size:
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
