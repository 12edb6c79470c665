"""Tests for the intensity family, each against an independent reference.

References: numpy / scipy per object, skimage's find_boundaries and
expand_labels, an explicit per-object loop of binary erosions, and
cp_measure's port of CellProfiler's MeasureObjectIntensity.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.stats
import tifffile
from cp_measure.core.measureobjectintensity import get_intensity
from skimage.segmentation import expand_labels, find_boundaries, relabel_sequential

from scip.features import FeatureParams, columns, extract
from scip.features import intensity
from scip.features._objects import Objects
from scip.features._stats import STATISTICS

STAT_NAMES = [name for name, _, _ in STATISTICS]
LOCATION_STATS = ["mean", "median", "min", "max", "lower_quartile", "upper_quartile", "sum"]
CROSS = ndi.generate_binary_structure(2, 1)


# --------------------------------------------------------------------------- fixtures

def _touching_objects(seed: int = 1, shape=(48, 56), n: int = 25) -> np.ndarray:
    """Touching Voronoi-like objects with gaps, many on the image border, non-consecutive ids."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int64)
    r = rng.integers(0, shape[0], n)
    c = rng.integers(0, shape[1], n)
    seeds[r, c] = np.arange(1, n + 1)
    labels = expand_labels(seeds, 7)
    new_ids = np.concatenate([[0], rng.choice(np.arange(1, 1000), labels.max(), replace=False)])
    return new_ids[labels]


def _random_pixels(shape, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Channel 0 continuous; channel 1 small integers, so maxima tie often.
    return np.stack([rng.gamma(2.0, 50.0, shape), rng.integers(0, 4, shape).astype(np.float64)])


@pytest.fixture(scope="module", params=["random", "nuclei"])
def scene(request):
    """``(pixels (C, H, W), labels)``: random touching objects, or real nuclei (labels keep their numbers,
    some touch the crop's edge)."""
    if request.param == "random":
        labels = _touching_objects()
        return _random_pixels(labels.shape), labels
    folder = Path(__file__).parent / "data" / "mnfinder"
    image = tifffile.imread(folder / "rpe1_3_crop.tif")
    labels = tifffile.imread(folder / "rpe1_3_crop_nuclei.tif").astype(np.int64)
    return image[None].astype(np.float64), labels


# --------------------------------------------------------------------------- references

def _ref_stats(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {name: np.nan for name in STAT_NAMES}
    median = np.median(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns (and returns NaN) for constant data
        skew = scipy.stats.skew(x)
        kurt = scipy.stats.kurtosis(x)
    return {
        "mean": x.mean(),
        "median": median,
        "std": x.std(),
        "min": x.min(),
        "max": x.max(),
        "lower_quartile": np.quantile(x, 0.25),
        "upper_quartile": np.quantile(x, 0.75),
        "sum": x.sum(),
        "mad": np.median(np.abs(x - median)),
        "skewness": skew,
        "kurtosis": kurt,
    }


def _ring_by_erosion_loop(labels: np.ndarray, label: int, width: int) -> np.ndarray:
    """Edge ring of one object: an explicit loop of binary erosions (image border does not erode)."""
    mask = labels == label
    eroded = mask
    for _ in range(width):
        eroded = ndi.binary_erosion(eroded, structure=CROSS, border_value=1)
    return mask & ~eroded


def _edge_mask_by_shifts(labels: np.ndarray, width: int, outside: np.ndarray | None = None) -> np.ndarray:
    """Reference (whole-image numpy shifts): labeled pixels removed by ``width`` label-wise erosions with the 4-connected cross.

    A pixel survives an erosion only if each of its in-image 4-neighbours
    carries its (surviving) label; the image border does not erode, and
    neither do ``outside`` pixels (the margins between packed crops).
    """
    current = labels
    for _ in range(width):
        keep = current > 0
        same_v = current[1:] == current[:-1]
        same_h = current[:, 1:] == current[:, :-1]
        if outside is None:
            keep[1:] &= same_v
            keep[:-1] &= same_v
            keep[:, 1:] &= same_h
            keep[:, :-1] &= same_h
        else:
            keep[1:] &= same_v | outside[:-1]
            keep[:-1] &= same_v | outside[1:]
            keep[:, 1:] &= same_h | outside[:, :-1]
            keep[:, :-1] &= same_h | outside[:, 1:]
        current = np.where(keep, current, 0)
    return (labels > 0) & (current == 0)


def _edge_mask(labels: np.ndarray, width: int, outside: np.ndarray | None = None) -> np.ndarray:
    """The edge ring the intensity family uses, as an image mask."""
    objects = Objects(np.zeros((1, *labels.shape)), np.asarray(labels, np.int64), labels == 0, ("c",), outside=outside)
    ring = np.zeros(labels.shape, bool)
    dummy = np.zeros((1, 1), bool) if outside is None else np.ascontiguousarray(outside)
    at = np.full(objects.groups.index.size, -5, np.int64)  # stale output
    n = intensity._edge_pixels(objects.labels, objects.groups.index, int(width), dummy, outside is not None,
                               np.full(labels.size, 7, np.uint8), at)  # stale scratch
    assert np.all(np.diff(at[:n]) > 0)  # ascending positions
    ring.ravel()[objects.groups.index[at[:n]]] = True
    return ring


def _nearest_region(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: distance to, and label of, the nearest region for every pixel; ties to the smaller label."""
    ids = np.unique(labels[labels > 0])
    dist = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    return dist.min(axis=0), ids[np.argmin(dist, axis=0)]  # argmin takes the first, i.e. smaller, label


def _ref_background(image: np.ndarray, labels: np.ndarray, usable: np.ndarray, label: int, width: int) -> float:
    dist, owner = _nearest_region(labels)
    band = (owner == label) & (dist <= width) & (labels == 0) & usable
    return float(np.median(image[band])) if band.any() else np.nan


def _cp_measure(labels: np.ndarray, image: np.ndarray) -> dict[str, np.ndarray]:
    """cp_measure's get_intensity; its labels must be contiguous 1..N (order kept by relabel_sequential)."""
    sequential, _, _ = relabel_sequential(labels)
    return get_intensity(sequential, image.astype(np.float64))


def _col(df, feature, channel):
    return df[f"feat_cell_intensity_{feature}_{channel}"].to_numpy()


# --------------------------------------------------------------------------- columns

def test_columns_match_extract_and_layout():
    names = ["DNA", "GFP 488"]
    cols = columns(names, families=["intensity"])
    labels = _touching_objects()
    df = extract(_random_pixels(labels.shape), labels, channel_names=names, families=["intensity"])
    assert list(df.columns) == ["label", *(c.name for c in cols)]
    assert len(cols) == 2 * 35
    expected_features = (
        STAT_NAMES
        + [f"edge_{s}" for s in STAT_NAMES]
        + ["background"]
        + [f"corrected_{s}" for s in LOCATION_STATS]
        + ["center_mass_row", "center_mass_col", "mass_displacement", "max_row", "max_col"]
    )
    assert [c.feature for c in cols] == expected_features * 2
    assert [c.channel for c in cols] == ["DNA"] * 35 + ["GFP 488"] * 35  # grouped by channel
    assert cols[0].name == "feat_cell_intensity_mean_DNA"
    units = {c.feature: c.unit for c in cols}
    assert units["mean"] == units["edge_sum"] == units["background"] == units["corrected_sum"] == "intensity"
    assert units["skewness"] == units["edge_kurtosis"] == "1"
    assert units["center_mass_row"] == units["mass_displacement"] == units["max_col"] == "px"
    assert all(c.definition.endswith(".") and (c.definition[0].isupper() or c.definition[0].isdigit()) for c in cols)
    assert len({c.definition for c in cols[:35]}) == 35
    # Widths appear in the definitions they shape.
    wide = columns(names, families=["intensity"], edge_width=3, background_width=9)
    by_feature = {c.feature: c.definition for c in wide}
    assert "distance 3" in by_feature["edge_mean"] and "9 px" in by_feature["background"]
    assert all(df[c].dtype == np.float64 for c in df.columns[1:])


# --------------------------------------------------------------------------- object and edge views

def test_object_and_edge_stats_match_numpy(scene):
    pixels, labels = scene
    names = [f"c{i}" for i in range(len(pixels))]
    df = extract(pixels, labels, channel_names=names, families=["intensity"])
    np.testing.assert_array_equal(df["label"], np.unique(labels[labels > 0]))
    boundaries = find_boundaries(labels, connectivity=1, mode="inner")
    checked_border = False
    for i, label in enumerate(df["label"]):
        obj = labels == label
        checked_border |= bool(obj[0].any() or obj[-1].any() or obj[:, 0].any() or obj[:, -1].any())
        for c, ch in enumerate(names):
            for view, sel in (("", obj), ("edge_", obj & boundaries)):
                ref = _ref_stats(pixels[c][sel])
                for stat in STAT_NAMES:
                    np.testing.assert_allclose(_col(df, view + stat, ch)[i], ref[stat], rtol=1e-9, atol=1e-9,
                                               err_msg=f"label {label} {view}{stat} {ch}")
    assert checked_border  # some objects touch the image border


@pytest.mark.parametrize("width", [1, 2, 3])
def test_edge_ring_equals_erosion_loop(width):
    labels = _touching_objects(seed=5)
    ring = _edge_mask(labels, width)
    expected = np.zeros_like(ring)
    for label in np.unique(labels[labels > 0]):
        expected |= _ring_by_erosion_loop(labels, label, width)
    np.testing.assert_array_equal(ring, expected)
    if width == 1:
        np.testing.assert_array_equal(ring, find_boundaries(labels, connectivity=1, mode="inner"))
    else:
        assert ring.sum() > _edge_mask(labels, width - 1).sum()

    # And the statistics use that ring.
    pixels = _random_pixels(labels.shape, seed=6)
    df = extract(pixels, labels, families=["intensity"], edge_width=width)
    for i, label in enumerate(df["label"]):
        ref = _ref_stats(pixels[0][_ring_by_erosion_loop(labels, label, width)])
        for stat in STAT_NAMES:
            np.testing.assert_allclose(_col(df, f"edge_{stat}", "ch0")[i], ref[stat], rtol=1e-9, atol=1e-9,
                                       err_msg=f"label {label} edge_{stat}")


def test_edge_does_not_erode_from_the_image_border():
    labels = np.zeros((10, 10), np.int64)
    labels[0:4, 0:5] = 3
    pixels = np.arange(100, dtype=np.float64).reshape(1, 10, 10)
    df = extract(pixels, labels, families=["intensity"])
    ring = np.zeros((10, 10), bool)
    ring[3, 0:5] = True
    ring[0:4, 4] = True
    assert df["feat_cell_intensity_edge_sum_ch0"].item() == pixels[0][ring].sum()
    assert df["feat_cell_intensity_edge_min_ch0"].item() == 4  # (0, 4); (0, 0) is not on the edge


# --------------------------------------------------------------------------- background view

# 16: squared distances past 255, the band kernel's wider distance type
@pytest.mark.parametrize("width", [2, 5, 16])
def test_background_matches_nearest_region_band(scene, width):
    pixels, labels = scene
    names = [f"c{i}" for i in range(len(pixels))]
    df = extract(pixels, labels, channel_names=names, families=["intensity"], background_width=width)
    usable = labels == 0
    for i, label in enumerate(df["label"]):
        area = (labels == label).sum()
        for c, ch in enumerate(names):
            b = _ref_background(pixels[c], labels, usable, label, width)
            np.testing.assert_allclose(_col(df, "background", ch)[i], b, rtol=1e-12, err_msg=f"label {label}")
            for stat in LOCATION_STATS:
                shift = b * area if stat == "sum" else b
                np.testing.assert_allclose(_col(df, f"corrected_{stat}", ch)[i], _col(df, stat, ch)[i] - shift,
                                           rtol=1e-12)


def test_background_respects_custom_mask():
    labels = _touching_objects(seed=3)
    pixels = _random_pixels(labels.shape, seed=4)
    rng = np.random.default_rng(7)
    mask = rng.random(labels.shape) < 0.4
    mask[:, :10] = False  # objects on the left lose most of their band
    plain = extract(pixels, labels, families=["intensity"])
    masked = extract(pixels, labels, families=["intensity"], background=mask)
    usable = mask & (labels == 0)
    for i, label in enumerate(masked["label"]):
        np.testing.assert_allclose(masked["feat_cell_intensity_background_ch0"][i],
                                   _ref_background(pixels[0], labels, usable, label, 5), rtol=1e-12)
    assert not np.allclose(plain["feat_cell_intensity_background_ch0"], masked["feat_cell_intensity_background_ch0"],
                           equal_nan=True)
    # An all-False mask leaves no background anywhere.
    none = extract(pixels, labels, families=["intensity"], background=np.zeros(labels.shape, bool))
    assert none["feat_cell_intensity_background_ch0"].isna().all()
    assert none["feat_cell_intensity_corrected_mean_ch0"].isna().all()


def test_background_band_goes_to_the_nearer_object():
    labels = np.zeros((5, 12), np.int64)
    labels[:, 0:3] = 1
    labels[:, 9:12] = 2
    pixels = np.zeros((1, 5, 12))
    pixels[0, :, 3:5] = 10.0   # nearer to object 1
    pixels[0, :, 7:9] = 20.0   # nearer to object 2
    pixels[0, :, 5:7] = 99.0   # columns 5 and 6: 3 px from one object, 4 from the other
    df = extract(pixels, labels, families=["intensity"], background_width=2)
    assert df["feat_cell_intensity_background_ch0"].tolist() == [10.0, 20.0]
    df = extract(pixels, labels, families=["intensity"], background_width=3)
    # Column 5 joins object 1's band (10, 10, 99 per row), column 6 object 2's (99, 20, 20).
    assert df["feat_cell_intensity_background_ch0"].tolist() == [10.0, 20.0]
    # A plain dilation by 6 would give each object columns 3..8 (10, 10, 99, 99, 20, 20: median 54.5);
    # assigned to the nearer object, the bands stay split.
    df = extract(pixels, labels, families=["intensity"], background_width=6)
    assert df["feat_cell_intensity_background_ch0"].tolist() == [10.0, 20.0]


# --------------------------------------------------------------------------- CellProfiler (cp_measure)

def test_locations_and_edges_match_cp_measure(scene):
    pixels, labels = scene
    names = [f"c{i}" for i in range(len(pixels))]
    df = extract(pixels, labels, channel_names=names, families=["intensity"])
    for c, ch in enumerate(names):
        cp = _cp_measure(labels, pixels[c])
        # CellProfiler's X is our column, Y our row.
        np.testing.assert_allclose(_col(df, "center_mass_row", ch), cp["Location_CenterMassIntensity_Y"], rtol=1e-10)
        np.testing.assert_allclose(_col(df, "center_mass_col", ch), cp["Location_CenterMassIntensity_X"], rtol=1e-10)
        np.testing.assert_allclose(_col(df, "mass_displacement", ch), cp["Intensity_MassDisplacement"],
                                   rtol=1e-7, atol=1e-9)
        # Ties for the maximum are frequent in the integer channel: both take the first in raster order.
        np.testing.assert_array_equal(_col(df, "max_row", ch), cp["Location_MaxIntensity_Y"])
        np.testing.assert_array_equal(_col(df, "max_col", ch), cp["Location_MaxIntensity_X"])
        # cp_measure's default (non-legacy) quantiles are numpy's linear ones, as ours.
        for ours, theirs in (("mean", "MeanIntensity"), ("std", "StdIntensity"), ("sum", "IntegratedIntensity"),
                             ("min", "MinIntensity"), ("max", "MaxIntensity"), ("median", "MedianIntensity"),
                             ("lower_quartile", "LowerQuartileIntensity"),
                             ("upper_quartile", "UpperQuartileIntensity"), ("mad", "MADIntensity")):
            np.testing.assert_allclose(_col(df, ours, ch), cp[f"Intensity_{theirs}"], rtol=1e-10, err_msg=ours)
        # Edge: CellProfiler's (cp_measure's) edge is find_boundaries(mode="inner"), default connectivity 1,
        # and the image border does not count as a boundary -- the same ring as our edge_width=1. They agree.
        for ours, theirs in (("edge_sum", "IntegratedIntensityEdge"), ("edge_mean", "MeanIntensityEdge"),
                             ("edge_std", "StdIntensityEdge"), ("edge_min", "MinIntensityEdge"),
                             ("edge_max", "MaxIntensityEdge")):
            np.testing.assert_allclose(_col(df, ours, ch), cp[f"Intensity_{theirs}"], rtol=1e-10, err_msg=ours)


def test_mass_displacement_is_nonzero_on_a_gradient():
    labels = np.zeros((20, 20), np.int64)
    labels[5:15, 4:12] = 1
    pixels = np.broadcast_to(np.arange(20, dtype=np.float64), (20, 20))[None].copy()  # grows with column
    df = extract(pixels, labels, families=["intensity"])
    cp = _cp_measure(labels, pixels[0])
    cols = np.arange(4, 12)
    expected_col = (cols * cols).sum() / cols.sum()
    assert df["feat_cell_intensity_center_mass_col_ch0"].item() == pytest.approx(expected_col)
    assert df["feat_cell_intensity_center_mass_row_ch0"].item() == pytest.approx(9.5)
    assert df["feat_cell_intensity_mass_displacement_ch0"].item() == pytest.approx(expected_col - 7.5)
    assert df["feat_cell_intensity_mass_displacement_ch0"].item() == pytest.approx(cp["Intensity_MassDisplacement"][0])
    assert (df["feat_cell_intensity_max_row_ch0"].item(), df["feat_cell_intensity_max_col_ch0"].item()) == (5, 11)


# --------------------------------------------------------------------------- offsets

def test_offsets_shift_coordinates():
    labels = _touching_objects(seed=8)
    pixels = _random_pixels(labels.shape, seed=9)
    ids = np.unique(labels[labels > 0])
    coords = ["center_mass_row", "center_mass_col", "max_row", "max_col"]

    base = extract(pixels, labels, families=["intensity"])
    shifted = extract(pixels, labels, families=["intensity"], offset=(100, -7))
    for feature in coords:
        shift = 100 if feature.endswith("row") else -7
        for ch in ("ch0", "ch1"):
            np.testing.assert_allclose(_col(shifted, feature, ch), _col(base, feature, ch) + shift, rtol=1e-12)
    for ch in ("ch0", "ch1"):
        np.testing.assert_array_equal(_col(shifted, "mass_displacement", ch), _col(base, "mass_displacement", ch))
        np.testing.assert_array_equal(_col(shifted, "mean", ch), _col(base, "mean", ch))

    # Per-object offsets, as for crops packed into one image.
    row_off = np.arange(len(ids), dtype=np.float64) * 1000
    col_off = -np.arange(len(ids), dtype=np.float64) * 3 + 5
    objects = Objects(np.ascontiguousarray(pixels), labels.astype(np.int64), labels == 0, ("ch0", "ch1"),
                      row_offset=row_off, col_offset=col_off)
    out = intensity.compute(objects, FeatureParams())
    for feature in coords:
        shift = row_off if feature.endswith("row") else col_off
        for ch in ("ch0", "ch1"):
            np.testing.assert_allclose(out[(feature, ch)], _col(base, feature, ch) + shift, rtol=1e-12)
    np.testing.assert_array_equal(out[("mass_displacement", "ch0")], _col(base, "mass_displacement", "ch0"))


# --------------------------------------------------------------------------- degenerate objects

def test_one_pixel_constant_and_zero_objects():
    labels = np.zeros((12, 12), np.int64)
    labels[2, 2] = 1                 # one pixel
    labels[5:8, 5:8] = 2             # constant intensity
    labels[9:11, 1:5] = 3            # all-zero intensity
    labels[0, 8:10] = 4              # intensities -1 and 1: zero sum, non-zero weighted sum
    pixels = np.full((1, 12, 12), 4.0)
    pixels[0, 2, 2] = 17.0
    pixels[0, 5:8, 5:8] = 65535.0
    pixels[0, 9:11, 1:5] = 0.0
    pixels[0, 0, 8:10] = (-1.0, 1.0)
    df = extract(pixels, labels, families=["intensity"]).set_index("label")
    one, const, zero = df.loc[1], df.loc[2], df.loc[3]
    f = "feat_cell_intensity_{}_ch0".format

    assert one[f("mean")] == one[f("max")] == one[f("median")] == 17.0
    assert one[f("std")] == one[f("mad")] == 0
    assert np.isnan(one[f("skewness")]) and np.isnan(one[f("kurtosis")])
    assert one[f("edge_sum")] == 17.0  # a single pixel is all edge
    assert (one[f("center_mass_row")], one[f("center_mass_col")], one[f("mass_displacement")]) == (2, 2, 0)
    assert (one[f("max_row")], one[f("max_col")]) == (2, 2)
    assert one[f("background")] == 4.0 and one[f("corrected_max")] == 13.0

    assert const[f("sum")] == 9 * 65535 and const[f("std")] == 0 and const[f("mad")] == 0
    assert np.isnan(const[f("skewness")]) and np.isnan(const[f("kurtosis")])
    assert np.isnan(const[f("edge_skewness")])
    assert const[f("mass_displacement")] == pytest.approx(0, abs=1e-12)
    assert (const[f("max_row")], const[f("max_col")]) == (5, 5)  # first in raster order among ties
    assert const[f("corrected_sum")] == 9 * (65535 - 4)

    assert zero[f("sum")] == 0
    assert np.isnan(zero[f("center_mass_row")]) and np.isnan(zero[f("center_mass_col")])
    assert np.isnan(zero[f("mass_displacement")])
    assert (zero[f("max_row")], zero[f("max_col")]) == (9, 1)
    cp = _cp_measure(labels, pixels[0])
    assert np.isnan(cp["Location_CenterMassIntensity_X"][2]) and np.isnan(cp["Intensity_MassDisplacement"][2])

    mixed = df.loc[4]
    assert mixed[f("sum")] == 0
    assert np.isnan(mixed[f("center_mass_col")]) and np.isnan(mixed[f("mass_displacement")])  # not inf
    assert np.isnan(cp["Location_CenterMassIntensity_X"][3])


def test_object_filling_the_whole_image():
    labels = np.full((6, 7), 5, np.int64)
    pixels = np.random.default_rng(0).random((2, 6, 7))
    df = extract(pixels, labels, families=["intensity"])
    assert df["label"].tolist() == [5]
    for ch in ("ch0", "ch1"):
        assert np.isnan(df[f"feat_cell_intensity_background_{ch}"].item())
        assert np.isnan(df[f"feat_cell_intensity_corrected_mean_{ch}"].item())
        assert np.isnan(df[f"feat_cell_intensity_corrected_sum_{ch}"].item())
        # No pixel has a different neighbour inside the image: the edge ring is empty
        # (CellProfiler reports 0 here).
        assert np.isnan(df[f"feat_cell_intensity_edge_mean_{ch}"].item())
        assert np.isnan(df[f"feat_cell_intensity_edge_sum_{ch}"].item())
        assert df[f"feat_cell_intensity_mean_{ch}"].item() == pytest.approx(pixels[int(ch[-1])].mean())


def test_non_finite_pixels_propagate_without_error():
    labels = np.zeros((6, 6), np.int64)
    labels[1:4, 1:4] = 1
    labels[4:6, 4:6] = 2
    pixels = np.ones((1, 6, 6))
    pixels[0, 2, 2] = np.nan
    df = extract(pixels, labels, families=["intensity"]).set_index("label")
    assert np.isnan(df.loc[1, "feat_cell_intensity_mean_ch0"])
    assert np.isnan(df.loc[1, "feat_cell_intensity_max_row_ch0"])
    assert df.loc[2, "feat_cell_intensity_mean_ch0"] == 1.0
    assert (df.loc[2, "feat_cell_intensity_max_row_ch0"], df.loc[2, "feat_cell_intensity_max_col_ch0"]) == (4, 4)


def test_near_constant_object_skewness_matches_scipy():
    # Spread far below the mean but above scipy's "all equal" threshold (m2 <= (eps * mean)**2).
    labels = np.zeros((3, 3), np.int64)
    labels[0, :] = 1
    labels[1, 0] = 1
    pixels = np.zeros((1, 3, 3))
    pixels[0, 0, :] = (1e15, 1e15, 1e15 + 2.0)
    pixels[0, 1, 0] = 1e15 + 0.5
    x = pixels[0][labels == 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns about precision loss
        skew, kurt = scipy.stats.skew(x), scipy.stats.kurtosis(x)
    assert np.isfinite(skew)
    df = extract(pixels, labels, families=["intensity"])
    assert df["feat_cell_intensity_skewness_ch0"].item() == pytest.approx(skew, rel=1e-9)
    assert df["feat_cell_intensity_kurtosis_ch0"].item() == pytest.approx(kurt, rel=1e-9)


def test_background_band_equals_expand_labels_away_from_ties(scene):
    # Where no pixel is equally near two objects, the band is expand_labels' band.
    pixels, labels = scene
    dist, owner = _nearest_region(labels)
    ids = np.unique(labels[labels > 0])
    d = np.sort(np.stack([ndi.distance_transform_edt(labels != i) for i in ids]), axis=0)
    tie = (d[0] == d[1]) & (d[0] <= 5)
    expanded = expand_labels(labels, 5)
    band = (dist <= 5) & (labels == 0)
    assert np.array_equal(owner[band & ~tie], expanded[band & ~tie])


@pytest.mark.parametrize("width", [1, 2, 5, 9])
def test_background_band_pixels_equal_brute_force_ties_included(width):
    # Every usable pixel within `width` of its nearest region (ties to the smaller label), no other pixel:
    # the band kernel resolves pixels two regions reach in place, without sorting candidates.
    labels = _touching_objects(seed=5, n=12)
    labels[labels == labels[10, 10]] = 0  # gaps between objects, so that bands meet and tie
    usable = (labels == 0) & (np.random.default_rng(3).random(labels.shape) < 0.8)
    objects = Objects(np.zeros((1, *labels.shape)), labels, usable, ("c",))
    flat, pos = intensity._background_band(objects, width)
    assert np.all(np.diff(pos) >= 0)
    dist, owner = _nearest_region(labels)
    want = np.flatnonzero(((dist <= width) & usable).ravel())
    got_owner = objects.ids[pos]
    order = np.argsort(flat)
    np.testing.assert_array_equal(flat[order], want)
    np.testing.assert_array_equal(got_owner[order], owner.ravel()[want])


@pytest.mark.parametrize("width", [1, 3, 8])
def test_background_band_around_other_regions_equals_brute_force(width):
    # band_labels other than labels (cells around nuclei): the band is around the cells, usable pixels
    # inside a cell are no band, a cell without a nucleus takes pixels from farther cells but reports none,
    # and cells touch the image border (the kernel's windows are clipped there).
    cells = _touching_objects(seed=7, n=14)
    cells[cells == cells[20, 20]] = 0  # gaps between cells, so that bands meet and tie
    rng = np.random.default_rng(4)
    nuclei = np.where(rng.random(cells.shape) < 0.5, cells, 0)
    absent = np.unique(cells[cells > 0])[::4]
    nuclei[np.isin(nuclei, absent)] = 0
    usable = (nuclei == 0) & (rng.random(cells.shape) < 0.85)  # pixels inside cells too
    objects = Objects(np.zeros((1, *cells.shape)), nuclei, usable, ("c",), band_labels=cells)
    flat, pos = intensity._background_band(objects, width)
    assert np.all(np.diff(pos) >= 0)
    dist, owner = _nearest_region(cells)
    want = ((dist <= width) & usable & (cells == 0) & np.isin(owner, objects.ids)).ravel()
    order = np.lexsort((flat, pos))  # grouped by object, raster order within each
    np.testing.assert_array_equal(order, np.arange(len(flat)))
    np.testing.assert_array_equal(np.sort(flat), np.flatnonzero(want))
    np.testing.assert_array_equal(objects.ids[pos], owner.ravel()[flat])


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("with_outside", [False, True])
def test_edge_kernel_equals_whole_image_erosion(width, with_outside):
    # The compiled ring (object pixels only, erosion stamps) against whole-image shifted comparisons.
    labels = _touching_objects(seed=9)
    outside = None
    if with_outside:
        outside = np.zeros(labels.shape, bool)
        outside[:, 20:23] = True
        labels = np.where(outside, 0, labels)
    np.testing.assert_array_equal(_edge_mask(labels, width, outside), _edge_mask_by_shifts(labels, width, outside))



def test_edge_kernel_reads_its_scratch_only_for_wider_rings():
    # Width 1 needs no scratch image (the caller passes an empty one); a wider ring refuses one too small.
    labels = _touching_objects(seed=9)
    objects = Objects(np.zeros((1, *labels.shape)), labels, labels == 0, ("c",))
    index = objects.groups.index
    at = np.empty(index.size, np.int64)
    n = intensity._edge_pixels(objects.labels, index, 1, np.zeros((1, 1), bool), False, np.empty(0, np.uint8), at)
    ring = np.zeros(labels.shape, bool)
    ring.ravel()[index[at[:n]]] = True
    np.testing.assert_array_equal(ring, _edge_mask_by_shifts(labels, 1))
    with pytest.raises(ValueError, match="removed"):
        intensity._edge_pixels(objects.labels, index, 2, np.zeros((1, 1), bool), False,
                               np.empty(labels.size - 1, np.uint8), at)

def _locations(values, maxima, starts, counts, chunk):
    """intensity._locations on runs of a 7-column image: each run's pixels in raster order, boxes from its pixels."""
    size = values.shape[1]
    rows, cols = np.divmod(np.arange(size) * 3 % 53 + np.arange(size) // 2 * 7, 7)
    if len(starts):
        box_row, box_col = np.minimum.reduceat(rows, starts), np.minimum.reduceat(cols, starts)
    else:
        box_row = box_col = np.zeros(0, np.int64)
    seg = np.repeat(np.arange(len(starts)), counts)
    cen_row = np.bincount(seg, rows - box_row[seg], len(starts)) / np.maximum(counts, 1)
    cen_col = np.bincount(seg, cols - box_col[seg], len(starts)) / np.maximum(counts, 1)
    got = intensity._locations(values, maxima, rows, cols, starts, counts, box_row, box_col, cen_row, cen_col, chunk)
    # The reference: whole-array passes, as compute made them before the steps
    d_row = (rows.astype(np.float64) - box_row[seg]) - cen_row[seg]
    d_col = (cols.astype(np.float64) - box_col[seg]) - cen_col[seg]
    with np.errstate(invalid="ignore", over="ignore"):
        want = ([np.add.reduceat(d_row * v, starts) for v in values] if len(starts) else np.zeros((len(values), 0)),
                [np.add.reduceat(d_col * v, starts) for v in values] if len(starts) else np.zeros((len(values), 0)))
    np.testing.assert_array_equal(got[0], want[0])  # bit for bit, NaN where the reference has NaN
    np.testing.assert_array_equal(got[1], want[1])
    return got[2]


@pytest.mark.parametrize("chunk", [1, 2, 4, 1 << 17])
def test_locations_find_each_runs_first_maximum_and_none_for_nan(chunk):
    """The first position of each run's maximum: ties take the first, a NaN run (no value equals its NaN maximum)
    gets -1 even when a later run has hits, and runs after the last hit get -1 too; the same whether a step holds
    one run, part of the runs or all of them (a run longer than the step makes a step of its own)."""
    values = np.array([1.0, 3.0, 3.0, np.nan, np.nan, 2.0, 5.0, 5.0, np.nan, 0.0])
    starts = np.array([0, 3, 5, 8, 9])
    counts = np.array([3, 2, 3, 1, 1])
    maxima = np.array([3.0, np.nan, 5.0, np.nan, 0.0])
    # a second channel: the same runs, other maxima
    second = np.array([7.0, 7.0, -1.0, 4.0, 4.0, 2.0, 2.0, 9.0, 1.0, np.nan])
    both = np.stack([values, second])
    first = _locations(both, np.stack([maxima, [7.0, 4.0, 9.0, 1.0, np.nan]]), starts, counts, chunk)
    np.testing.assert_array_equal(first, [[1, -1, 6, -1, 9], [0, 3, 7, 8, -1]])
    # the last runs without a hit
    np.testing.assert_array_equal(_locations(values[None, :9], maxima[None, :4], starts[:4], counts[:4], chunk),
                                  [[1, -1, 6, -1]])
    assert _locations(np.zeros((1, 0)), np.zeros((1, 0)), np.zeros(0, np.intp), np.zeros(0, np.intp),
                      chunk).shape == (1, 0)


@pytest.mark.parametrize("chunk", [3, 64, 1 << 17])
def test_locations_sum_each_run_alone_whatever_the_step(chunk):
    """Random runs (some longer than a step) and values with ties: the weighted sums are those of whole-array
    reduceat bit for bit and the first maxima those of a loop over the runs."""
    rng = np.random.default_rng(4)
    counts = rng.integers(1, 40, 300)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    values = rng.integers(0, 6, (3, counts.sum())).astype(np.float64) * rng.normal(size=3)[:, None]
    maxima = np.stack([np.maximum.reduceat(v, starts) for v in values])
    first = _locations(values, maxima, starts, counts, chunk)
    want = [[s + int(np.argmax(v[s:s + k])) for s, k in zip(starts, counts)] for v in values]
    np.testing.assert_array_equal(first, want)
