"""Z stacks as 3-D objects: per-plane segmentation + stitching, and the ``volume`` feature family."""

import functools
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import regionprops_table
from skimage.segmentation import relabel_sequential

from scip.datasets import make_zstacks, write_zstacks
from scip.features import FAMILIES, FAMILIES_3D, column_name, columns, extract
from scip.features.volume import extract_volumes
from scip.metrics import match_labels
from scip.segment import segment
from scip.segment.stack import STITCH_THRESHOLD, segment_stack, stack_parameters

DSB = Path(__file__).parent / "data" / "stardist-dsb2018"


@pytest.fixture(scope="module")
def dsb3d():
    return tifffile.imread(DSB / "image3d.tif"), tifffile.imread(DSB / "labels3d.tif")


@pytest.fixture(scope="module")
def stacks():
    return make_zstacks(3, seed=1)


def _stitched(image, method, min_planes=2, **params):
    params = {**params, **stack_parameters(image, method, params)}
    return segment_stack(image, functools.partial(segment, method=method, **params), STITCH_THRESHOLD,
                         min_planes=min_planes)


# --- the volume family ---------------------------------------------------------------------------------------


def test_volume_family_matches_regionprops_on_3d_labels(dsb3d):
    image, truth = dsb3d
    table = extract(image[None], truth, ["DAPI"], families=["volume"])
    ref = regionprops_table(truth, image, properties=[
        "label", "area", "bbox", "centroid", "intensity_mean", "intensity_min", "intensity_max", "intensity_std"])
    col = functools.partial(column_name, "cell", "volume")
    assert np.array_equal(table["label"], ref["label"])
    expected = {
        "voxels": ref["area"], "min_z": ref["bbox-0"], "min_row": ref["bbox-1"], "min_col": ref["bbox-2"],
        "max_z": ref["bbox-3"], "max_row": ref["bbox-4"], "max_col": ref["bbox-5"],
        "centroid_z": ref["centroid-0"], "centroid_row": ref["centroid-1"], "centroid_col": ref["centroid-2"],
        "z_extent": ref["bbox-3"] - ref["bbox-0"],  # stitched objects are contiguous in z
    }
    for feature, values in expected.items():
        np.testing.assert_allclose(table[col(feature)], values, err_msg=feature)
    for feature, key in (("mean", "intensity_mean"), ("min", "intensity_min"), ("max", "intensity_max"),
                         ("std", "intensity_std")):
        np.testing.assert_allclose(table[col(feature, "DAPI")], ref[key], err_msg=feature)
    np.testing.assert_allclose(table[col("sum", "DAPI")], ref["intensity_mean"] * ref["area"])
    medians = [np.median(image[truth == label]) for label in ref["label"]]
    np.testing.assert_allclose(table[col("median", "DAPI")], medians)


def test_volume_z_extent_counts_planes_not_the_box():
    labels = np.zeros((6, 5, 5), np.int32)
    labels[[0, 1, 4], 2, 2] = 7  # one object on planes 0, 1 and 4: box of 5 planes, 3 planes hold it
    table = extract(np.ones((1, 6, 5, 5)), labels, families=["volume"])
    assert table["feat_cell_volume_z_extent"].tolist() == [3.0]
    assert table["feat_cell_volume_max_z"].tolist() == [5.0]


def test_volume_offset_moves_coordinates_only(dsb3d):
    image, truth = dsb3d
    plain = extract(image[None], truth, families=["volume"])
    moved = extract(image[None], truth, families=["volume"], offset=(10, 2000, 30000))
    for axis, shift in (("z", 10), ("row", 2000), ("col", 30000)):
        for feature in (f"min_{axis}", f"max_{axis}", f"centroid_{axis}"):
            np.testing.assert_allclose(moved[f"feat_cell_volume_{feature}"], plain[f"feat_cell_volume_{feature}"] + shift)
    np.testing.assert_array_equal(moved["feat_cell_volume_mean_ch0"], plain["feat_cell_volume_mean_ch0"])


def test_extract_volumes_of_crops_equals_the_whole_image(dsb3d):
    image, truth = dsb3d
    whole = extract(image[None], truth, ["DAPI"], families=["volume"], mask_name="nucleus")
    crops, masks, origins = [], [], []
    for label in (5, 1, 30, 51):
        z, r, c = np.nonzero(truth == label)
        lo = np.maximum([z.min() - 1, r.min() - 2, c.min() - 2], 0)
        hi = np.array([z.max(), r.max(), c.max()]) + 3
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        crops.append(image[None][(slice(None), *box)])
        masks.append(truth[box] == label)
        origins.append(tuple(int(v) for v in lo))
    crops.append(np.zeros((1, 2, 2, 2), np.uint16))
    masks.append(np.zeros((2, 2, 2), bool))
    origins.append((0, 0, 0))
    table = extract_volumes(crops, masks, ["DAPI"], mask_name="nucleus", origins=origins)
    assert list(table.columns) == [c.name for c in columns(["DAPI"], ["volume"], "nucleus")]
    expected = whole.set_index("label").loc[[5, 1, 30, 51]].to_numpy()
    np.testing.assert_allclose(table.to_numpy()[:4], expected)
    assert table.iloc[4].isna().all()  # an empty mask is a row of NaN


def test_volume_of_2d_labels_is_the_area():
    labels = np.zeros((10, 12), np.int32)
    labels[2:5, 3:9] = 1
    table = extract(np.ones((1, 10, 12)), labels, families=["volume", "shape"])
    assert table["feat_cell_volume_voxels"].tolist() == table["feat_cell_shape_area"].tolist() == [18.0]
    assert table["feat_cell_volume_z_extent"].tolist() == [1.0]


def test_2d_families_are_refused_for_3d_labels(dsb3d):
    image, truth = dsb3d
    assert "volume" in FAMILIES and FAMILIES_3D == ("volume",)
    with pytest.raises(ValueError, match="'shape', 'texture' measure 2-D objects only"):
        extract(image[None], truth, families=["volume", "shape", "texture"])
    with pytest.raises(ValueError, match=r"4-D \(C, Z, H, W\)"):
        extract(image, truth, families=["volume"])
    with pytest.raises(ValueError, match="one value per axis"):
        extract(image[None], truth, families=["volume"], offset=(1, 2))


# --- stitching a stack -------------------------------------------------------------------------------------


def test_match_labels_scores_3d_objects():
    truth = np.zeros((4, 6, 6), np.int32)
    truth[:2, :3, :3] = 1
    truth[2:, 3:, 3:] = 2
    pred = truth.copy()
    pred[0] = 0  # object 1 loses half its voxels: IoU 0.5
    result = match_labels(truth, pred, 0.5)
    assert (result.tp, result.fn, result.fp) == (2, 0, 0)
    np.testing.assert_allclose(sorted(result.ious), [0.5, 1.0])
    assert match_labels(truth, pred, 0.51).tp == 1


def test_stack_parameters_share_one_threshold_over_the_planes(stacks):
    image = stacks.images[0][0]
    level = stack_parameters(image, "otsu", {})["level"]
    smoothed = np.stack([gaussian(p.astype(float), 1.0, mode="nearest", preserve_range=True) for p in image])
    assert level == pytest.approx(threshold_otsu(smoothed), rel=1e-9)
    assert stack_parameters(image, "otsu", {"level": 5.0}) == {}  # a fixed level stays the user's


def test_segment_stack_finds_the_synthetic_nuclei_with_their_volumes(stacks):
    for image, truth, (_, cells) in zip(stacks.images, stacks.labels, stacks.cells.groupby("image")):
        pred = _stitched(image[0], "otsu")
        result = match_labels(truth, pred, 0.5)
        assert result.f1 == 1.0, result
        assert result.ious.min() > 0.85
        volumes = cells.set_index("label")["volume"]
        found = np.bincount(pred.ravel())
        for gt_label, pred_label in result.matches:
            assert found[pred_label] == pytest.approx(volumes[gt_label], rel=0.15)


def test_per_plane_thresholds_find_specks_in_empty_planes(stacks):
    # Why the planes share a threshold: Otsu of a plane without nuclei cuts its noise.
    image, truth = stacks.images[0][0], stacks.labels[0]
    own = segment_stack(image, functools.partial(segment, method="otsu"), STITCH_THRESHOLD)
    assert match_labels(truth, own, 0.5).n_pred > 3 * truth.max()


def test_min_planes_drops_one_plane_objects():
    stack = np.zeros((3, 8, 8), np.int32)
    stack[0, 1:4, 1:4] = 1
    stack[1, 1:4, 1:4] = 1
    stack[2, 6:8, 6:8] = 1  # alone on its plane
    assert segment_stack(stack, lambda p: p).max() == 2
    kept = segment_stack(stack, lambda p: p, min_planes=2)
    assert kept.max() == 1 and not kept[2].any()


def test_segment_stack_rejects_bad_input():
    stack = np.zeros((2, 4, 4))
    with pytest.raises(ValueError, match="stitch_threshold must be in"):
        segment_stack(stack, lambda p: p.astype(int), 1.5)
    with pytest.raises(ValueError, match="min_planes must be >= 1"):
        segment_stack(stack, lambda p: p.astype(int), min_planes=0)
    with pytest.raises(ValueError, match="no plane"):
        segment_stack(np.zeros((0, 4, 4)), lambda p: p.astype(int))
    shapes = iter([(4, 4), (4, 5)])
    with pytest.raises(ValueError, match=r"plane 1: .*\(4, 5\); expected \(4, 4\)"):
        segment_stack(stack, lambda p: np.zeros(next(shapes), int))


#: F1 at IoU 0.5 on the DSB 3-D sample (51 nuclei, many touching): otsu 0.354, watershed 0.282 (min_planes 2,
#: stitch_threshold 0.25, stack-wide threshold). Stitching the truth's own planes scores 0.732: touching
#: nuclei above one another join, which bounds any per-plane method.
DSB_FLOORS = {"otsu": 0.33, "watershed": 0.25}


@pytest.mark.parametrize("method", sorted(DSB_FLOORS))
def test_dsb_3d_sample_per_plane_segmentation_and_stitching(dsb3d, method):
    image, truth = dsb3d
    pred = _stitched(image, method)
    result = match_labels(truth, pred, 0.5)
    assert result.f1 >= DSB_FLOORS[method], result


def test_dsb_3d_stitching_the_truths_planes(dsb3d):
    _, truth = dsb3d
    pred = segment_stack(truth, lambda p: relabel_sequential(p)[0], STITCH_THRESHOLD)
    assert match_labels(truth, pred, 0.5).f1 >= 0.72


# --- synthetic data ------------------------------------------------------------------------------------------


def test_make_zstacks_truth_table(stacks):
    assert len(stacks.images) == 3 and stacks.images[0].shape == (1, 24, 96, 96)
    assert stacks.images[0].dtype == np.uint16 and stacks.channels == ("DNA",)
    for i, labels in enumerate(stacks.labels):
        cells = stacks.cells[stacks.cells.image == i]
        assert cells.label.tolist() == list(range(1, labels.max() + 1))
        assert cells.volume.tolist() == np.bincount(labels.ravel())[1:].tolist()
        # No nucleus touches a face of the stack or another nucleus.
        for face in (labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]):
            assert not face.any()
    again = make_zstacks(3, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again.images, stacks.images))


def test_write_zstacks_writes_imagej_z_stacks(tmp_path):
    out = write_zstacks(tmp_path, n_stacks=1, seed=3, nuclei_per_stack=4)
    with tifffile.TiffFile(out["zstacks"] / "stack0.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == (24, 96, 96)
    labels = tifffile.imread(out["zstacks_labels"] / "stack0.tif")
    assert labels.max() == 4
