"""The run report: sampled cells on disk, a self-contained page whose numbers are run.json's, and a real browser.

The browser test opens the page in headless Chromium (``chromium`` on the
PATH, or ``$SCIP_CHROMIUM``; CI installs Debian's package in ``.ci/run``)
and is skipped only when none is found. It saves a screenshot of the page
under the test's tmp path and, when ``$SCIP_TEST_ARTIFACTS`` names a folder,
copies it there as ``report.png`` (with the page as ``report.html``) for a
person to look at.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import scip
from scip import report
from scip.engine import cluster, graph
from scip.accounting import PartitionSummary
from scip.datasets import write_example
from scip.engine.reduce import reduce
from scip.run import prepare

from conftest import missing_reference

SIGNAL_FILTER = {"measure": "signal", "channel": "cyto", "min": "otsu"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_output(tmp_path_factory) -> Path:
    """A filtered, evaluated run of 60 events, its sampled cells, a real `scip classify` result, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    example = write_example(tmp / "data", n_events=60, n_fields=1)
    config = {
        "input": {"path": str(example["ifc"]), "channels": ["DNA", "cyto", "marker"], "images_per_partition": 16},
        "segment": {"method": "watershed", "channel": "cyto", "min_distance": 5},
        "filters": [SIGNAL_FILTER],
        "evaluate": {"labels": str(example["ifc_labels"])},
        "features": {"families": ["shape", "intensity"]},
        "output": {"path": str(tmp / "out"), "overwrite": True},
        "cluster": {"scheduler": "synchronous"},
    }
    result = scip.run(config, progress=False)
    out = result.output
    if not (out / report.SAMPLES_FILE).exists():
        # Until scip.run saves them itself: the same cells again, with samples, written elsewhere.
        p = prepare(config)
        red = reduce(p, None, progress=False)
        (tmp / "parts").mkdir()
        tasks = graph.build_writes(p, tmp / "parts", red.cells, red.bounds, red.ranges, samples=8)
        total = sum(cluster.compute(tasks, None, progress=False), PartitionSummary())
        report.save_samples(out / report.SAMPLES_FILE, total.samples)
    report.write_report(out)
    # Labels of the ground-truth cells (large or small, by their true area), joined on the matched
    # truth label: the classifier has something to learn, and the CLI rewrites the report after it.
    truth = pd.read_csv(example["ifc_cells"])
    labels = pd.DataFrame({"meta_image_id": truth["image"], "meta_truth_label": truth["label"],
                           "size": np.where(truth["area"] >= truth["area"].median(), "large", "small")})
    labels.to_csv(tmp / "labels.csv", index=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "scip", "classify", str(out), "--labels", str(tmp / "labels.csv"),
                           "--on", "meta_image_id,meta_truth_label", "--target", "size", "--folds", "3",
                           "--trees", "20", "--jobs", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scip: report updated" in proc.stdout
    return out


def _classification_json(out: Path) -> dict:
    return json.loads((out / report.CLASSIFICATION_FILE).read_text())


def _summary(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _data(page: str, attribute: str) -> dict[str, str]:
    """``{value of data-<attribute>: text of its element}`` over the page."""
    return {m.group(1): html_unescape(m.group(2))
            for m in re.finditer(rf'data-{attribute}="([^"]*)"[^>]*>([^<]*)<', page)}


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def _expected_counts(summary: dict) -> dict[str, str]:
    images, cells = summary["counts"]["images"], summary["counts"]["cells"]
    expected = {
        "images-total": images["total"], "images-with-cells": images["with_cells"],
        "images-skipped": images["skipped"], "cells-found": cells["found"], "cells-exported": cells["exported"],
        "cells-skipped": cells["skipped"],
    }
    expected.update({f"images-skipped-{s}": n for s, n in images["skipped_by_step"].items()})
    expected.update({f"cells-skipped-{s}": n for s, n in cells["skipped_by_step"].items()})
    for f in summary["reductions"]["filters"]:
        expected["cells-filtered-" + "-".join(re.findall(r"[a-z0-9]+", f["filter"].lower()))] = f["cells_dropped"]
    return {k: str(v) for k, v in expected.items()}


def test_samples_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    samples = [
        {"image_id": "7", "index": np.int64(7), "label": 2, "truth_label": None, "fields": {"well": "A1"},
         "channels": ("DNA", "cyto"), "crop": rng.random((2, 9, 11), dtype=np.float32),
         "mask": rng.random((9, 11)) > 0.5},
        {"image_id": "8", "index": 8, "label": 1, "truth_label": 3, "fields": {}, "channels": ["DNA", "cyto"],
         "crop": np.zeros((2, 4, 5), np.float32), "mask": np.ones((4, 5), bool)},
    ]
    path = tmp_path / "cells.npz"
    report.save_samples(path, samples)
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    back = report.load_samples(path)
    assert len(back) == 2
    for a, b in zip(samples, back):
        assert b["crop"].dtype == np.float32 and b["mask"].dtype == bool
        np.testing.assert_array_equal(a["crop"], b["crop"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
        assert b["image_id"] == a["image_id"] and b["label"] == a["label"] and b["truth_label"] == a["truth_label"]
        assert b["index"] == int(a["index"]) and b["fields"] == a["fields"] and b["channels"] == list(a["channels"])
    with np.load(path, allow_pickle=False) as z:  # plain arrays and a JSON string only
        assert sorted(z.files) == ["crop_0", "crop_1", "mask_0", "mask_1", "meta"]
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a scip sampled-cells file"):
        report.load_samples(tmp_path / "other.npz")


def test_report_is_self_contained_and_counts_match_run_json(run_output):
    page = (run_output / report.REPORT_FILE).read_text()
    summary = _summary(run_output)
    # Nothing is fetched: no URL, no external script, style sheet or image.
    for bad in ("http://", "https://", "//cdn", 'src="/', "<link", "<script src", "@import", "url("):
        assert bad not in page, bad
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(sources) == page.count("<img") >= 4
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG)
        Image.open(io.BytesIO(data)).load()  # the whole image decodes
    # Every count of run.json is in the table, as it is there.
    counts = _data(page, "count")
    expected = _expected_counts(summary)
    assert int(expected["cells-filtered-signal-cyto"]) > 0  # the filter did drop cells here
    assert {k: counts.get(k) for k in expected} == expected
    (entry,) = summary["reductions"]["filters"]
    assert f'data-threshold-min="{entry["min_threshold"]}"' in page
    # Timings: every step of run.json, with its seconds.
    timings = _data(page, "timing")
    assert {k: float(v) for k, v in timings.items() if k != "total"} == pytest.approx(
        summary["timings_s"]["steps"], rel=1e-3, abs=1e-3)
    # Montage: the sampled cells (up to max_cells, 48), each captioned with its image and label.
    samples = report.load_samples(run_output / report.SAMPLES_FILE)
    captions = re.findall(r"<figcaption>image (\S+) · cell (\d+)</figcaption>", page)
    assert len(samples) > 0 and len(captions) == page.count('<figure class="cell"') == min(len(samples), 48)
    assert set(captions) <= {(str(s["image_id"]), str(s["label"])) for s in samples}
    # Feature histograms: area and the mean intensity of each channel, over every exported cell.
    n = _data(page, "feature-n")
    assert set(n) == {"feat_cell_shape_area"} | {f"feat_cell_intensity_mean_{c}" for c in ("DNA", "cyto", "marker")}
    assert set(n.values()) == {str(summary["counts"]["cells"]["exported"])}
    # Evaluation and reductions.
    evaluation = _data(page, "evaluation")
    assert evaluation["matched"] == str(summary["evaluation"]["matched"])
    assert float(evaluation["recall"]) == pytest.approx(summary["evaluation"]["recall"], rel=1e-3)
    assert 'id="filters-table"' in page


def test_report_groups_and_chosen_features(run_output, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run_output, out)
    samples = report.load_samples(out / report.SAMPLES_FILE)
    page = report.write_report(out, group_by="truth_label", features=["cell_shape_area", "feat_nonexistent"],
                               max_cells=2).read_text()
    groups = re.findall(r'<div class="group" data-group="([^"]*)">', page)
    matched = sum(bool(s["truth_label"]) for s in samples)
    assert "matched to ground truth" in groups and len(groups) == len(set(groups))
    assert page.count('<figure class="cell"') == sum(min(2, n) for n in (matched, len(samples) - matched) if n)
    assert "Not in the table: feat_nonexistent" in page
    assert set(_data(page, "feature-n")) == {"feat_cell_shape_area"}
    assert "exported cells by truth_label" in page  # the histograms are grouped too
    # A metadata field of the images works as well: every event here has its object number.
    page = report.write_report(out, group_by="meta_object_number").read_text()
    shown = re.findall(r'<div class="group" data-group="([^"]*)">', page)
    numbers = {str(s["fields"]["object_number"]) for s in samples}
    if len(numbers) <= 12:
        assert set(shown) == numbers
    else:  # at most 12 groups: the 11 most common and the rest pooled
        assert len(shown) == 12 and shown[-1] == "(other)" and set(shown[:-1]) <= numbers
    with pytest.raises(ValueError, match="group_by 'no_such_field'"):
        report.write_report(out, group_by="no_such_field")


def test_classification_section(run_output, tmp_path):
    """What `scip classify` wrote (under "metrics") is what the section shows."""
    page = (run_output / report.REPORT_FILE).read_text()
    section = page[page.index('<section id="classification">'):]
    section = section[:section.index("</section>")]
    doc = _classification_json(run_output)
    metrics = doc["metrics"]
    assert doc["classes"] == ["large", "small"] and doc["n_cells"] >= 20
    assert f'data-metric="balanced-accuracy" data-value="{metrics["balanced_accuracy"]}"' in section
    assert f'± {metrics["balanced_accuracy_std"]:.3g} over 3 folds' in section
    cm = _data(section, "cm")
    matrix, names = metrics["confusion_matrix"]["matrix"], metrics["confusion_matrix"]["labels"]
    assert sum(map(sum, matrix)) == doc["n_cells"]
    assert cm == {f"{t}-{p}": str(matrix[i][j]) for i, t in enumerate(names) for j, p in enumerate(names)}
    shown = _data(section, "metric")
    for name, values in metrics["per_class"].items():
        assert shown[f"{name}-recall"] == report._num(values["recall"])
        assert shown[f"{name}-support"] == report._num(values["support"])
    assert section.count("<img") == 2  # confusion heatmap and importances
    assert "data-missing" not in section
    details = dict(re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", section))
    assert details["target"] == "size" and details["cells labelled"] == str(doc["n_cells"])
    # Without the file, no section; with a broken one, a note instead of a failure.
    out = tmp_path / "copy"
    shutil.copytree(run_output, out)
    shutil.rmtree(out / "classification")
    assert 'id="classification"' not in report.write_report(out).read_text()
    (out / "classification").mkdir()
    (out / report.CLASSIFICATION_FILE).write_text("{not json")
    assert "Could not read" in report.write_report(out).read_text()
    # A file without what the section needs (here: the metrics at the top level, as the report
    # once expected) says which keys it lacks instead of showing an empty section.
    flat = {k: v for k, v in doc.items() if k not in ("metrics", "importances")} | {
        "balanced_accuracy": metrics["balanced_accuracy"], "per_class": metrics["per_class"]}
    (out / report.CLASSIFICATION_FILE).write_text(json.dumps(flat))
    page = report.write_report(out).read_text()
    section = page[page.index('<section id="classification">'):]
    assert re.search(r'data-missing="metrics.balanced_accuracy metrics.confusion_matrix metrics.per_class '
                     r'importances.top"', section)
    assert "has no metrics.balanced_accuracy, metrics.confusion_matrix" in section
    assert 'data-metric="balanced-accuracy"' not in section


def _chromium() -> str | None:
    for name in (os.environ.get("SCIP_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        path = name and shutil.which(name)
        if path:
            return path
    return None


def test_report_in_headless_chromium(run_output, tmp_path):
    """Every image decodes in a real browser, and the numbers it shows are run.json's."""
    browser = _chromium()
    if browser is None:
        missing_reference("no chromium executable on the PATH (CI installs Debian's chromium in .ci/run)")
    page = run_output / report.REPORT_FILE
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=90).stdout
    check = re.search(r'<span id="image-check"([^>]*)>', dom)
    assert check, dom[-2000:]
    attrs = dict(re.findall(r'data-(\w+)="(\d*)"', check.group(1)))
    n_images = page.read_text().count("<img")
    # loaded: decoded, with an opaque last pixel (not a truncated PNG); checked: pixels were read back.
    assert attrs == {"total": str(n_images), "loaded": str(n_images), "failed": "0", "checked": str(n_images)}
    assert {k: v for k, v in _data(dom, "count").items() if k in _expected_counts(_summary(run_output))} \
        == _expected_counts(_summary(run_output))
    # The classification the real `scip classify` wrote, as the browser renders it.
    metrics = _classification_json(run_output)["metrics"]
    shown = re.search(r'data-metric="balanced-accuracy" data-value="([^"]*)">([^<]*)<', dom)
    assert shown and float(shown.group(1)) == metrics["balanced_accuracy"]
    assert shown.group(2) == report._num(metrics["balanced_accuracy"], 3)
    matrix, names = metrics["confusion_matrix"]["matrix"], metrics["confusion_matrix"]["labels"]
    assert _data(dom, "cm")[f"{names[0]}-{names[0]}"] == str(matrix[0][0])
    assert len(_data(dom, "cm")) == len(names) ** 2
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=90)
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 20_000
    artifacts = os.environ.get("SCIP_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report.png")
        shutil.copy(page, Path(artifacts) / "report.html")


def _labelled_run(tmp: Path, pyramid_levels: int) -> Path:
    example = write_example(tmp / "data", n_events=2, n_fields=2, seed=1)
    config = {
        "input": {"path": str(example["fields"]), "pattern": r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff",
                  "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "features": {"families": ["shape"]},
        "output": {"path": str(tmp / "out"), "labels": True, "pyramid_levels": pyramid_levels},
        "cluster": {"scheduler": "synchronous"},
    }
    return scip.run(config, progress=False).output


def _decoded(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def test_label_images_section(tmp_path, run_output):
    from scip.io import labels

    out = _labelled_run(tmp_path, pyramid_levels=2)
    page = (out / report.REPORT_FILE).read_text()
    assert 'id="label-images"' in page
    table = scip.read(out)
    figures = re.findall(r'<figure class="field" data-label-image="([^"]+)"><img src="([^"]+)"', page)
    assert sorted(i for i, _ in figures) == sorted(table["meta_image_id"].unique())
    for image_id, uri in figures:
        # The coarsest level (256 / 4), each object coloured, the background black.
        coarse = labels.read_labels(out / labels.LABELS, image_id, "cell", 2)
        rgb = _decoded(uri)
        assert rgb.shape == (64, 64, 3)
        assert ((rgb.sum(axis=-1) == 0) == (coarse == 0)).all()
    counts = _data(page, "label-cells")
    assert counts == {k: str(v) for k, v in table["meta_image_id"].value_counts().items()}
    # No labels written: no section (the report fixture's run).
    assert 'id="label-images"' not in (run_output / report.REPORT_FILE).read_text()


def test_label_images_section_needs_a_large_or_tiled_image(tmp_path):
    out = _labelled_run(tmp_path, pyramid_levels=0)
    assert 'id="label-images"' not in (out / report.REPORT_FILE).read_text()
    # A tiled image (run.json says so) is shown at any size, with its tile count.
    summary = _summary(out)
    image_id = scip.read(out)["meta_image_id"].iloc[0]
    summary["tiles"] = {"images": [{"image_id": image_id, "tiles": 9}]}
    (out / "run.json").write_text(json.dumps(summary))
    page = report.write_report(out).read_text()
    assert re.findall(r'data-label-image="([^"]+)"', page) == [image_id]
    assert _data(page, "label-tiles") == {image_id: "9"}


def test_run_report_draws_the_workers_columns_and_equals_the_report_from_the_parts(tmp_path, monkeypatch):
    """A run's report takes its columns from what the workers returned, not from the parts, and shows the same.

    The page the run wrote, from the columns carried back with the partitions'
    summaries, is the page written afterwards from the parts on disk: the
    same histogram images (so the same counts over the same bins), the same
    numbers in the features table, the same plate of cells per well.
    """
    import pyarrow as pa

    example = write_example(tmp_path / "data", n_events=40, n_fields=1)
    config = {
        "input": {"path": str(example["ifc"]), "channels": ["DNA", "cyto", "marker"], "images_per_partition": 8},
        "segment": {"method": "watershed", "channel": "cyto", "min_distance": 5},
        "filters": [SIGNAL_FILTER],
        "features": {"families": ["shape", "intensity"]},
        "output": {"path": str(tmp_path / "out"), "overwrite": True},
        "cluster": {"scheduler": "synchronous"},
    }
    reads = []
    read_parquet = pd.read_parquet

    def counting(path, *args, **kwargs):
        reads.append(Path(path))
        return read_parquet(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", counting)
    result = scip.run(config, progress=False)
    assert not [r for r in reads if r.parent == result.table], "the run's report read the parts again"
    written = (result.output / report.REPORT_FILE).read_text()
    from_parts = report.write_report(result.output).read_text()
    assert len([r for r in reads if r.parent == result.table]) == len(list(result.table.glob("part-*.parquet")))

    def without_time(page: str) -> str:
        return re.sub(r'<td data-header="written">[^<]*</td>', "", page)

    assert 'id="features-table"' in written and "feature histograms" in written
    assert without_time(written) == without_time(from_parts)
    # What travels back is a few columns per partition, and only in the partition's own summary.
    table = pa.table({"feat_cell_shape_area": [1.0, 2.0]})
    assert (PartitionSummary(report_table=table) + PartitionSummary(report_table=table)).report_table is None
    # A partition without it (read back by --resume, or computed image by image): the report reads the parts.
    run_module = sys.modules["scip.run"]
    assert run_module._report_table([PartitionSummary(report_table=table), PartitionSummary()]) is None
    assert run_module._report_table([PartitionSummary(report_table=table)] * 2).num_rows == 4


def test_report_reads_the_parts_for_columns_not_carried(run_output, tmp_path):
    """A carried table without the columns a section draws (or with none at all) leaves the page as it was."""
    import pyarrow as pa

    out = tmp_path / "copy"
    shutil.copytree(run_output, out)
    baseline = report.write_report(out).read_text()
    for carried in (pa.table({"meta_row": pa.array([], pa.string())}), None):
        page = report.write_report(out, table=carried).read_text()
        strip = re.compile(r'<td data-header="written">[^<]*</td>')
        assert strip.sub("", page) == strip.sub("", baseline)
