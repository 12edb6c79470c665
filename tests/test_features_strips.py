"""extract measures a large 2-D image strip by strip: the table must be the whole image's, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from scip import features
from scip.features import extract


def _dense_scene(seed: int = 0, size: tuple[int, int] = (150, 130)):
    """Touching cells that fill most of the image (every cut of a strip crosses some), labels in random order."""
    rng = np.random.default_rng(seed)
    h, w = size
    seeds = np.zeros(size, np.int32)
    pts = rng.integers(0, (h, w), size=(60, 2))
    seeds[pts[:, 0], pts[:, 1]] = np.arange(1, len(pts) + 1)
    dist = ndi.distance_transform_edt(seeds == 0)
    labels = watershed(dist, seeds, mask=dist < 9).astype(np.int32)
    # numbered neither by row nor contiguously, so the strips' runs are gathered, not sliced
    perm = np.concatenate([[0], rng.permutation(np.arange(1, labels.max() + 1)) * 3 + 7])
    labels = perm[labels].astype(np.int32)
    # one label in two pieces far apart: its first row is at the top, its second piece several strips below
    labels[2:6, 3:8] = 5
    labels[120:126, 100:108] = 5
    # objects on the image border
    labels[-4:, 60:70] = 11
    labels[:3, -5:] = 13
    smooth = ndi.gaussian_filter(rng.normal(size=(3, h, w)), 1.5)
    pixels = (1000 + 300 * smooth + 50 * (labels > 0)).astype(np.uint16)
    return pixels, labels


def _whole(monkeypatch, *args, **kwargs) -> pd.DataFrame:
    monkeypatch.setattr(features, "STRIP_PIXELS", 1 << 40)
    return extract(*args, **kwargs)


def _strips(monkeypatch, budget: int, *args, **kwargs) -> pd.DataFrame:
    monkeypatch.setattr(features, "STRIP_PIXELS", budget)
    return extract(*args, **kwargs)


@pytest.mark.parametrize("budget", [1, 700, 5000])
def test_strips_equal_the_whole_image(monkeypatch, budget):
    pixels, labels = _dense_scene()
    whole = _whole(monkeypatch, pixels, labels)
    strips = _strips(monkeypatch, budget, pixels, labels)
    assert len(whole) == len(np.unique(labels)) - 1
    pd.testing.assert_frame_equal(strips, whole, check_exact=True)


def test_strips_with_background_offset_and_params(monkeypatch):
    pixels, labels = _dense_scene(seed=3)
    rng = np.random.default_rng(1)
    background = rng.random(labels.shape) > 0.2
    kwargs = dict(background=background, offset=(40, -7), channel_names=["a", "b", "c"],
                  background_width=3, edge_width=2, distances=(1, 4))
    whole = _whole(monkeypatch, pixels.astype(np.float32), labels, **kwargs)
    strips = _strips(monkeypatch, 1100, pixels.astype(np.float32), labels, **kwargs)
    pd.testing.assert_frame_equal(strips, whole, check_exact=True)


def test_strips_for_a_family_subset(monkeypatch):
    pixels, labels = _dense_scene(seed=5)
    whole = _whole(monkeypatch, pixels, labels, families=["intensity", "bbox"])
    strips = _strips(monkeypatch, 2000, pixels, labels, families=["intensity", "bbox"])
    pd.testing.assert_frame_equal(strips, whole, check_exact=True)


def test_strips_are_used_for_a_large_image(monkeypatch):
    """The strip path is the one taken above the threshold (and not for 3-D labels or bbox alone)."""
    pixels, labels = _dense_scene()
    taken = []
    real = features._strips

    def spy(objects, params):
        strips = list(real(objects, params))
        # the strip path: Objects of the strips, not the call's own
        taken.append(any(strip is not objects for _, strip in strips))
        return iter(strips)

    monkeypatch.setattr(features, "_strips", spy)
    foreground = int(np.count_nonzero(labels))
    monkeypatch.setattr(features, "STRIP_PIXELS", foreground - 1)
    extract(pixels, labels)
    assert taken == [True]
    extract(pixels, labels, families=["bbox"])
    assert taken == [True, False]
    volume = np.stack([labels, labels])
    extract(np.stack([pixels, pixels], axis=1), volume, families=["volume"])
    assert taken == [True, False, False] and np.count_nonzero(volume) > features.STRIP_PIXELS
    monkeypatch.setattr(features, "STRIP_PIXELS", foreground)
    extract(pixels, labels)
    assert taken == [True, False, False, False]


def test_strips_of_an_image_without_objects(monkeypatch):
    pixels, labels = _dense_scene()
    labels[:] = 0
    whole = _whole(monkeypatch, pixels, labels)
    strips = _strips(monkeypatch, 0, pixels, labels)
    assert len(strips) == 0
    pd.testing.assert_frame_equal(strips, whole, check_exact=True)


def test_strip_cuts_move_to_a_clean_row_when_near():
    # six objects of 10 px in first-row order; rows: 0-4, 3-8, 10-12, 11-15, 20-22, 21-30
    first = np.array([0, 3, 10, 11, 20, 21])
    last = np.array([4, 8, 12, 15, 22, 30])
    before = np.arange(6) * 10
    # a budget of 25 px cuts before object 3 (30 px before it), whose rows object 2's reach: the clean cut
    # before object 4 is 10 px later, within half a budget, and taken instead; object 5 shares rows with 4
    assert features._strip_cuts(first, last, before, 25) == [4, 5]
    # a budget of 15 px: the cut before object 3 stays, the clean one before 4 being 10 px (over 7) later
    assert features._strip_cuts(first, last, before, 15) == [2, 3, 5]
    # no clean cut anywhere: the plain cuts
    overlapping = np.full(6, 50)
    assert features._strip_cuts(first, overlapping, before, 20) == [2, 4]


def test_scratch_reuses_and_grows_its_buffers():
    from scip.features._objects import Scratch

    scratch = Scratch()
    a = scratch.take("x", 100, np.float64)
    assert a.shape == (100,) and a.dtype == np.float64
    a[:] = 1.0
    b = scratch.take("x", 110, np.float64)  # within the quarter of room: the same memory
    assert np.shares_memory(a, b) and b.shape == (110,)
    c = scratch.take("x", 1000, np.float64)  # larger: a new buffer
    assert not np.shares_memory(a, c) and c.shape == (1000,)
    d = scratch.take("x", 10, np.int32)  # another dtype: a new buffer of it
    assert d.dtype == np.int32 and not np.shares_memory(c, d)
    assert not np.shares_memory(scratch.take("y", 10, np.int32), d)


def test_strips_with_nan_pixels_and_labels_beyond_int32(monkeypatch):
    """The strip path with the other label dtype (int64 labels past 2**31) and non-finite values."""
    pixels, labels = _dense_scene(seed=7)
    pixels = pixels.astype(np.float64)
    pixels[1, 40:44, 30:34] = np.nan   # inside some object: its statistics of channel 1 are NaN
    pixels[2, 90, 60] = np.inf
    big = labels.astype(np.int64)
    big[big > 0] += 3_000_000_000
    whole = _whole(monkeypatch, pixels, big)
    strips = _strips(monkeypatch, 900, pixels, big)
    assert whole["label"].min() > 2**31
    assert whole.isna().any().any()
    pd.testing.assert_frame_equal(strips, whole, check_exact=True)
