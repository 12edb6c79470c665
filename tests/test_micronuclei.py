"""Micronuclei in a run: clean-up, assignment to nuclei, the config section, counts per cell, run.json, labels.zarr."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import scip
from scip.config import ConfigError, check_models, load_config
from scip.io.labels import read_labels
from scip.segment.micronuclei import OVERLAP, TOO_LARGE, TOO_SMALL, assign, clean, per_nucleus

from conftest import require


def _disc(shape, center, radius, label, out):
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    out[(rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius ** 2] = label
    return out


# ---------------------------------------------------------------------------
# assign() and clean() on constructed labels


def test_assign_gives_each_micronucleus_its_nearest_nucleus():
    nuclei = np.zeros((40, 60), np.int32)
    nuclei[10:20, 5:15] = 1   # right edge at column 14
    nuclei[10:20, 40:50] = 2  # left edge at column 40
    mn = np.zeros_like(nuclei)
    mn[14:16, 17:19] = 1      # 3 px from nucleus 1 (column 17 - 14), 22 from nucleus 2
    mn[14:16, 35:37] = 2      # 4 px from nucleus 2 (40 - 36)
    owner = assign(nuclei, mn, max_distance=10)
    np.testing.assert_array_equal(owner, [0, 1, 2])
    np.testing.assert_array_equal(owner[mn][mn > 0], np.where(mn[mn > 0] == 1, 1, 2))


def test_assign_breaks_a_tie_by_the_lower_label_not_by_position():
    nuclei = np.zeros((30, 41), np.int32)
    nuclei[10:20, 0:10] = 5   # edge at column 9
    nuclei[10:20, 31:41] = 3  # edge at column 31
    mn = np.zeros_like(nuclei)
    mn[14:16, 20] = 1         # 11 px from both
    assert assign(nuclei, mn, max_distance=20).tolist() == [0, 3]


def test_assign_leaves_a_micronucleus_out_of_range_unassigned_and_the_limit_is_inclusive():
    nuclei = np.zeros((20, 40), np.int32)
    nuclei[5:15, 0:10] = 1    # edge at column 9
    mn = np.zeros_like(nuclei)
    mn[9:11, 14:16] = 1       # 5 px away
    assert assign(nuclei, mn, max_distance=4.9).tolist() == [0, 0]
    assert assign(nuclei, mn, max_distance=5).tolist() == [0, 1]
    diagonal = np.zeros_like(nuclei)
    diagonal[17, 13] = 1      # from (14, 9): sqrt(3² + 4²) = 5
    assert assign(nuclei, diagonal, max_distance=5).tolist() == [0, 1]
    assert assign(nuclei, diagonal, max_distance=4.99).tolist() == [0, 0]


def test_assign_handles_gaps_empty_images_and_overlap():
    nuclei = np.zeros((20, 20), np.int32)
    nuclei[5:15, 5:15] = 7
    assert assign(nuclei, np.zeros_like(nuclei), 5).tolist() == [0]
    mn = np.zeros_like(nuclei)
    mn[3, 10] = 3             # 2 px above the nucleus; labels 1 and 2 have no pixels
    mn[10, 10] = 4            # on the nucleus: distance 0
    assert assign(nuclei, mn, 2).tolist() == [0, 0, 0, 7, 7]
    assert assign(nuclei, mn, 1.9).tolist() == [0, 0, 0, 0, 7]
    assert assign(nuclei, mn, 0).tolist() == [0, 0, 0, 0, 7]


def test_assign_refuses_mismatched_or_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        assign(np.zeros((4, 4), int), np.zeros((4, 5), int), 2)
    with pytest.raises(ValueError, match="integer label image"):
        assign(np.zeros((4, 4)), np.zeros((4, 4), int), 2)
    with pytest.raises(ValueError, match="max_distance"):
        assign(np.zeros((4, 4), int), np.zeros((4, 4), int), -1)


def test_clean_drops_overlapping_small_and_large_detections_with_their_reasons():
    nuclei = np.zeros((30, 30), np.int32)
    nuclei[0:10, 0:10] = 1
    det = np.zeros_like(nuclei)
    det[8:12, 8:12] = 9       # touches the nucleus: dropped, though its size is fine
    det[25, 5] = 4            # 1 px: too small
    det[15:17, 2:4] = 2       # 4 px: kept
    det[20:30, 20:30] = 6     # 100 px: too large
    det[2:4, 25:27] = 5       # 4 px: kept
    kept, dropped = clean(nuclei, det, min_size=3, max_size=50)
    assert dropped == {OVERLAP: 1, TOO_SMALL: 1, TOO_LARGE: 1}
    # Numbered 1..K in the order of the old numbers: 2 -> 1, 5 -> 2.
    assert kept[15, 2] == 1 and kept[2, 25] == 2 and kept.max() == 2
    assert kept.dtype == np.int32 and not kept[nuclei > 0].any()
    assert clean(nuclei, np.zeros_like(det))[1] == dict.fromkeys((OVERLAP, TOO_SMALL, TOO_LARGE), 0)


def test_clean_with_max_overlap_keeps_a_detection_mostly_off_the_nucleus_without_its_nucleus_pixels():
    nuclei = np.zeros((20, 20), np.int32)
    nuclei[:, :10] = 1
    det = np.zeros_like(nuclei)
    det[5:7, 9:13] = 1        # 8 px, 2 on the nucleus (25 %)
    det[12:14, 8:11] = 2      # 6 px, 4 on the nucleus (67 %)
    assert clean(nuclei, det, min_size=3)[1][OVERLAP] == 2
    kept, dropped = clean(nuclei, det, min_size=3, max_overlap=0.5)
    assert dropped[OVERLAP] == 1 and kept.max() == 1
    assert (kept == 1).sum() == 6 and not kept[nuclei > 0].any()
    # The size rules count the pixels off the nucleus: 6 is below 7.
    assert clean(nuclei, det, min_size=7, max_overlap=0.5)[1] == {OVERLAP: 1, TOO_SMALL: 1, TOO_LARGE: 0}
    with pytest.raises(ValueError, match="max_overlap"):
        clean(nuclei, det, max_overlap=1.0)


def test_per_nucleus_counts_and_sums_areas_of_assigned_micronuclei_only():
    mn = np.zeros((10, 10), np.int32)
    mn[0, 0:2], mn[5, 5:8], mn[9, 9] = 1, 2, 3
    owner = np.array([0, 4, 4, 0])
    assert per_nucleus(owner, mn) == {4: (2, 5)}


# ---------------------------------------------------------------------------
# The config section


def _config(tmp_path, **sections):
    return {"input": {"path": str(tmp_path)}, "segment": {"method": "otsu"}, **sections}


def test_micronuclei_section_defaults_and_errors(tmp_path):
    config = load_config(_config(tmp_path, micronuclei={"max_distance": 6}))
    assert config.micronuclei.method == "spot" and config.micronuclei.max_distance == 6
    assert load_config(_config(tmp_path)).micronuclei is None
    cases = [
        ({"input": {"path": str(tmp_path), "z": "stitch"}, "micronuclei": {}}, r"micronuclei.*input\.z: stitch"),
        ({"tiles": {"mode": "always"}, "micronuclei": {}}, r"micronuclei.*tiles\.mode: always"),
        ({"micronuclei": {"min_size": 50, "max_size": 10}}, r"min_size \(50\) is larger than micronuclei\.max_size"),
        ({"micronuclei": {"method": "spots"}}, r"micronuclei.*spots.*did you mean"),
        ({"micronuclei": {"radius": 0}}, r"micronuclei\.spot\.radius|micronuclei.*radius"),
        ({"micronuclei": {"method": "unet", "model": "missing.pt"}}, r"micronuclei.*missing\.pt"),
        ({"masks": [{"name": "micronuclei", "channel": 0}], "micronuclei": {}}, r"'micronuclei' is taken"),
    ]
    for extra, pattern in cases:
        raw = {**_config(tmp_path), **extra}
        with pytest.raises(ConfigError, match=pattern):
            load_config(raw)


def test_a_unet_model_without_a_micronucleus_output_is_a_config_error_naming_the_file(tmp_path):
    require("torch")
    from scip.segment.unet import modelfile
    from scip.segment.unet.model import Architecture, UNet

    # A model file trained without micronucleus labels (two outputs, like the November 2026 nucleus model).
    arch = Architecture(in_channels=1, stem=8, stages=[(1, 8, 1, 1), (2, 12, 1, 2)], decoder=[8, 8])
    path = modelfile.save(UNet(arch).eval(), tmp_path / "two_outputs.pt", meta=modelfile.default_meta(["DNA"]))
    assert "micronuclei" not in modelfile.load(path).outputs
    config = load_config(_config(tmp_path, micronuclei={"method": "unet", "model": str(path)}))
    with pytest.raises(ConfigError, match=r"micronuclei\.model: the model file .*two_outputs\.pt has no 'micronuclei'"):
        check_models(config)


# ---------------------------------------------------------------------------
# A run


def _scene(path: Path) -> dict:
    """A 96×128 TIFF with nuclei and micronuclei placed so that each case of the accounting occurs once."""
    import tifffile

    shape = (96, 128)
    rng = np.random.default_rng(0)
    image = 100 + rng.normal(0, 2, shape)
    nuclei = np.zeros(shape, np.int32)
    _disc(shape, (30, 30), 10, 1, nuclei)      # gets micronucleus A
    _disc(shape, (30, 80), 10, 2, nuclei)      # holds a bright spot (not a micronucleus)
    _disc(shape, (80, 122), 10, 3, nuclei)     # cut by the right border: skipped
    image[nuclei > 0] = 1000
    image[28:31, 43:46] = 1000                 # A: 3 px right of nucleus 1 (edge at column 40)
    image[78:81, 105:108] = 1000               # D: 3 px left of nucleus 3, which is not exported
    image[75:78, 55:58] = 1000                 # C: far from every nucleus
    image[29:32, 79:82] = 3000                 # E: on nucleus 2
    image[60, 10] = 1000                       # one pixel: too small
    tifffile.imwrite(path / "scene.tif", image.astype(np.uint16))
    return {"A": (29, 44), "C": (76, 56), "D": (79, 106), "E": (30, 80)}


def _run(tmp_path, **extra):
    (tmp_path / "in").mkdir()
    where = _scene(tmp_path / "in")
    config = {"input": {"path": str(tmp_path / "in")}, "segment": {"method": "otsu", "smooth": 0, "min_size": 30},
              "micronuclei": {"max_distance": 8}, "features": {"families": ["bbox"]},
              "output": {"path": str(tmp_path / "out"), "labels": True}, "cluster": {"scheduler": "synchronous"},
              **extra}
    return scip.run(config, progress=False), where


def test_a_run_counts_micronuclei_per_cell_and_accounts_for_every_detection(tmp_path):
    result, where = _run(tmp_path)
    table = result.read().set_index("meta_label")
    assert {"micronucleus_count", "micronucleus_area"} <= set(table.columns)
    assert sorted(table.index) == [1, 2]       # nucleus 3 touches the border
    assert table.loc[1, "micronucleus_count"] == 1 and table.loc[1, "micronucleus_area"] == 9
    assert table.loc[2, "micronucleus_count"] == 0 and table.loc[2, "micronucleus_area"] == 0
    summary = json.loads((result.output / "run.json").read_text())
    mn = summary["micronuclei"]
    assert mn["kept"] == 3 and mn["assigned"] == 1
    assert mn["unassigned"] == {"no nucleus within max_distance": 1, "nucleus not exported": 1}
    assert mn["dropped"][OVERLAP] >= 1 and mn["dropped"][TOO_SMALL] >= 1
    assert mn["found"] == sum(mn["dropped"].values()) + mn["kept"]
    assert summary["timings_s"]["steps"]["micronuclei"] > 0
    # labels.zarr: the kept micronuclei, beside the nuclei.
    labels = read_labels(result.output / "labels.zarr", "scene", "micronuclei")
    assert labels.max() == 3 and all(labels[where[k]] > 0 for k in "ACD") and labels[where["E"]] == 0
    assert read_labels(result.output / "labels.zarr", "scene", "cell").max() == 3


def test_the_micronuclei_channel_must_be_a_loaded_channel(tmp_path):
    with pytest.raises(ConfigError, match=r"micronuclei\.channel: 'DNA' is not a loaded channel"):
        _run(tmp_path, micronuclei={"channel": "DNA"})


def test_an_image_read_in_tiles_is_refused_naming_micronuclei_and_the_image(tmp_path):
    with pytest.raises(ConfigError, match=r"micronuclei: not supported for images read in tiles.*\(scene\)"):
        _run(tmp_path, input={"path": str(tmp_path / "in"), "max_image_bytes": 1000})


def test_the_count_column_names_agree():
    from scip.accounting import MICRONUCLEUS_COUNT
    from scip.steps.micronuclei import COUNT

    assert MICRONUCLEUS_COUNT == COUNT


# ---------------------------------------------------------------------------
# The example


def test_the_micronuclei_example_counts_match_the_ground_truth(tmp_path):
    """examples/micronuclei.yml on the example data's micronucleus images: every cell's count is the true one."""
    from scip.datasets.micronuclei import write_micronuclei

    example = Path(__file__).parent.parent / "examples" / "micronuclei.yml"
    (tmp_path / "micronuclei.yml").write_text(example.read_text())
    written = write_micronuclei(tmp_path / "data")
    config = load_config(tmp_path / "micronuclei.yml", overrides={"cluster": {"scheduler": "synchronous"}})
    result = scip.run(config, progress=False)
    truth = pd.read_csv(written["micronuclei_cells"])
    table = result.read()
    table["image"] = table["meta_image_id"].astype(int)
    joined = table.merge(truth, left_on=["image", "meta_truth_label"], right_on=["image", "label"],
                         suffixes=("", "_true"))
    assert len(joined) == len(truth) == len(table)  # every true nucleus found once, nothing else
    assert truth["micronucleus_count"].sum() > 10 and (truth["micronucleus_count"] == 0).sum() > 5
    np.testing.assert_array_equal(joined["micronucleus_count"], joined["micronucleus_count_true"])
    summary = json.loads((result.output / "run.json").read_text())["micronuclei"]
    assert summary["assigned"] == truth["micronucleus_count"].sum()
    assert summary["unassigned"] == {"no nucleus within max_distance": 0, "nucleus not exported": 0}
    report = (result.output / "report.html").read_text()
    share = 100 * (truth["micronucleus_count"] > 0).mean()
    assert f"<strong>{share:.1f} %</strong>) have at least one micronucleus" in report
    assert 'id="micronuclei-histogram"' in report and "Micronucleated cells" in report


def test_features_list_names_the_micronucleus_columns_of_a_config_with_the_section(tmp_path, capsys):
    import yaml

    from scip import cli

    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"input": {"path": "."}, "features": {"families": ["bbox"]}, "micronuclei": {}}))
    assert cli.main(["features", "--list", "--config", str(config)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [r[:2] for r in rows[-2:]] == [["micronucleus_count", "count"], ["micronucleus_area", "px^2"]]
    config.write_text(yaml.safe_dump({"input": {"path": "."}, "features": {"families": ["bbox"]}}))
    assert cli.main(["features", "--list", "--names", "--config", str(config)]) == 0
    assert "micronucleus_count" not in capsys.readouterr().out


def test_partition_summaries_carry_the_micronucleus_tally_through_json_and_addition():
    """What --resume reads back from progress/: the tally survives JSON, and partitions add up."""
    from collections import Counter

    from scip.accounting import PartitionSummary, summary_from_json, summary_to_json

    a = PartitionSummary(micronuclei=Counter({"found": 5, "kept": 3, "assigned": 2, f"dropped: {OVERLAP}": 2}))
    b = PartitionSummary(micronuclei=Counter({"found": 1, "kept": 1, "no_nucleus": 1}))
    back = summary_from_json(json.loads(json.dumps(summary_to_json(a))))
    assert isinstance(back.micronuclei, Counter) and back.micronuclei == a.micronuclei
    assert (back + b).micronuclei == Counter({"found": 6, "kept": 4, "assigned": 2, "no_nucleus": 1,
                                              f"dropped: {OVERLAP}": 2})
