"""scip.segment.stitch: 3-D stitching with Cellpose's stitch3D rule.

The reference is ``cellpose.utils.stitch3D`` (``cellpose<4``, an optional test
dependency: the tests that compare with it skip without it, and fail where
SCIP_REQUIRE_REFERENCES is set, as in CI).
"""

from __future__ import annotations

import numpy as np
import pytest

from scip.segment._flows_synthetic import cell_stack
from scip.segment.stitch import slice_overlaps, stitch3d

from conftest import require


def cellpose_stitch(stack, threshold=0.25):
    utils = require("cellpose.utils")
    return utils.stitch3D(stack.copy(), stitch_threshold=threshold)


def renumbered(labels):
    """Labels 1..N in order of first voxel (0 stays 0): equal results up to renumbering compare equal."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    rank = np.zeros(ids.size, np.int64)
    fg = ids != 0
    rank[np.flatnonzero(fg)[np.argsort(first[fg])]] = np.arange(1, fg.sum() + 1)
    return rank[np.searchsorted(ids, flat)].reshape(labels.shape)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.1, 0.25, 0.6])
def test_identical_to_cellpose(seed, threshold):
    stack = cell_stack((8, 128, 128), 25, seed=seed)
    ours = stitch3d(stack, threshold)
    ref = cellpose_stitch(stack, threshold)
    assert ours.dtype == np.int32
    np.testing.assert_array_equal(renumbered(ours), renumbered(ref))
    # With per-slice labels 1..n, even the numbers are Cellpose's.
    np.testing.assert_array_equal(ours, ref)
    assert 0 < len(np.unique(ours)) - 1 < sum(len(np.unique(s)) - 1 for s in stack)


def test_objects_appear_and_disappear():
    stack = np.zeros((5, 20, 20), np.int32)
    stack[0:3, 2:8, 2:8] = 1  # slices 0-2
    stack[2:5, 10:18, 10:18] = 2  # appears in slice 2
    stack[4, 2:8, 2:8] = 1  # same place as the first object, but a gap (slice 3) between
    ours = stitch3d(stack)
    assert len(np.unique(ours[:3, 2:8, 2:8])) == 1
    assert ours[4, 2, 2] not in (0, ours[0, 2, 2])
    assert len(np.unique(ours[2:5, 10:18, 10:18])) == 1
    assert np.unique(ours).size == 4
    np.testing.assert_array_equal(renumbered(ours), renumbered(cellpose_stitch(stack)))


def test_ties_follow_cellpose():
    stack = np.zeros((3, 10, 20), np.int32)
    stack[0, :, 0:10] = 1
    stack[1, :, 0:5] = 1  # equal IoU (0.5) with slice 0's object: both join it, as in Cellpose
    stack[1, :, 5:10] = 2
    stack[2, :, 2:8] = 1  # then one label covering both halves (now one object)
    stack[2, :, 12:18] = 2
    ours = stitch3d(stack)
    ref = cellpose_stitch(stack)
    np.testing.assert_array_equal(renumbered(ours), renumbered(ref))
    assert len(np.unique(ours[:, :, 0:10])) == 2  # background + the one object


def test_column_tie_breaks_to_the_lowest_label():
    stack = np.zeros((2, 4, 12), np.int32)
    stack[0, :, 0:4] = 1
    stack[0, :, 4:8] = 2
    stack[1, :, 2:6] = 1  # IoU 1/3 with both labels of slice 0: the lower one wins
    ours = stitch3d(stack)
    assert ours[1, 0, 2] == ours[0, 0, 0]
    np.testing.assert_array_equal(ours, cellpose_stitch(stack))


# An empty slice right after a non-empty first slice is where Cellpose's
# numbering slips: see the test after this one.
@pytest.mark.parametrize("empty", [[0], [2], [4], [0, 1], [2, 3], [0, 1, 2, 3, 4]])
def test_empty_slices(empty):
    stack = cell_stack((5, 64, 64), 8, seed=7)
    stack[empty] = 0
    ours = stitch3d(stack)
    ref = cellpose_stitch(stack)
    np.testing.assert_array_equal(renumbered(ours), renumbered(ref))


def test_empty_slice_before_the_first_join_keeps_objects_apart():
    """Cellpose 3.1 restarts its numbering at such a slice, giving two unrelated objects one label."""
    stack = np.zeros((3, 10, 10), np.int32)
    stack[0, 1:4, 1:4] = 1
    stack[2, 6:9, 6:9] = 1
    ref = cellpose_stitch(stack)
    assert ref[0, 1, 1] == ref[2, 6, 6]  # Cellpose's collision
    ours = stitch3d(stack)
    assert ours[0, 1, 1] != ours[2, 6, 6] and np.unique(ours).size == 3


def test_below_threshold_makes_a_new_object():
    stack = np.zeros((2, 10, 10), np.int32)
    stack[0, 0:10, 0:4] = 1
    stack[1, 0:10, 3:10] = 1  # IoU 10 / 100
    assert np.unique(stitch3d(stack, 0.05)).size == 2
    assert np.unique(stitch3d(stack, 0.25)).size == 3


def test_any_labels_array_like_and_out():
    stack = cell_stack((6, 64, 64), 10, seed=2)
    scattered = stack.astype(np.uint16) * 7  # gaps, another dtype
    expected = stitch3d(stack)

    class Slices:  # anything indexable by slice
        shape = scattered.shape

        def __getitem__(self, z):
            return scattered[z]

    out = np.full(stack.shape, -1, np.int64)
    assert stitch3d(Slices(), out=out, threads=2) is out
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(stitch3d(stack, threads=1), expected)


@pytest.mark.parametrize("threads", [1, 3])
def test_stitching_in_place_gives_the_allocated_result(threads):
    stack = cell_stack((9, 96, 96), 20, seed=5)
    expected = stitch3d(stack, threads=threads)
    same = stack.copy()
    assert stitch3d(same, out=same, threads=threads) is same
    np.testing.assert_array_equal(same, expected)
    np.testing.assert_array_equal(same, cellpose_stitch(stack))


def test_an_out_too_narrow_for_the_objects_is_refused_before_writing():
    stack = np.zeros((300, 2, 2), np.int32)
    stack[:, 0, 0] = 1  # a new object on every other slice: 150 objects
    stack[1::2, 0, 0] = 0
    out = np.full(stack.shape, 7, np.int8)
    with pytest.raises(ValueError, match="int8, which cannot hold the 150 objects"):
        stitch3d(stack, out=out)
    assert (out == 7).all()
    assert stitch3d(stack, out=np.zeros(stack.shape, np.uint8)).max() == 150


def test_bad_input():
    with pytest.raises(ValueError, match="Z, H, W"):
        stitch3d(np.zeros((4, 4), np.int32))
    with pytest.raises(TypeError, match="integers"):
        stitch3d(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=">= 0"):
        stitch3d(-np.ones((2, 4, 4), np.int32))
    with pytest.raises(ValueError, match="stitch_threshold"):
        stitch3d(np.zeros((2, 4, 4), np.int32), 1.5)
    with pytest.raises(ValueError, match="out has shape"):
        stitch3d(np.zeros((2, 4, 4), np.int32), out=np.zeros((2, 4, 5), np.int32))

    class Ragged:
        shape = (2, 4, 4)

        def __getitem__(self, z):
            return np.zeros((4, 4 + z), np.int32)

    with pytest.raises(ValueError, match="slices 0 and 1"):
        stitch3d(Ragged())
    assert stitch3d(np.zeros((0, 4, 4), np.int32)).shape == (0, 4, 4)


def test_slice_overlaps_is_the_contingency_table():
    rng = np.random.default_rng(0)
    upper = rng.integers(0, 6, (40, 50))
    lower = rng.integers(0, 9, (40, 50))
    a, b, n = slice_overlaps(upper, lower)
    dense = np.zeros((6, 9), np.int64)
    np.add.at(dense, (upper.ravel(), lower.ravel()), 1)
    sparse = np.zeros_like(dense)
    sparse[a, b] = n
    dense[0, :] = 0
    dense[:, 0] = 0
    np.testing.assert_array_equal(sparse, dense)
    assert (n > 0).all() and len(set(zip(a.tolist(), b.tolist()))) == a.size


def dense_overlaps(upper, lower):
    dense = np.zeros((upper.max() + 1, lower.max() + 1), np.int64)
    np.add.at(dense, (upper.ravel(), lower.ravel()), 1)
    dense[0, :] = 0
    dense[:, 0] = 0
    return dense


# The scan works on blocks of 64 * 32 pixels, 64 to a word of change bits:
# sizes around those, runs shorter and longer than a word or a block, and
# more overlapping pairs than the hash table starts with (it grows).
@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (3, 5), (1, 64), (1, 65), (32, 64), (33, 64), (64, 97), (300, 301)])
@pytest.mark.parametrize("run", [1, 5, 70, 3000])
def test_slice_overlaps_on_block_and_word_edges(shape, run):
    rng = np.random.default_rng(run)
    size = shape[0] * shape[1]
    starts = np.arange(0, size, run)
    upper = np.repeat(rng.integers(0, 4, starts.size), run)[:size].reshape(shape)
    lower = np.repeat(rng.integers(0, 5000, starts.size), run)[:size].reshape(shape)
    lower.ravel()[rng.integers(0, size, size // 7)] = 0  # and runs of another length
    a, b, n = slice_overlaps(upper, lower)
    sparse = np.zeros((upper.max() + 1, lower.max() + 1), np.int64)
    sparse[a, b] = n
    np.testing.assert_array_equal(sparse, dense_overlaps(upper, lower))
    assert (n > 0).all() and len(set(zip(a.tolist(), b.tolist()))) == a.size
