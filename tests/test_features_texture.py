"""Tests of the texture family against mahotas, cp_measure and scikit-image.

Haralick tolerance: ``|ours - ref| <= 1e-6 * |ref| + 1e-12``; the absolute
floor only matters for values that are ~0 (e.g. info_meas1 of a matrix close
to independence, where both sides are rounding noise). The largest relative
difference seen on these scenes is ~2e-12 (correlation, whose numerator
cancels). Caveat, not met in these data: info_meas2 is ``sqrt(1 - exp(-2 x))``
with ``x = HXY2 - H``; for a matrix that is exactly a product of its marginals
(x = 0) a rounding error ``e`` in ``x`` becomes ``sqrt(2 e)`` ~ 1e-8 on either side.
"""

from __future__ import annotations

import warnings

import mahotas
import numpy as np
import pytest
import scipy.stats
import skimage.filters
import tifffile
from mahotas.features.texture import cooccurence, haralick_features
from skimage.draw import ellipse

from scip.features import FeatureParams, column_name, columns, extract
from scip.features import texture
from scip.features._objects import Objects
from scip.features._stats import STATISTICS

#: Position in mahotas' direction list (_2d_deltas) of each angle 0, 45, 90, 135.
MAHOTAS_DIR = [0, 3, 2, 1]
NAMES = [name for name, _, _ in texture.HARALICK]


def _objects(pixels: np.ndarray, labels: np.ndarray) -> Objects:
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[None]
    labels = np.asarray(labels, dtype=np.int64)
    names = tuple(f"ch{i}" for i in range(pixels.shape[0]))
    return Objects(np.ascontiguousarray(pixels), np.ascontiguousarray(labels), labels == 0, names)


def _crop(levels: np.ndarray, labels: np.ndarray, label: int) -> np.ndarray:
    """The object's levels in its bounding box, every other pixel 0 (int32: mahotas'
    ``cooccurence`` overflows computing ``max + 1`` of a uint8 crop holding 255)."""
    mask = labels == label
    rr, cc = np.nonzero(mask)
    return np.where(mask, levels, 0)[rr.min():rr.max() + 1, cc.min():cc.max() + 1].astype(np.int32)


def _mahotas(crop: np.ndarray, d: int) -> np.ndarray:
    """(4, 13) in our angle order; NaN for a direction mahotas cannot compute."""
    out = np.full((4, 13), np.nan)
    try:
        out[:] = mahotas.features.haralick(crop, distance=d, ignore_zeros=True)[MAHOTAS_DIR]
        return out
    except ValueError:
        pass
    for a, k in enumerate(MAHOTAS_DIR):
        cmat = cooccurence(crop, k, symmetric=True, distance=d)
        try:
            out[a] = haralick_features([cmat], ignore_zeros=True)[0]
        except ValueError:
            pass
    return out


def _assert_haralick(ours: np.ndarray, ref: np.ndarray, msg: str = "") -> None:
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), msg
    atol = 1e-12
    with np.errstate(invalid="ignore"):
        bad = np.abs(ours - ref) > 1e-6 * np.abs(ref) + atol
    assert not bad.any(), f"{msg}: {[NAMES[f] for f in np.nonzero(bad)[-1]]} ours {ours[bad]} mahotas {ref[bad]}"


def _check_against_mahotas(objects: Objects, params: FeatureParams) -> int:
    feats = texture.haralick(objects, params)
    checked = 0
    for c in range(objects.pixels.shape[0]):
        levels = texture.quantize(objects, params, c)
        for i, label in enumerate(objects.ids):
            crop = _crop(levels, objects.labels, label)
            for k, d in enumerate(params.distances):
                _assert_haralick(feats[i, c, k], _mahotas(crop, d), f"label {label} channel {c} distance {d}")
                checked += 1
    return checked


def _random_scene(seed: int, size: int = 72, n: int = 9, channels: int = 2):
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int64)
    for k in range(n):
        r, c = rng.integers(0, size, 2)  # some objects cross the image edge
        rr, cc = ellipse(r, c, rng.integers(2, 14), rng.integers(2, 14), shape=labels.shape,
                         rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = 3 * k + 2  # later ones overwrite: touching and cut objects
    smooth = skimage.filters.gaussian(rng.normal(size=(channels, size, size)), sigma=(0, 2, 2))
    pixels = 100 + 1000 * smooth + rng.gamma(2.0, 20.0, (channels, size, size))
    return pixels, labels


@pytest.mark.parametrize("gray_levels", [8, 32])
@pytest.mark.parametrize("seed", [0, 1])
def test_haralick_matches_mahotas_random(seed, gray_levels):
    pixels, labels = _random_scene(seed)
    params = FeatureParams(distances=(1, 2, 5), gray_levels=gray_levels)
    assert _check_against_mahotas(_objects(pixels, labels), params) > 20


def test_haralick_matches_mahotas_fixed_range():
    pixels, labels = _random_scene(5)
    lo = np.percentile(pixels, 5, axis=(1, 2))
    hi = np.percentile(pixels, 90, axis=(1, 2))
    params = FeatureParams(distances=(1, 3), gray_levels=16, intensity_range=tuple(zip(lo, hi)))
    objects = _objects(pixels, labels)
    # objects then use fewer levels than 16 and different maxima: matrix size varies
    maxima = {int(texture.quantize(objects, params, 0)[labels == lab].max()) for lab in objects.ids}
    assert len(maxima) > 1
    _check_against_mahotas(objects, params)


@pytest.fixture(scope="module")
def nuclei():
    from pathlib import Path

    folder = Path(__file__).parent / "data" / "mnfinder"
    image = tifffile.imread(folder / "rpe1_3_crop.tif")
    labels = tifffile.imread(folder / "rpe1_3_crop_nuclei.tif")
    return image, labels


def test_haralick_matches_mahotas_real_nuclei(nuclei):
    image, labels = nuclei
    objects = _objects(image, labels)
    edge = set(np.unique(labels[[0, -1], :])) | set(np.unique(labels[:, [0, -1]]))
    assert len(edge - {0}) > 0  # nuclei cut by the crop edge are part of the check
    for gray_levels in (8, 32):
        _check_against_mahotas(objects, FeatureParams(distances=(3, 5), gray_levels=gray_levels))


def test_haralick_matches_cp_measure(nuclei):
    from cp_measure.core.measuretexture import get_texture

    image, labels = nuclei
    # A scene with a small object, so that cp_measure's all-NaN rule shows up too.
    labels = labels.astype(np.int64).copy()
    labels[2:4, 200:230] = 500
    objects = _objects(image, labels)
    params = FeatureParams(distances=(3, 5), gray_levels=32)
    feats = texture.haralick(objects, params)
    levels = texture.quantize(objects, params, 0)
    cp_names = ["AngularSecondMoment", "Contrast", "Correlation", "Variance", "InverseDifferenceMoment",
                "SumAverage", "SumVariance", "SumEntropy", "Entropy", "DifferenceVariance",
                "DifferenceEntropy", "InfoMeas1", "InfoMeas2"]
    cp_dir = {0: 0, 45: 3, 90: 2, 135: 1}  # CellProfiler's _00 .. _03 per angle
    for k, d in enumerate(params.distances):
        cp = get_texture(labels, levels, scale=d, gray_levels=256)
        for a, angle in enumerate(texture.ANGLES):
            ref = np.stack([cp[f"{name}_{d}_{cp_dir[angle]:02d}_256"] for name in cp_names], axis=1)
            ours = feats[:, 0, k, a]
            whole = np.isfinite(feats[:, 0, k]).all(axis=(1, 2))
            # cp_measure gives NaN for the whole object when any direction has no pair
            assert np.array_equal(np.isnan(ref).all(axis=1), ~whole)
            assert not whole[list(objects.ids).index(500)] and whole.sum() > 15
            _assert_haralick(ours[whole], ref[whole], f"distance {d} angle {angle}")


def test_mean_and_range_over_directions():
    pixels, labels = _random_scene(3, channels=1)
    labels[0, :5] = 99  # a line: only the 0 degree direction has pairs at distance 1
    df = extract(pixels, labels, families=["texture"], distances=(1, 4), gray_levels=16)
    for name in NAMES:
        for d in (1, 4):
            per = df[[column_name("cell", "texture", f"{name}_{d}_{a}", "ch0") for a in texture.ANGLES]].to_numpy()
            mean = df[column_name("cell", "texture", f"{name}_{d}_mean", "ch0")].to_numpy()
            rng = df[column_name("cell", "texture", f"{name}_{d}_range", "ch0")].to_numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                np.testing.assert_allclose(mean, np.nanmean(per, axis=1), rtol=1e-12, atol=1e-15)
                np.testing.assert_allclose(rng, np.nanmax(per, axis=1) - np.nanmin(per, axis=1), rtol=1e-12, atol=1e-15)
    line = df["label"].to_numpy() == 99
    ent = [column_name("cell", "texture", f"entropy_1_{a}", "ch0") for a in texture.ANGLES]
    assert np.isfinite(df.loc[line, ent[0]]).all() and df.loc[line, ent[1:]].isna().all(axis=None)
    assert df.loc[line, column_name("cell", "texture", "entropy_1_range", "ch0")].item() == 0.0
    big = df["label"].to_numpy() != 99
    # mahotas' own mean/ptp where all directions exist
    objects = _objects(pixels, labels)
    params = FeatureParams(distances=(4,), gray_levels=16)
    levels = texture.quantize(objects, params, 0)
    for label in df["label"][big]:
        crop = _crop(levels, labels, label)
        try:
            ref = mahotas.features.haralick(crop, distance=4, ignore_zeros=True, return_mean_ptp=True)
        except ValueError:
            continue
        row = df[df["label"] == label]
        ours = np.concatenate([row[[column_name("cell", "texture", f"{n}_4_{s}", "ch0") for n in NAMES]].to_numpy()[0]
                               for s in ("mean", "range")])
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("with_nonfinite", [False, True])
def test_mean_and_range_equal_the_plain_reduction_over_directions(with_nonfinite):
    # _mean_range reduces a reordered copy (and skips the masking when every entry is finite): the values
    # must be those of the plain reduction over axis -2, to the bit.
    rng = np.random.default_rng(3)
    per = rng.normal(size=(40, 2, 2, 4, 13)) * 10.0 ** rng.integers(-6, 6, size=(40, 2, 2, 4, 13))
    per[rng.random(per.shape) < 0.02] = -0.0
    if with_nonfinite:
        per[rng.random(per.shape) < 0.1] = np.nan
        per[rng.random(per.shape) < 0.02] = np.inf
        per[5] = np.nan
    finite = np.isfinite(per)
    n = finite.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        want_mean = np.where(n > 0, np.where(finite, per, 0.0).sum(axis=-2) / np.maximum(n, 1), np.nan)
    want_range = np.where(n > 0, np.where(finite, per, -np.inf).max(axis=-2)
                          - np.where(finite, per, np.inf).min(axis=-2), np.nan)
    mean, rng_ = texture._mean_range(per)
    np.testing.assert_array_equal(mean, want_mean)
    np.testing.assert_array_equal(rng_, want_range)
    assert np.array_equal(np.signbit(mean), np.signbit(want_mean))


def test_sobel_statistics_match_skimage():
    pixels, labels = _random_scene(4)
    labels[0:3, 0:3] = 77  # in the image corner
    labels[40, 40] = 78    # a single pixel
    df = extract(pixels, labels, families=["texture"])
    for c in range(pixels.shape[0]):
        grad = skimage.filters.sobel(pixels[c])
        for label in df["label"]:
            x = grad[labels == label]
            med = np.median(x)
            ref = {
                "mean": x.mean(), "median": med, "std": x.std(), "min": x.min(), "max": x.max(),
                "lower_quartile": np.percentile(x, 25), "upper_quartile": np.percentile(x, 75),
                "sum": x.sum(), "mad": np.median(np.abs(x - med)),
                "skewness": scipy.stats.skew(x) if len(x) > 1 else np.nan,
                "kurtosis": scipy.stats.kurtosis(x) if len(x) > 1 else np.nan,
            }
            row = df[df["label"] == label]
            for stat, _, _ in STATISTICS:
                got = row[column_name("cell", "texture", f"sobel_{stat}", f"ch{c}")].item()
                np.testing.assert_allclose(got, ref[stat], rtol=1e-9, atol=1e-9, err_msg=f"{label} {stat}")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_sobel_kernel_fills_the_given_buffer_with_skimage_values(dtype):
    # The caller's buffer is written and returned, every pixel (borders and corners included) equal to
    # skimage's gradient of the float64 image (up to rounding: skimage sums in another order), and stale
    # values in a reused buffer never leak through.
    from scip.features._glcm import sobel_runs

    rng = np.random.default_rng(11)
    image = (rng.random((23, 31)) * 250).astype(dtype)
    rows, cols = (a.ravel().astype(np.int32) for a in np.indices(image.shape))  # as Objects gives them
    keep = rng.random(rows.size) < 0.7  # gaps: runs along a row broken anywhere
    rows, cols = rows[keep], cols[keep]
    want = skimage.filters.sobel(image.astype(np.float64))[rows, cols]
    buffer = np.full(rows.size, np.nan)
    got = sobel_runs(np.ascontiguousarray(image, dtype=np.float64), rows, cols, buffer)
    assert got is buffer
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)



@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (2, 7), (5, 1), (6, 2), (3, 3), (23, 31)])
def test_sobel_kernel_is_the_formula_bit_for_bit_inside_and_on_the_border(shape):
    # The kernel takes the clamps only for pixels on the image border; inside and on the border
    # (tiny images included: a single row or column, where both neighbours are the pixel itself)
    # every value equals the documented formula evaluated in numpy in the same order, to the bit.
    from scip.features._glcm import sobel_runs

    rng = np.random.default_rng(sum(shape))
    image = rng.random(shape) * 100.0
    p = np.pad(image, 1, mode="edge")  # 'nearest' == 'reflect' for a 3x3 kernel
    a, b, d = p[:-2, :-2], p[:-2, 1:-1], p[:-2, 2:]
    e, f = p[1:-1, :-2], p[1:-1, 2:]
    g, h, i = p[2:, :-2], p[2:, 1:-1], p[2:, 2:]
    gr = 0.25 * (g - a) + 0.5 * (h - b) + 0.25 * (i - d)
    gc = 0.25 * (d - a) + 0.5 * (f - e) + 0.25 * (i - g)
    want = np.sqrt(gr * gr + gc * gc) * np.sqrt(0.5)
    rows, cols = (x.ravel().astype(np.int32) for x in np.indices(shape))
    got = sobel_runs(image, rows, cols, np.empty(rows.size))
    np.testing.assert_array_equal(got, want.ravel())

def test_degenerate_objects():
    H, W = 30, 40
    labels = np.zeros((H, W), np.int64)
    rng = np.random.default_rng(7)
    pixels = rng.uniform(0, 100, (1, H, W))
    labels[5, 5] = 1                       # one pixel
    labels[10, 3:12] = 2                   # horizontal line, one pixel high
    labels[14:22, 3:11] = 3                # constant intensity
    pixels[0, 14:22, 3:11] = 42.0
    labels[0:6, 30:40] = 4                 # touching the image edge (top, right)
    labels[20:30, 20:30] = 5               # two touching objects, same texture
    labels[20:30, 30:40] = 6
    pixels[0, 20:30, 30:40] = pixels[0, 20:30, 20:30]
    objects = _objects(pixels, labels)
    params = FeatureParams(distances=(1, 3), gray_levels=8)
    feats = texture.haralick(objects, params)   # never raises
    ids = list(objects.ids)
    assert np.isnan(feats[ids.index(1)]).all()
    line = feats[ids.index(2), 0]
    assert np.isfinite(line[:, 0]).all() and np.isnan(line[:, 1:]).all()
    const = feats[ids.index(3), 0]
    expected = dict(angular_second_moment=1, contrast=0, correlation=1, variance=0, inverse_difference_moment=1,
                    sum_average=2, sum_variance=0, sum_entropy=0, entropy=0, difference_variance=0.25,
                    difference_entropy=0, info_meas1=0, info_meas2=0)
    for f, name in enumerate(NAMES):
        assert np.all(const[..., f] == expected[name]), name
    # every non-trivial object against mahotas on its own crop: pairs across the
    # boundary of 5 and 6 must not count
    _check_against_mahotas(objects, params)
    levels = texture.quantize(objects, params, 0)
    both = np.where((labels == 5) | (labels == 6), levels, 0)[20:30, 20:40]
    joint = mahotas.features.haralick(both, distance=1, ignore_zeros=True)[MAHOTAS_DIR]
    assert not np.allclose(feats[ids.index(5), 0, 0], joint)
    # the table has every column, NaN where undefined
    df = extract(pixels, labels, families=["texture"], distances=(1, 3), gray_levels=8)
    assert df.shape == (6, 1 + 13 * 2 * 6 + 11)
    assert df[df.label == 1].filter(like="_entropy_").isna().all(axis=None)


def test_non_finite_pixels_give_nan_not_error():
    pixels, labels = _random_scene(6, channels=2)
    target = labels[labels > 0][0]
    r, c = np.argwhere(labels == target)[0]
    pixels[1, r, c] = np.nan
    objects = _objects(pixels, labels)
    feats = texture.haralick(objects, FeatureParams(distances=(1,)))
    i = list(objects.ids).index(target)
    assert np.isnan(feats[i, 1]).all() and np.isfinite(feats[i, 0, 0, 0]).all()


def test_quantization_rules():
    labels = np.zeros((4, 8), np.int64)
    labels[0, :7] = 1
    labels[2, :3] = 2  # constant
    labels[3, 0] = 3   # one pixel
    pixels = np.zeros((1, 4, 8))
    pixels[0, 0, :7] = [5, 10, 15, 19.99, 20, 25, 12.5]
    pixels[0, 2, :3] = 7.0
    pixels[0, 3, 0] = -3.0
    objects = _objects(pixels, labels)
    # per object: min -> 1, max -> L, constant and single pixels -> 1, background 0
    levels = texture.quantize(objects, FeatureParams(gray_levels=10), 0)
    v = pixels[0, 0, :7]
    np.testing.assert_array_equal(levels[0, :7], np.minimum(10, 1 + np.floor((v - 5) / 20 * 10)))
    assert levels[0, 0] == 1 and levels[0, 5] == 10
    np.testing.assert_array_equal(levels[2, :3], 1)
    assert levels[3, 0] == 1
    assert levels[labels == 0].max() == 0
    # fixed range: clipped to [lo, hi] first
    levels = texture.quantize(objects, FeatureParams(gray_levels=10, intensity_range=((10.0, 20.0),)), 0)
    np.testing.assert_array_equal(levels[0, :7], [1, 1, 6, 10, 10, 10, 3])
    np.testing.assert_array_equal(levels[2, :3], 1)
    assert levels[3, 0] == 1
    with pytest.raises(ValueError, match="intensity_range"):
        texture.quantize(_objects(np.zeros((2, 4, 8)), labels), FeatureParams(intensity_range=((0.0, 1.0),)), 1)


def test_extract_columns_and_count():
    pixels, labels = _random_scene(2, channels=2)
    names = ["DAPI", "GFP 488"]
    df = extract(pixels, labels, channel_names=names, families=["texture"])
    cols = columns(names, families=["texture"])
    assert list(df.columns) == ["label", *(c.name for c in cols)]
    assert len(cols) == 2 * (156 + 11)
    # grouped per channel, Haralick first, then the Sobel statistics
    assert all(c.channel == "DAPI" for c in cols[:167]) and all(c.channel == "GFP 488" for c in cols[167:])
    assert cols[0].name == "feat_cell_texture_angular_second_moment_3_0_DAPI"
    assert cols[5].name == "feat_cell_texture_angular_second_moment_3_range_DAPI"
    assert cols[155].name == "feat_cell_texture_info_meas2_5_range_DAPI"
    assert cols[156].name == "feat_cell_texture_sobel_mean_DAPI"
    assert "feat_cell_texture_contrast_5_135_GFP_488" in df.columns
    assert all(c.definition and c.unit for c in cols)
    assert all("5 px apart" in c.definition for c in cols if "_5_" in c.feature)
    assert next(c for c in cols if c.feature == "contrast_3_45").definition.count("(3, -3)") == 1
    assert {c.unit for c in cols if c.feature.startswith("sobel_")} == {"intensity/px", "1"}
    assert df.dtypes.iloc[1:].eq(np.float64).all()


@pytest.mark.parametrize("order", ["raster", "shuffled"])
def test_sobel_in_row_bands_equals_the_whole_image_gradient(order, monkeypatch):
    """Non-float64 pixels are converted and reduced band by band of rows: every object's Sobel statistics (objects
    on the top and bottom image rows included) are bit-identical to those of the kernel's gradient on the whole
    float64 image. Labels far from raster order fall back to the whole image; raster-ordered labels give several
    bands."""
    from scip.features._glcm import sobel_runs
    from scip.features._stats import stats_by_run

    rng = np.random.default_rng(5)
    labels = np.zeros((106, 47), np.int32)
    k = 0
    for r in range(0, 106, 15):
        for c in range(0, 47, 9):
            k += 1
            labels[r:r + 7 + (k % 4), c:c + 6] = k  # the first and last rows of the image hold objects
    if order == "shuffled":
        perm = np.concatenate(([0], rng.permutation(k) + 1))
        labels = perm[labels].astype(np.int32)
    pixels = (rng.random((2, *labels.shape)) * 4000).astype(np.uint16)
    objects = Objects(pixels, labels, labels == 0, ("a", "b"))
    monkeypatch.setattr(texture, "_BAND_PIXELS", 150)  # about half a row of objects
    bands = texture._row_bands(objects)
    if order == "raster":
        assert bands is not None and len(bands) > 4
        assert bands[0][2] == 0 and bands[-1][3] == labels.shape[0]
    else:
        assert bands is None
    buffers = {}
    for c in range(2):
        got = texture._sobel_stats(objects, c, bands, buffers)
        grad = sobel_runs(pixels[c].astype(np.float64), objects.rows, objects.cols, np.empty(objects.rows.shape[0]))
        want = stats_by_run(grad, objects.groups.starts, objects.groups.counts)
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
