"""Tests for scip.features: every feature against an independent reference."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from skimage.draw import disk, ellipse
from skimage.measure import regionprops

from scip import features
from scip.features import FAMILIES, FeatureColumn, column_name, columns, extract
from scip.features import shape as shape_family

H, W = 64, 80


@pytest.fixture(scope="module")
def label_image() -> np.ndarray:
    """Non-consecutive labels: ellipses, a ring (hole), a rectangle, a pixel."""
    labels = np.zeros((H, W), dtype=np.int32)
    labels[ellipse(14, 16, 9, 5, shape=labels.shape, rotation=0.4)] = 3
    labels[ellipse(40, 20, 12, 7, shape=labels.shape, rotation=-1.1)] = 7
    labels[disk((20, 50), 10, shape=labels.shape)] = 12
    labels[disk((20, 50), 4, shape=labels.shape)] = 0  # hole
    labels[50:56, 60:75] = 20
    labels[45, 40] = 21
    labels[ellipse(55, 42, 4, 6, shape=labels.shape)] = 9
    return labels


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.stack([rng.integers(0, 4096, (H, W)), rng.gamma(2.0, 50.0, (H, W))]).astype(np.float32)
    return img


def _regionprops_value(rp, feature: str) -> float:
    if feature.startswith("moments_hu_"):
        return rp.moments_hu[int(feature.rsplit("_", 1)[1])]
    for prefix in ("moments_normalized_", "moments_central_"):
        if feature.startswith(prefix):
            p, q = (int(d) for d in feature[len(prefix):])
            return getattr(rp, prefix.rstrip("_"))[p, q]
    return getattr(rp, feature)


def test_families_and_registry():
    assert FAMILIES == ("shape", "intensity", "bbox")


def test_shape_matches_regionprops_per_label(label_image, pixels):
    df = extract(pixels, label_image, families=["shape"])
    assert df["label"].tolist() == [3, 7, 9, 12, 20, 21]
    shape_features = [f for f, _, _, _ in shape_family.describe([])]
    assert len(shape_features) == 14 + 7 + 7 + 7
    for _, row in df.iterrows():
        mask = (label_image == row["label"]).astype(np.uint8)
        (rp,) = regionprops(mask)
        for feature in shape_features:
            expected = _regionprops_value(rp, feature)
            got = row[column_name("cell", "shape", feature)]
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=f"label {row['label']} {feature}")


def test_shape_known_values(label_image, pixels):
    df = extract(pixels, label_image, families=["shape"]).set_index("label")
    ring, rect = df.loc[12], df.loc[20]
    assert rect["feat_cell_shape_area"] == 6 * 15
    assert rect["feat_cell_shape_extent"] == 1.0
    assert rect["feat_cell_shape_euler_number"] == 1
    assert ring["feat_cell_shape_euler_number"] == 0  # one hole
    assert ring["feat_cell_shape_area_filled"] > ring["feat_cell_shape_area"]
    assert df.loc[21, "feat_cell_shape_area"] == 1


def test_intensity_matches_numpy_scipy(label_image, pixels):
    names = ["GFP 488", "BF"]
    df = extract(pixels, label_image, channel_names=names, families=["intensity"])
    for _, row in df.iterrows():
        obj = label_image == row["label"]
        for c, ch in enumerate(names):
            x = pixels[c][obj].astype(np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # scipy on the 1-pixel object
                expected = {
                    "mean": np.mean(x),
                    "median": np.median(x),
                    "std": np.std(x),
                    "min": np.min(x),
                    "max": np.max(x),
                    "lower_quartile": np.quantile(x, 0.25),
                    "upper_quartile": np.quantile(x, 0.75),
                    "sum": np.sum(x),
                    "mad": np.median(np.abs(x - np.median(x))),
                    "skewness": scipy.stats.skew(x),
                    "kurtosis": scipy.stats.kurtosis(x),
                }
            for feature, value in expected.items():
                got = row[column_name("cell", "intensity", feature, ch)]
                np.testing.assert_allclose(got, value, rtol=1e-9, err_msg=f"label {row['label']} {ch} {feature}")


def test_intensity_constant_object_and_integer_pixels():
    labels = np.zeros((10, 10), dtype=np.uint16)
    labels[1:4, 1:4] = 5
    labels[6:9, 2:8] = 2
    pixels = np.zeros((1, 10, 10), dtype=np.uint16)
    pixels[0, 1:4, 1:4] = 65535  # would overflow if summed in uint16
    pixels[0, 6:9, 2:8] = np.arange(18).reshape(3, 6)
    df = extract(pixels, labels).set_index("label")
    const = df.loc[5]
    assert const["feat_cell_intensity_sum_ch0"] == 9 * 65535
    assert const["feat_cell_intensity_std_ch0"] == 0
    assert const["feat_cell_intensity_mad_ch0"] == 0
    assert np.isnan(const["feat_cell_intensity_skewness_ch0"])
    assert np.isnan(const["feat_cell_intensity_kurtosis_ch0"])
    ramp = df.loc[2]
    assert ramp["feat_cell_intensity_median_ch0"] == 8.5
    assert ramp["feat_cell_intensity_skewness_ch0"] == pytest.approx(0.0, abs=1e-12)
    # uniform discrete 0..17: MAD = 4.5, excess kurtosis = -1.2 * (n^2+1)/(n^2-1)
    assert ramp["feat_cell_intensity_mad_ch0"] == 4.5
    assert ramp["feat_cell_intensity_kurtosis_ch0"] == pytest.approx(-1.2 * (18**2 + 1) / (18**2 - 1))


def test_bbox_with_offset(label_image, pixels):
    offset = (100, 250)
    df = extract(pixels, label_image, families=["bbox"], offset=offset).set_index("label")
    rect = df.loc[20]
    assert rect["feat_cell_bbox_min_row"] == 150
    assert rect["feat_cell_bbox_max_row"] == 156
    assert rect["feat_cell_bbox_min_col"] == 310
    assert rect["feat_cell_bbox_max_col"] == 325
    assert rect["feat_cell_bbox_height"] == 6
    assert rect["feat_cell_bbox_width"] == 15
    assert rect["feat_cell_bbox_centroid_row"] == pytest.approx(152.5)
    assert rect["feat_cell_bbox_centroid_col"] == pytest.approx(317.0)
    for label, row in df.iterrows():
        (rp,) = regionprops((label_image == label).astype(np.uint8))
        r0, c0, r1, c1 = rp.bbox
        assert (row["feat_cell_bbox_min_row"], row["feat_cell_bbox_min_col"]) == (r0 + 100, c0 + 250)
        assert (row["feat_cell_bbox_max_row"], row["feat_cell_bbox_max_col"]) == (r1 + 100, c1 + 250)
        np.testing.assert_allclose(
            [row["feat_cell_bbox_centroid_row"], row["feat_cell_bbox_centroid_col"]],
            np.add(rp.centroid, offset),
        )


def test_columns_match_extract(label_image, pixels):
    names = ["DAPI", "GFP 488"]
    cols = columns(names, mask_name="nucleus")
    df = extract(pixels, label_image, channel_names=names, mask_name="nucleus")
    assert list(df.columns) == ["label"] + [c.name for c in cols]
    assert len(cols) == len({c.name for c in cols})
    assert df["label"].dtype == np.int64
    assert all(df[c.name].dtype == np.float64 for c in cols)
    assert all(isinstance(c, FeatureColumn) and c.definition and c.unit for c in cols)
    assert {c.family for c in cols} == set(FAMILIES)
    # channel keeps the caller's name; the column name is sanitized
    mean_gfp = next(c for c in cols if c.feature == "mean" and c.channel == "GFP 488")
    assert mean_gfp.name == "feat_nucleus_intensity_mean_GFP_488"
    with pytest.raises(AttributeError):
        mean_gfp.name = "x"  # frozen


def test_family_order_and_subset(label_image, pixels):
    df = extract(pixels, label_image, families=("bbox", "shape"))
    assert list(df.columns) == ["label"] + [c.name for c in columns(["ch0", "ch1"], families=("bbox", "shape"))]
    assert df.columns[1].startswith("feat_cell_bbox_")


def test_empty_labels(pixels):
    labels = np.zeros((H, W), dtype=np.int64)
    df = extract(pixels, labels, channel_names=["a", "b"])
    assert len(df) == 0
    assert list(df.columns) == ["label"] + [c.name for c in columns(["a", "b"])]
    assert df["label"].dtype == np.int64
    assert (df.dtypes.iloc[1:] == np.float64).all()


def test_object_fills_image():
    labels = np.full((6, 7), 4)
    pixels = np.arange(42, dtype=float).reshape(1, 6, 7)
    df = extract(pixels, labels)
    assert df["label"].tolist() == [4]
    assert df["feat_cell_shape_area"].item() == 42
    assert df["feat_cell_intensity_mean_ch0"].item() == pytest.approx(20.5)
    assert df["feat_cell_bbox_width"].item() == 7


def test_column_name_sanitization():
    assert column_name("cell", "intensity", "mean", "GFP 488") == "feat_cell_intensity_mean_GFP_488"
    assert column_name("cell", "intensity", "mean", " Ch-1 (BF) ") == "feat_cell_intensity_mean_Ch_1_BF"
    assert column_name("cell", "shape", "area") == "feat_cell_shape_area"
    with pytest.raises(ValueError, match="no ASCII letters or digits"):
        column_name("cell", "intensity", "mean", "+++")
    with pytest.raises(ValueError, match="GFP-488"):
        columns(["GFP 488", "GFP-488"])


@pytest.mark.parametrize(
    "pixels_shape, labels_shape, names, match",
    [
        ((8, 8), (8, 8), None, r"3-D.*\(8, 8\)"),
        ((2, 8, 8), (8, 9), None, r"\(8, 9\).*\(8, 8\)"),
        ((2, 8, 8), (8, 8), ["a"], r"1 channel names.*2 channels"),
    ],
)
def test_shape_errors(pixels_shape, labels_shape, names, match):
    with pytest.raises(ValueError, match=match):
        extract(np.zeros(pixels_shape), np.zeros(labels_shape, dtype=int), channel_names=names)


def test_label_errors():
    with pytest.raises(ValueError, match="integer"):
        extract(np.zeros((1, 4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="-1"):
        extract(np.zeros((1, 4, 4)), -np.ones((4, 4), dtype=int))


def test_unknown_family():
    with pytest.raises(ValueError, match="did you mean") as info:
        extract(np.zeros((1, 4, 4)), np.zeros((4, 4), dtype=int), families=["shape", "intensty"])
    msg = str(info.value)
    assert "'intensty'" in msg and "'intensity'" in msg and "'bbox'" in msg
    with pytest.raises(ValueError, match="'zzz'"):
        columns(["a"], families=["zzz"])


def test_labels_reindexed_in_family_compute(label_image, pixels):
    # Families must align their output with the label_ids they are given.
    ids = np.array([7, 3, 99])
    out = features.bbox.compute(pixels, label_image, ids, ["a", "b"], (0, 0))
    assert out[("min_row", None)][1] == np.argmax((label_image == 3).any(axis=1))
    assert np.isnan(out[("min_row", None)][2])
    out = features.intensity.compute(pixels, label_image, ids, ["a", "b"], (0, 0))
    assert out[("mean", "b")][0] == pytest.approx(pixels[1][label_image == 7].astype(float).mean())
