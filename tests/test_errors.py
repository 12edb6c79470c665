"""Errors are not skips: unexpected exceptions, errors.max, workers killed by an image, a full disk (issue 15)."""

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

import scip
import scip.segment
from scip.cli import main
from scip.failures import RunFailed
from scip.records import DataError
from scip.segment import otsu
from conftest import make_blobs

#: The image size that the faulty methods below pick on; the others are 96 x 96.
ODD = 112


def _images(folder: Path, n: int = 3, odd: tuple[int, ...] = (1,)) -> Path:
    """``n`` two-channel images with four disks each; those at positions ``odd`` are ODD x ODD."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tifffile.imwrite(folder / f"img{i}.tif", make_blobs(seed=i, size=ODD if i in odd else 96))
    return folder


def _config(tmp_path, **extra) -> dict:
    config = {"input": {"path": str(_images(tmp_path / "images", **extra.pop("images", {}))),
                        "images_per_partition": 1},
              "segment": {"method": "otsu"}, "output": {"path": str(tmp_path / "out")},
              "cluster": {"scheduler": "synchronous"}}
    for key, value in extra.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def _otsu_with_a_bug(image, **params):
    if image.shape == (ODD, ODD):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")
    return otsu(image, **params)


def _run_json(config: dict) -> dict:
    return json.loads((Path(config["output"]["path"]) / "run.json").read_text())


def test_a_bug_in_a_method_is_an_error_with_its_traceback(tmp_path, monkeypatch):
    """Case 7: a TypeError in a segmentation method is an error, not 'no cells'."""
    monkeypatch.setitem(scip.segment.METHODS, "otsu", _otsu_with_a_bug)
    config = _config(tmp_path)
    result = scip.run(config, progress=False)
    summary = _run_json(config)
    assert summary["status"] == "finished_with_errors" == result.summary["status"]
    assert summary["counts"]["errors"] == 1 and summary["counts"]["images"]["errors"] == 1
    (error,) = summary["errors"]
    assert error["image_id"] == "img1" and error["step"] == "segment" and error["exception"] == "TypeError"
    assert "_otsu_with_a_bug" in error["traceback"] and "NoneType" in error["traceback"]
    assert all(isinstance(v, str) for v in error.values())
    skipped = pd.read_csv(result.output / "skipped.csv", keep_default_na=False)
    row = skipped[skipped["image_id"] == "img1"].iloc[0]
    assert row["error"] == "TypeError" and row["reason"].startswith("error: TypeError")
    # The other images are exported as usual, and the counts still add up.
    table = result.read()
    assert set(table["meta_image_id"]) == {"img0", "img2"}
    assert summary["counts"]["images"]["total"] == summary["counts"]["images"]["with_cells"] + \
        summary["counts"]["images"]["skipped"]
    assert 'data-count="images-errors">1<' in (result.output / "report.html").read_text()


def test_a_data_problem_stays_a_skip(tmp_path, monkeypatch):
    """A method that says the data is bad (DataError) skips the image: no error, status ok."""
    def picky(image, **params):
        if image.shape == (ODD, ODD):
            raise DataError("too few foreground pixels")
        return otsu(image, **params)

    monkeypatch.setitem(scip.segment.METHODS, "otsu", picky)
    config = _config(tmp_path)
    result = scip.run(config, progress=False)
    summary = _run_json(config)
    assert summary["status"] == "ok" and summary["counts"]["errors"] == 0 and summary["errors"] == []
    skipped = pd.read_csv(result.output / "skipped.csv", keep_default_na=False)
    row = skipped[skipped["image_id"] == "img1"].iloc[0]
    assert row["error"] == "" and "too few foreground pixels" in row["reason"]


def test_ordinary_bad_data_gives_no_error(tmp_path):
    """Empty, constant and object-less images, and border cells, stay skips (no error, status ok)."""
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "good.tif", make_blobs())
    tifffile.imwrite(folder / "constant.tif", np.full((2, 96, 96), 7, np.uint16))
    noise = np.random.default_rng(0).normal(100, 1, (2, 96, 96)).clip(0).astype(np.uint16)
    tifffile.imwrite(folder / "noise.tif", noise)
    tifffile.imwrite(folder / "tiny.tif", np.zeros((2, 1, 1), np.uint16))
    config = {"input": {"path": str(folder)}, "segment": {"method": "watershed"},
              "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"},
              "filters": [{"measure": "area", "min": 60}]}
    result = scip.run(config, progress=False)
    summary = _run_json(config)
    assert summary["status"] == "ok" and summary["counts"]["errors"] == 0
    skipped = pd.read_csv(result.output / "skipped.csv", keep_default_na=False)
    assert {"constant", "tiny"} <= set(skipped.loc[skipped["kind"] == "image", "image_id"])
    assert (skipped["error"] == "").all() and not skipped["reason"].str.startswith("error").any()
    assert len(skipped) > 2  # cells too: filtered, or touching the border


def test_a_bug_in_a_feature_family_is_an_error(tmp_path, monkeypatch):
    """Case 7: an exception inside a feature family makes each cell an error (after isolating it)."""
    from scip.features import bbox

    def broken(objects, params):
        raise TypeError("bbox got an unexpected keyword")

    monkeypatch.setattr(bbox, "compute", broken)
    config = _config(tmp_path, images={"n": 1, "odd": ()}, errors={"max": 100})
    result = scip.run(config, progress=False)
    summary = _run_json(config)
    assert summary["status"] == "finished_with_errors"
    cells = summary["counts"]["cells"]
    assert cells["found"] == 4 and cells["exported"] == 0 and cells["errors"] == 4 == summary["counts"]["errors"]
    assert {e["step"] for e in summary["errors"]} == {"features"}
    assert {e["label"] for e in summary["errors"]} == {"1", "2", "3", "4"}
    assert "broken" in summary["errors"][0]["traceback"]
    assert summary["counts"]["cells"]["most_common_reasons"] == {"features: error: TypeError": 4}
    assert len(result.read()) == 0


def test_too_many_errors_stop_the_run_early(tmp_path, monkeypatch):
    """Case 7: more errors than errors.max stops the run: run.json failed, manifest not complete."""
    monkeypatch.setitem(scip.segment.METHODS, "otsu", _otsu_with_a_bug)
    config = _config(tmp_path, images={"n": 6, "odd": (0, 1, 2, 3, 4, 5)}, errors={"max": 1})
    with pytest.raises(RunFailed, match=r"2 unexpected error\(s\), more than errors.max = 1: stopped early after 2 of 6"):
        scip.run(config, progress=False)
    out = Path(config["output"]["path"])
    summary = _run_json(config)
    assert summary["status"] == "failed" and summary["counts"]["errors"] == 2
    assert summary["partitions"] == {"total": 6, "done": 2, "not_done": 4}
    assert "_otsu_with_a_bug" in summary["errors"][0]["traceback"]
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    assert len(list((out / "cells").glob("part-*.parquet"))) == 2


def test_resume_computes_the_partitions_with_errors_again(tmp_path, monkeypatch):
    """Once the bug is fixed, --resume recomputes the partitions that had errors; the others are reused."""
    with monkeypatch.context() as m:
        m.setitem(scip.segment.METHODS, "otsu", _otsu_with_a_bug)
        config = _config(tmp_path)
        assert scip.run(config, progress=False).summary["status"] == "finished_with_errors"
    result = scip.run(config, progress=False, resume=True)
    assert result.summary["status"] == "ok" and result.summary["counts"]["errors"] == 0
    assert result.summary["partitions"]["computed"] == 1 and result.summary["partitions"]["reused"] == 2
    assert set(result.read()["meta_image_id"]) == {"img0", "img1", "img2"}


_FAULTY_CLI = textwrap.dedent("""
    import sys
    import scip.segment
    from scip.segment import otsu

    def otsu_with_a_bug(image, **params):
        if image.shape == ({odd}, {odd}):
            raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")
        return otsu(image, **params)

    scip.segment.METHODS["otsu"] = otsu_with_a_bug
    from scip.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _cli(config: dict, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-c", _FAULTY_CLI.format(odd=ODD), "run", str(path), "--no-progress"],
                          capture_output=True, text=True, timeout=300)


def test_cli_exits_3_when_the_run_finished_with_errors(tmp_path):
    """Case 7: a method with a bug on one image of three: the run finishes, exit code 3, traceback in run.json."""
    config = _config(tmp_path)
    proc = _cli(config, tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "finished with 1 unexpected error(s)" in proc.stderr and "TypeError" in proc.stderr
    summary = _run_json(config)
    assert summary["status"] == "finished_with_errors"
    assert "otsu_with_a_bug" in summary["errors"][0]["traceback"]
    assert json.loads((Path(config["output"]["path"]) / "manifest.json").read_text())["complete"] is True


def test_cli_exits_1_when_errors_exceed_the_limit(tmp_path):
    """Case 7: errors.max 0 and an error: the run stops early with exit code 1, run.json holds the traceback."""
    config = _config(tmp_path, errors={"max": 0})
    proc = _cli(config, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "run failed: 1 unexpected error(s), more than errors.max = 0" in proc.stderr
    assert "Traceback (most recent call last)" not in proc.stderr
    summary = _run_json(config)
    assert summary["status"] == "failed" and "otsu_with_a_bug" in summary["errors"][0]["traceback"]
    assert summary["partitions"]["done"] == 2 and summary["partitions"]["not_done"] == 1


def test_run_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code in ("0  the run finished", "1  the run failed", "2  invalid configuration", "3  the run finished with"):
        assert code in out


def test_most_common_reasons_group_by_kind(tmp_path):
    """Case 11: cells dropped by one filter with different values count as one reason; values stay in skipped.csv."""
    folder = tmp_path / "images"
    folder.mkdir()
    img = make_blobs(n=1)
    yy, xx = np.mgrid[:96, :96]
    for (r, c), radius2 in (((70, 70), 9), ((70, 30), 16)):  # two small disks: areas differ
        img[0][(yy - r) ** 2 + (xx - c) ** 2 <= radius2] = 1000
    tifffile.imwrite(folder / "a.tif", img)
    config = {"input": {"path": str(folder)}, "segment": {"method": "otsu", "min_size": 5},
              "filters": [{"measure": "area", "min": 100}],
              "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    reasons = result.summary["counts"]["cells"]["most_common_reasons"]
    assert reasons == {"filter: area below min (100)": 2}
    skipped = pd.read_csv(result.output / "skipped.csv")
    assert len(skipped) == 2 and skipped["value"].nunique() == 2 and (skipped["value"] < 100).all()
    assert skipped["reason"].nunique() == 2 and skipped["reason_kind"].nunique() == 1


def test_a_full_disk_is_one_message(tmp_path, monkeypatch, capsys):
    """Case 10: ENOSPC while writing a part: one message naming the folder and free space, exit 1."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scip.engine.graph, "write_part", full)
    config = _config(tmp_path)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    rc = main(["run", str(path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"scip: the disk holding {config['output']['path']} is full (" in err
    assert " MiB free): free space and run `scip run " in err and "--resume`" in err
    assert "Traceback (most recent call last)" not in err and "unexpected error" not in err


#: The image size on which the workers' otsu (below) raises a TypeError.
BUGGY = 80


def _otsu_or_die(image, **params):
    if image.shape == (ODD, ODD):
        import os

        os._exit(1)
    if image.shape == (BUGGY, BUGGY):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")
    return otsu(image, **params)


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - distributed is a dependency
    WorkerPlugin = object


class FaultyOtsu(WorkerPlugin):
    """Installed on every worker, also those the nanny restarts: otsu kills the process on an ODD image,
    and reading a file named ``*killer*`` kills it too."""

    def setup(self, worker):
        import scip.io.tiff as tiff
        import scip.segment as segment

        segment.METHODS["otsu"] = _otsu_or_die
        read = tiff.read_tiff

        def read_or_die(source, *args, **kwargs):
            if any("killer" in str(path) for path in source.paths):
                os._exit(1)
            return read(source, *args, **kwargs)

        tiff.read_tiff = read_or_die


@pytest.fixture(scope="module")
def faulty_cluster():
    """Two one-thread worker processes whose otsu dies on ODD images and raises on BUGGY ones."""
    import dask
    from distributed import Client, LocalCluster

    # One worker death per try (not the default 4) keeps the test short; one task at a time per
    # worker keeps the other images' tasks off the worker that dies.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
                         dashboard_address=None) as cluster, Client(cluster) as client:
        client.register_plugin(FaultyOtsu())
        yield client


@pytest.mark.parametrize("filtered", [False, True], ids=["final pass", "cells persisted for a filter"])
def test_an_image_that_kills_workers_is_isolated(tmp_path, faulty_cluster, filtered):
    """Case 6: an image whose segmentation kills the worker process is skipped; the rest of its partition is written.

    With a filter, the cells are persisted for its threshold first: the killer is set aside there, and
    the threshold is decided over the other images' cells.
    """
    extra = {"filters": [{"measure": "area", "min": 5}]} if filtered else {}
    config = _config(tmp_path, images={"n": 4, "odd": (2,)}, input={"images_per_partition": 2}, **extra)
    del config["cluster"]
    result = scip.run(config, client=faulty_cluster, progress=False)
    summary = result.summary
    assert summary["status"] == "ok"
    skipped = pd.read_csv(result.output / "skipped.csv", keep_default_na=False)
    (row,) = skipped[skipped["image_id"] == "img2"].itertuples()
    assert row.kind == "image" and row.step == "segment" and row.reason_kind == "killed the worker"
    if filtered:
        assert summary["reductions"]["filters"][0]["cells_measured"] == 12
    assert row.reason.startswith(str(tmp_path / "images" / "img2.tif") + " killed the worker 1 time;")
    assert "memory_limit 1.00 GiB" in row.reason
    table = result.read()
    # The partition of the killer image still holds its other image's cells.
    assert set(table["meta_image_id"]) == {"img0", "img1", "img3"}
    assert (table["meta_image_id"] == "img3").sum() == 4
    assert summary["counts"]["images"]["skipped"] == 1
    assert json.loads((result.output / "manifest.json").read_text())["complete"] is True


def test_too_many_errors_stop_a_distributed_run(tmp_path, faulty_cluster):
    """Case 7 on a cluster: partitions are counted as they complete, the run stops at the first one over errors.max."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        tifffile.imwrite(folder / f"img{i}.tif", make_blobs(seed=i, size=BUGGY))
    config = {"input": {"path": str(folder), "images_per_partition": 1}, "segment": {"method": "otsu"},
              "output": {"path": str(tmp_path / "out")}, "errors": {"max": 0}}
    with pytest.raises(RunFailed, match=r"1 unexpected error\(s\), more than errors.max = 0: stopped early after 1 of 6"):
        scip.run(config, client=faulty_cluster, progress=False)
    summary = _run_json(config)
    assert summary["status"] == "failed" and summary["partitions"] == {"total": 6, "done": 1, "not_done": 5}
    assert "_otsu_or_die" in summary["errors"][0]["traceback"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"] is False


def test_an_image_that_kills_workers_while_the_illumination_is_summed_is_set_aside(tmp_path, faulty_cluster):
    """Case 6 in the first pass over the input: the killer is found, skipped, and not read again."""
    config = _config(tmp_path, images={"n": 4, "odd": ()}, input={"images_per_partition": 2},
                     illumination={"smooth": "gaussian", "size": 10})
    folder = tmp_path / "images"
    tifffile.imwrite(folder / "img2_killer.tif", make_blobs(seed=9, size=96))
    del config["cluster"]
    result = scip.run(config, client=faulty_cluster, progress=False)
    assert result.summary["status"] == "ok"
    skipped = pd.read_csv(result.output / "skipped.csv", keep_default_na=False)
    (row,) = skipped[skipped["image_id"] == "img2_killer"].itertuples()
    assert row.kind == "image" and row.step == "illumination" and row.reason_kind == "killed the worker"
    assert row.reason.startswith(str(folder / "img2_killer.tif") + " killed the worker 1 time;")
    # The correction was computed from the other four images, and every one of them gave its cells.
    assert result.summary["reductions"]["illumination"]["groups"] == {"all": 4}
    assert set(result.read()["meta_image_id"]) == {"img0", "img1", "img2", "img3"}
