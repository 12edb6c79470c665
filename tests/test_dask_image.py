"""The tiled threshold path against dask-image's exact, seam-free labelling (scip.engine.reference)."""

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from scip.engine.arrays import to_dask
from scip.engine.reference import as_dask, label_reference, otsu_level
from scip.segment import segment
import scip
from scip.io.labels import read_labels
from scip.slide import open_slide, write_synthetic_slide
from scip.segment.compare import compare_segmentations

SIDE, TILE = 2048, 256


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 2048 x 2048 synthetic nuclei slide (about 2,200 nuclei), 512-px storage chunks."""
    return write_synthetic_slide(tmp_path_factory.mktemp("dask-image") / "nuclei.ome.zarr", SIDE, chunk=512, seed=7,
                                 truth=False, workers=2)


def _same_objects(reference: np.ndarray, other: np.ndarray) -> dict:
    """Counts of an exact comparison: IoU 1 means the very same pixels."""
    c = compare_segmentations(reference, other, iou=1.0)
    assert c["matched"] == c["reference"] == c["tiled"], c
    assert c["split"] == c["merged"] == c["missing"] == c["extra"] == 0, c
    np.testing.assert_array_equal(reference > 0, other > 0)
    return c


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_tiled_threshold_path_equals_dask_image_labelling(slide, tmp_path, smooth):
    """``scip run`` in 256-px tiles with 48-px margins gives exactly the objects of one labelling of the whole
    thresholded image."""
    config = {"input": {"path": str(slide)},
              "segment": {"method": "otsu", "channel": 0, "smooth": smooth, "fill_holes": False, "min_size": 0,
                          "remove_border": False},
              "tiles": {"mode": "always", "size": TILE, "diameter": 24, "statistics": "image"},
              "features": {"families": ["bbox"]},
              "output": {"path": str(tmp_path / "out"), "labels": True}, "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    labels, level = label_reference(to_dask(open_slide(slide), 0), smooth=smooth)
    (image,) = result.summary["tiles"]["images"]
    # The image-wide statistics pass and the dask histogram bin the same values the same way.
    assert level == image["statistics"]["level"]
    reference = labels.compute(scheduler="synchronous")
    tiled = read_labels(result.output / "labels.zarr", image["image_id"], "cell")
    c = _same_objects(reference, tiled)
    assert c["reference"] > 2000
    assert reference.max() == c["reference"]  # numbered 1..N
    assert image["objects"] == c["reference"] == len(result.read())


def test_reference_equals_whole_image_segmentation_across_block_borders():
    """Blocks of 100 px, objects crossing them, against scip's own otsu on the whole numpy image."""
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, (300, 260))
    yy, xx = np.mgrid[:300, :260]
    for cy, cx, r in rng.uniform((0, 0, 4), (300, 260, 30), (40, 3)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 600
    image[20:280, 99:101] += 600  # a thin bar along a block border, through three blocks on each side
    for smooth, persist in ((0.0, True), (2.0, False)):
        labels, level = label_reference(image, smooth=smooth, chunks=100, persist=persist)
        whole = segment(image, "otsu", smooth=smooth, fill_holes=False, min_size=0)
        _same_objects(whole, labels.compute(scheduler="synchronous"))
    assert otsu_level(as_dask(image, 100)) == threshold_otsu(image)


def test_constant_image_has_no_objects():
    labels, level = label_reference(np.full((50, 70), 7.0), chunks=32)
    assert level == 7.0
    assert not labels.compute(scheduler="synchronous").any()


@pytest.mark.parametrize("image, smooth, message", [
    (np.zeros((2, 8, 8)), 0.0, r"expected a 2-D image \(H, W\), got shape \(2, 8, 8\)"),
    (np.zeros((8, 8)), -1.0, "smooth must be >= 0, got -1.0"),
])
def test_bad_input_names_the_value(image, smooth, message):
    with pytest.raises(ValueError, match=message):
        label_reference(image, smooth=smooth)
