"""Tests of the synthetic example data and its ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.measure import regionprops

from scip.datasets import (CELL_CLASSES, STAINS, SyntheticDataset, make_fields, make_ifc_events, make_zstacks,
                           write_example)
from scip.io.ifc_zarr import read_ifc_events, read_ifc_header

CROSS = ndi.generate_binary_structure(2, 1)


@pytest.fixture(scope="module")
def events() -> SyntheticDataset:
    return make_ifc_events(300, seed=7, touching_fraction=0.2)


@pytest.fixture(scope="module")
def fields() -> SyntheticDataset:
    return make_fields(3, seed=7, cells_per_field=25, touching_fraction=0.3)


def _same(a: SyntheticDataset, b: SyntheticDataset) -> bool:
    return (
        a.channels == b.channels
        and len(a.images) == len(b.images)
        and all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
        and all(np.array_equal(x, y) for x, y in zip(a.labels, b.labels))
        and a.cells.equals(b.cells)
    )


def test_same_seed_same_data_different_seed_different():
    assert _same(make_ifc_events(20, seed=3), make_ifc_events(20, seed=3))
    assert not _same(make_ifc_events(20, seed=3), make_ifc_events(20, seed=4))
    assert _same(make_fields(1, seed=3, size=(96, 96), cells_per_field=4),
                 make_fields(1, seed=3, size=(96, 96), cells_per_field=4))
    assert not _same(make_fields(1, seed=3, size=(96, 96), cells_per_field=4),
                     make_fields(1, seed=4, size=(96, 96), cells_per_field=4))


def test_channel_selection_keeps_cells_and_noise():
    full = make_ifc_events(5, seed=2)
    sub = make_ifc_events(5, seed=2, channels=("marker", "DNA"))
    assert sub.channels == ("marker", "DNA")
    for a, b in zip(full.images, sub.images):
        np.testing.assert_array_equal(b, a[[2, 0]])
    with pytest.raises(ValueError, match="unknown channel"):
        make_ifc_events(1, channels=("DNA", "nope"))
    with pytest.raises(ValueError, match="dim_fraction"):
        make_ifc_events(1, dim_fraction=0.7, dead_fraction=0.5)


@pytest.mark.parametrize("name", ["events", "fields"])
def test_types_and_shapes(name, request):
    data = request.getfixturevalue(name)
    assert data.channels == STAINS
    assert list(data.cells.columns) == [
        "image", "label", "cell_class", "area", "touching", "touches_border", "centroid_row", "centroid_col",
    ]
    for image, labels in zip(data.images, data.labels):
        assert image.dtype == np.uint16 and labels.dtype == np.uint16
        assert image.shape == (len(STAINS),) + labels.shape
    assert set(data.cells.cell_class) <= set(CELL_CLASSES)


@pytest.mark.parametrize("name", ["events", "fields"])
def test_labels_agree_with_table(name, request):
    data = request.getfixturevalue(name)
    for i, labels in enumerate(data.labels):
        rows = data.cells[data.cells.image == i].sort_values("label")
        props = regionprops(labels)
        # Labels are 1..n without gaps, one row per label.
        assert [p.label for p in props] == list(range(1, len(rows) + 1)) == rows.label.tolist()
        np.testing.assert_array_equal([p.area for p in props], rows.area)
        np.testing.assert_allclose([p.centroid for p in props], rows[["centroid_row", "centroid_col"]])
        for p in props:
            # Each cell is one connected piece.
            assert ndi.label(p.image, CROSS)[1] == 1
            border = (p.bbox[0] == 0 or p.bbox[1] == 0
                      or p.bbox[2] == labels.shape[0] or p.bbox[3] == labels.shape[1])
            assert rows.touches_border.iloc[p.label - 1] == border


def test_ifc_cells_per_event_and_classes(events):
    per_event = events.cells.groupby("image").size()
    assert per_event.index.tolist() == list(range(len(events.images)))
    assert set(per_event) == {1, 2}
    assert 0.12 < (per_event == 2).mean() < 0.28
    fractions = events.cells.cell_class.value_counts(normalize=True)
    assert 0.05 < fractions["dim"] < 0.16
    assert 0.05 < fractions["dead"] < 0.16
    sizes = np.array([im.shape[1:] for im in events.images])
    assert sizes.min() >= 40 and len(np.unique(sizes[:, 0])) > 5


def test_ifc_cells_keep_off_the_border(events):
    assert not events.cells.touches_border.any()
    for labels in events.labels:
        assert not labels[:3].any() and not labels[-3:].any()
        assert not labels[:, :3].any() and not labels[:, -3:].any()


def _check_pairs_touch(data: SyntheticDataset, image: int) -> int:
    labels = data.labels[image]
    rows = data.cells[data.cells.image == image]
    pairs = 0
    for label in rows.label[rows.touching]:
        grown = ndi.binary_dilation(labels == label, CROSS)
        neighbours = set(np.unique(labels[grown])) - {0, label}
        assert neighbours, f"image {image} label {label} is marked touching but touches nothing"
        pairs += 1
    for label in rows.label[~rows.touching]:
        grown = ndi.binary_dilation(labels == label, CROSS)
        assert set(np.unique(labels[grown])) <= {0, label}
    return pairs


def test_touching_pairs_touch_and_stay_disjoint(events, fields):
    pairs = events.cells.groupby("image").size()
    for image in pairs.index[pairs == 2]:
        rows = events.cells[events.cells.image == image]
        assert rows.touching.all()
        labels = events.labels[image]
        grown = ndi.binary_dilation(labels == 1, CROSS)
        assert np.any(labels[grown] == 2)
        # Disjoint by construction of a label image; check neither swallowed the other.
        assert (labels == 1).sum() > 20 and (labels == 2).sum() > 20
    assert not events.cells[events.cells.image.isin(pairs.index[pairs == 1])].touching.any()
    assert sum(_check_pairs_touch(fields, i) for i in range(len(fields.images))) >= 6


def test_fields_have_border_cells(fields):
    assert fields.cells.touches_border.any()
    assert (~fields.cells.touches_border).sum() > fields.cells.touches_border.sum()
    assert fields.cells.groupby("image").size().tolist() == [25, 25, 25]


def _mean_in_cells(data: SyntheticDataset, channel: int) -> pd.Series:
    means = [
        ndi.mean(image[channel].astype(float), labels, index=np.arange(1, labels.max() + 1))
        for image, labels in zip(data.images, data.labels)
    ]
    return pd.Series(np.concatenate(means), index=data.cells.index)


def test_classes_differ_in_brightness(events):
    cyto = _mean_in_cells(events, STAINS.index("cyto"))
    dna = _mean_in_cells(events, STAINS.index("DNA"))
    cls = events.cells.cell_class
    assert cyto[cls == "dim"].max() < cyto[cls == "live"].median()
    # Dim cells remain above the ~100-count background.
    assert cyto[cls == "dim"].min() > 110
    assert events.cells.area[cls == "dead"].median() < 0.5 * events.cells.area[cls == "live"].median()
    assert dna[cls == "dead"].median() > dna[cls == "live"].median()
    # Background stays near its offset.
    background = np.concatenate([im[0][lab == 0] for im, lab in zip(events.images, events.labels)])
    assert 95 < np.median(background) < 115


def test_marker_varies_between_cells(events):
    marker = _mean_in_cells(events, STAINS.index("marker"))[events.cells.cell_class == "live"]
    assert marker.std() / marker.mean() > 0.3


def test_write_example_round_trips(tmp_path):
    out = write_example(tmp_path / "example", n_events=40, n_fields=2, seed=5)
    assert set(out) == {"ifc", "ifc_labels", "ifc_cells", "fields", "fields_labels", "fields_cells",
                        "zstacks", "zstacks_labels", "zstacks_cells", "micronuclei", "micronuclei_labels",
                        "micronuclei_cells"}
    events = make_ifc_events(40, seed=5)
    fields = make_fields(2, seed=5)

    header = read_ifc_header(out["ifc"])
    assert header.n_events == 40 and header.object_numbers == tuple(range(40))
    for i, image in read_ifc_events(header, range(40)):
        np.testing.assert_array_equal(image, events.images[i])
    header = read_ifc_header(out["ifc_labels"])
    for i, labels in read_ifc_events(header, range(40)):
        np.testing.assert_array_equal(labels, events.labels[i][None])
    pd.testing.assert_frame_equal(pd.read_csv(out["ifc_cells"]), events.cells, check_dtype=False)

    for i, (image, labels) in enumerate(zip(fields.images, fields.labels)):
        for c, name in enumerate(fields.channels):
            plane = tifffile.imread(out["fields"] / f"field{i}_{name}.tiff")
            assert plane.dtype == np.uint16
            np.testing.assert_array_equal(plane, image[c])
        np.testing.assert_array_equal(tifffile.imread(out["fields_labels"] / f"field{i}.tiff"), labels)
    pd.testing.assert_frame_equal(pd.read_csv(out["fields_cells"]), fields.cells, check_dtype=False)
    stacks = make_zstacks(2, seed=5)
    for i, (image, labels) in enumerate(zip(stacks.images, stacks.labels)):
        np.testing.assert_array_equal(tifffile.imread(out["zstacks"] / f"stack{i}.tif"), image[0])
        np.testing.assert_array_equal(tifffile.imread(out["zstacks_labels"] / f"stack{i}.tif"), labels)
    pd.testing.assert_frame_equal(pd.read_csv(out["zstacks_cells"]), stacks.cells, check_dtype=False)

    # Writing again with fewer fields leaves no stale files behind.
    write_example(tmp_path / "example", n_events=10, n_fields=1, seed=5)
    assert sorted(p.name for p in out["fields_labels"].iterdir()) == ["field0.tiff"]
    assert read_ifc_header(out["ifc"]).n_events == 10
