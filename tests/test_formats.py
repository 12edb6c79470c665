"""Microscope formats through bioio: OME-TIFF (written by tifffile) and CZI (written by pylibCZIrw)."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from scip.config import load_config
from scip.io import InputError, detect_format, open_dataset, read_images
from tests.conftest import make_blobs, require


def dataset(path, **input_cfg):
    return open_dataset(load_config({"input": {"path": str(path), **input_cfg}}).input)


def write_ome_tiff(path, scenes, pixel_um=0.325, names=("DNA", "GFP")):
    """An OME-TIFF with one image series per scene, each ``(C, Z, Y, X)`` or ``(C, Y, X)``."""
    with tifffile.TiffWriter(path, ome=True) as writer:
        for pixels in scenes:
            writer.write(pixels, metadata={"axes": "CZYX" if pixels.ndim == 4 else "CYX",
                                           "Channel": {"Name": list(names)},
                                           "PhysicalSizeX": pixel_um, "PhysicalSizeY": pixel_um,
                                           "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    return path


@pytest.fixture
def ome_folder(tmp_path):
    require("bioio_ome_tiff")
    folder = tmp_path / "ome"
    folder.mkdir()
    write_ome_tiff(folder / "plate1.ome.tif", [make_blobs(seed=1), make_blobs(seed=2, n=3)])
    write_ome_tiff(folder / "plate2.ome.tif", [make_blobs(seed=3, n=2)])
    return folder


def test_auto_reads_ome_tiff_through_bioio_scenes_names_and_pixel_size(ome_folder):
    assert detect_format(ome_folder) == "bioio"
    d = dataset(ome_folder)
    assert d.format == "bioio" and d.channels == ("DNA", "GFP")
    assert [s.image_id for s in d.sources] == ["plate1_s0", "plate1_s1", "plate2"]
    assert [s.fields["scene"] for s in d.sources] == ["Image:0", "Image:1", "Image:0"]
    assert [s.pixel_size for s in d.sources] == pytest.approx([0.325] * 3)
    records = read_images(d, d.sources)
    np.testing.assert_array_equal(records[1].pixels, make_blobs(seed=2, n=3))
    np.testing.assert_array_equal(records[2].pixels, make_blobs(seed=3, n=2))


def test_channels_rename_and_select(ome_folder):
    d = dataset(ome_folder, channels=["nuclei", "marker"], use_channels=["marker"])
    assert d.channels == ("marker",) and d.channel_index == (1,)
    assert read_images(d, d.sources[:1])[0].pixels.shape == (1, 96, 96)
    with pytest.raises(InputError, match=r"input.channels: 3 names given but .*plate1.ome.tif has 2 channels \(DNA, GFP\)"):
        dataset(ome_folder, channels=["a", "b", "c"])


def test_z_stack_scene_is_read_as_czyx(tmp_path):
    require("bioio_ome_tiff")
    stack = np.stack([make_blobs(seed=s) for s in range(3)], axis=1)  # (C, Z, Y, X)
    path = write_ome_tiff(tmp_path / "z.ome.tif", [stack])
    d = dataset(path, format="bioio", z="max")
    assert d.z_planes == 3
    np.testing.assert_array_equal(read_images(d, d.sources)[0].pixels, stack)


def test_pattern_and_exclude_apply_to_bioio_files(ome_folder):
    d = dataset(ome_folder, pattern=r"plate(?P<plate>\d)\.ome\.tif", exclude=["plate2*"])
    assert [s.fields["plate"] for s in d.sources] == ["1", "1"] and len(d.excluded) == 1


def test_a_missing_bioio_names_the_file_and_the_pip_command(tmp_path, monkeypatch):
    from scip.io import bioio_image

    path = tmp_path / "scan.czi"
    path.write_bytes(b"not really a czi")
    assert detect_format(path) == "bioio"
    monkeypatch.setitem(sys.modules, "bioio", None)
    monkeypatch.setattr(bioio_image, "_OPEN", type(bioio_image._OPEN)())
    with pytest.raises(InputError, match=r"reading .*scan.czi needs bioio and its plugin: pip install 'scip\[formats\]' "
                                         r"\(or: pip install bioio bioio-czi\)"):
        dataset(path)


def test_czi_written_by_pylibczirw(tmp_path):
    pyczi = require("pylibCZIrw.czi")
    require("bioio_czi")
    path = tmp_path / "x.czi"
    planes = make_blobs(seed=4)
    with pyczi.create_czi(str(path), exist_ok=True) as writer:
        for c in range(2):
            writer.write(data=planes[c], plane={"C": c, "T": 0, "Z": 0})
        writer.write_metadata(document_name="t", channel_names={0: "DNA", 1: "GFP"}, scale_x=0.2e-6, scale_y=0.2e-6)
    d = dataset(path)
    assert d.format == "bioio" and d.channels == ("DNA", "GFP") and [s.image_id for s in d.sources] == ["x"]
    assert d.sources[0].pixel_size == pytest.approx(0.2)
    np.testing.assert_array_equal(read_images(d, d.sources)[0].pixels, planes)


def test_run_on_ome_tiff_gives_micrometre_features_and_pixel_sizes(ome_folder, tmp_path):
    from scip.run import run

    out = tmp_path / "out"
    run({"input": {"path": str(ome_folder)}, "segment": {"method": "otsu", "channel": "DNA"},
         "features": {"families": ["shape", "bbox"]}, "output": {"path": str(out)},
         "cluster": {"scheduler": "synchronous"}}, progress=False)
    cells = pd.read_parquet(out / "cells")
    assert set(cells["meta_scene"]) == {"Image:0", "Image:1"}
    np.testing.assert_allclose(cells["feat_cell_shape_area_um2"], cells["feat_cell_shape_area"] * 0.325 ** 2)
    np.testing.assert_allclose(cells["feat_cell_shape_equivalent_diameter_area_um"],
                               cells["feat_cell_shape_equivalent_diameter_area"] * 0.325)
    np.testing.assert_allclose(cells["feat_cell_bbox_min_row_um"], cells["feat_cell_bbox_min_row"] * 0.325)
    assert "feat_cell_shape_moments_central_20_um" not in cells and "feat_cell_shape_solidity_um" not in cells
    summary = json.loads((out / "run.json").read_text())
    assert summary["input"]["format"] == "bioio"
    assert summary["input"]["pixel_size_um"] == pytest.approx({"plate1_s0": 0.325, "plate1_s1": 0.325,
                                                               "plate2": 0.325})


def test_tiff_without_pixel_size_has_no_micrometre_columns(blobs_tiff, tmp_path):
    from scip.run import run

    out = tmp_path / "out"
    run({"input": {"path": str(blobs_tiff)}, "segment": {"method": "otsu", "channel": 0},
         "features": {"families": ["shape"]}, "output": {"path": str(out)},
         "cluster": {"scheduler": "synchronous"}}, progress=False)
    cells = pd.read_parquet(out / "cells")
    assert "feat_cell_shape_area" in cells and not any(c.endswith(("_um", "_um2")) for c in cells.columns)


def test_ome_tiff_scenes_are_read_in_tiles_like_whole(ome_folder, tmp_path):
    from scip.run import run
    from scip.steps.tiles import window_reader

    d = dataset(ome_folder, use_channels=["GFP"])
    reader = window_reader(d, d.sources[1])
    # The second scene of plate1.ome.tif, its GFP channel only, one window of it.
    np.testing.assert_array_equal(reader.read(10, 60, 20, 90), make_blobs(seed=2, n=3)[1:, 10:60, 20:90])
    tables = {}
    for mode in ("never", "always"):
        out = tmp_path / mode
        run({"input": {"path": str(ome_folder)}, "segment": {"method": "otsu", "channel": "DNA"},
             "features": {"families": ["shape"]}, "tiles": {"mode": mode, "size": 64, "diameter": 15},
             "output": {"path": str(out)}, "cluster": {"scheduler": "synchronous"}}, progress=False)
        tables[mode] = pd.read_parquet(out / "cells").sort_values(["meta_image_id", "feat_cell_shape_area"])
        summary = json.loads((out / "run.json").read_text())
    assert summary["counts"]["cells"]["exported"] == 9
    assert [(t["image_id"], t["tiles"]) for t in summary["tiles"]["images"]] == [("plate1_s0", 4), ("plate1_s1", 4),
                                                                                ("plate2", 4)]
    assert list(tables["always"].groupby("meta_image_id").size()) == list(tables["never"].groupby("meta_image_id").size())
    np.testing.assert_allclose(tables["always"]["feat_cell_shape_area_um2"], tables["never"]["feat_cell_shape_area_um2"])


def test_docs_micrometre_table_is_current_and_the_cli_lists_the_columns(capsys):
    from pathlib import Path

    from scip import cli
    from scip.features.reference import micrometre_table

    assert micrometre_table() in (Path(__file__).parents[1] / "docs" / "features.md").read_text()
    assert cli.main(["features", "--list", "--micrometres", "--channels", "DNA"]) == 0
    rows = {line.split("\t")[0]: line.split("\t")[1] for line in capsys.readouterr().out.splitlines()}
    assert rows["feat_cell_shape_area_um2"] == "µm^2" and rows["feat_cell_shape_perimeter_um"] == "µm"
    assert rows["feat_cell_shape_area"] == "px^2" and "feat_cell_shape_solidity_um" not in rows
