"""The scip command: check, features --list, run, example-data."""

import json
from pathlib import Path

import yaml

from scip import cli


def test_check_lists_images_without_running(tmp_path, blobs_tiff, capsys):
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"input": {"path": str(blobs_tiff), "channels": ["DNA", "GFP"]},
                                      "segment": {"method": "otsu", "channel": "DNA"}}))
    assert cli.main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "config OK: 1 images (tiff), channels: DNA, GFP" in out
    assert not (tmp_path / "results").exists()


def test_features_list_names_every_column(capsys):
    assert cli.main(["features", "--list", "--channels", "DNA,GFP"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split("\t")[0] for line in lines]
    assert "feat_cell_intensity_mean_GFP" in names and "feat_cell_shape_area" in names
    assert all(len(line.split("\t")) == 3 and line.split("\t")[2] for line in lines)


def test_features_list_follows_the_config(tmp_path, capsys):
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"input": {"path": "."}, "features": {"families": ["texture"], "distances": [2]}}))
    assert cli.main(["features", "--list", "--names", "--config", str(config), "--mask", "cell,nucleus"]) == 0
    names = capsys.readouterr().out.split()
    assert "feat_nucleus_texture_contrast_2_135_ch0" in names
    assert all("_texture_" in n for n in names) and not any("_3_" in n for n in names)


def test_docs_feature_table_is_current():
    # docs/features.md carries the table `scip features --list --markdown` prints.
    from scip.features.reference import markdown_table

    doc = (Path(__file__).parent.parent / "docs" / "features.md").read_text()
    start, end = "<!-- feature table: start -->\n", "<!-- feature table: end -->"
    assert doc[doc.index(start) + len(start):doc.index(end)] == markdown_table()


def test_run_end_to_end_prints_where_results_are(tmp_path, blobs_tiff, capsys):
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"input": {"path": "images"}, "cluster": {"scheduler": "synchronous"}}))
    out_dir = tmp_path / "elsewhere"
    assert cli.main(["run", str(config), "--output", str(out_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 images, 4 cells found, 4 exported" in out
    assert f"results in {out_dir}" in out
    summary = json.loads((out_dir / "run.json").read_text())
    assert summary["config"]["output"]["path"] == str(out_dir)
    assert summary["versions"]["scip"]
    # a second run into the same folder is refused, with exit code 2, unless --overwrite
    assert cli.main(["run", str(config), "--output", str(out_dir), "--no-progress"]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert cli.main(["run", str(config), "--output", str(out_dir), "--no-progress", "--overwrite"]) == 0
