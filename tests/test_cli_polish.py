"""The command line's manners: --version, -q / -v, progress bars in log files, `scip check`'s image list,
`scip predict --labels`."""

import io
import json
import logging

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from scip import cli
from scip.engine import progress


def test_version_is_one_line_and_verbose_adds_the_dependencies(capsys):
    from importlib import metadata

    assert cli.main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("scip ") and "python 3." in lines[0]
    assert cli.main(["-v", "--version"]) == 0
    details = capsys.readouterr().out.splitlines()
    assert details[0] == lines[0]
    assert f"  dask {metadata.version('dask')}" in details and f"  numpy {metadata.version('numpy')}" in details


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2 and "a command is required" in capsys.readouterr().err


@pytest.mark.parametrize("argv, level", [(["check", "{c}"], logging.INFO), (["check", "-q", "{c}"], logging.WARNING),
                                         (["-q", "check", "{c}"], logging.WARNING),
                                         (["check", "-v", "{c}"], logging.DEBUG),
                                         (["--verbose", "check", "{c}"], logging.DEBUG)])
def test_quiet_and_verbose_set_the_scip_logger_on_every_subcommand(tmp_path, blobs_tiff, argv, level):
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"input": {"path": str(blobs_tiff)}}))
    logger = logging.getLogger("scip")
    before = logger.level
    try:
        assert cli.main([a.format(c=config) for a in argv]) == 0
        assert logger.level == level
    finally:
        logger.setLevel(before)


def test_every_subcommand_takes_quiet_and_verbose():
    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"run", "slide", "check", "predict", "classify", "report", "train"} <= set(commands)
    for name, sub in commands.items():
        options = {o for action in sub._actions for o in action.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= options, name


def test_quiet_hides_the_progress_bars(tmp_path, blobs_tiff, capsys):
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"input": {"path": str(blobs_tiff)}, "cluster": {"scheduler": "synchronous"}}))
    logger = logging.getLogger("scip")
    before = logger.level
    try:
        assert cli.main(["run", "-q", str(config), "--output", str(tmp_path / "out")]) == 0
    finally:
        logger.setLevel(before)
    captured = capsys.readouterr()
    assert "1 images, 4 cells found" in captured.out
    assert "features + write" not in captured.err and "%" not in captured.err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_into_a_file_writes_a_few_labelled_lines_and_no_redraws(monkeypatch):
    # Every step past the interval: the tenths still bound the lines of a long pass.
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    log = io.StringIO()
    with progress.Bar("features + write", 1000, stream=log) as bar:
        for _ in range(1000):
            bar.step()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 2 <= len(lines) <= 10
    assert all(line.startswith("scip: features + write: ") for line in lines)
    assert lines[-1].startswith("scip: features + write: 1000 of 1000 partitions (100%)")


def test_bar_into_a_file_is_one_line_per_short_pass():
    log = io.StringIO()
    with progress.Bar("statistics", 7, "tasks", stream=log) as bar:
        for _ in range(7):
            bar.step()
    assert log.getvalue().count("\n") == 1 and "statistics: 7 of 7 tasks" in log.getvalue()


def test_bar_on_a_terminal_redraws_in_place():
    term = _Terminal()
    with progress.Bar("cells", 3, stream=term) as bar:
        for _ in range(3):
            bar.step()
    text = term.getvalue()
    assert text.count("\n") == 1 and text.count("\r") >= 2 and "cells: 3 of 3 partitions" in text


def test_check_lists_images_with_shapes_and_how_they_are_read(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        tifffile.imwrite(folder / f"img{i}.tif", np.zeros((2, 40 + i, 50), np.uint16))
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"input": {"path": str(folder), "channels": ["DNA", "GFP"]},
                                      "tiles": {"mode": "always", "size": 64, "diameter": 10}}))
    assert cli.main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "images (each read in tiles of 64 px):" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("img2:"))
    assert str(folder / "img2.tif") in line
    assert "[42 x 50 px, uint16, 2 channel(s), 8.2 KiB decoded; read in tiles]" in line

    config.write_text(yaml.safe_dump({"input": {"path": str(folder), "channels": ["DNA", "GFP"],
                                                "max_image_bytes": 8500}}))
    monkeypatch_listed = cli._CHECK_LISTED
    try:
        cli._CHECK_LISTED = 2
        assert cli.main(["check", str(config)]) == 0
    finally:
        cli._CHECK_LISTED = monkeypatch_listed
    out = capsys.readouterr().out
    assert "read whole, or in tiles when over 8.3 KiB decoded" in out
    listed = [x for x in out.splitlines() if x.startswith("  img")]
    assert len(listed) == 2 and listed[0].endswith("read whole]")
    assert "  ... and 2 more (scip check --all lists every image)" in out
    assert cli.main(["check", "--all", str(config)]) == 0
    listed = [x for x in capsys.readouterr().out.splitlines() if x.startswith("  img")]
    assert len(listed) == 4 and listed[3].endswith("read in tiles]")  # 43 x 50 x 2 x 2 bytes = 8600 > 8500


# ------------------------------------------------------------------------------------------------ predict


def test_predict_labels_scores_and_writes_them_beside_the_predictions(tmp_path, capsys):
    from test_classify import make_table, write_run

    table, labels = make_table()
    run_dir = tmp_path / "results"
    write_run(run_dir, table)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert cli.main(["classify", str(run_dir), "--labels", str(tmp_path / "labels.csv"), "--on",
                     "meta_image_id,meta_label", "--target", "cell_type", "--folds", "3", "--trees", "30",
                     "--jobs", "1", "--out", str(tmp_path / "model")]) == 0
    # Score against half the labels, one of them flipped to a class the model does not know.
    half = labels.iloc[::2].copy()
    half.loc[half.index[0], "cell_type"] = "stroma"
    half.to_csv(tmp_path / "half.csv", index=False)
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "model"), str(run_dir), "--jobs", "1",
                     "--labels", str(tmp_path / "half.csv")]) == 0
    captured = capsys.readouterr()
    scores = json.loads((run_dir / "predictions_scores.json").read_text())
    pred = pd.read_csv(run_dir / "predictions.csv", dtype={"meta_image_id": str})
    joined = pred.merge(half, on=["meta_image_id", "meta_label"])
    assert scores["counts"]["cells_labelled"] == len(joined) == 120
    assert scores["classes"] == ["normal", "tumor", "stroma"]
    confusion = np.array(scores["confusion"])
    expected = pd.crosstab(joined["cell_type"], joined["predicted"]).reindex(
        index=scores["classes"], columns=scores["classes"], fill_value=0).to_numpy()
    np.testing.assert_array_equal(confusion, expected)
    recalls = [np.mean(joined.loc[joined["cell_type"] == c, "predicted"] == c) for c in scores["classes"]]
    assert scores["per_class"]["stroma"]["recall"] == 0.0 and scores["per_class"]["stroma"]["support"] == 1
    assert scores["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert scores["accuracy"] == pytest.approx(np.mean(joined["cell_type"] == joined["predicted"]))
    assert "balanced accuracy" in captured.out and "confusion matrix" in captured.out
    assert "'stroma' are not classes of the model" in captured.err
    rows = [line.split() for line in captured.out.splitlines() if line.startswith("  ")]
    assert rows[0] == ["true\\pred", "normal", "tumor", "stroma"]
    assert [int(x) for x in rows[2][1:]] == list(confusion[1])


def test_predict_labels_errors_name_the_problem(tmp_path, capsys):
    from test_classify import make_table, write_run

    table, labels = make_table()
    run_dir = tmp_path / "results"
    write_run(run_dir, table)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert cli.main(["classify", str(run_dir), "--labels", str(tmp_path / "labels.csv"), "--on",
                     "meta_image_id,meta_label", "--target", "cell_type", "--folds", "2", "--trees", "10",
                     "--jobs", "1", "--out", str(tmp_path / "model")]) == 0
    labels.rename(columns={"cell_type": "kind"}).to_csv(tmp_path / "other.csv", index=False)
    capsys.readouterr()
    argv = ["predict", str(tmp_path / "model"), str(run_dir), "--jobs", "1", "--labels", str(tmp_path / "other.csv")]
    assert cli.main(argv) == 2
    assert "target column 'cell_type' not in the labels file" in capsys.readouterr().err
    assert cli.main([*argv, "--target", "kind"]) == 0
    assert json.loads((run_dir / "predictions_scores.json").read_text())["inputs"]["target"] == "kind"
    assert cli.main(["predict", str(tmp_path / "model"), str(run_dir), "--target", "kind"]) == 2
    assert "--on and --target go with --labels" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- a real run's stderr


#: What a run must not end with: the nanny killing a worker that was exiting, distributed's tracebacks.
_SHUTDOWN_NOISE = ("still alive after", "killing", "Traceback", "heartbeat", "CommClosedError", "StreamClosedError")


def test_local_cluster_run_into_a_log_file_is_labelled_bounded_and_ends_quietly(tmp_path, blobs_tiff):
    import subprocess
    import sys

    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({
        "input": {"path": str(blobs_tiff), "channels": ["DNA", "GFP"]},
        "segment": {"method": "otsu", "channel": "DNA"},
        "tiles": {"mode": "always", "size": 48, "diameter": 8},
        "output": {"path": str(tmp_path / "out"), "labels": True},
        "cluster": {"workers": 2, "threads": 1, "dashboard_address": ":0"}}))
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        done = subprocess.run([sys.executable, "-m", "scip", "run", str(config)], stdout=subprocess.PIPE,
                              stderr=err, text=True, timeout=900)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "4 cells found" in done.stdout
    assert "\r" not in text
    bars = [line for line in text.splitlines() if line.startswith("scip: ") and " of " in line and "%)" in line]
    assert {"statistics", "segment tiles", "features + write", "pyramid level 1"} <= {b.split(": ")[1] for b in bars}
    # Short passes: one line each (a pass writes more only after 30 s, at most one per tenth of it).
    labels = [b.split(": ")[1] for b in bars]
    assert all(labels.count(label) <= 11 for label in labels) and len(bars) <= 3 * len(set(labels)), text
    assert not [n for n in _SHUTDOWN_NOISE if n in text], text
