"""Folder layouts: ``input.pattern`` over the path relative to ``input.path``, and ``input.exclude``."""

import json

import numpy as np
import pytest
import tifffile
import yaml

from scip import cli
from scip.config import load_config
from scip.io import InputError, open_dataset, read_images
from tests.conftest import make_blobs


def dataset(path, **input_cfg):
    return open_dataset(load_config({"input": {"path": str(path), **input_cfg}}).input)


@pytest.fixture
def nested(tmp_path):
    """``<set>/<id>/image.tif`` with a label image ``<id>_nuclei.tif`` beside each image."""
    root = tmp_path / "data"
    for i, (s, cell) in enumerate([("setA", "c1"), ("setA", "c2"), ("setB", "c1")]):
        folder = root / s / cell
        folder.mkdir(parents=True)
        tifffile.imwrite(folder / "image.tif", make_blobs(seed=i))
        tifffile.imwrite(folder / f"{cell}_nuclei.tif", np.zeros((96, 96), np.uint16))
    return root


def test_pattern_with_a_slash_matches_the_relative_path_and_folders_become_metadata(nested):
    d = dataset(nested, pattern=r"(?P<set>[^/]+)/(?P<id>[^/]+)/image\.tif")
    assert [s.image_id for s in d.sources] == ["setA_c1", "setA_c2", "setB_c1"]
    assert [dict(s.fields) for s in d.sources][2] == {"set": "setB", "id": "c1"}
    assert len(d.unmatched) == 3 and all(u.endswith("_nuclei.tif") for u in d.unmatched)
    records = read_images(d, d.sources[:1])
    np.testing.assert_array_equal(records[0].pixels, make_blobs(seed=0))


def test_exclude_leaves_label_files_out_before_matching(nested):
    d = dataset(nested, pattern=r"(?P<set>[^/]+)/(?P<id>[^/]+)/(?P<name>[^/]+)\.tif", exclude=["*_nuclei.tif"])
    assert len(d.sources) == 3 and {s.fields["name"] for s in d.sources} == {"image"}
    assert len(d.excluded) == 3 and not d.unmatched


def test_exclude_without_pattern_applies_to_a_folders_files(tmp_path):
    for name in ("a.tif", "b.tif", "a_nuclei.tif"):
        tifffile.imwrite(tmp_path / name, make_blobs())
    d = dataset(tmp_path, exclude=["*_nuclei.tif"])
    assert [s.image_id for s in d.sources] == ["a", "b"] and len(d.excluded) == 1


def test_a_pattern_without_slash_still_sees_only_top_level_file_names(nested):
    tifffile.imwrite(nested / "top_1.tif", make_blobs())
    d = dataset(nested, pattern=r"top_(?P<id>\d+)\.tif")
    assert [s.image_id for s in d.sources] == ["1"]
    assert d.sources[0].paths[0].endswith("data/top_1.tif")


def test_everything_excluded_says_so(tmp_path):
    tifffile.imwrite(tmp_path / "x_nuclei.tif", make_blobs())
    with pytest.raises(InputError, match=r"no .tif/.tiff files found .*\(1 excluded by input.exclude\)"):
        dataset(tmp_path, exclude=["*_nuclei.tif"])


def test_nested_pattern_matching_nothing_names_a_relative_path(nested):
    with pytest.raises(InputError, match=r"e.g. 'setA/c1/c1_nuclei.tif'\); a pattern with '/' must match the whole relative path"):
        dataset(nested, pattern=r"(?P<id>[^/]+)/image\.tif")


def test_check_counts_the_excluded_files(nested, tmp_path, capsys):
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"input": {"path": str(nested), "pattern": r"(?P<set>[^/]+)/(?P<id>[^/]+)/image\.tif",
                                                "exclude": ["*_nuclei.tif"]},
                                      "segment": {"method": "otsu", "channel": 0}}))
    assert cli.main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "config OK: 3 images" in out and "3 excluded by input.exclude" in out
    assert "files do not match" not in out


def test_run_writes_folder_metadata_and_the_excluded_count(nested, tmp_path):
    from scip.run import run

    out = tmp_path / "out"
    run({"input": {"path": str(nested), "pattern": r"(?P<set>[^/]+)/(?P<id>[^/]+)/image\.tif",
                   "exclude": ["*_nuclei.tif"]},
         "segment": {"method": "otsu", "channel": 0}, "features": {"families": ["shape"]},
         "output": {"path": str(out)}, "cluster": {"scheduler": "synchronous"}}, progress=False)
    import pandas as pd

    cells = pd.read_parquet(out / "cells")
    assert set(cells["meta_set"]) == {"setA", "setB"} and set(cells["meta_image_id"]) == {"setA_c1", "setA_c2", "setB_c1"}
    summary = json.loads((out / "run.json").read_text())
    assert summary["input"]["excluded_files"] == 3 and summary["input"]["unmatched_files"] == []
