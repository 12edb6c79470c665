import numpy as np
import pytest

from scip import metrics
from scip.metrics import MatchResult, iou_matrix, match_labels


def square(shape, top, left, size, value=1, out=None):
    out = np.zeros(shape, dtype=np.int32) if out is None else out
    out[top : top + size, left : left + size] = value
    return out


def two_objects():
    labels = square((20, 20), 2, 2, 6, value=1)
    return square((20, 20), 10, 10, 8, value=2, out=labels)


def test_identical_labels_match_fully():
    gt = two_objects()
    r = match_labels(gt, gt)
    assert (r.n_true, r.n_pred, r.tp, r.fp, r.fn) == (2, 2, 2, 0, 0)
    assert r.precision == r.recall == r.f1 == 1.0
    assert r.matches.tolist() == [[1, 1], [2, 2]]
    np.testing.assert_allclose(r.ious, 1.0)


def test_iou_by_hand():
    # gt: 2x2 square (4 px); pred: 2x3 rectangle over it (6 px).
    # intersection 4, union 6 -> IoU 2/3.
    gt = np.zeros((4, 4), dtype=int)
    gt[:2, :2] = 1
    pred = np.zeros((4, 4), dtype=int)
    pred[:2, :3] = 5
    gt_labels, pred_labels, iou = iou_matrix(gt, pred)
    assert gt_labels.tolist() == [1]
    assert pred_labels.tolist() == [5]
    assert iou.toarray()[0, 0] == pytest.approx(2 / 3)
    r = match_labels(gt, pred)
    assert r.matches.tolist() == [[1, 5]]
    assert r.ious[0] == pytest.approx(2 / 3)


@pytest.mark.parametrize("shift, matched", [(1, True), (3, False)])
def test_shifted_object(shift, matched):
    # 10x10 square shifted by s columns: IoU = 10(10-s) / (10(10+s)).
    # s=1 -> 9/11 = 0.82; s=3 -> 7/13 = 0.54 (matched at 0.5, not at 0.6).
    gt = square((20, 30), 5, 5, 10)
    pred = square((20, 30), 5, 5 + shift, 10)
    r = match_labels(gt, pred, iou_threshold=0.6)
    assert r.tp == (1 if matched else 0)
    assert r.fp == r.fn == (0 if matched else 1)
    assert r.f1 == (1.0 if matched else 0.0)
    r05 = match_labels(gt, pred, iou_threshold=0.5)
    assert r05.tp == 1
    expected = (10 - shift) / (10 + shift)
    assert r05.ious[0] == pytest.approx(expected)


def test_split_object_gives_at_most_one_match():
    gt = square((20, 20), 2, 2, 10)
    pred = np.zeros_like(gt)
    pred[2:12, 2:9] = 1  # 70 px of 100: IoU 0.7
    pred[2:12, 9:12] = 2  # 30 px: IoU 0.3
    r = match_labels(gt, pred)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)
    assert r.matches.tolist() == [[1, 1]]
    # Even at a low threshold a gt object matches a single prediction.
    r_low = match_labels(gt, pred, iou_threshold=0.1)
    assert (r_low.tp, r_low.fp, r_low.fn) == (1, 1, 0)
    assert r.precision == 0.5 and r.recall == 1.0
    assert r.f1 == pytest.approx(2 / 3)


def test_permuted_non_consecutive_ids_still_match():
    gt = two_objects()
    gt = square((20, 20), 12, 1, 5, value=3, out=gt)
    mapping = {0: 0, 1: 70, 2: 9, 3: 1000}
    pred = np.vectorize(mapping.get)(gt)
    r = match_labels(gt, pred)
    assert r.f1 == 1.0
    assert r.matches.tolist() == [[1, 70], [2, 9], [3, 1000]]


def test_low_threshold_uses_optimal_assignment():
    # gt 1 overlaps pred 10 and pred 20; gt 2 overlaps only pred 10.
    # Greedy by best IoU would pair (1, 10) and leave gt 2 unmatched; the
    # optimal one-to-one assignment pairs (1, 20) and (2, 10).
    gt = np.zeros((1, 12), dtype=int)
    pred = np.zeros_like(gt)
    gt[0, 0:6] = 1
    gt[0, 6:12] = 2
    pred[0, 2:9] = 10
    pred[0, 0:2] = 20
    r = match_labels(gt, pred, iou_threshold=0.2)
    assert r.tp == 2
    assert r.matches.tolist() == [[1, 20], [2, 10]]


def test_empty_cases():
    empty = np.zeros((8, 8), dtype=np.uint16)
    obj = square((8, 8), 1, 1, 3)
    both = match_labels(empty, empty)
    assert (both.n_true, both.n_pred, both.tp) == (0, 0, 0)
    assert both.precision == both.recall == both.f1 == 1.0
    assert both.matches.shape == (0, 2) and both.ious.shape == (0,)

    missed = match_labels(obj, empty)
    assert (missed.fn, missed.fp) == (1, 0)
    assert missed.precision == missed.recall == missed.f1 == 0.0

    spurious = match_labels(empty, obj)
    assert (spurious.fn, spurious.fp) == (0, 1)
    assert spurious.precision == spurious.recall == spurious.f1 == 0.0


def test_labels_without_background():
    gt = np.ones((3, 3), dtype=int)
    r = match_labels(gt, gt * 4)
    assert r.matches.tolist() == [[1, 4]] and r.f1 == 1.0


def test_result_is_frozen_and_validates_input():
    r = match_labels(two_objects(), two_objects())
    assert isinstance(r, MatchResult)
    with pytest.raises(AttributeError):
        r.tp = 0
    with pytest.raises(ValueError, match="same shape"):
        match_labels(np.zeros((2, 2), int), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="iou_threshold"):
        match_labels(np.zeros((2, 2), int), np.zeros((2, 2), int), iou_threshold=1.5)


def brute_force_match(gt, pred, threshold):
    """IoU of every pair by masks, and the best total IoU over all one-to-one sets of candidate pairs."""
    gt_ids = [int(v) for v in np.unique(gt) if v != 0]
    pred_ids = [int(v) for v in np.unique(pred) if v != 0]
    iou = {}
    for g in gt_ids:
        for p in pred_ids:
            inter = int(np.sum((gt == g) & (pred == p)))
            if inter and inter / int(np.sum((gt == g) | (pred == p))) >= threshold:
                iou[g, p] = inter / int(np.sum((gt == g) | (pred == p)))
    totals = []  # (total IoU, pairs) of every one-to-one set of candidates

    def extend(i, used, pairs, total):
        if i == len(gt_ids):
            totals.append((total, pairs))
            return
        extend(i + 1, used, pairs, total)
        for p in pred_ids:
            if p not in used and (gt_ids[i], p) in iou:
                extend(i + 1, used | {p}, pairs + [(gt_ids[i], p)], total + iou[gt_ids[i], p])

    extend(0, frozenset(), [], 0.0)
    totals.sort(key=lambda t: -t[0])
    return gt_ids, pred_ids, iou, totals


def random_labels(rng, shape, values):
    out = np.zeros(shape, dtype=np.int64)
    for v in rng.choice(values, size=rng.integers(0, 5), replace=False):
        y, x = rng.integers(0, shape[0], size=2)
        h, w = rng.integers(1, 5, size=2)
        out[y:y + h, x:x + w] = v
    return out


@pytest.mark.parametrize("dense_table", [None, 0])
def test_matches_a_brute_force_reference(dense_table, monkeypatch):
    """Random pairs, huge and non-consecutive labels, empty images and exact IoU 0.5 ties, at several thresholds.

    ``dense_table=0``: most contingency tables here have more cells than pixels, so they are counted by
    sorting the pairs' codes, the path of large images with many objects.
    """
    if dense_table is not None:
        monkeypatch.setattr(metrics, "_DENSE_TABLE", dense_table)
    rng = np.random.default_rng(7)
    values = np.array([1, 2, 3, 9, 250, 70_000, 2**40, 2**40 + 3])
    cases = []
    for _ in range(150):
        shape = tuple(rng.integers(1, 10, size=2))
        gt = random_labels(rng, shape, values)
        pred = random_labels(rng, shape, values) if rng.random() < 0.6 else np.roll(gt, 1, axis=1) * 3
        cases.append((gt, pred))
    halves = np.zeros((2, 4), dtype=np.int64)
    halves[:, :2], halves[:, 2:] = 5, 2**40  # gt 1 split in two halves: IoU exactly 0.5 with each
    cases += [(np.ones((2, 4), np.int64), halves), (halves, np.ones((2, 4), np.int64)),
              (np.zeros((3, 3), np.uint16), np.zeros((3, 3), np.uint16)), (np.zeros((0, 4), np.int32),) * 2]
    for gt, pred in cases:
        for threshold in (0.0, 0.3, 0.5, 0.7):
            r = match_labels(gt, pred, iou_threshold=threshold)
            gt_ids, pred_ids, iou, totals = brute_force_match(gt, pred, threshold)
            assert (r.n_true, r.n_pred) == (len(gt_ids), len(pred_ids))
            assert (r.fp, r.fn) == (r.n_pred - r.tp, r.n_true - r.tp)
            pairs = [tuple(m) for m in r.matches.tolist()]
            assert r.matches.dtype == np.int64 and len(pairs) == r.tp == len(r.ious)
            assert len({g for g, _ in pairs}) == len({p for _, p in pairs}) == r.tp
            assert [g for g, _ in pairs] == sorted(g for g, _ in pairs)
            assert r.ious.tolist() == [iou[p] for p in pairs]  # exactly the pixel-count ratio
            best = totals[0][0]
            assert sum(r.ious) == pytest.approx(best, rel=1e-12, abs=0)
            if len(totals) == 1 or totals[1][0] < best - 1e-9:  # a unique optimum: exactly its pairs
                assert sorted(pairs) == sorted(totals[0][1])
            if not (gt_ids or pred_ids):
                assert r.precision == r.recall == r.f1 == 1.0
    # the halves: either half matches at 0.5, none above
    assert match_labels(np.ones((2, 4), np.int64), halves).tp == 1
    assert match_labels(np.ones((2, 4), np.int64), halves, iou_threshold=0.51).tp == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint64, np.int64, bool])
def test_iou_matrix_label_dtypes(dtype):
    gt = np.zeros((4, 5), dtype=dtype)
    gt[:2, :2] = 1
    pred = np.ones((4, 5), dtype=dtype)  # no background
    gt_labels, pred_labels, iou = iou_matrix(gt, pred)
    assert gt_labels.tolist() == [1] and pred_labels.tolist() == [1]
    assert iou.toarray().tolist() == [[4 / 20]]
