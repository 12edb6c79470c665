"""Reading IFC ground truth for a partition: right events, one header parse per process, stale caches refused."""

import numpy as np
import pytest

from scip.io import ground_truth, ifc_zarr
from scip.io.ground_truth import attach_truth
from scip.records import ImageRecord, Source


def labels_store(path, n, seed=0, size=(9, 7)):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 4, size=(1, *size)).astype(np.uint16) for _ in range(n)]
    ifc_zarr.write_ifc_zarr(path, images, chunk_size=4)
    return images


def records(indices):
    return [ImageRecord(source=Source(image_id=str(i), index=i, paths=()), channels=("a",)) for i in indices]


def test_attach_truth_reads_each_event_and_the_header_once(tmp_path, monkeypatch):
    store = tmp_path / "labels.zarr"
    images = labels_store(store, 10)
    parses = []
    real = ifc_zarr.read_ifc_header
    monkeypatch.setattr(ifc_zarr, "read_ifc_header", lambda p: parses.append(p) or real(p))
    for part in ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 12]):  # partitions, as load tasks get them
        out = attach_truth(records(part), str(store))
        for i, r in zip(part, out):
            if i < 10:
                np.testing.assert_array_equal(r.truth, images[i][0])
            else:
                assert r.truth == f"ground truth {store} has no event 12"
    assert len(parses) == 1


def test_a_store_rewritten_in_place_is_read_again(tmp_path):
    store = tmp_path / "labels.zarr"
    labels_store(store, 6, seed=1)
    attach_truth(records([0]), str(store))
    # Different shapes, so the metadata files' sizes change whatever their mtime's resolution.
    images = labels_store(store, 8, seed=2, size=(5, 11))
    out = attach_truth(records([0, 7]), str(store))
    np.testing.assert_array_equal(out[0].truth, images[0][0])
    np.testing.assert_array_equal(out[1].truth, images[7][0])


def test_a_broken_store_is_each_records_error_until_repaired(tmp_path):
    store = tmp_path / "labels.zarr"
    images = labels_store(store, 3)
    attrs = (store / ".zattrs").read_text()
    (store / ".zattrs").unlink()
    out = attach_truth(records([0, 1]), str(store))
    assert all(r.truth.startswith("cannot read ground truth: ") and "no .zattrs file" in r.truth for r in out)
    (store / ".zattrs").write_text(attrs.replace('"shape": [[1, 9, 7]', '"shape": [[1, 7, 9]'))
    out = attach_truth(records([0, 1]), str(store))
    np.testing.assert_array_equal(out[0].truth, images[0][0].reshape(7, 9))  # the declared shape rules
    np.testing.assert_array_equal(out[1].truth, images[1][0])


def test_a_shape_of_the_wrong_size_names_the_event(tmp_path):
    store = tmp_path / "labels.zarr"
    labels_store(store, 2)
    (store / ".zattrs").write_text((store / ".zattrs").read_text().replace('[1, 9, 7]]', '[1, 9, 8]]'))
    out = attach_truth(records([0, 1]), str(store))
    assert isinstance(out[0].truth, np.ndarray)
    assert out[1].truth.endswith("has 63 values, attribute 'shape' says (1, 9, 8)")


def test_check_template_counts_the_events(tmp_path):
    store = tmp_path / "labels.zarr"
    labels_store(store, 2)
    sources = tuple(Source(image_id=str(i), index=i, paths=()) for i in range(3))
    assert "holds 2 label images, none for 1 of the 3" in ground_truth.check_template(str(store), sources)
    with pytest.raises(ground_truth.InputError, match="none for the 1 input images"):
        ground_truth.check_template(str(store), sources[2:])
