"""Image-wide statistics computed from windows (scip.segment.image_statistics) and the slide pass that uses them."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage as ndi
from skimage import filters, morphology

from scip.segment import segment
from scip.segment.image_statistics import image_statistic, whole_image_parameters
import scip
from scip.segment.compare import compare_segmentations
from scip.segment.tiling import Tiling

from conftest import require

MOSAIC = Path(__file__).parent / "data" / "mnfinder" / "mosaic"


@pytest.fixture(scope="module")
def uneven():
    """A uint16 image whose background and objects change in brightness from left to right."""
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 150.0, (300, 340)) + 900 * np.linspace(0.2, 1.0, 340)[None]
    return image.astype(np.uint16)


def _tiled(image, method, params, size=64, margin=16):
    """The statistic computed tile by tile, cores only, summaries merged in raster order."""
    stat = image_statistic(method, params)
    tiling = Tiling(image.shape, size, margin)
    cores = []
    for r, c in tiling.tiles():
        wy0, wy1, wx0, wx1 = tiling.window(r, c)
        y0, y1, x0, x1 = tiling.core(r, c)
        cores.append(stat.transform(image[wy0:wy1, wx0:wx1])[:, y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0])
    ranges = stat.summarize_range(cores[0])
    for core in cores[1:]:
        ranges = ranges.merge(stat.summarize_range(core))
    if not stat.needs_histogram:
        return stat.finish(ranges)
    hist = stat.summarize_histogram(cores[0], ranges)
    for core in cores[1:]:
        hist = hist.merge(stat.summarize_histogram(core, ranges))
    return stat.finish(ranges, hist)


def test_otsu_from_tiles_is_scikit_image_otsu_of_the_whole_image(uneven):
    smoothed = ndi.gaussian_filter(uneven.astype(float), 1.0, mode="nearest")
    expected = filters.threshold_otsu(smoothed)
    assert _tiled(uneven, "otsu", {"smooth": 1.0})["level"] == expected
    assert _tiled(uneven, "watershed", {"smooth": 1.0, "threshold": "otsu"})["level"] == expected


def test_li_from_tiles_is_within_a_bin_of_scikit_image_li(uneven):
    smoothed = ndi.gaussian_filter(uneven.astype(float), 2.0, mode="nearest")
    got = _tiled(uneven, "li", {"smooth": 2.0})["level"]
    width = np.ptp(smoothed) / 65536
    assert abs(got - filters.threshold_li(smoothed)) < 3 * width


def test_percentiles_are_exact_for_integer_pixels_and_close_after_smoothing(uneven):
    got = _tiled(uneven, "cellpose", {"smooth": 0.0})["norm_range"]
    np.testing.assert_array_equal(got, [np.percentile(uneven, [1, 99])])
    smoothed = ndi.gaussian_filter(uneven.astype(float), 1.5, mode="nearest")
    got = _tiled(uneven, "cellpose", {"smooth": 1.5})["norm_range"]
    np.testing.assert_allclose(got, [np.percentile(smoothed, [1, 99])], atol=2 * np.ptp(smoothed) / 65536)


def test_spot_mean_plus_k_std_of_the_top_hat(uneven):
    tophat = morphology.white_tophat(uneven.astype(float), morphology.disk(3))
    got = _tiled(uneven, "spot", {"smooth": 0.0, "radius": 3, "k": 2.5, "threshold": "std"})["level"]
    assert got == pytest.approx(tophat.mean() + 2.5 * tophat.std(), rel=1e-9)


def test_a_fixed_level_gives_what_the_method_computes_itself(uneven):
    for method in ("otsu", "li", "watershed"):
        level = whole_image_parameters(uneven, method, {"smooth": 1.0, "threshold": "otsu"})["level"]
        own = segment(uneven, method)
        fixed = segment(uneven, method, level=level)
        if method == "li":   # the histogram's Li is within a bin of scikit-image's, not identical
            assert np.mean(own == fixed) > 0.999
        else:
            np.testing.assert_array_equal(own, fixed)
    # A level above every pixel finds nothing, even where this image alone would have a threshold.
    assert segment(uneven, "otsu", level=1e9).max() == 0


def test_methods_without_a_statistic_or_with_one_given():
    assert image_statistic("otsu", {"smooth": 1.0, "level": 5.0}) is None
    assert image_statistic("cellpose", {"norm_range": [[0, 1]]}) is None
    assert image_statistic("unknown", {}) is None


def test_unet_with_its_own_percentiles_as_norm_range_is_unchanged():
    require("torch")
    image = tifffile.imread(MOSAIC / "2022-03-18_RPE1_4.tif")[:256, :256]
    norm = whole_image_parameters(image, "unet", {"model": "nuclei"})["norm_range"]
    np.testing.assert_array_equal(segment(image, "unet"), segment(image, "unet", norm_range=norm))
    # A brighter normalization range changes what the network sees, so the labels change.
    assert not np.array_equal(segment(image, "unet"), segment(image, "unet", norm_range=[[norm[0][0], 4 * norm[0][1]]]))


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """Four real mnfinder crops of different brightness (a dim RPE1, a bright RPE1, two U2OS) in a 2 x 2 zarr mosaic."""
    files = sorted(MOSAIC.glob("*.tif"))
    images = [tifffile.imread(f) for f in files]
    image = np.block([[images[0], images[1]], [images[2], images[3]]])
    path = tmp_path_factory.mktemp("mosaic") / "mosaic.zarr"
    arr = zarr.create_array(str(path), shape=image.shape, chunks=(256, 256), dtype=image.dtype)
    arr[...] = image
    return path, image


def _slide(path, out, method, statistics, **segment):
    config = {"input": {"path": str(path)}, "segment": {"method": method, "channel": 0, **segment},
              "tiles": {"mode": "always", "size": 256, "diameter": 30, "statistics": statistics},
              "features": {"families": ["bbox"]}, "output": {"path": str(out), "overwrite": True, "labels": True},
              "cluster": {"scheduler": "synchronous"}}
    return scip.run(config, progress=False)


def _labels(result):
    return np.asarray(zarr.open_array(str(result.output / "labels.zarr/0/labels/cell/0"), mode="r"))


@pytest.mark.parametrize("method", ["watershed", "otsu"])
def test_real_mosaic_tiled_equals_whole_image(mosaic, tmp_path, method):
    """Acceptance 1 on real images: with the slide-wide threshold, tiles find the whole image's objects."""
    path, image = mosaic
    # Border objects are in both label images (a tiled image, like a whole one, lists them in skipped.csv).
    whole = segment(image, method)
    result = _slide(path, tmp_path / "slide", method, "slide")
    c = compare_segmentations(whole, _labels(result), iou=0.95)
    assert c["reference"] > 150
    assert c["matched"] >= 0.99 * c["reference"], c
    assert c["split"] == 0 and c["merged"] == 0, c
    assert c["missing"] == 0 and c["extra"] == 0, c
    (tiled,) = result.summary["tiles"]["images"]
    assert tiled["objects"] == c["tiled"] == result.summary["counts"]["cells"]["found"]
    smoothed = ndi.gaussian_filter(image.astype(np.float32).astype(float), 1.0, mode="nearest")
    assert result.summary["tiles"]["statistics"] == "image"
    assert tiled["statistics"] == {"statistic": "otsu", "level": filters.threshold_otsu(smoothed)}


def test_per_window_statistics_differ_on_the_real_mosaic(mosaic, tmp_path):
    """Why the slide pass exists: per-window thresholds find other objects on unevenly bright images."""
    path, image = mosaic
    whole = segment(image, "otsu")
    result = _slide(path, tmp_path / "window", "otsu", "window")
    c = compare_segmentations(whole, _labels(result), iou=0.95)
    assert c["matched"] < 0.9 * c["reference"], c
    assert result.summary["tiles"]["statistics"] == "tile"
    assert result.summary["tiles"]["images"][0]["statistics"] == {}


def test_unet_windows_get_the_slide_normalization_and_one_forward_pass_each(tmp_path):
    """U-Net tiles: slide-wide percentiles, and the network's own tiling off inside a window."""
    require("torch")
    image = tifffile.imread(MOSAIC / "2022-10-14_U2OS_1.tif")
    path = tmp_path / "u2os.zarr"
    zarr.create_array(str(path), shape=image.shape, chunks=(256, 256), dtype=image.dtype)[...] = image
    config = {"input": {"path": str(path)}, "segment": {"method": "unet", "channel": 0, "tile": 128},
              "tiles": {"mode": "always", "size": 256, "margin": 128}, "features": {"families": ["bbox"]},
              "output": {"path": str(tmp_path / "out"), "labels": True}, "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    params = result.summary["tiles"]["images"][0]["params"]
    assert params["tile"] == 512   # the window, 256 + 2 x 128
    np.testing.assert_array_equal(params["norm_range"], [np.percentile(image, [1, 99.8])])
    # The shipped model splits and merges by the median object area: every window is given the whole image's,
    # taken before the split (here every tile's objects: 3 x 3 tiles <= AREA_TILES).
    from scip.segment.unet.split_merge import median_area

    stats = result.summary["tiles"]["images"][0]["statistics"]
    before = segment(image, "unet", tile=1024, split_merge=False)
    assert stats["median_area"] == params["median_area"] == median_area(before)
    assert stats["median_area_objects"] == before.max() and stats["median_area_tiles"] == 9
    whole = segment(image, "unet", tile=1024)
    assert not np.array_equal(whole, before)  # the split/merge changed something, so the test checks it
    c = compare_segmentations(whole, _labels(result), iou=0.95)
    assert c["reference"] > 30
    assert c["matched"] >= 0.99 * c["reference"], c
    assert c["split"] == c["merged"] == c["missing"] == c["extra"] == 0, c


def test_the_median_area_comes_from_every_tile_or_an_even_sample():
    from scip.engine.tiles import AREA_TILES, area_tiles

    small = Tiling((4 * 256, 4 * 256), 256, 64)
    assert area_tiles(small) == small.tiles()
    big = Tiling((40 * 256, 30 * 256), 256, 64)
    sample = area_tiles(big)
    assert len(sample) == len(set(sample)) == AREA_TILES
    assert sample[0] == (0, 0) and sample[-1] == (39, 29)
    rows = {r for r, _ in sample}
    assert len(rows) >= AREA_TILES - 1  # spread over the image, not its first rows


def test_unet_windows_without_objects_keep_their_own_median_and_say_so(tmp_path, caplog):
    """No object in the sampled windows: no image-wide median area, a warning, and the run goes on."""
    require("torch")
    caplog.set_level("WARNING", logger="scip")
    image = np.full((300, 300), 100, np.uint16)
    image[::7] = 101  # not constant (the statistics need a range), but nothing a nucleus model finds
    path = tmp_path / "blank.zarr"
    zarr.create_array(str(path), shape=image.shape, chunks=(128, 128), dtype=image.dtype)[...] = image
    config = {"input": {"path": str(path)}, "segment": {"method": "unet", "channel": 0},
              "tiles": {"mode": "always", "size": 128, "margin": 64}, "features": {"families": ["bbox"]},
              "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    entry = result.summary["tiles"]["images"][0]
    assert "median_area" not in entry["statistics"] and "median_area" not in entry["params"]
    assert "no median object area from the 9 window(s) sampled, no object in them" in caplog.text
    assert result.summary["counts"]["cells"]["found"] == 0
