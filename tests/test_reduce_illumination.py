"""Tests of scip.reduce.illumination: mergeable sums, flat fields, correction, saving."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from scip.datasets import make_fields
from scip.records import ImageRecord, Source, skipped
from scip.reduce.illumination import (
    FLOOR,
    IlluminationError,
    ImageSum,
    correct,
    correction_meta,
    field_for,
    flat_field,
    flat_fields,
    group_key,
    load,
    merge,
    merge_groups,
    save,
    summarize,
    sums_by_group,
)

CHANNELS = ("DNA", "cyto")


def _record(pixels, image_id="img", channels=CHANNELS, **fields) -> ImageRecord:
    return ImageRecord(Source(image_id, 0, (), dict(fields)), tuple(channels), pixels)


def _vignetting(shape, strength=0.4):
    """``1 - strength * r^2``, r = 1 at the middle of each edge (corners: r^2 = 2)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    r2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    return 1.0 - strength * r2


def _gradient(shape):
    h, w = shape
    return np.broadcast_to(np.linspace(0.5, 1.5, w), (h, w)).copy()


def _blobs(rng, n, size=96, channels=2):
    """Background 200 plus a few random disks per image; noise-free signal above 0."""
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        img = np.full((channels, size, size), 200.0)
        for _ in range(3):
            r, c = rng.uniform(0, size, 2)
            disk = (yy - r) ** 2 + (xx - c) ** 2 <= rng.uniform(3, 7) ** 2
            img[:, disk] += rng.uniform(50, 600, (channels, 1))
        out.append(img)
    return out


def _shade(rng, images, pattern):
    """Images seen through ``pattern``, with Poisson noise, as uint16."""
    return [rng.poisson(img * pattern).astype(np.uint16) for img in images]


def _rel_rms(field, pattern):
    """Per channel RMS of field minus pattern, both scaled to mean 1."""
    expected = pattern / pattern.mean()
    return np.sqrt(((field - expected) ** 2).mean(axis=(-2, -1)))


def _corner_center(image, patch=12):
    """Mean of the four corner patches over the mean of the centre patch, per channel."""
    h, w = image.shape[-2:]
    rows, cols = (slice(None, patch), slice(-patch, None)), (slice(None, patch), slice(-patch, None))
    corner = np.mean([image[:, r, c].mean(axis=(1, 2)) for r in rows for c in cols], axis=0)
    r0, c0 = (h - patch) // 2, (w - patch) // 2
    return corner / image[:, r0 : r0 + patch, c0 : c0 + patch].mean(axis=(1, 2))


# ---------------------------------------------------------------------------
# group_key


def test_group_key_values_in_order():
    fields = {"well": "A01", "plate": "P1", "site": "3"}
    assert group_key(fields, ["plate", "well"]) == ("P1", "A01")
    assert group_key(fields, ["well", "plate"]) == ("A01", "P1")
    assert group_key(fields, []) == ()
    assert group_key({"n": 3}, ["n"]) == ("3",)


def test_group_key_missing_field_names_field_image_and_available_fields():
    with pytest.raises(IlluminationError) as info:
        group_key({"well": "A01", "site": "3"}, ["plate"], image_id="r01c01f03")
    message = str(info.value)
    assert "'plate'" in message and "'r01c01f03'" in message
    assert "'well'" in message and "'site'" in message
    assert isinstance(info.value, ValueError)


def test_sums_by_group_reports_missing_field():
    records = [_record(np.zeros((2, 4, 4), np.uint16), "a", plate="P1"), _record(np.zeros((2, 4, 4), np.uint16), "b")]
    with pytest.raises(IlluminationError, match=r"'plate'.*'b'"):
        sums_by_group(records, ["plate"])


# ---------------------------------------------------------------------------
# Mergeable sums


def test_merge_of_unequal_partitions_is_exact():
    rng = np.random.default_rng(0)
    # Enough full-range uint16 images that the sums exceed 2**24, where a
    # float32 accumulator would start rounding.
    images = rng.integers(0, 65536, size=(300, 2, 8, 9), dtype=np.uint16)
    images[:, :, 0, 0] = 65535
    records = [_record(img, f"i{k}", plate="P1") for k, img in enumerate(images)]
    cuts = [0, 0, 1, 200, 203, 300]  # partitions of 0, 1, 199, 3 and 97 images
    partitions = [sums_by_group(records[a:b], ["plate"]) for a, b in zip(cuts[:-1], cuts[1:])]
    assert partitions[0] == {}

    expected = np.sum(images, axis=0, dtype=np.float64)
    assert expected.max() > 2**24
    left = functools.reduce(merge_groups, partitions, {})
    right = functools.reduce(merge_groups, partitions[::-1], {})
    tree = merge_groups(merge_groups(partitions[3], partitions[1]), merge_groups(partitions[4], partitions[2]))
    for merged in (left, right, tree):
        assert list(merged) == [("P1",)]
        total = merged[("P1",)]
        assert total.count == 300
        assert total.sum.dtype == np.float64
        assert np.array_equal(total.sum, expected)
    # The partitions' own summaries are left as they were.
    assert np.array_equal(partitions[2][("P1",)].sum, np.sum(images[1:200], axis=0, dtype=np.float64))


def test_summarize_and_merge_do_not_modify_inputs():
    pixels = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    a = summarize(pixels)
    b = summarize(_record(pixels.copy(), "b"))
    assert (a.count, b.count, b.image_id) == (1, 1, "b")
    both = merge(a, b)
    assert np.array_equal(both.sum, 2.0 * pixels)
    assert np.array_equal(a.sum, pixels) and np.array_equal(b.sum, pixels)
    assert both.count == 2


def test_sums_by_group_separates_groups_and_leaves_out_skipped_records():
    one, two = np.ones((2, 4, 4), np.uint16), np.full((2, 4, 4), 2, np.uint16)
    records = [
        _record(one, "a", plate="P1"),
        _record(two, "b", plate="P2"),
        _record(one, "c", plate="P1"),
        _record(None, "d", plate="P1").with_(status=skipped("load", "unreadable")),
    ]
    sums = sums_by_group(records, ["plate"])
    assert list(sums) == [("P1",), ("P2",)]
    assert sums[("P1",)].count == 2 and np.array_equal(sums[("P1",)].sum, 2.0 * one)
    assert sums[("P2",)].count == 1 and np.array_equal(sums[("P2",)].sum, two)
    with pytest.raises(IlluminationError, match="no pixels"):
        sums_by_group([_record(None, "e")], [])


def test_images_of_different_shapes_in_a_group_are_refused():
    records = [_record(np.zeros((2, 40, 50), np.uint16), "ev1"), _record(np.zeros((2, 44, 52), np.uint16), "ev2")]
    with pytest.raises(IlluminationError) as info:
        sums_by_group(records, [])
    message = str(info.value)
    assert "(2, 40, 50)" in message and "(2, 44, 52)" in message
    assert "'ev1'" in message and "'ev2'" in message
    assert "flow-cytometry" in message

    a = sums_by_group(records[:1], [])
    b = sums_by_group(records[1:], [])
    with pytest.raises(IlluminationError, match=r"\(2, 40, 50\).*\(2, 44, 52\)"):
        merge_groups(a, b)
    # Different shapes in different groups are fine.
    records[1].source.fields["plate"] = "P2"
    records[0].source.fields["plate"] = "P1"
    assert len(sums_by_group(records, ["plate"])) == 2


# ---------------------------------------------------------------------------
# Flat field and correction


@pytest.mark.parametrize(("smooth", "size", "tolerance"), [("gaussian", 6.0, 0.05), ("median", 25.0, 0.05)])
def test_flat_field_recovers_vignetting_and_correct_removes_it(smooth, size, tolerance):
    rng = np.random.default_rng(1)
    pattern = _vignetting((96, 96), 0.4)
    images = _shade(rng, _blobs(rng, 40), pattern)
    total = functools.reduce(merge_groups, [sums_by_group([_record(im, f"i{k}")], []) for k, im in enumerate(images)])
    field = flat_field(total[()], smooth, size)

    assert field.shape == (2, 96, 96) and field.dtype == np.float64
    assert np.allclose(field.mean(axis=(1, 2)), 1.0)
    error = _rel_rms(field, pattern)
    assert np.all(error < tolerance), error

    raw_mean = np.mean(images, axis=0)
    corrected = [correct(im, field) for im in images]
    assert corrected[0].dtype == np.float32
    before, after = _corner_center(raw_mean), _corner_center(np.mean(corrected, axis=0))
    # Corner patches get about 0.4 of the centre's light; after correction
    # about 0.9-0.95 (smoothing flattens the pattern's curvature at the edges).
    assert np.all(before < 0.45), before
    assert np.all(np.abs(after - 1) < 0.15), after
    # The intensity scale is kept: the corrected mean equals the raw mean, up to the pattern's spread.
    assert np.allclose(np.mean(corrected), np.mean(images), rtol=0.1)


def test_flat_field_from_synthetic_fields_of_view():
    data = make_fields(100, size=(96, 96), cells_per_field=2, seed=3)
    pattern = _vignetting((96, 96), 0.4)
    images = [np.round(im * pattern).astype(np.uint16) for im in data.images]
    records = [_record(im, f"f{k}", channels=data.channels) for k, im in enumerate(images)]
    parts = [sums_by_group(records[a : a + 30], []) for a in range(0, 100, 30)]
    total = functools.reduce(merge_groups, parts)[()]
    field = flat_field(total, "gaussian", 12.0)
    # Cells are far brighter than the background here, so 100 fields leave
    # some of them in the mean image: a looser bound than for faint blobs.
    error = _rel_rms(field, pattern)
    assert np.all(error < 0.1), error
    corrected = np.mean([correct(im, field) for im in images], axis=0)
    assert np.all(_corner_center(np.mean(images, axis=0), 16) < 0.45)
    assert np.all(np.abs(_corner_center(corrected, 16) - 1) < 0.25)


def test_two_groups_get_their_own_fields():
    rng = np.random.default_rng(3)
    shape = (64, 64)
    patterns = {"P1": _vignetting(shape, 0.4), "P2": _gradient(shape)}
    records = []
    for plate, pattern in patterns.items():
        for k, img in enumerate(_shade(rng, _blobs(rng, 40, size=64), pattern)):
            records.append(_record(img, f"{plate}_{k}", plate=plate, site=str(k)))
    rng.shuffle(records)
    fields = flat_fields(sums_by_group(records, ["plate"]), "gaussian", 6.0)
    assert set(fields) == {("P1",), ("P2",)}
    for plate, pattern in patterns.items():
        assert np.all(_rel_rms(fields[(plate,)], pattern) < 0.05)
    assert np.abs(fields[("P1",)] - fields[("P2",)]).mean() > 0.2


def test_both_smoothings_run_with_direct_and_block_median():
    rng = np.random.default_rng(4)
    total = summarize(rng.integers(100, 200, (2, 50, 70)).astype(np.uint16))
    runs = [("gaussian", 3.0), ("gaussian", 100.0), ("median", 5.0), ("median", 7.0), ("median", 9.0), ("median", 40.0)]
    for smooth, size in runs:
        field = flat_field(total, smooth, size)
        assert field.shape == (2, 50, 70)
        assert np.all(np.isfinite(field)) and np.allclose(field.mean(axis=(1, 2)), 1.0)
    # A flat image gives a flat field whatever the smoothing.
    flat = summarize(np.full((1, 33, 47), 7, np.uint16))
    for smooth, size in (("gaussian", 5.0), ("median", 3.0), ("median", 50.0)):
        assert np.allclose(flat_field(flat, smooth, size), 1.0)


@pytest.mark.parametrize("size", [7.0, 12.0, 30.0])  # direct, on 2 x 2 and on 5 x 5 blocks
def test_median_follows_a_ramp_and_ignores_bright_spots(size):
    ramp = np.broadcast_to(np.linspace(50.0, 150.0, 120), (1, 80, 120))
    spotted = ramp.copy()
    for r, c in ((10, 10), (40, 60), (60, 100)):
        spotted[0, r : r + 3, c : c + 3] += 5000.0  # far smaller than the window
    field = flat_field(ImageSum(spotted, 1), "median", size)
    assert np.max(np.abs(field - ramp / ramp.mean())) < 0.02


def test_zero_channel_gives_ones_and_dark_regions_are_floored():
    pixels = np.zeros((3, 40, 40), np.uint16)
    pixels[1] = 100
    pixels[2, :, :20] = 1000  # the right half is dark, far beyond the smoothing's reach
    field = flat_field(summarize(pixels), "gaussian", 1.0)
    assert np.array_equal(field[0], np.ones((40, 40)))
    assert np.allclose(field[1], 1.0)
    assert field[2].min() == FLOOR
    out = correct(pixels, field)
    assert np.all(np.isfinite(out)) and out.max() <= 1000 * 2 + 1


def test_flat_field_refuses_bad_input():
    total = summarize(np.ones((1, 8, 8), np.uint16))
    with pytest.raises(IlluminationError, match="'box'"):
        flat_field(total, "box", 5.0)
    with pytest.raises(IlluminationError, match="positive"):
        flat_field(total, "gaussian", 0.0)
    with pytest.raises(IlluminationError, match="no images"):
        flat_field(ImageSum(np.zeros((1, 8, 8)), 0), "gaussian", 2.0)
    with pytest.raises(IlluminationError, match="channel 0"):
        flat_field(ImageSum(np.full((1, 8, 8), -5.0), 1), "gaussian", 2.0)


def test_correct_divides_as_float32_and_checks_shapes():
    pixels = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
    field = np.full((2, 4, 5), 0.5)
    out = correct(pixels, field)
    assert out.dtype == np.float32
    assert np.array_equal(out, (pixels * 2).astype(np.float32))
    with pytest.raises(IlluminationError, match=r"\(2, 4, 5\).*\(2, 5, 4\)"):
        correct(pixels, np.ones((2, 5, 4)))


# ---------------------------------------------------------------------------
# Saving, loading, reuse


def _saved(tmp_path):
    rng = np.random.default_rng(5)
    records = [
        _record(rng.integers(100, 300, (2, 16, 20)).astype(np.uint16), f"{p}{k}", plate=p, well=w)
        for k, (p, w) in enumerate([("P1", "A01"), ("P1", "A01"), ("P2", "B/2"), ("P1", "A01")])
    ]
    totals = sums_by_group(records, ["plate", "well"])
    fields = flat_fields(totals, "gaussian", 3.0)
    meta = correction_meta(totals, group_by=["plate", "well"], channels=CHANNELS, smooth="gaussian", size=3.0)
    path = tmp_path / "out" / "illumination.npz"
    save(path, fields, meta)
    return path, fields, meta


def test_save_load_round_trip(tmp_path):
    path, fields, meta = _saved(tmp_path)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["illumination.npz"]
    loaded, loaded_meta = load(path)
    assert list(loaded) == list(fields) == [("P1", "A01"), ("P2", "B/2")]
    for key in fields:
        assert loaded[key].dtype == np.float64
        assert np.array_equal(loaded[key], fields[key])
    assert loaded_meta == meta
    assert loaded_meta["n_images"] == {("P1", "A01"): 3, ("P2", "B/2"): 1}
    assert loaded_meta["channels"] == ["DNA", "cyto"] and loaded_meta["size"] == 3.0
    # A path without the .npz suffix is used as given.
    save(tmp_path / "corr", fields, meta)
    assert (tmp_path / "corr").is_file() and load(tmp_path / "corr")[1] == meta


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(IlluminationError, match="nope.npz.*no such file"):
        load(missing)
    text = tmp_path / "text.npz"
    text.write_text("not a zip file")
    with pytest.raises(IlluminationError, match="text.npz.*not an .npz"):
        load(text)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(IlluminationError, match="single.npy"):
        load(single)
    other = tmp_path / "other.npz"
    with open(other, "wb") as f:
        np.savez(f, a=np.ones(3))
    with pytest.raises(IlluminationError, match="other.npz.*'meta'"):
        load(other)
    wrong = tmp_path / "wrong.npz"
    with open(wrong, "wb") as f:
        np.savez(f, meta=np.array(json.dumps({"format": "something else"})))
    with pytest.raises(IlluminationError, match="wrong.npz.*format"):
        load(wrong)
    path, fields, meta = _saved(tmp_path)
    broken = tmp_path / "broken.npz"
    with np.load(path) as data:
        members = dict(data)
    del members["field_1"]
    with open(broken, "wb") as f:
        np.savez(f, **members)
    with pytest.raises(IlluminationError, match="broken.npz.*2 group"):
        load(broken)


def test_save_refuses_fields_that_do_not_fit_meta(tmp_path):
    _, fields, meta = _saved(tmp_path)
    with pytest.raises(IlluminationError, match="channel"):
        save(tmp_path / "x.npz", fields, {**meta, "channels": ["DNA"]})
    with pytest.raises(IlluminationError, match="lacks group_by"):
        save(tmp_path / "x.npz", fields, {"channels": list(CHANNELS)})
    assert not (tmp_path / "x.npz").exists()


def test_field_for_finds_group_and_checks_channels(tmp_path):
    path, fields, meta = _saved(tmp_path)
    loaded, meta = load(path)
    key = group_key({"plate": "P2", "well": "B/2", "site": "1"}, meta["group_by"])
    field = field_for(loaded, key, CHANNELS, field_channels=meta["channels"])
    assert np.array_equal(field, fields[("P2", "B/2")])
    assert field_for(loaded, key, CHANNELS) is loaded[key]
    # Planes are picked by name when the channels are known.
    swapped = field_for(loaded, key, ["cyto"], field_channels=meta["channels"])
    assert np.array_equal(swapped, fields[("P2", "B/2")][[1]])

    with pytest.raises(IlluminationError) as info:
        field_for(loaded, ("P3", "C03"), CHANNELS)
    message = str(info.value)
    assert "('P3', 'C03')" in message and "('P1', 'A01')" in message and "('P2', 'B/2')" in message
    with pytest.raises(IlluminationError, match=r"\['DNA', 'cyto'\].*'GFP'"):
        field_for(loaded, key, ["DNA", "GFP"], field_channels=meta["channels"])
    with pytest.raises(IlluminationError, match="2 channel"):
        field_for(loaded, key, ["DNA", "cyto", "GFP"])


def test_sums_by_group_leaves_float_pixels_of_records_alone():
    pixels = [np.full((1, 4, 4), 1.5), np.full((1, 4, 4), 2.5)]
    records = [_record(p.copy(), f"r{k}", channels=("DNA",)) for k, p in enumerate(pixels)]
    total = sums_by_group(records, [])[()]
    assert np.array_equal(total.sum, np.full((1, 4, 4), 4.0))
    for record, original in zip(records, pixels):
        assert np.array_equal(record.pixels, original)
