"""The shape family against independent references.

Every regionprops feature is compared per object with
:func:`skimage.measure.regionprops` on the same label image, the Zernike
moments and the minimum Feret diameter with cp_measure (CellProfiler's
``MeasureObjectSizeShape``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.measure import regionprops
from skimage.segmentation import expand_labels, relabel_sequential

from scip.features import columns, extract
from scip.features import shape as shape_family
from scip.features._objects import FeatureParams, Objects

from conftest import require

cp_shape = require("cp_measure.core.measureobjectsizeshape")

NUCLEI = Path(__file__).parent / "data" / "mnfinder" / "rpe1_3_crop_nuclei.tif"
PARAMS = FeatureParams()


def _random_labels(seed: int, shape=(160, 200), n: int = 70) -> np.ndarray:
    """Touching irregular objects with holes and ragged borders, labels not consecutive."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int64)
    ids = rng.choice(np.arange(1, 20 * n), n, replace=False)
    labels[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = ids
    labels = expand_labels(labels, 10)
    labels[rng.random(shape) < 0.07] = 0  # holes and ragged borders
    return labels


def _degenerate_labels() -> np.ndarray:
    labels = np.zeros((20, 24), dtype=np.int64)
    labels[2, 2] = 5  # a single pixel
    labels[5, 1:9] = 7  # horizontal line
    labels[8:16, 1] = 9  # vertical line
    for i in range(6):
        labels[8 + i, 4 + i] = 11  # diagonal line
        labels[8 + i, 17 - i] = 12  # anti-diagonal line
    labels[0:5, 14:20] = 40  # touches the top edge ...
    labels[2, 16] = 0  # ... and has a hole
    labels[15:20, 18:24] = 3  # two objects touching each other and the image corner
    labels[15:20, 12:18] = 4
    labels[8:11, 20:23] = 1000  # a square: isotropic second moments
    return labels


def _run_labels(seed: int = 4, shape=(120, 150), n: int = 60) -> np.ndarray:
    """Objects drawn row by row, one run of pixels per row (convex cells' rows are single runs too).

    Some rows are left empty (objects in pieces), objects touch the image
    border, and later objects overwrite earlier ones, which gives those gaps
    in their rows.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int64)
    for k in range(1, n + 1):
        h = int(rng.integers(1, 16))
        r0 = int(rng.integers(-2, shape[0] - h + 2))
        left = int(rng.integers(-3, shape[1] - 12))
        for r in range(max(r0, 0), min(r0 + h, shape[0])):
            if rng.random() < 0.1:
                continue
            a = left + int(rng.integers(0, 8))
            labels[r, max(a, 0):max(a + int(rng.integers(1, 12)), 0)] = k
    return labels


def _rows_without_gaps(labels: np.ndarray) -> int:
    """Objects whose every row is a single run of pixels."""
    n = 0
    for rp in regionprops(labels):
        image = rp.image
        starts = np.diff(image.astype(np.int8), axis=1, prepend=0) == 1
        n += bool(np.all(starts.sum(axis=1) <= 1))
    return n


def test_run_labels_have_both_kinds_of_objects():
    labels = _run_labels()
    n = len(np.unique(labels)) - 1
    assert 20 <= _rows_without_gaps(labels) <= n - 5


LABEL_IMAGES = {
    "random0": lambda: _random_labels(0),
    "random1": lambda: _random_labels(1),
    "runs": _run_labels,
    "nuclei": lambda: tifffile.imread(NUCLEI),
    "degenerate": _degenerate_labels,
}


def _compute(labels: np.ndarray, params: FeatureParams = PARAMS) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    objects = Objects(np.zeros((1, *labels.shape)), labels, labels == 0, ("ch0",))
    values = shape_family.compute(objects, params)
    assert set(values) == {(f, None) for f, _, _, _ in shape_family.describe(["ch0"], params)}
    for v in values.values():
        assert v.dtype == np.float64 and v.shape == (len(objects),)
    return objects.ids, {f: v for (f, _), v in values.items()}


def _moment_order(feature: str) -> int | None:
    for prefix in ("moments_central_", "moments_"):
        if feature.startswith(prefix) and feature[len(prefix):].isdigit():
            return sum(int(d) for d in feature[len(prefix):])
    return None


def _regionprops_value(rp, feature: str) -> float:
    if feature.startswith("moments_hu_"):
        return rp.moments_hu[int(feature[-1])]
    for prefix, attr in (("moments_normalized_", "moments_normalized"), ("moments_central_", "moments_central"),
                         ("moments_", "moments")):
        if feature.startswith(prefix):
            return getattr(rp, attr)[int(feature[-2]), int(feature[-1])]
    return getattr(rp, feature)


REGIONPROPS_FEATURES = [
    f for f, _, _, _ in shape_family.describe([], PARAMS)
    if not f.startswith("zernike_") and f != "feret_diameter_min"
]


@pytest.mark.parametrize("image", list(LABEL_IMAGES))
def test_regionprops_features_equal_skimage(image):
    labels = LABEL_IMAGES[image]()
    ids, values = _compute(labels)
    props = regionprops(labels)
    assert [rp.label for rp in props] == ids.tolist()
    assert len(REGIONPROPS_FEATURES) == 15 - 1 + 7 + 7 + 7 + 10
    for i, rp in enumerate(props):
        size = max(rp.image.shape)
        for feature in REGIONPROPS_FEATURES:
            got = values[feature][i]
            ref = float(_regionprops_value(rp, feature))
            order = _moment_order(feature)
            if order is not None:
                # Sums of ``area`` terms of size up to size**order, in another
                # summation order: exact to round-off of the largest term.
                atol = 1e-13 * rp.area * size ** order
            else:
                atol = 1e-12  # e.g. normalized or Hu moments that vanish by symmetry
            if feature == "orientation":
                # An axis: angles pi apart are the same orientation.
                diff = (got - ref + np.pi / 2) % np.pi - np.pi / 2
                assert abs(diff) <= 1e-9, (image, rp.label, feature, got, ref)
                continue
            assert got == pytest.approx(ref, rel=1e-9, abs=atol), (image, rp.label, feature, got, ref)


@pytest.mark.parametrize("image", list(LABEL_IMAGES))
def test_zernike_and_min_feret_equal_cp_measure(image):
    labels = LABEL_IMAGES[image]()
    ids, values = _compute(labels)
    # cp_measure wants labels 1..N; relabeling keeps the pixel coordinates.
    seq = relabel_sequential(np.asarray(labels, dtype=np.int64))[0]
    ref = cp_shape.get_zernike(seq, None, PARAMS.zernike_degree)
    assert len(ref) == 30
    for key, expected in ref.items():
        n, m = key.split("_")[1:]
        np.testing.assert_allclose(values[f"zernike_{n}_{m}"], expected, rtol=1e-9, atol=1e-12, err_msg=key)
    feret = cp_shape.get_feret(seq, None)
    np.testing.assert_allclose(values["feret_diameter_min"], feret["MinFeretDiameter"], rtol=1e-12, atol=1e-12)


def test_zernike_degree_parameter():
    labels = _random_labels(2, shape=(80, 90), n=15)
    seq = relabel_sequential(labels)[0]
    for degree in (0, 4, 12):
        params = FeatureParams(zernike_degree=degree)
        _, values = _compute(labels, params)
        zernike = sorted(f for f in values if f.startswith("zernike_"))
        ref = cp_shape.get_zernike(seq, None, degree)
        assert zernike == sorted(k.lower() for k in ref)
        for key, expected in ref.items():
            np.testing.assert_allclose(values[key.lower()], expected, rtol=1e-8, atol=1e-11, err_msg=key)


def test_degenerate_objects_documented_values():
    labels = _degenerate_labels()
    ids, values = _compute(labels)
    row = {label: i for i, label in enumerate(ids.tolist())}
    assert ids.tolist() == [3, 4, 5, 7, 9, 11, 12, 40, 1000]
    for label in (5, 7, 9, 11, 12):  # a pixel and lines: the hull of pixel squares has their area
        assert values["area_convex"][row[label]] == values["area"][row[label]]
        assert values["solidity"][row[label]] == 1.0
        assert values["feret_diameter_min"][row[label]] == 0.0
        assert values["axis_minor_length"][row[label]] == 0.0
    pixel = row[5]
    assert values["area"][pixel] == 1
    assert values["perimeter"][pixel] == 0
    assert values["feret_diameter_max"][pixel] == 1.0
    assert values["orientation"][pixel] == -np.pi / 4
    assert values["eccentricity"][pixel] == 0
    assert all(np.isnan(values[f][pixel]) for f in values if f.startswith("zernike_"))
    assert not any(np.isnan(values[f][i]) for f in values for i in range(len(ids)) if i != pixel)
    assert values["feret_diameter_max"][row[7]] == 8.0
    assert values["eccentricity"][row[7]] == 1.0
    assert values["orientation"][row[9]] == 0.0
    assert values["orientation"][row[1000]] == -np.pi / 4  # isotropic square
    ring = row[40]
    assert values["euler_number"][ring] == 0
    assert values["area_filled"][ring] == values["area"][ring] + 1 == 30
    # Touching objects: the neighbour's pixels are outside, as if it were background.
    assert values["area_convex"][row[3]] == values["area_convex"][row[4]] == 30
    assert values["perimeter"][row[3]] == values["perimeter"][row[4]]


def test_neighbours_count_as_outside_and_translation_invariance():
    labels = _random_labels(3, shape=(90, 110), n=25)
    ids, values = _compute(labels)
    target = ids[len(ids) // 2]
    alone = np.where(labels == target, target, 0)
    # Shifted inside a larger image: every feature but Zernike is exactly
    # translation invariant (Zernike keeps CellProfiler's floating-point circle).
    shifted = np.zeros((labels.shape[0] + 7, labels.shape[1] + 3), dtype=np.int64)
    shifted[7:, 3:] = alone
    for img in (alone, shifted):
        ids_alone, values_alone = _compute(img)
        assert ids_alone.tolist() == [target]
        i = int(np.searchsorted(ids, target))
        for feature, v in values.items():
            tol = 1e-9 if feature.startswith("zernike_") else 0
            assert values_alone[feature][0] == pytest.approx(v[i], rel=tol, abs=tol if tol else 1e-12), feature


def test_extract_columns_match_columns():
    labels = _degenerate_labels()
    pixels = np.ones((2, *labels.shape))
    df = extract(pixels, labels, channel_names=["a", "b"], families=["shape"])
    cols = columns(["a", "b"], families=["shape"])
    assert list(df.columns) == ["label"] + [c.name for c in cols]
    assert all(c.channel is None and c.family == "shape" for c in cols)
    assert len(cols) == 15 + 7 + 7 + 7 + 10 + 30
    assert df["label"].tolist() == sorted(np.unique(labels[labels > 0]).tolist())
    assert (df.dtypes.iloc[1:] == np.float64).all()
    assert len(columns(["a"], families=["shape"], zernike_degree=4)) == len(cols) - 30 + 9
