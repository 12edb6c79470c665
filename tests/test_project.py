"""Z projection step and the check of image dimensions."""

import numpy as np
import pytest

from scip.records import ImageRecord, Source, skipped
from scip.steps.check import check_image
from scip.steps.project import project_z


def record(pixels, **kw):
    return ImageRecord(Source("a", 0, ("a.tif",)), tuple(f"ch{i}" for i in range(pixels.shape[0])), pixels=pixels, **kw)


@pytest.fixture
def stack():
    return np.random.default_rng(0).integers(0, 60000, (2, 7, 13, 11)).astype(np.uint16)


def test_max_keeps_dtype(stack):
    out = project_z(record(stack), "max")
    assert out.status and out.pixels.dtype == np.uint16
    np.testing.assert_array_equal(out.pixels, stack.max(axis=1))
    assert "project" in out.timings


@pytest.mark.parametrize("method, numpy", [("mean", np.mean), ("median", np.median)])
def test_mean_and_median_are_float32(stack, method, numpy):
    out = project_z(record(stack), method)
    assert out.pixels.dtype == np.float32 and out.pixels.shape == (2, 13, 11)
    np.testing.assert_allclose(out.pixels, numpy(stack.astype(np.float64), axis=1), rtol=1e-6)


def test_float_stack(stack):
    floats = stack.astype(np.float32) / 7
    for method, numpy in [("max", np.max), ("mean", np.mean), ("median", np.median)]:
        np.testing.assert_allclose(project_z(record(floats), method).pixels, numpy(floats, axis=1), rtol=1e-5)


def test_no_method_skips_with_the_reason(stack):
    out = project_z(record(stack, timings={"load": 1.0}), None)
    assert not out.status and out.status.step == "project" and out.pixels is None
    assert "z stack of 7 planes" in out.status.reason
    assert "input.z: max, mean or median" in out.status.reason and "stitch" in out.status.reason


def test_2d_images_and_skipped_records_pass_through(stack):
    flat = record(stack[:, 0])
    assert project_z(flat, None) is flat and project_z(flat, "mean") is flat
    gone = record(stack, status=skipped("load", "bad"))
    assert project_z(gone, "max") is gone and project_z(gone, None) is gone


def test_unknown_method_is_an_error(stack):
    with pytest.raises(ValueError, match="unknown method 'min'"):
        project_z(record(stack), "min")
    with pytest.raises(ValueError, match="unknown method -1"):
        project_z(record(stack), -1)


def test_a_plane_number_picks_that_plane(stack):
    out = project_z(record(stack), 3)
    assert out.status and out.pixels.shape == (2, 13, 11)
    np.testing.assert_array_equal(out.pixels, stack[:, 3])
    beyond = project_z(record(stack), 7)
    assert not beyond.status and beyond.pixels is None and beyond.status.step == "project"
    assert "plane 7 does not exist" in beyond.status.reason and "7 planes (0..6)" in beyond.status.reason
    flat = record(stack[:, 0])
    assert project_z(flat, 0) is flat  # a 2-D image is plane 0
    assert "the image is 2-D (plane 0 only)" in project_z(flat, 1).status.reason


def test_stitch_keeps_the_stack_and_makes_2d_images_one_plane_stacks(stack):
    kept = record(stack)
    assert project_z(kept, "stitch") is kept
    flat = project_z(record(stack[:, 0]), "stitch")
    assert flat.pixels.shape == (2, 1, 13, 11)
    assert check_image(flat, stack=True).status and check_image(kept, stack=True).status
    assert not check_image(record(stack[:, 0]), stack=True).status


def test_check_z_names_the_settings_and_the_image():
    from scip.steps.project import check_z

    check_z(None, 1, "a")  # 2-D images need no setting
    check_z(0, 1, "a")
    with pytest.raises(ValueError, match=r"input.z: plane 1 does not exist in a, 2-D \(plane 0 only\)"):
        check_z(1, 1, "a")
    check_z("stitch", 5, "a")
    with pytest.raises(ValueError, match=r"input.z: the images are z stacks \(5 planes in the first one, a\)"):
        check_z(None, 5, "a")
    with pytest.raises(ValueError, match=r"input.z: plane 5 does not exist in a, a z stack of 5 planes \(0..4\)"):
        check_z(5, 5, "a")


def test_check_rejects_unprojected_stacks(stack):
    out = check_image(record(stack))
    assert not out.status and out.status.step == "check" and out.pixels is None
    assert "4 dimensions" in out.status.reason and "7 planes" in out.status.reason
    assert "set input.z to max, mean or median" in out.status.reason and "stitch" in out.status.reason
    assert check_image(record(stack[:, 0])).status
    assert check_image(project_z(record(stack), "median")).status
