"""`evaluate:` per image and per `meta_*` group (evaluate.group_by), in run.json and the report."""

import json
import re
import shutil

import pytest

from scip.config import ConfigError
from scip.steps.evaluate import evaluation_breakdown


def _plates(tmp_path):
    """The example fields in two plates: the file name carries the plate, the labels stay per field."""
    from scip.datasets import write_example

    paths = write_example(tmp_path / "data", n_events=2, n_fields=4, seed=1)
    folder = tmp_path / "plates"
    folder.mkdir()
    for f in paths["fields"].glob("field*_*.tiff"):
        plate = "A" if int(f.name[5]) < 2 else "B"
        shutil.copy(f, folder / f"plate{plate}_{f.name}")
    return paths, folder


def test_run_json_and_report_break_the_evaluation_down_by_image_and_group(tmp_path):
    from scip.run import run

    paths, folder = _plates(tmp_path)
    config = {
        "input": {"path": str(folder), "pattern": r"plate(?P<plate>[AB])_field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff",
                  "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "evaluate": {"labels": str(paths["fields_labels"] / "field{id}.tiff"), "group_by": "meta_plate"},
        "output": {"path": str(tmp_path / "out")},
        "cluster": {"scheduler": "synchronous"},
    }
    result = run(config, progress=False)
    ev = json.loads((result.output / "run.json").read_text())["evaluation"]
    assert ev["per_image_total"] == 4 and [r["image_id"] for r in ev["per_image"]] == ["A_0", "A_1", "B_2", "B_3"]
    for key in ("truth_cells", "found_cells", "matched", "exported_matched"):
        assert sum(r[key] for r in ev["per_image"]) == ev[key]
        assert sum(g[key] for g in ev["per_group"]["meta_plate"]) == ev[key]
    for r in ev["per_image"]:
        assert r["recall"] == round(r["matched"] / r["truth_cells"], 4) and r["truth_cells"] > 0
    a, b = ev["per_group"]["meta_plate"]
    assert (a["meta_plate"], a["images"], b["meta_plate"], b["images"]) == ("A", 2, "B", 2)
    assert a["truth_cells"] == ev["per_image"][0]["truth_cells"] + ev["per_image"][1]["truth_cells"]
    assert a["precision"] == round(a["matched"] / a["found_cells"], 4)
    html = (result.output / "report.html").read_text()
    groups = html[html.index('id="evaluation-by-meta_plate"'):]
    groups = groups[:groups.index("</table>")]
    assert re.findall(r'data-score="matched">(\d+)<', groups) == [str(a["matched"]), str(b["matched"])]
    assert 'id="evaluation-images-table"' in html
    # the pooled table keeps its own figures
    assert re.search(rf'data-evaluation="matched">{ev["matched"]}<', html)


def test_group_by_names_a_column_of_the_pattern(tmp_path, blobs_tiff):
    from scip.run import prepare

    labels = tmp_path / "good_labels.tif"
    shutil.copy(next(blobs_tiff.glob("*.tif")), labels)
    config = {"input": {"path": str(blobs_tiff), "pattern": r"(?P<id>(?P<kind>[a-z])[a-z]+)\.tif"},
              "evaluate": {"labels": str(tmp_path / "{id}_labels.tif"), "group_by": ["meta_kind", "meta_well"]}}
    with pytest.raises(ConfigError, match=r"evaluate.group_by.1: 'meta_well' is not a metadata column of this "
                                          r"input; allowed: meta_id, meta_kind"):
        prepare(config)


def test_breakdown_leaves_images_without_truth_out_of_the_groups():
    images = [{"image_id": "b", "index": 1, "fields": {"well": "A1"}, "truth_cells": 4, "found_cells": 5,
               "matched": 3, "error": ""},
              {"image_id": "a", "index": 0, "fields": {"well": "A1"}, "truth_cells": 2, "found_cells": 0,
               "matched": 0, "error": ""},
              {"image_id": "c", "index": 2, "fields": {"well": "B1"}, "truth_cells": 0, "found_cells": 0,
               "matched": 0, "error": "no ground truth file"}]
    out = evaluation_breakdown(images, {"1": 2}, ["meta_well"])
    assert [r["image_id"] for r in out["per_image"]] == ["a", "b", "c"]
    assert out["per_image"][0]["precision"] is None and out["per_image"][1]["exported_matched"] == 2
    assert out["per_image"][2]["error"] == "no ground truth file"
    (a1,) = out["per_group"]["meta_well"]
    assert a1 == {"meta_well": "A1", "images": 2, "truth_cells": 6, "found_cells": 5, "matched": 3, "recall": 0.5,
                  "precision": 0.6, "f1": round(6 / 11, 4), "exported_matched": 2, "exported_recall": round(2 / 6, 4)}
