"""scip.segment.flows: Cellpose-compatible masks from flows.

The reference is Cellpose 3's own CPU code (``cellpose<4``, an optional test
dependency: the tests that compare with it skip without it, and fail where
SCIP_REQUIRE_REFERENCES is set, as in CI).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from scip.metrics import match_labels
from scip.segment import flows
from scip.segment._flows_synthetic import cell_labels

from conftest import require


def network_like(labels: np.ndarray, seed: int = 0, noise: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Flows and cell probability as a trained network would give them for ``labels``: 5 × unit flows
    (Cellpose's diffusion) plus smooth noise, and a blurred, noisy ±4 logit."""
    rng = np.random.default_rng(seed)
    dP = (5 * flows.masks_to_flows(labels)).astype(np.float32)
    dP += noise * ndi.gaussian_filter(rng.normal(size=dP.shape), (0, 2, 2)).astype(np.float32)
    cellprob = ndi.gaussian_filter(np.where(labels > 0, 4.0, -4.0), 1.5) + rng.normal(0, 0.5, labels.shape)
    return dP, cellprob.astype(np.float32)


def cellpose_masks(dP, cellprob, **kw):
    torch = require("torch")
    dynamics = require("cellpose.dynamics")
    return dynamics.resize_and_compute_masks(dP, cellprob, device=torch.device("cpu"), **kw).astype(np.int32)


def mean_matched_iou(ref, ours):
    m = match_labels(ref, ours, 0.5)
    return m.ious.sum() / max(m.n_true, m.n_pred, 1), m


@pytest.fixture(scope="module")
def tissue():
    labels = cell_labels((256, 256), 40, seed=3)
    return (labels, *network_like(labels))


def test_masks_to_flows_equals_cellpose_bit_for_bit(tissue):
    torch = require("torch")
    dynamics = require("cellpose.dynamics")
    labels = tissue[0]
    np.testing.assert_array_equal(flows.masks_to_flows(labels),
                                  dynamics.masks_to_flows(labels, device=torch.device("cpu")))


def test_flow_errors_equal_cellpose(tissue):
    torch = require("torch")
    metrics = require("cellpose.metrics")
    labels, dP, _ = tissue
    ref, _ = metrics.flow_error(labels, dP, device=torch.device("cpu"))
    # The check's diffusion runs in float32 (Cellpose: float64): errors agree to about 1e-6, so a mask's
    # fate differs only when its error lies within that of flow_threshold.
    np.testing.assert_allclose(flows.flow_errors(labels, dP)[1:], ref, rtol=0, atol=2e-6)


def two_pass_flow(labels, v):
    """The flow check's diffusion of mask ``v`` done plainly on the whole padded box, two passes a step
    (row sums of three, then sums of three row sums), in float32: what ``flows._diffuse`` computes."""
    ys, xs = np.nonzero(labels == v)
    y0, x0 = ys.min(), xs.min()
    ly, lx = ys.max() - y0 + 3, xs.max() - x0 + 3
    inside = np.zeros((ly, lx), bool)
    inside[ys - y0 + 1, xs - x0 + 1] = True
    py, px = np.nonzero(inside)
    c = np.argmin((px - px.mean()) ** 2 + (py - py.mean()) ** 2)  # first in raster order on ties
    t = np.zeros((ly, lx), np.float32)
    for _ in range(2 * (ly + lx)):
        t[py[c], px[c]] += np.float32(1)
        rows = np.zeros_like(t)
        rows[:, 1:-1] = t[:, :-2] + t[:, 1:-1] + t[:, 2:]
        total = np.zeros_like(t)
        total[1:-1] = rows[:-2] + rows[1:-1] + rows[2:]
        t = np.where(inside, np.float32(1 / 9.0) * total, np.float32(0))
    t = t.astype(np.float64)
    dy = t[py + 1, px] - t[py - 1, px]
    dx = t[py, px + 1] - t[py, px - 1]
    norm = 1e-60 + np.sqrt(dy * dy + dx * dx)
    return py + y0 - 1, px + x0 - 1, dy / norm, dx / norm


def test_flow_check_diffusion_equals_two_passes_a_step():
    """The flow check sweeps only the rows the heat has reached and makes the next step's row sums while
    it sweeps (``_jacobi_fused``); its flows are those of two plain passes a step over the whole box, bit for
    bit, on masks of all sizes and shapes: with holes, one pixel high or wide, at the image's edges, with
    the source at the box's edge (an L)."""
    labels = cell_labels((120, 150), 14, seed=7)
    n = int(labels.max())
    labels[labels == n] = 0
    labels[60, 3:40] = n  # one pixel high
    labels[70:110, 146] = n + 1  # one pixel wide, at the right edge
    labels[0:30, 100:103] = n + 2  # an L: the mask pixel nearest its mean is at its box's edge
    labels[27:30, 103:140] = n + 2
    labels[80:118, 40:80] = n + 3
    labels[90:100, 50:70] = 0  # a hole
    box = flows._boxes(labels, n + 3)
    for v in range(1, n + 4):
        if box[v, 0] < 0:
            continue
        got = flows._mask_flow(labels, box, v, np.zeros(0, np.float32), True)
        for a, b in zip(got, two_pass_flow(labels, v)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_flow_errors_are_those_of_the_masks_flows(tissue, threads):
    """The flow check computes each mask's error in the loop that finishes its flow, masks in raster order
    of their boxes: the errors are, bit for bit, the mean squared differences of the masks' flows
    (``_mask_flow``) to ``dP / 5`` summed pixel by pixel in raster order."""
    labels, dP, _ = tissue
    dP = dP.astype(np.float32)
    box = flows._boxes(labels, int(labels.max()))
    ref = np.zeros(int(labels.max()) + 1)
    for v in range(1, ref.size):
        py, px, fy, fx = flows._mask_flow(labels, box, v, np.zeros(0, np.float32), True)
        ey = ex = 0.0
        for k in range(py.size):
            ey += (fy[k] - dP[0, py[k], px[k]] / np.float32(5)) ** 2
            ex += (fx[k] - dP[1, py[k], px[k]] / np.float32(5)) ** 2
        ref[v] = ey / py.size + ex / py.size
    np.testing.assert_array_equal(flows.flow_errors(labels, dP, threads=threads), ref)


def test_exact_following_equals_cellpose(tissue):
    dynamics = require("cellpose.dynamics")
    _, dP, cellprob = tissue
    cell = cellprob > 0
    flow = (dP * cell / 5.0).astype(np.float32)
    ref = dynamics.follow_flows(flow, np.nonzero(cell), niter=200)
    ref_bins = ref[0].astype(np.int64) * cell.shape[1] + ref[1].astype(np.int64)
    np.testing.assert_array_equal(flows.follow_flows(flow, cell, 200, jump=None), ref_bins)


def euler_steps(flow, ys, xs, n):
    """Cellpose's Euler steps, all pixels at once in numpy: float32 positions, and the bilinear
    interpolation in the precisions numba gives ``cellpose.dynamics.map_coordinates`` (float32
    fractions, so ``flow * fraction`` products are float32, ``flow * (1 - fraction)`` float64)."""
    h, w = flow.shape[1:]
    y, x = ys.astype(np.float32), xs.astype(np.float32)
    for step in range(n):
        if step == 0:  # from the pixel itself: the flow there
            dy, dx = flow[0, ys, xs], flow[1, ys, xs]
        else:
            y0, x0 = y.astype(np.int64), x.astype(np.int64)
            fy, fx = y - y0.astype(np.float32), x - x0.astype(np.float32)  # float32, exact
            y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
            gy, gx = 1 - fy.astype(np.float64), 1 - fx.astype(np.float64)
            dy, dx = [(f[y0, x0].astype(np.float64) * gy * gx + f[y0, x1].astype(np.float64) * gy * fx
                       + (f[y1, x0] * fy).astype(np.float64) * gx
                       + (f[y1, x1] * fy * fx).astype(np.float64)).astype(np.float32) for f in flow]
        y = np.clip(y + dy, np.float32(0), np.float32(h - 1))
        x = np.clip(x + dx, np.float32(0), np.float32(w - 1))
    return np.stack([y, x])


def integrate(flow, ys, xs, n):
    """``flows._integrate`` on the whole field ``flow`` (2, H, W): every pixel numbered in the index."""
    h, w = flow.shape[1:]
    index = np.arange(1, h * w + 1, dtype=np.int32).reshape(h, w)
    steps = np.ascontiguousarray(np.concatenate([np.zeros((1, 2), np.float32), flow.reshape(2, -1).T]))
    return flows._integrate(steps, index, ys, xs, n)


@pytest.mark.parametrize("drift", [(-2.0, 2.5), (3.0, -1.0), (-1.0, -3.0), (0.0, 3.0), (3.0, 0.0)])
def test_exact_steps_equal_cellposes_on_any_field(drift):
    """Noisy fields pushing trajectories in every direction, 30 steps: the positions of Cellpose 3's
    ``follow_flows`` bit for bit. Computing the interpolation all in float64 missed by one unit in the
    last place on a few percent of the steps, which moved end bins of 9-34 of these 1,961 pixels."""
    dynamics = require("cellpose.dynamics")
    rng = np.random.default_rng(3)
    shape = (37, 53)
    flow = (rng.normal(0, 1.5, (2, *shape)) + np.array(drift)[:, None, None]).astype(np.float32)
    ys, xs = np.nonzero(np.ones(shape, bool))
    ref = dynamics.follow_flows(flow, (ys, xs), niter=30)
    ours = integrate(flow, ys, xs, 30)
    np.testing.assert_array_equal(ours.view(np.uint32), np.asarray(ref, np.float32).view(np.uint32))


@pytest.mark.parametrize("drift", [(-2.0, 2.5), (3.0, -1.0), (0.0, -3.0)])
def test_batched_steps_follow_the_arithmetic_at_the_borders(drift):
    """Trajectories pushed against the image's edges (clamped, the last row and column interpolated)
    and a pixel count that is no multiple of the batch: the same positions, bit for bit, as the steps
    written out in numpy."""
    rng = np.random.default_rng(3)
    shape = (37, 53)
    flow = (rng.normal(0, 1.5, (2, *shape)) + np.array(drift)[:, None, None]).astype(np.float32)
    ys, xs = np.nonzero(np.ones(shape, bool))
    ours = integrate(flow, ys, xs, 30)
    edge = (ours[0] == 0) | (ours[0] == shape[0] - 1) | (ours[1] == 0) | (ours[1] == shape[1] - 1)
    assert edge.sum() > ys.size // 2
    np.testing.assert_array_equal(ours.view(np.uint32), euler_steps(flow, ys, xs, 30).view(np.uint32))


@pytest.mark.parametrize("threads", [1, 2])
def test_pointer_jumping_follows_the_table(tissue, threads):
    """``follow_flows`` with jumps is: the successor table applied ``niter / jump - 1`` times, then the
    remaining steps exact from the pixel reached; pixels the table hands back to themselves exact for all
    ``niter`` steps. Checked against that done plainly in numpy (the table, its powers and the scratch
    buffers that ``_follow`` reuses are bookkeeping only)."""
    _, dP, cellprob = tissue
    cell = cellprob > 0
    flow = (dP * cell / 5.0).astype(np.float32)
    ys, xs = np.nonzero(cell)
    niter, jump = 200, 4
    index = np.zeros(cell.shape, np.int32)
    index[ys, xs] = np.arange(1, ys.size + 1)
    steps = np.ascontiguousarray(np.concatenate([np.zeros((1, 2), np.float32), flow[:, ys, xs].T]))
    table = np.empty(ys.size, np.int32)
    flows._successors(steps, index, ys, xs, jump, table, 0, ys.size)
    reached = np.arange(ys.size)
    for _ in range(niter // jump - 1):
        reached = np.where(reached >= 0, table[np.maximum(reached, 0)], reached)
    w = cell.shape[1]
    sy = np.where(reached >= 0, ys[np.maximum(reached, 0)], (-1 - reached) // w)
    sx = np.where(reached >= 0, xs[np.maximum(reached, 0)], (-1 - reached) % w)
    last = niter - (niter // jump - 1) * jump
    ends = euler_steps(flow, sy, sx, last)
    stuck = table == np.arange(ys.size)
    assert 0 < stuck.sum() < ys.size
    ends[:, stuck] = euler_steps(flow, ys[stuck], xs[stuck], niter)
    ref = ends[0].astype(np.int64) * w + ends[1].astype(np.int64)
    np.testing.assert_array_equal(flows.follow_flows(flow, cell, niter, jump=jump, threads=threads), ref)


@pytest.mark.parametrize("drift", [(0.5, 0.0), (6.0, 1.0), (-6.0, -2.0), (40.0, 0.0), (500.0, 3.0)])
def test_banded_successor_table_equals_the_whole_tiles(drift):
    """The table made band by band as the tile is prepared (one thread) is the one made after the whole
    tile, with fields fast enough that a jump crosses several bands (up to 20 rows at 6 px per step,
    more than the tile at 500), on a tile whose height is no multiple of the band."""
    rng = np.random.default_rng(5)
    shape = (3 * flows._BAND + 17, 61)
    dP = (5 * (rng.normal(0, 1.0, (2, *shape)) + np.array(drift)[:, None, None])).astype(np.float32)
    cell = ndi.gaussian_filter(rng.normal(size=shape), 2) > -0.05
    steps, index, ys, xs = flows._prepared(dP, cell)
    ref = np.empty(ys.size, index.dtype)
    flows._successors(steps, index, ys, xs, 4, ref, 0, ys.size)
    got = [np.empty_like(steps), np.empty_like(index), np.empty_like(ys), np.empty_like(xs), np.empty_like(ref)]
    flows._prepare_successors(dP, cell, *got[:4], 4, got[4])
    for a, b in zip(got, (steps, index, ys, xs, ref)):
        np.testing.assert_array_equal(a, b)
    # The fast fields hand trajectories to pixels rows away, across band boundaries.
    moved = np.abs(ys[np.maximum(ref, 0)] - ys)[ref >= 0]
    assert moved.max() >= (20 if abs(drift[0]) >= 6 else 0)


@pytest.mark.parametrize("threads", [1, 2])
def test_int64_indices_give_the_int32_masks(tissue, monkeypatch, threads):
    """Tiles of 2**31 pixels or more number their pixels in int64 (the index, the list of cell pixels,
    the successor table and the tables of the pointer jumping); smaller ones in int32. Forced to int64 on a small tile, the
    compiled code's other specialization gives the same masks, with and without pointer jumping."""
    _, dP, cellprob = tissue
    int32 = {jump: flows.compute_masks(dP, cellprob, jump=jump, threads=threads) for jump in (4, None)}
    assert flows._index_type(*cellprob.shape) is np.int32
    used = []

    def int64(h, w):
        used.append((h, w))
        return np.int64

    monkeypatch.setattr(flows, "_index_type", int64)
    for jump, ref in int32.items():
        assert ref.max() > 20
        np.testing.assert_array_equal(flows.compute_masks(dP, cellprob, jump=jump, threads=threads), ref)
    assert used


def test_following_reads_the_step_field_at_cell_pixels_only(tissue):
    """``follow_flows`` takes the step field as zero off the cell pixels, whatever it holds there."""
    _, dP, cellprob = tissue
    cell = cellprob > 0
    flow = (dP * cell / 5.0).astype(np.float32)
    noisy = np.where(cell, flow, np.random.default_rng(0).normal(0, 3, flow.shape)).astype(np.float32)
    for jump in (4, None):
        np.testing.assert_array_equal(flows.follow_flows(noisy, cell, 200, jump=jump),
                                      flows.follow_flows(flow, cell, 200, jump=jump))


def test_exact_mode_gives_cellposes_masks(tissue):
    _, dP, cellprob = tissue
    ref = cellpose_masks(dP, cellprob)
    assert ref.max() > 20
    np.testing.assert_array_equal(flows.compute_masks(dP, cellprob, jump=None), ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_default_agrees_with_cellpose(seed):
    labels = cell_labels((256, 256), 40, seed=10 + seed)
    dP, cellprob = network_like(labels, seed=seed)
    ref = cellpose_masks(dP, cellprob)
    ours = flows.compute_masks(dP, cellprob)
    iou, m = mean_matched_iou(ref, ours)
    assert m.n_true == m.n_pred == m.tp
    assert iou >= 0.99


def test_parameters_reach_the_steps(tissue):
    """cellprob_threshold, niter, flow_threshold and min_size act as in Cellpose."""
    _, dP, cellprob = tissue
    for kw in [{"cellprob_threshold": 2.0, "niter": 30}, {"flow_threshold": 0.05, "min_size": 0}]:
        ref = cellpose_masks(dP, cellprob, **kw)
        ours = flows.compute_masks(dP, cellprob, **kw)
        iou, m = mean_matched_iou(ref, ours)
        assert m.n_true == m.n_pred and iou >= 0.99, kw
    everything = flows.compute_masks(dP, cellprob, flow_threshold=0)
    median = int(np.median(np.bincount(everything.ravel())[1:]))
    large = flows.compute_masks(dP, cellprob, flow_threshold=0, min_size=median)
    assert 0 < large.max() < everything.max()
    assert np.bincount(large.ravel())[1:].min() >= median
    assert mean_matched_iou(cellpose_masks(dP, cellprob, flow_threshold=0, min_size=median), large)[0] >= 0.99


def test_no_cells_gives_empty_labels(tissue):
    _, dP, _ = tissue
    for cellprob in (np.full((256, 256), -5.0, np.float32), np.zeros((256, 256), np.float32)):
        out = flows.compute_masks(dP, cellprob)
        assert out.dtype == np.int32 and out.shape == (256, 256) and out.max() == 0
        assert cellpose_masks(dP, cellprob).max() == 0


def test_one_cell_and_cells_at_the_borders():
    shape = (96, 128)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    one = ((yy - 40) ** 2 + (xx - 60) ** 2 < 15**2).astype(np.int32)
    border = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate([(0, 0), (0, 127), (95, 64), (48, 0), (50, 60)]):
        border[(yy - cy) ** 2 + (xx - cx) ** 2 < 14**2] = k + 1
    for labels, n in [(one, 1), (border, 5)]:
        dP, cellprob = network_like(labels, noise=0.5)
        ours = flows.compute_masks(dP, cellprob)
        assert ours.max() == n
        assert match_labels(labels, ours, 0.8).tp == n
        ref = cellpose_masks(dP, cellprob)
        iou, m = mean_matched_iou(ref, ours)
        assert m.tp == m.n_true == m.n_pred == n and iou >= 0.99


def test_tiny_and_degenerate_inputs():
    assert flows.compute_masks(np.zeros((2, 1, 1)), np.ones((1, 1))).tolist() == [[0]]  # 1 end point: no seed
    assert flows.compute_masks(np.zeros((2, 0, 5)), np.zeros((0, 5))).shape == (0, 5)
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        flows.compute_masks(np.zeros((3, 8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="niter"):
        flows.compute_masks(np.zeros((2, 8, 8)), np.zeros((8, 8)), niter=-1)
    with pytest.raises(ValueError, match="jump"):
        flows.compute_masks(np.zeros((2, 8, 8)), np.ones((8, 8)), jump=0)


def test_masks_larger_than_max_size_fraction_are_dropped():
    labels = np.zeros((64, 64), np.int32)
    labels[4:60, 4:60] = 1  # 77 % of the image
    dP, cellprob = network_like(labels, noise=0.0)
    assert flows.compute_masks(dP, cellprob).max() == 0
    assert flows.compute_masks(dP, cellprob, max_size_fraction=0.9).max() == 1


def test_fill_holes_matches_cellpose():
    utils = require("cellpose.utils")
    labels = np.zeros((40, 40), np.int32)
    labels[5:20, 5:20] = 1
    labels[9:16, 9:16] = 0  # a hole...
    labels[11:14, 11:14] = 2  # ...holding another mask, overwritten by the fill as in Cellpose
    labels[25:35, 25:35] = 3
    labels[28:31, 28] = 0  # a notch open to the box's edge is no hole
    labels[30, 25] = 0
    ours = flows.fill_holes_and_remove_small(labels.copy(), min_size=5)
    ref = utils.fill_holes_and_remove_small_masks(labels.copy(), min_size=5)
    np.testing.assert_array_equal(ours, ref.astype(np.int32))
    assert ours.max() == 2 and (ours[9:16, 9:16] == 1).all() and ours[30, 25] == 0


def test_min_size_drops_exactly_the_small_masks():
    """Where Cellpose 3.1 indexes its size list by position (gaps after the flow check), scip drops by size."""
    labels = np.zeros((30, 30), np.int32)
    labels[1:9, 1:9] = 2  # 64 px; label 1 is absent (a gap)
    labels[12:14, 12:14] = 3  # 4 px
    labels[20:28, 20:28] = 4  # 64 px
    out = flows.fill_holes_and_remove_small(labels, min_size=10)
    assert sorted(np.bincount(out.ravel())[1:].tolist()) == [64, 64]
    assert out[1, 1] == 1 and out[20, 20] == 2


@pytest.mark.parametrize("seed", range(3))
def test_fill_holes_matches_cellpose_on_masks_with_many_holes(seed):
    """Holes of background and of other masks, masks inside others' holes, small masks: as Cellpose."""
    utils = require("cellpose.utils")
    rng = np.random.default_rng(seed)
    labels = cell_labels((160, 160), 30, seed=seed)
    holes = ndi.binary_dilation(rng.random(labels.shape) < 0.01, iterations=1) & (labels > 0)
    labels[holes] = 0
    for y, x in rng.integers(5, 155, (10, 2)):
        labels[y - 1:y + 2, x - 1:x + 2] = labels.max() + 1  # 3 x 3 masks, some inside others (overwritten)
    ours = flows.fill_holes_and_remove_small(labels.copy(), min_size=5)
    ref = utils.fill_holes_and_remove_small_masks(labels.copy(), min_size=5).astype(np.int32)
    np.testing.assert_array_equal(ours, ref)
    assert (ours > 0).sum() > (labels > 0).sum()  # holes were filled
    assert ours.max() < len(np.unique(labels)) - 1  # masks inside others' holes are gone
