"""Tests for scip.features: every feature against an independent reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk, ellipse
from skimage.measure import regionprops

from scip import features
from scip.features import FAMILIES, FeatureColumn, FeatureParams, column_name, columns, extract
from scip.features.crops import extract_crops

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


def test_families_and_registry():
    assert FAMILIES == ("shape", "intensity", "texture", "bbox", "volume")
    # volume is for z stacks (input.z: stitch); the 2-D default keeps the pinned column list.
    assert features.DEFAULT_FAMILIES == FAMILIES[:4]


def test_shape_known_values(label_image, pixels):
    df = extract(pixels, label_image, families=["shape"]).set_index("label")
    ring, rect = df.loc[12], df.loc[20]
    assert rect["feat_cell_shape_area"] == 6 * 15
    assert rect["feat_cell_shape_extent"] == 1.0
    assert rect["feat_cell_shape_euler_number"] == 1
    assert ring["feat_cell_shape_euler_number"] == 0  # one hole
    assert ring["feat_cell_shape_area_filled"] > ring["feat_cell_shape_area"]
    assert df.loc[21, "feat_cell_shape_area"] == 1


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
    assert {c.family for c in cols} == set(features.DEFAULT_FAMILIES)
    # channel keeps the caller's name; the column name is sanitized
    mean_gfp = next(c for c in cols if c.feature == "mean" and c.channel == "GFP 488")
    assert mean_gfp.name == "feat_nucleus_intensity_mean_GFP_488"
    with pytest.raises(AttributeError):
        mean_gfp.name = "x"  # frozen



def test_table_is_writable_and_refuses_a_missing_column(label_image, pixels, monkeypatch):
    # The table is one float64 block owned by the DataFrame: writing to one
    # column must not touch another, and a family that leaves a column out
    # is a bug to report, not a column of uninitialized memory.
    df = extract(pixels, label_image, families=("bbox",))
    before = df.iloc[:, 2].to_numpy().copy()
    df.iloc[:, 1] = -1.0
    np.testing.assert_array_equal(df.iloc[:, 2].to_numpy(), before)
    from scip.features import bbox
    real = bbox.compute
    monkeypatch.setattr(bbox, "compute", lambda objects, params: dict(list(real(objects, params).items())[1:]))
    with pytest.raises(RuntimeError, match="computed no values for columns"):
        extract(pixels, label_image, families=("bbox",))


def test_columns_remembered_but_each_caller_gets_its_own_list():
    first = columns(["a", "b"], mask_name="nucleus")
    first.clear()
    again = columns(["a", "b"], mask_name="nucleus")
    assert len(again) > 0 and again == columns(("a", "b"), mask_name="nucleus")
    assert again is not columns(["a", "b"], mask_name="nucleus")
    # unhashable parameters (lists) still give the same columns
    listed = columns(["a", "b"], intensity_range=[[0.0, 1.0], [0.0, 2.0]])
    assert [c.name for c in listed] == [c.name for c in columns(["a", "b"])]
    with pytest.raises(ValueError):
        columns(["GFP 488", "GFP-488"])
    with pytest.raises(ValueError):  # not remembered as a success either
        columns(["GFP 488", "GFP-488"])

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




def test_params_change_columns_and_are_checked():
    names = [c.name for c in columns(["DNA"], families=["texture"], distances=(1,))]
    assert "feat_cell_texture_contrast_1_45_DNA" in names
    assert not any("_3_" in n for n in names)
    assert columns(["DNA"], params=FeatureParams(distances=(2,))) == columns(["DNA"], distances=[2])
    with pytest.raises(TypeError, match="did you mean 'distances'"):
        columns(["DNA"], distance=(1,))
    for bad in (dict(distances=(0,)), dict(gray_levels=1), dict(edge_width=0), dict(intensity_range=[(5, 5)])):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FeatureParams(**bad)


def test_default_set_is_at_least_200_per_channel():
    cols = columns(["DNA", "GFP"])
    for channel in ("DNA", "GFP"):
        assert sum(c.channel == channel for c in cols) >= 200
    assert all(c.name.startswith("feat_cell_") for c in cols)


PINNED = Path(__file__).parent / "data" / "feature_columns.txt"


def test_default_column_names_are_pinned():
    # Renaming or reordering a column breaks every table users already have;
    # this list changes only on purpose (regenerate with `scip features --list
    # --names --channels DNA,GFP`).
    got = [c.name for c in columns(["DNA", "GFP"])]
    assert got == PINNED.read_text().split()


def _crop_inputs(label_image, pixels, pad=6):
    crops, masks, origins, backgrounds = [], [], [], []
    for label in np.unique(label_image[label_image > 0]):
        (rp,) = regionprops((label_image == label).astype(np.uint8))
        r0, c0, r1, c1 = rp.bbox
        r0, c0 = max(r0 - pad, 0), max(c0 - pad, 0)
        r1, c1 = min(r1 + pad, label_image.shape[0]), min(c1 + pad, label_image.shape[1])
        crop_labels = label_image[r0:r1, c0:c1]
        crops.append(pixels[:, r0:r1, c0:c1])
        masks.append(crop_labels == label)
        backgrounds.append(crop_labels == 0)
        origins.append((r0, c0))
    return crops, masks, origins, backgrounds


def test_crops_packed_equal_crops_one_by_one(label_image, pixels):
    crops, masks, origins, backgrounds = _crop_inputs(label_image, pixels)
    masks[2] = np.zeros_like(masks[2])  # an empty mask gives a row of NaN
    names = ["a", "b"]
    # max_pixels small enough to need several packed images
    packed = extract_crops(crops, masks, names, origins=origins, backgrounds=backgrounds, max_pixels=3000)
    assert len(packed) == len(crops)
    assert packed.iloc[2].isna().all()
    for i, (crop, mask, origin, bg) in enumerate(zip(crops, masks, origins, backgrounds)):
        if i == 2:
            continue
        alone = extract(crop, mask.astype(int), names, offset=origin, background=bg).drop(columns="label")
        # Exactly: packing must change no bit (issue 15, features independent of the batch).
        np.testing.assert_array_equal(packed.iloc[i].to_numpy(), alone.iloc[0].to_numpy(), err_msg=f"crop {i}")


def test_crops_band_masks_measure_background_around_the_cell():
    # A nucleus inside a cell: its background is around the cell, not in the cytoplasm.
    crop = np.full((1, 30, 30), 10.0)
    cell = np.zeros((30, 30), bool)
    cell[5:25, 5:25] = True
    nucleus = np.zeros((30, 30), bool)
    nucleus[12:18, 12:18] = True
    crop[0][cell] = 50.0
    crop[0][nucleus] = 100.0
    table = extract_crops([crop], [nucleus], ["DNA"], families=["intensity"], mask_name="nucleus",
                          backgrounds=[~cell], band_masks=[cell])
    assert table["feat_nucleus_intensity_background_DNA"].item() == 10.0
    assert table["feat_nucleus_intensity_corrected_mean_DNA"].item() == 90.0


def test_crops_errors():
    crop = np.zeros((1, 4, 4))
    with pytest.raises(ValueError, match="2 masks for 1 crops"):
        extract_crops([crop], [np.ones((4, 4), bool)] * 2)
    with pytest.raises(ValueError, match=r"mask 0 has shape \(3, 4\)"):
        extract_crops([crop], [np.ones((3, 4), bool)])
    assert len(extract_crops([], [], ["a"])) == 0


def test_crops_object_on_the_crop_edge_equals_extract():
    # Cells clipped by the image border reach the crop edge; packing must not
    # change what the Sobel filter sees there.
    rng = np.random.default_rng(3)
    crop = rng.gamma(2.0, 40.0, (2, 20, 24))
    mask = np.zeros((20, 24), bool)
    mask[0:9, 0:11] = True
    packed = extract_crops([crop, crop[:, ::-1, ::-1]], [mask, mask[::-1, ::-1]], ["a", "b"], origins=[(0, 0), (7, 9)])
    for i, (pixels, m, origin) in enumerate([(crop, mask, (0, 0)), (crop[:, ::-1, ::-1], mask[::-1, ::-1], (7, 9))]):
        alone = extract(pixels, m.astype(int), ["a", "b"], offset=origin).drop(columns="label")
        np.testing.assert_array_equal(packed.iloc[i].to_numpy(), alone.iloc[0].to_numpy())


def test_coordinate_sums_beyond_int32():
    """An object whose column sum passes 2**31 (int32 columns) still gets its exact centroid and box."""
    from scip.features._groups import index_dtype
    from scip.features._objects import Objects

    width = 70_000  # sum of 0 .. 69,999 = 2,449,965,000 > 2**31 - 1
    labels = np.ones((1, width), np.int32)
    objects = Objects(np.zeros((1, 1, width)), labels, labels == 0, ("a",))
    assert objects.cols.dtype == np.int32 and objects.groups.index.dtype == np.int32
    assert objects.local_centroid[1][0] == (width - 1) / 2
    assert objects.box_width[0] == width
    assert index_dtype(2**31) == np.int64 and index_dtype(2**31 - 1) == np.int32


@pytest.mark.parametrize("ndim", [2, 3])
def test_pixel_coordinates_and_boxes(ndim):
    """Objects' rows, columns, boxes and centroids equal their definitions, for objects in pieces far apart
    (steps of many rows within a run) and 3-D labels (rows modulo the height), with either grouping."""
    from scip.features._objects import Objects

    rng = np.random.default_rng(3)
    shape = (4, 37, 29) if ndim == 3 else (61, 29)
    labels = rng.integers(0, 9, shape) * (rng.random(shape) < 0.4)
    labels[..., 0, 0] = 50  # one pixel in the first row, the others in the last: a step of many rows
    labels[..., -1, 5:9] = 50
    labels.reshape(-1)[-1] = 51  # the last pixel alone
    pixels = np.zeros((1, *shape))
    got = Objects(pixels, labels, labels == 0, ("a",), compiled=True)
    ref = Objects(pixels, labels, labels == 0, ("a",), compiled=False)
    for name in ("rows", "cols", "box_min_row", "box_min_col", "box_height", "box_width"):
        a, b = getattr(got, name), getattr(ref, name)
        # pixel-sized coordinates as int32 (below 2**31 pixels), per-object boxes int64
        expected = np.int32 if name in ("rows", "cols") else np.int64
        assert a.dtype == expected and b.dtype == expected and np.array_equal(a, b), name
    height, width = shape[-2:]
    np.testing.assert_array_equal(got.rows, got.groups.index // width % height)
    np.testing.assert_array_equal(got.cols, got.groups.index % width)
    starts = got.groups.starts
    local_rows = got.rows - got.box_min_row[got.seg]
    local_cols = got.cols - got.box_min_col[got.seg]
    np.testing.assert_array_equal(got.box_height, np.maximum.reduceat(local_rows, starts) + 1)
    np.testing.assert_array_equal(got.box_width, np.maximum.reduceat(local_cols, starts) + 1)
    for a, local in zip(got.local_centroid, (local_rows, local_cols)):
        assert a.tobytes() == (np.add.reduceat(local.astype(np.float64), starts) / got.groups.counts).tobytes()
    for a, b in zip(got.local_centroid, ref.local_centroid):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.uint64, bool])
def test_compact_labels_is_int32_when_the_labels_fit(dtype):
    """The compiled kernels read int32 labels whatever the input dtype, as long as every label fits; an int32
    C-contiguous image is passed through without a copy."""
    from scip.features._groups import compact_labels

    labels = (np.arange(24).reshape(4, 6) % 7).astype(dtype)
    out = compact_labels(labels)
    assert out.dtype == np.int32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, labels.astype(np.int64))
    if dtype is np.int32:
        assert out is labels
    assert compact_labels(labels[:, ::2]).flags.c_contiguous


@pytest.mark.parametrize("big", [2 ** 31, 2 ** 40])
def test_labels_beyond_int32_stay_int64_and_measure_as_relabelled(big):
    """A label beyond int32 is not wrapped around: the labels stay int64, and the features equal those of the
    same objects numbered 1, 2 (labels only order the rows). Without the intensity family, whose kernels would
    compile an int64 specialization in this process (test_first_run checks there is one per kernel)."""
    from scip.features._groups import compact_labels

    small = np.zeros((30, 40), np.int64)
    small[3:12, 4:15] = 1
    small[15:27, 20:35] = 2
    large = np.where(small == 2, big, small)
    assert compact_labels(large).dtype == np.int64
    pixels = np.random.default_rng(1).random((2, 30, 40))
    families = ["shape", "texture", "bbox"]
    a = extract(pixels, small, families=families)
    b = extract(pixels, large, families=families)
    assert b["label"].tolist() == [1, big]
    np.testing.assert_array_equal(a.drop(columns="label").to_numpy(), b.drop(columns="label").to_numpy())
