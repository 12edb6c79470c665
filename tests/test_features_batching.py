"""A cell's features do not depend on which other cells share its batch (issue 15).

The pipeline measures all cells of a partition together, packed into one image
(:func:`scip.features.crops.extract_crops`). Zernike moments used to be
computed in positions of that packed image, so a pixel on the enclosing
circle was kept or dropped depending on where the packing put the crop (about
a quarter of the rows of ``zernike_0_0`` changed between
``images_per_partition: 1`` and ``4``), and centroids and centers of mass
changed in their last bits the same way. Every comparison here is exact: each
feature is computed per object in a fixed order of operations, so there is no
summation order that may legitimately differ between batches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import require
from scipy import ndimage
from skimage.segmentation import relabel_sequential

import scip
from scip.datasets import make_fields, write_example
from scip.features import DEFAULT_FAMILIES, FeatureParams, columns, extract
from scip.features.crops import extract_crops
from scip.records import CellRecord, ImageRecord, Source
from scip.steps.cells import split_cells
from scip.steps.features import featurize_cells

MASKS = ("cell", "nucleus")
PARAMS = {
    "default": FeatureParams(),
    # Co-occurrence distance beyond the packing margin (background_width + 1),
    # the highest Zernike degree, fixed quantization bounds.
    "edge": FeatureParams(distances=(1, 7), background_width=2, edge_width=2, zernike_degree=20,
                          intensity_range=((0.0, 3000.0),) * 3),
}


@pytest.fixture(scope="module")
def fields():
    return make_fields(3, cells_per_field=20, seed=4)


def _cells(fields, n_fields: int | None = None, remove_border: bool = True) -> list[CellRecord]:
    """The pipeline's cell records of the fields, each with a nucleus inside its cell."""
    out = []
    for i, (image, labels) in enumerate(zip(fields.images[:n_fields], fields.labels[:n_fields])):
        source = Source(image_id=str(i), index=i, paths=(f"field{i}.tif",), fields={}, locator=None)
        record = ImageRecord(source=source, channels=fields.channels, pixels=image,
                             labels={"cell": labels.astype(np.int32)})
        for cell in split_cells(record, "cell", remove_border=remove_border):
            if isinstance(cell, CellRecord) and cell.status:
                nucleus = ndimage.binary_erosion(cell.masks["cell"], iterations=3)
                out.append(cell.with_(masks={**cell.masks, "nucleus": nucleus}))
    return out


def _features(cells: list[CellRecord], params: FeatureParams) -> list[dict[str, float]]:
    done = featurize_cells(list(cells), "cell", MASKS, DEFAULT_FAMILIES, params)
    assert all(c.status for c in done), [c.status for c in done if not c.status]
    return [c.features for c in done]


@pytest.mark.parametrize("name", list(PARAMS))
def test_feature_step_same_values_in_any_batch(fields, name):
    params = PARAMS[name]
    cells = _cells(fields)
    n = len(cells)
    assert n >= 40
    together = pd.DataFrame(_features(cells, params))
    expected = [c.name for m in MASKS for c in columns(fields.channels, DEFAULT_FAMILIES, m, params)]
    assert list(together.columns) == expected  # every family, both masks
    # Not NaN against NaN: each column has real values to compare.
    assert together.notna().any().all(), list(together.columns[~together.notna().any()])

    rng = np.random.default_rng(0)
    compositions = {
        "alone": [[i] for i in range(n)],
        "reversed": [list(range(n))[::-1]],
        "odd and even": [list(range(0, n, 2)), list(range(1, n, 2))],
    }
    order = rng.permutation(n)
    cuts = np.sort(rng.choice(np.arange(1, n), 6, replace=False))
    compositions["shuffled, uneven batches"] = [part.tolist() for part in np.split(order, cuts)]
    for label, batches in compositions.items():
        rows: list[dict[str, float] | None] = [None] * n
        for batch in batches:
            for i, row in zip(batch, _features([cells[i] for i in batch], params)):
                rows[i] = row
        got = pd.DataFrame(rows)
        assert list(got.columns) == expected
        for col in expected:
            np.testing.assert_array_equal(got[col].to_numpy(), together[col].to_numpy(), err_msg=f"{label}: {col}")


def test_crops_same_values_for_any_packed_image_size(fields):
    # max_pixels decides how many crops share a packed image, and where each lands.
    cells = _cells(fields)
    crops = [c.pixels for c in cells]
    masks = [c.masks["cell"] for c in cells]
    origins = [c.origin for c in cells]
    backgrounds = [~c.masks["cell"] & ~c.others for c in cells]
    tables = [extract_crops(crops, masks, fields.channels, origins=origins, backgrounds=backgrounds,
                            max_pixels=max_pixels)
              for max_pixels in (1, 5_000, 40_000, 4_000_000)]
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0], check_exact=True)


@pytest.mark.parametrize("pad", [0, 1, 2, 5])
def test_crop_placement_mirrors_as_numpy_symmetric_pad(pad):
    # The packed image's margin must be exactly np.pad(mode="symmetric") of the crop (the Sobel filter's
    # boundary), for crops wider and thinner than the margin and at the canvas' own edges.
    from scip.features.crops import _place

    rng = np.random.default_rng(pad)
    for h, w in [(1, 1), (1, 7), (pad, pad + 1), (pad + 1, pad), (6, 9), (9, 4)]:
        if h == 0 or w == 0:
            continue
        crop = rng.integers(0, 60_000, (2, h, w)).astype(np.uint16)
        for row, col in [(0, 0), (3, 1), (0, 4)]:
            want = np.zeros((2, 30, 30), np.uint16)
            want[:, row:row + h + 2 * pad, col:col + w + 2 * pad] = np.pad(
                crop, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
            got = np.zeros_like(want)
            _place(got, crop, row, col, pad)
            np.testing.assert_array_equal(got, want, err_msg=f"crop {h}x{w} at ({row}, {col}), pad {pad}")


def test_packed_zernike_equals_cellprofiler_on_the_whole_image(fields):
    """Crops measured in the pipeline give CellProfiler's Zernike moments of the whole field."""
    cp_shape = require("cp_measure.core.measureobjectsizeshape")
    labels = fields.labels[0].astype(np.int64)
    seq, forward, _ = relabel_sequential(labels)
    cells = _cells(fields, n_fields=1, remove_border=False)
    table = extract_crops([c.pixels for c in cells], [c.masks["cell"] for c in cells], fields.channels,
                          families=["shape"], origins=[c.origin for c in cells])
    ref = cp_shape.get_zernike(seq, None, FeatureParams().zernike_degree)
    rows = np.asarray(forward[np.array([c.label for c in cells])]) - 1
    assert len(rows) == seq.max() >= 15
    for key, expected in ref.items():
        n, m = key.split("_")[1:]
        # Not bit for bit: our moments come from monomial sums, CellProfiler's
        # from Horner per pixel (round-off ~1e-14, see scip.features._zernike).
        # A pixel on the circle kept or dropped differently would show as
        # ~1 / (pi R^2), i.e. 1e-3 for these cells.
        np.testing.assert_allclose(table[f"feat_cell_shape_zernike_{n}_{m}"], np.asarray(expected)[rows],
                                   rtol=1e-9, atol=1e-12, err_msg=key)


def test_extract_offset_places_the_object_in_image_coordinates(fields):
    # The slide pipeline measures windows with their offset: an object gives
    # the values it has in the whole image, Zernike's rounding included.
    labels = fields.labels[0].astype(np.int64)
    height, width = labels.shape
    families = ["shape", "bbox"]
    checked = 0
    for i, box in enumerate(ndimage.find_objects(labels)):
        if box is None or min(box[0].start, box[1].start) < 8 or box[0].stop > height - 8 or box[1].stop > width - 8:
            continue
        alone = np.where(labels == i + 1, i + 1, 0)
        r0, c0 = box[0].start - 4, box[1].start - 6
        window = alone[r0:box[0].stop + 5, c0:box[1].stop + 7]
        got = extract(np.zeros((1, *window.shape)), window, families=families, offset=(r0, c0))
        want = extract(np.zeros((1, *alone.shape)), alone, families=families)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        checked += 1
    assert checked >= 10


def test_offsets_must_be_whole_pixels():
    labels = np.zeros((6, 6), dtype=int)
    labels[1:4, 1:4] = 1
    with pytest.raises(ValueError, match=r"row_offset must be whole pixels, got 0\.5"):
        extract(np.ones((1, 6, 6)), labels, offset=(0.5, 0))
    with pytest.raises(ValueError, match=r"origin 1 must be \(row, col\) in whole pixels, got \(2, 1\.5\)"):
        extract_crops([np.ones((1, 6, 6))] * 2, [labels == 1] * 2, origins=[(0, 0), (2, 1.5)])
    # Whole numbers as floats are fine.
    table = extract_crops([np.ones((1, 6, 6))], [labels == 1], families=["bbox"], origins=[(2.0, 3.0)])
    assert table["feat_cell_bbox_min_row"].item() == 3.0 and table["feat_cell_bbox_min_col"].item() == 4.0


def test_pipeline_same_table_for_any_images_per_partition(tmp_path):
    paths = write_example(tmp_path / "data", n_events=4, n_fields=4, seed=0)
    tables = {}
    for per_partition in (1, 4):
        config = {
            "input": {"path": str(paths["fields"]), "pattern": r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff",
                      "channels": ["DNA", "cyto", "marker"], "images_per_partition": per_partition},
            "segment": {"method": "watershed", "channel": "cyto", "remove_border": True},
            # Dataset-wide reductions too: they must not depend on the partitioning either.
            "illumination": {"smooth": "gaussian", "size": 50},
            "normalize": {"lower": 0.01, "upper": 0.99},
            "output": {"path": str(tmp_path / f"out{per_partition}")},
            "cluster": {"scheduler": "synchronous"},
        }
        result = scip.run(config, progress=False)
        tables[per_partition] = (pd.read_parquet(result.table)
                                 .sort_values(["meta_image_id", "meta_label"]).reset_index(drop=True))
    one, four = tables[1], tables[4]
    assert len(one) >= 40
    assert list(one.columns) == list(four.columns)
    features = [c for c in one.columns if c.startswith("feat_")]
    assert len(features) > 600 and any("zernike" in c for c in features)
    assert one["meta_label"].tolist() == four["meta_label"].tolist()
    for col in features:
        np.testing.assert_array_equal(four[col].to_numpy(), one[col].to_numpy(), err_msg=col)


def test_feature_values_are_python_floats_and_earlier_values_stay(fields, monkeypatch):
    # The rows leave the table as Python floats in one conversion, whatever a column's dtype (a boolean column
    # makes a plain ``to_numpy()`` an object array of bools); a value set before the step (a micronucleus
    # count) keeps its type.
    import scip.steps.features as step

    cells = [c.with_(features={"micronucleus_count": 2}) for c in _cells(fields, n_fields=1)[:5]]
    real = step.extract_crops

    def with_a_boolean_column(*args, **kwargs):
        table = real(*args, **kwargs)
        return table.assign(**{table.columns[0]: np.arange(len(table)) % 2 == 1})

    monkeypatch.setattr(step, "extract_crops", with_a_boolean_column)
    done = featurize_cells(cells, "cell", MASKS, DEFAULT_FAMILIES, FeatureParams())
    assert all(c.status for c in done)
    for i, c in enumerate(done):
        assert type(c.features.pop("micronucleus_count")) is int
        assert {type(v) for v in c.features.values()} == {float}
        assert c.features[next(iter(c.features))] == float(i % 2)
