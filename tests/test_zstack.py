"""Z stacks as 3-D objects: per-plane segmentation + stitching, and the ``volume`` feature family."""

import functools
from pathlib import Path

import numpy as np
import pandas as pd
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


# --- through scip.run ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack_folder(tmp_path_factory):
    return write_zstacks(tmp_path_factory.mktemp("zstacks"), n_stacks=3, seed=1)


def _run(stack_folder, out, **sections):
    import scip

    config = {"input": {"path": str(stack_folder["zstacks"]), "z": "stitch"}, "segment": {"method": "otsu"},
              "cluster": {"scheduler": "synchronous"}, "output": {"path": str(out)}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return scip.run(config, progress=False)


def test_run_with_stitch_gives_one_row_per_3d_object(stack_folder, tmp_path):
    import json

    truth_template = str(stack_folder["zstacks_labels"]) + "/{image_id}.tif"
    result = _run(stack_folder, tmp_path / "out", evaluate={"labels": truth_template})
    table = result.read()
    truth = pd.read_csv(stack_folder["zstacks_cells"])
    assert len(table) == len(truth) == 24
    assert [c for c in table if c.startswith("feat_")] == [c.name for c in columns(["ch0"], ["volume"])]
    evaluation = json.loads((tmp_path / "out" / "run.json").read_text())["evaluation"]
    assert evaluation["f1"] == 1.0 and evaluation["matched"] == 24
    # Each row's truth object, by its image and truth label: the volume found is the truth's, within 15 %.
    image = table["meta_image_id"].str.removeprefix("stack").astype(int)
    expected = truth.set_index(["image", "label"]).loc[list(zip(image, table["meta_truth_label"]))]
    np.testing.assert_allclose(table["feat_cell_volume_voxels"], expected["volume"], rtol=0.15)
    np.testing.assert_allclose(table["feat_cell_volume_centroid_z"], expected["centroid_z"], atol=0.5)
    # The thin caps at the top and bottom of a nucleus may fall under the threshold: a plane each at most.
    missing_planes = expected["z_extent"].to_numpy() - table["feat_cell_volume_z_extent"].to_numpy()
    assert ((missing_planes >= 0) & (missing_planes <= 2)).all()
    # The report's montage shows 3-D cells as maximum projections: 2-D crops.
    with np.load(tmp_path / "out" / "report_cells.npz") as samples:
        crops = [samples[k] for k in samples.files if "crop" in k]
    assert crops and all(c.ndim == 3 for c in crops)


def test_run_with_stitch_writes_3d_label_images(stack_folder, tmp_path):
    """output.labels on a z stack: (Z, H, W) label images; each row's meta_label covers exactly its voxels."""
    from skimage.measure import regionprops

    from scip.io import labels

    result = _run(stack_folder, tmp_path / "out", output={"labels": True, "polygons": True})
    table = result.read()
    assert table["geometry"].isna().all()  # an outline is 2-D: 3-D objects have none
    root = result.output / labels.LABELS
    assert len(table) == 24
    for image_id, rows in table.groupby("meta_image_id"):
        stack = labels.read_labels(root, image_id, "cell")
        assert stack.ndim == 3 and stack.dtype == np.uint32
        regions = {r.label: r for r in regionprops(stack.astype(np.int64))}
        for row in rows.itertuples():
            region = regions[row.meta_label]
            assert region.area == row.feat_cell_volume_voxels
            assert region.bbox == tuple(getattr(row, f"feat_cell_volume_{k}") for k in
                                        ("min_z", "min_row", "min_col", "max_z", "max_row", "max_col"))


def test_run_with_a_plane_number_segments_that_plane(stack_folder, tmp_path):
    table = _run(stack_folder, tmp_path / "out", input={"z": 12},
                 features={"families": ["bbox"]}).read()
    labels = tifffile.imread(stack_folder["zstacks_labels"] / "stack0.tif")[12]
    assert "feat_cell_bbox_min_row" in table and "feat_cell_volume_voxels" not in table
    # The middle plane cuts most nuclei: about as many 2-D objects as the truth has there.
    found = (table["meta_image_id"] == "stack0").sum()
    assert abs(found - len(np.unique(labels[labels > 0]))) <= 1


def test_stitch_config_problems_are_caught_up_front(stack_folder, tmp_path):
    import scip
    from scip.run import prepare

    base = {"input": {"path": str(stack_folder["zstacks"])}, "output": {"path": str(tmp_path / "o")}}
    with pytest.raises(scip.ConfigError, match=r"input.z: the images are z stacks \(24 planes in the first one, "
                                               r"stack0\).*stitch for 3-D objects"):
        prepare(base)
    with pytest.raises(scip.ConfigError, match=r"input.z: plane 24 does not exist in stack0, a z stack of 24 planes"):
        prepare({**base, "input": {**base["input"], "z": 24}})
    with pytest.raises(scip.ConfigError, match="features.families: shape, texture measure 2-D objects only"):
        prepare({**base, "input": {**base["input"], "z": "stitch"},
                 "features": {"families": ["volume", "shape", "texture"]}})
    with pytest.raises(scip.ConfigError, match="masks: extra masks are made in 2-D"):
        prepare({**base, "input": {**base["input"], "z": "stitch"}, "masks": [{"name": "core", "channel": 0}]})
    plan = prepare({**base, "input": {**base["input"], "z": "stitch"}})
    assert plan.config.features.families == ["volume"]  # the default for 3-D objects
    assert "feat_cell_volume_voxels" in plan.columns


def test_2d_images_under_stitch_are_one_plane_stacks(tmp_path):
    import scip
    from scip.datasets import make_fields

    fields = make_fields(1, size=(96, 96), cells_per_field=4, seed=5)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "f.tif", fields.images[0][0])
    common = {"input": {"path": str(tmp_path / "in")}, "cluster": {"scheduler": "synchronous"},
              "segment": {"method": "otsu"}}
    flat = scip.run({**common, "features": {"families": ["volume"]}, "output": {"path": str(tmp_path / "a")}},
                    progress=False).read()
    stacked = scip.run({**common, "input": {**common["input"], "z": "stitch"}, "output": {"path": str(tmp_path / "b")}},
                       progress=False).read()
    assert len(stacked) == len(flat) > 0
    assert (stacked["feat_cell_volume_z_extent"] == 1).all()
    features = [c for c in flat if c.startswith("feat_")]
    pd.testing.assert_frame_equal(stacked[features], flat[features])


def test_filters_measure_3d_cells(stack_folder, tmp_path):
    table = _run(stack_folder, tmp_path / "out",
                 filters=[{"measure": "area", "min": 1000}, {"measure": "signal", "channel": 0, "min": 0}]).read()
    # area counts voxels: the cells left are exactly those of at least 1000 voxels.
    assert 0 < len(table) < 24 and (table["feat_cell_volume_voxels"] >= 1000).all()
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert (skipped["step"] == "filter").sum() == 24 - len(table)


def test_split_cells_of_3d_labels():
    from scip.records import CellRecord, ImageRecord, Source
    from scip.steps.cells import split_cells

    labels = np.zeros((5, 20, 20), np.int32)
    labels[1:4, 5:9, 6:10] = 1   # inside
    labels[0:2, 12:15, 12:15] = 2  # on the first plane: cut by the stack
    pixels = np.arange(2 * labels.size, dtype=np.uint16).reshape(2, *labels.shape)
    record = ImageRecord(Source("s", 0, ("s.tif",)), ("a", "b"), pixels=pixels, labels={"cell": labels})
    image, inside, cut = split_cells(record, "cell", padding=2)
    assert isinstance(inside, CellRecord) and inside.status
    assert inside.bbox == (1, 5, 6, 4, 9, 10) and inside.origin == (1, 3, 4)
    # Padded in rows and columns only; the mask and crop line up with the image.
    assert inside.pixels.shape == (2, 3, 8, 8) and inside.masks["cell"].shape == (3, 8, 8)
    np.testing.assert_array_equal(inside.pixels, pixels[:, 1:4, 3:11, 4:12])
    assert inside.masks["cell"].sum() == (labels == 1).sum() and not inside.others.any()
    assert not cut.status and cut.status.reason == "touches the image border"
    assert len(split_cells(record, "cell", remove_border=False)) == 3
