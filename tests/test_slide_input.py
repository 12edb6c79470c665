"""Whole-slide path: input formats, features, config errors, the command line, a local cluster (scip.slide)."""

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from scip.cli import main
from scip.config import ConfigError
from scip.features import extract
from scip.slide import load_slide_config, open_slide, segment_slide, write_synthetic_slide
from scip.slide.config import SlideConfig, SlideInputConfig, SlideOutputConfig, TilesConfig
from scip.datasets.slides import NucleiLattice, render


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 1024 x 768 synthetic slide as OME-Zarr, and the same pixels as a tiled TIFF and a plain zarr array."""
    root = tmp_path_factory.mktemp("small")
    ome = write_synthetic_slide(root / "s.ome.zarr", (1024, 768), chunk=256, seed=5)
    pixels = np.asarray(zarr.open_array(str(ome / "0"), mode="r")[0])
    tifffile.imwrite(root / "s.tif", pixels, tile=(256, 256))
    plain = zarr.open_array(str(root / "s.zarr"), mode="w", shape=(2, *pixels.shape), chunks=(1, 256, 256),
                            dtype="uint16")
    plain[0] = pixels // 2
    plain[1] = pixels
    return root, ome, pixels


def _config(path, out, **sections):
    config = {"input": {"path": str(path)}, "segment": {"method": "watershed"},
              "tiles": {"size": 256, "diameter": 24}, "output": {"path": str(out)},
              "cluster": {"scheduler": "synchronous"}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def test_synthetic_slide_is_the_same_whichever_window_renders_it():
    lattice = NucleiLattice((600, 600), seed=1)
    _, whole = render(lattice, 0, 600, 0, 600)
    _, part = render(lattice, 250, 420, 130, 600)
    np.testing.assert_array_equal(part, whole[250:420, 130:600])
    assert len(np.unique(whole)) - 1 > 150


def test_formats_give_the_same_labels(small, tmp_path):
    root, ome, pixels = small
    tiff = open_slide(root / "s.tif")
    assert tiff.kind == "tiff" and tiff.chunks == (256, 256) and tiff.shape == pixels.shape
    np.testing.assert_array_equal(tiff.read([0], 100, 300, 50, 700)[0], pixels[100:300, 50:700])
    reference = segment_slide(_config(ome, tmp_path / "ome"), progress=False).read_labels()
    assert reference.max() > 200
    from_tiff = segment_slide(_config(root / "s.tif", tmp_path / "tif"), progress=False).read_labels()
    np.testing.assert_array_equal(from_tiff, reference)
    from_zarr = segment_slide(_config(root / "s.zarr", tmp_path / "zarr", segment={"channel": 1}),
                              progress=False).read_labels()
    np.testing.assert_array_equal(from_zarr, reference)


def test_to_dask_reads_lazily_by_window(small):
    _, ome, pixels = small
    from scip.engine.arrays import to_dask

    lazy = to_dask(open_slide(ome), 0, chunks=(300, 300))
    assert lazy.shape == pixels.shape and lazy.chunks[0] == (300, 300, 300, 124)
    np.testing.assert_array_equal(lazy[290:610, 10:20].compute(), pixels[290:610, 10:20])


def test_features_of_owned_cells_match_whole_image_extract(small, tmp_path):
    _, ome, pixels = small
    result = segment_slide(_config(ome, tmp_path / "f", features={"families": ["shape", "intensity"]}),
                           progress=False)
    table = result.read_table()
    labels = result.read_labels()
    whole = extract(pixels[None], labels, channel_names=["DNA"], families=["shape", "intensity"])
    assert len(table) == len(whole) > 200
    for column in ("feat_cell_shape_area", "feat_cell_shape_eccentricity", "feat_cell_intensity_mean_DNA",
                   "feat_cell_intensity_max_DNA"):
        np.testing.assert_allclose(table[column].to_numpy(), whole[column].to_numpy(), rtol=1e-9, err_msg=column)


def test_local_cluster_writes_the_same_labels(small, tmp_path):
    _, ome, _ = small
    alone = segment_slide(_config(ome, tmp_path / "sync"), progress=False).read_labels()
    config = _config(ome, tmp_path / "cluster", cluster={"scheduler": None, "workers": 2, "threads": 1,
                                                         "dashboard_address": ":0"})
    result = segment_slide(config, progress=False)
    assert result.summary["cluster"]["kind"] == "local"
    np.testing.assert_array_equal(result.read_labels(), alone)


def test_labels_into_the_input_image(small, tmp_path):
    import shutil

    _, ome, _ = small
    copy = shutil.copytree(ome, tmp_path / "copy.ome.zarr")
    result = segment_slide(_config(copy, tmp_path / "out", output={"labels_into_input": True},
                                   segment={"name": "nuclei"}), progress=False)
    group = zarr.open_group(str(copy), mode="r")
    assert sorted(group["labels"].attrs["labels"]) == ["nuclei", "truth"]
    assert group["labels/nuclei"].attrs["image-label"]["source"]["image"] == "../../"
    assert result.labels == copy / "labels" / "nuclei"
    with pytest.raises(ConfigError, match="already exists"):
        segment_slide(_config(copy, tmp_path / "again", output={"labels_into_input": True},
                              segment={"name": "nuclei"}), progress=False)


@pytest.mark.parametrize(("change", "message"), [
    ({"input": {"path": "missing.ome.zarr"}}, r"input\.path: path does not exist: .*missing\.ome\.zarr"),
    ({"segment": {"channel": "GFP"}}, r"segment\.channel: no channel 'GFP' in .*s\.ome\.zarr \(channels: DNA"),
    ({"tiles": {"size": 64, "diameter": 40}}, r"tiles\.size \(64\) is smaller than 2 x tiles\.margin \(margin 80 \(2 x diameter 40\)\)"),
    ({"tiles": {"size": 100, "margin": 60}}, r"tiles\.size \(100\) is smaller than 2 x tiles\.margin \(margin 60\)"),
    ({"tiles": {"tile": 512}}, r"tiles\.tile: unknown key 'tile'; allowed keys: diameter, margin, size, statistics; did you mean 'size'"),
    ({"segment": {"method": "watershd"}}, r"segment\.method: 'watershd' is not a known method.*did you mean 'watershed'"),
    ({"input": {"level": 3}}, r"input\.level: 3 is not a level of .*s\.ome\.zarr; it has levels 0\.\.0"),
    ({"input": {"use_channels": ["DAPI"]}}, r"input\.use_channels: no channel 'DAPI'"),
    ({"output": {"labels_into_input": True}, "input": {"path": "s.tif"}}, r"output\.labels_into_input: .* not an OME-Zarr"),
])
def test_bad_input_names_the_key(small, tmp_path, change, message):
    root, ome, _ = small
    config = _config(ome, tmp_path / "out", **change)
    if not Path(config["input"]["path"]).is_absolute():
        config["input"]["path"] = str(root / config["input"]["path"])
    with pytest.raises(ConfigError, match=message):
        segment_slide(config, progress=False)


def test_bad_zarr_layouts_name_the_key(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("image", shape=(64, 64), dtype="uint16")
    group_message = r"input\.array: .*g\.zarr is a zarr group; name the array to read \(arrays here: image\)"
    with pytest.raises(ConfigError, match=group_message):
        segment_slide(_config(tmp_path / "g.zarr", tmp_path / "o1"), progress=False)
    with pytest.raises(ConfigError, match=r"input\.array: .*no array 'imag' there.*did you mean 'image'"):
        segment_slide(_config(tmp_path / "g.zarr", tmp_path / "o2", input={"array": "imag"}), progress=False)
    stack = tmp_path / "z.ome.zarr"
    root = zarr.open_group(str(stack), mode="w", zarr_format=2)
    root.create_array("0", shape=(3, 64, 64), dtype="uint16")
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in "zyx"],
                                  "datasets": [{"path": "0"}]}]
    with pytest.raises(ConfigError, match=r"input\.z: .*z\.ome\.zarr is a z stack of 3 planes.*input\.z \(0\.\.2\)"):
        segment_slide(_config(stack, tmp_path / "o3"), progress=False)
    with pytest.raises(ConfigError, match=r"input\.z: 5 is beyond the 3 planes"):
        segment_slide(_config(stack, tmp_path / "o4", input={"z": 5}), progress=False)


def test_existing_results_need_overwrite(small, tmp_path):
    _, ome, _ = small
    segment_slide(_config(ome, tmp_path / "out", segment={"method": "otsu"}), progress=False)
    held = r"output\.path: .* already holds results \(slide\.json, labels\.zarr, cells\)"
    with pytest.raises(ConfigError, match=held):
        segment_slide(_config(ome, tmp_path / "out", segment={"method": "otsu"}), progress=False)
    again = segment_slide(_config(ome, tmp_path / "out", segment={"method": "otsu"}, output={"overwrite": True}),
                          progress=False)
    assert len(list((tmp_path / "out" / "cells").glob("part-*.parquet"))) == again.summary["tiles"]["count"]
    assert not (tmp_path / "out" / ".scratch.zarr").exists()


def test_cli_runs_a_slide_config_and_exits_2_on_errors(small, tmp_path, capsys):
    _, ome, _ = small
    config = tmp_path / "slide.yml"
    config.write_text(f"input:\n  path: {ome}\nsegment:\n  method: otsu\ntiles:\n  size: 256\n  diameter: 20\n"
                      "output:\n  path: results/\ncluster:\n  scheduler: synchronous\n")
    assert main(["slide", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    n = int(re.search(r"scip: (\d+) objects in 12 tiles of 256 px \(margin 40 px\)", out).group(1))
    assert n > 200 and (tmp_path / "results" / "slide.json").is_file()
    assert main(["slide", str(config), "--no-progress"]) == 2
    assert "already holds results" in capsys.readouterr().err
    config.write_text(f"input:\n  path: {ome}\ntiles:\n  size: 100\n  margin: 60\n")
    assert main(["slide", str(config)]) == 2
    assert "tiles.size (100) is smaller than 2 x tiles.margin" in capsys.readouterr().err


def test_every_slide_config_key_is_documented():
    doc = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    section = doc[doc.index("## `scip slide`"):]
    missing = [f"{cls.__name__}.{field}" for cls in (SlideConfig, SlideInputConfig, TilesConfig, SlideOutputConfig)
               for field in cls.model_fields if f"`{field}`" not in section]
    assert not missing


def test_yaml_paths_are_relative_to_the_file(small, tmp_path):
    root, _, _ = small
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "slide.yml").write_text(f"input:\n  path: {root / 's.tif'}\noutput:\n  path: out\n")
    config = load_slide_config(tmp_path / "cfg" / "slide.yml")
    assert config.output.path == tmp_path / "cfg" / "out"
    assert config.tiles.margin_px == 60 and config.segment.method == "watershed"


def test_overwrite_removes_only_what_a_slide_run_recorded(small, tmp_path):
    """Issue 15, case 1 for scip slide: a folder of the user's at one of our names is refused, never removed."""
    root, ome, _ = small
    out = tmp_path / "out"
    mine = out / "labels.zarr" / "my_annotations.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("hours of work")
    with pytest.raises(ConfigError, match=r"holds labels\.zarr, which no scip slide run recorded writing"):
        segment_slide(_config(ome, out, segment={"method": "otsu"}, output={"overwrite": True}), progress=False)
    assert mine.read_text() == "hours of work"
    mine.parent.rename(tmp_path / "moved.zarr")
    segment_slide(_config(ome, out, segment={"method": "otsu"}), progress=False)
    again = segment_slide(_config(ome, out, segment={"method": "otsu"}, output={"overwrite": True}), progress=False)
    assert again.read_labels().max() > 0


def test_slide_input_and_output_must_not_overlap(small, tmp_path):
    import shutil

    _, ome, _ = small
    out = tmp_path / "out"
    inside = shutil.copytree(ome, out / "labels.zarr")
    with pytest.raises(ConfigError, match=r"input\.path: .* lies in the output folder .* under 'labels\.zarr'"):
        segment_slide(_config(inside, out, segment={"method": "otsu"}, output={"overwrite": True}), progress=False)
    assert (inside / "0").is_dir()
    with pytest.raises(ConfigError, match=r"output\.path: .* is the input image .* or lies inside it"):
        segment_slide(_config(inside, inside / "results", segment={"method": "otsu"}), progress=False)


def test_labels_into_input_never_replaces_a_label_image_scip_did_not_write(small, tmp_path):
    import shutil

    _, ome, _ = small
    copy = shutil.copytree(ome, tmp_path / "copy.ome.zarr")
    # A hand-made annotation: the same label image without scip's downsampling method in its metadata.
    group = zarr.open_group(str(copy / "labels" / "truth"), mode="r+")
    attrs = dict(group.attrs)
    multiscales = attrs.get("ome", attrs)["multiscales"]
    multiscales[0].pop("metadata", None)
    group.attrs.update(attrs)
    truth = np.asarray(zarr.open_array(str(copy / "labels" / "truth" / "0"), mode="r"))
    with pytest.raises(ConfigError, match=r"labels/truth already exists and was not written by scip slide"):
        segment_slide(_config(copy, tmp_path / "out", output={"labels_into_input": True, "overwrite": True},
                              segment={"name": "truth"}), progress=False)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(copy / "labels" / "truth" / "0"), mode="r")), truth)
    # A label image scip wrote may be replaced when asked.
    segment_slide(_config(copy, tmp_path / "a", output={"labels_into_input": True}, segment={"name": "nuclei"}),
                  progress=False)
    segment_slide(_config(copy, tmp_path / "b", output={"labels_into_input": True, "overwrite": True},
                          segment={"name": "nuclei"}), progress=False)
