"""The napari reader contribution, run headless through npe2 (no napari, no window, no Qt)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import scip
from conftest import require
from scip.io.labels import image_key, read_labels
from scip.napari import get_reader

MANIFEST = Path(__file__).parent.parent / "scip" / "napari.yaml"


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    from scip.datasets import write_example

    root = tmp_path_factory.mktemp("napari")
    paths = write_example(root / "data", n_events=2, n_fields=2, n_stacks=1, seed=4)
    result = scip.run({
        "input": {"path": str(paths["fields"]), "pattern": r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff",
                  "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "masks": [{"name": "nucleus", "channel": "DNA"}],
        "features": {"families": ["shape", "intensity"]},
        "output": {"path": str(root / "out"), "labels": True},
        "cluster": {"scheduler": "synchronous"},
    }, progress=False)
    return result, paths


def _npe2_read(path):
    npe2 = require("npe2")
    manager = npe2.PluginManager.instance()
    if "scip" not in manager._manifests:  # the installed entry point may be an older checkout's
        manager.register(npe2.PluginManifest.from_file(MANIFEST))
    readers = [r.command for r in manager.iter_compatible_readers([str(path)])]
    assert "scip.read_output" in readers
    return npe2.read([str(path)], stack=False, plugin_name="scip")


def test_the_manifest_declares_the_reader():
    npe2 = require("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "scip"
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories and reader.command == "scip.read_output"
    (command,) = manifest.contributions.commands
    assert command.python_name == "scip.napari:get_reader"
    pyproject = (MANIFEST.parent.parent / "pyproject.toml").read_text()
    assert '[project.entry-points."napari.manifest"]\nscip = "scip:napari.yaml"' in pyproject


def test_reader_opens_an_output_folder_as_images_and_labels_with_features(labelled_run):
    result, _ = labelled_run
    table = result.read()
    layers = _npe2_read(result.output)
    by_name = {meta["name"]: (data, meta, kind) for data, meta, kind in layers}
    image_ids = sorted(set(table["meta_image_id"]))
    assert len(image_ids) == 2
    assert sorted(by_name) == sorted(f"{i} {n}" for i in image_ids for n in ["DNA", "cyto", "marker", "cell", "nucleus"])
    for image_id in image_ids:
        for mask in ["cell", "nucleus"]:
            data, meta, kind = by_name[f"{image_id} {mask}"]
            assert kind == "labels"
            np.testing.assert_array_equal(np.asarray(data), read_labels(result.output / "labels.zarr", image_id, mask))
            features = meta["features"]
            rows = table[table["meta_image_id"] == image_id]
            assert features["index"].tolist() == rows["meta_label"].tolist()
            np.testing.assert_array_equal(features["feat_cell_shape_area"], rows["feat_cell_shape_area"])
            # every cell of the table is a label value of the layer
            assert set(features["index"]) <= set(np.unique(np.asarray(data)))
        data, meta, kind = by_name[f"{image_id} DNA"]
        assert kind == "image" and data.shape == np.asarray(by_name[f"{image_id} cell"][0]).shape
        assert data.max() > 0
    assert [m["visible"] for _, m, _ in layers].count(True) == 5  # the first image only


def test_reader_opens_one_image_and_declines_other_folders(labelled_run, tmp_path):
    result, _ = labelled_run
    image_id = sorted(set(result.read()["meta_image_id"]))[1]
    layers = get_reader(result.output / "labels.zarr" / image_key(image_id))(
        str(result.output / "labels.zarr" / image_key(image_id)))
    assert {m["name"].split(" ")[0] for _, m, _ in layers} == {image_id}
    assert get_reader(tmp_path) is None
    assert get_reader(result.output / "cells") is None
    assert get_reader([str(result.output), str(result.output)]) is None


def test_labels_open_without_the_input(labelled_run, tmp_path):
    result, paths = labelled_run
    copy = tmp_path / "out"
    shutil.copytree(result.output, copy)
    moved = paths["fields"].with_name("fields-moved")
    paths["fields"].rename(moved)
    try:
        with pytest.warns(UserWarning, match="input cannot be opened"):
            layers = get_reader(copy)(str(copy))
    finally:
        moved.rename(paths["fields"])
    assert {kind for _, _, kind in layers} == {"labels"} and len(layers) == 4
