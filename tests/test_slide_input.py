"""`scip slide` as an alias of `scip run`, input formats read in tiles, a local cluster, config errors."""

import logging
import re

import numpy as np
import pytest
import tifffile
import zarr

import scip
from scip.cli import main
from scip.config import ConfigError
from scip.datasets.slides import NucleiLattice, render, write_synthetic_slide
from scip.engine.arrays import to_dask
from scip.slide import NOTE, open_slide, run_config, segment_slide


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
              "tiles": {"mode": "always", "size": 256, "diameter": 24}, "features": {"families": ["bbox"]},
              "output": {"path": str(out), "labels": True}, "cluster": {"scheduler": "synchronous"}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def _labels(result, image_id):
    return np.asarray(zarr.open_array(str(result.output / "labels.zarr" / image_id / "labels" / "cell" / "0"),
                                      mode="r")[...])


def test_synthetic_slide_is_the_same_whichever_window_renders_it():
    lattice = NucleiLattice((600, 600), seed=1)
    _, whole = render(lattice, 0, 600, 0, 600)
    _, part = render(lattice, 250, 420, 130, 600)
    np.testing.assert_array_equal(part, whole[250:420, 130:600])
    assert len(np.unique(whole)) - 1 > 150


def test_formats_give_the_same_labels(small, tmp_path):
    root, ome, pixels = small
    reference = _labels(scip.run(_config(ome, tmp_path / "ome"), progress=False), "s.ome")
    assert reference.max() > 200
    from_tiff = _labels(scip.run(_config(root / "s.tif", tmp_path / "tif"), progress=False), "s")
    np.testing.assert_array_equal(from_tiff, reference)
    from_zarr = _labels(scip.run(_config(root / "s.zarr", tmp_path / "zarr", segment={"channel": 1}),
                                 progress=False), "0")
    np.testing.assert_array_equal(from_zarr, reference)


def test_to_dask_reads_lazily_by_window(small):
    _, ome, pixels = small
    lazy = to_dask(open_slide(ome), 0, chunks=(300, 300))
    assert lazy.shape == pixels.shape and lazy.chunks[0] == (300, 300, 300, 124)
    np.testing.assert_array_equal(lazy[290:610, 10:20].compute(), pixels[290:610, 10:20])


def test_local_cluster_writes_the_same_labels_and_table(small, tmp_path):
    _, ome, _ = small
    alone = scip.run(_config(ome, tmp_path / "sync"), progress=False)
    config = _config(ome, tmp_path / "cluster", cluster={"scheduler": None, "workers": 2, "threads": 1,
                                                         "dashboard_address": ":0"})
    result = scip.run(config, progress=False)
    assert result.summary["cluster"]["kind"] == "local"
    np.testing.assert_array_equal(_labels(result, "s.ome"), _labels(alone, "s.ome"))
    key = ["meta_label"]
    assert result.read().sort_values(key, ignore_index=True).equals(alone.read().sort_values(key, ignore_index=True))


def test_slide_config_runs_as_a_tiled_run(small, tmp_path, caplog):
    _, ome, _ = small
    slide = {"input": {"path": str(ome), "series": 0, "t": 0}, "segment": {"channel": "DNA"},
             "tiles": {"size": 256, "diameter": 24, "statistics": "slide"},
             "output": {"path": str(tmp_path / "out"), "labels_into_input": False, "pyramid_levels": 1},
             "cluster": {"scheduler": "synchronous"}}
    with caplog.at_level(logging.INFO, logger="scip"):
        result = segment_slide(slide, progress=False)
    assert NOTE in caplog.text
    (image,) = result.summary["tiles"]["images"]
    assert result.summary["tiles"]["mode"] == "always" and image["tiles"] == 12
    assert image["statistics"]["statistic"] == "otsu"
    assert result.summary["config"]["segment"]["method"] == "watershed"
    assert [c for c in result.read().columns if c.startswith("feat_")][:2] == ["feat_cell_shape_area",
                                                                                "feat_cell_shape_area_convex"]
    group = zarr.open_group(str(result.output / "labels.zarr" / "s.ome" / "labels" / "cell"), mode="r")
    assert sorted(k for k, _ in group.arrays()) == ["0", "1"]
    assert (result.output / "report.html").is_file() and (result.output / "run.json").is_file()


@pytest.mark.parametrize(("change", "message"), [
    ({"output": {"labels_into_input": True}}, r"output\.labels_into_input: True has no equivalent .* labels\.zarr"),
    ({"input": {"series": 1}}, r"input\.series: 1 has no equivalent .* first series"),
    ({"input": {"t": 2}}, r"input\.t: 2 has no equivalent .* every time point"),
])
def test_slide_keys_without_equivalent_name_the_key(small, tmp_path, change, message):
    _, ome, _ = small
    slide = {"input": {"path": str(ome), **change.get("input", {})},
             "output": {"path": str(tmp_path / "out"), **change.get("output", {})}}
    with pytest.raises(ConfigError, match=message):
        segment_slide(slide, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"input": {"path": "missing.ome.zarr"}}, r"input\.path: path does not exist: .*missing\.ome\.zarr"),
    ({"segment": {"channel": "GFP"}}, r"segment\.channel: 'GFP' is not a loaded channel"),
    ({"tiles": {"size": 64, "diameter": 40}},
     r"tiles\.size \(64\) is smaller than 2 x tiles\.margin \(margin 80 \(2 x diameter 40\)\)"),
    ({"tiles": {"tile": 512}}, r"tiles\.tile: unknown key 'tile'.*did you mean 'size'"),
    ({"segment": {"method": "watershd"}}, r"segment\.method: 'watershd' is not a known method.*did you mean 'watershed'"),
])
def test_bad_slide_config_names_the_key(small, tmp_path, change, message):
    root, ome, _ = small
    slide = {"input": {"path": str(ome)}, "output": {"path": str(tmp_path / "out")}}
    for key, value in change.items():
        slide[key] = {**slide.get(key, {}), **value}
    if not slide["input"]["path"].startswith("/"):
        slide["input"]["path"] = str(root / slide["input"]["path"])
    with pytest.raises(ConfigError, match=message):
        segment_slide(slide, progress=False)


def test_run_config_keeps_what_it_does_not_translate():
    raw = run_config({"input": {"path": "x"}, "features": {"families": ["shape"]}, "filters": []})
    assert raw["features"] == {"families": ["shape"]} and raw["filters"] == []
    assert raw["tiles"] == {"mode": "always"} and raw["output"] == {"path": "slide_results", "labels": True}


def test_cli_slide_runs_a_slide_config_and_exits_2_on_errors(small, tmp_path, capsys, caplog):
    _, ome, _ = small
    config = tmp_path / "slide.yml"
    config.write_text(f"input:\n  path: {ome}\nsegment:\n  method: otsu\ntiles:\n  size: 256\n  diameter: 20\n"
                      "output:\n  path: results/\ncluster:\n  scheduler: synchronous\n")
    assert main(["slide", str(config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    n = int(re.search(r"scip: s\.ome: (\d+) objects in 12 tiles of 256 px \(margin 40 px\)", out).group(1))
    assert n > 200 and (tmp_path / "results" / "run.json").is_file()
    assert (tmp_path / "results" / "labels.zarr" / "s.ome" / "labels" / "cell" / "0").is_dir()
    assert main(["slide", str(config), "--no-progress"]) == 2
    assert "already holds results" in capsys.readouterr().err
    # The options of scip run: --resume of a finished run computes nothing again.
    with caplog.at_level(logging.INFO, logger="scip"):
        assert main(["slide", str(config), "--no-progress", "--resume"]) == 0
    assert "resuming: 3 of 3 partitions are complete, 0 to compute" in caplog.text
    assert f"scip: s.ome: {n} objects in 12 tiles of 256 px (margin 40 px); 0 touch" in capsys.readouterr().out
    config.write_text(f"input:\n  path: {ome}\ntiles:\n  size: 100\n  margin: 60\n")
    assert main(["slide", str(config)]) == 2
    assert "tiles.size (100) is smaller than 2 x tiles.margin" in capsys.readouterr().err
