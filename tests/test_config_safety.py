"""Hostile or unlucky config files (issue 15, cases 8 and 9): each one is a clear error with exit code 2.

Duplicate keys, a file that is not UTF-8, a YAML alias bomb, a pattern that backtracks
catastrophically, an output format whose package is missing, and ground truth that matches
no file are all found by ``scip check`` (and at the start of ``scip run``), never after
minutes of work or as a bare traceback.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile
from conftest import make_blobs

from scip import cli
from scip._hints import short
from scip.config import MAX_YAML_NODES, ConfigError, load_config, parse_yaml

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def write(tmp_path: Path, text: str | bytes, name: str = "config.yml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


def check(path: Path, capsys) -> tuple[int, str, str]:
    rc = cli.main(["check", str(path)])
    out, err = capsys.readouterr()
    return rc, out, err


# --- duplicate keys ---------------------------------------------------------------------------

def test_duplicate_top_level_key_names_key_and_both_lines(tmp_path, blobs_tiff, capsys):
    path = write(tmp_path, f"input: {{path: {blobs_tiff}}}\nsegment: {{method: otsu}}\n"
                           "output: {path: out}\nsegment: {method: li}\n")
    rc, _, err = check(path, capsys)
    assert rc == 2
    assert str(path) in err and "'segment'" in err
    assert "line 2" in err and "line 4" in err


def test_duplicate_nested_key_is_found(tmp_path, blobs_tiff):
    msg = error_of(write(tmp_path, f"input:\n  path: {blobs_tiff}\n  channels: [a, b]\n  channels: [c, d]\n"))
    assert "'channels'" in msg and "line 3" in msg and "line 4" in msg


def test_merge_keys_may_still_override(tmp_path, blobs_tiff):
    # '<<' merges a mapping in; overriding one of its keys is what it is for, not a duplicate.
    config = load_config(write(tmp_path, f"input:\n  <<: {{path: {blobs_tiff}, images_per_partition: 3}}\n"
                                         "  images_per_partition: 5\n"))
    assert config.input.images_per_partition == 5


# --- encoding ---------------------------------------------------------------------------------

def test_non_utf8_config_names_file_and_byte_offset(tmp_path, blobs_tiff, capsys):
    text = f"input: {{path: {blobs_tiff}}}\n# caf".encode() + b"\xe9 au lait\n"
    offset = text.index(b"\xe9")
    path = write(tmp_path, text)
    rc, _, err = check(path, capsys)
    assert rc == 2
    assert str(path) in err and "UTF-8" in err
    assert f"byte offset {offset}" in err and "line 2" in err
    assert "unexpected error" not in err


def test_utf8_with_byte_order_mark_is_read(tmp_path, blobs_tiff):
    config = load_config(write(tmp_path, b"\xef\xbb\xbf" + f"input: {{path: {blobs_tiff}}}\n".encode()))
    assert config.input.path == blobs_tiff


def test_unreadable_path_is_a_config_error(tmp_path):
    # A file name longer than the file system allows makes Path.exists raise, not return False.
    msg = error_of(write(tmp_path, f"input: {{path: {'a' * 5000}}}\n"))
    assert "input.path" in msg and "cannot use path" in msg
    assert len(msg) < 1000


# --- alias bombs and long values --------------------------------------------------------------

def test_alias_bomb_is_refused_quickly_in_a_subprocess(tmp_path, blobs_tiff):
    path = write(tmp_path, BOMB + f"input: {{path: {blobs_tiff}, channels: *i}}\n", "bomb.yml")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # The timeout only guards the test run; the old code took minutes and gigabytes here.
    done = subprocess.run([sys.executable, "-m", "scip", "check", str(path)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert str(path) in done.stderr and "alias" in done.stderr
    assert len(done.stderr) < 1000


def test_a_broken_config_is_refused_before_dask_and_numba_are_imported(tmp_path, blobs_tiff):
    """What keeps `scip check bomb.yml` well under a second: the YAML is read before the heavy imports."""
    path = write(tmp_path, BOMB + f"input: {{path: {blobs_tiff}, channels: *i}}\n", "bomb.yml")
    code = ("import sys; from scip.cli import main; rc = main(['check', sys.argv[1]]); "
            "heavy = sorted(m for m in ('dask', 'distributed', 'numba', 'pandas', 'pydantic') if m in sys.modules); "
            "print('heavy:', heavy); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert "heavy: []" in done.stdout


def test_scip_run_stays_the_function_whatever_is_imported_first():
    code = ("import scip.run, scip.cli; from scip.run import prepare; import scip; "
            "assert callable(scip.run) and scip.run.__name__ == 'run', scip.run; "
            "assert scip.prepare is prepare and scip.IncompleteRunError.__name__ == 'IncompleteRunError'")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr


def test_alias_expansion_limit_allows_ordinary_aliases():
    assert parse_yaml("a: &a {x: [1, 2]}\nb: *a\n", "x.yml") == {"a": {"x": [1, 2]}, "b": {"x": [1, 2]}}
    # Just under the limit is accepted; just over is not.
    n = MAX_YAML_NODES // 2 - 10
    assert len(parse_yaml("[" + ", ".join(["1"] * n) + "]", "x.yml")) == n
    with pytest.raises(ConfigError, match="alias"):
        parse_yaml("a: &a [" + ", ".join(["1"] * n) + "]\nb: [*a, *a, *a]\n", "x.yml")


def test_recursive_alias_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="itself"):
        parse_yaml("a: &a [1, *a]\n", "rec.yml")


def test_long_values_are_cut_in_messages(tmp_path, blobs_tiff):
    huge = "x" * 100_000
    msg = error_of(write(tmp_path, f"input: {{path: {blobs_tiff}, images_per_partition: {huge}}}\n"
                                   f"segment: {{method: {huge}}}\n"
                                   f"features: {{families: [{huge}]}}\n"))
    assert "input.images_per_partition" in msg and "segment.method" in msg and "features.families" in msg
    assert len(msg) < 2000


def test_short_bounds_any_value():
    nested = ["lol"] * 9
    for _ in range(8):
        nested = [nested] * 9  # 9**9 items, shared: only a bounded repr can describe it
    assert len(short(nested)) <= 80
    assert short("abc") == "'abc'"
    assert short("y" * 500, 40).endswith("...") and len(short("y" * 500, 40)) == 40


def test_training_config_bomb_is_a_config_error(tmp_path, capsys):
    path = write(tmp_path, BOMB + "kind: *i\n", "train.yml")
    rc = cli.main(["train", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and "alias" in err and len(err) < 1000


# --- patterns that backtrack ------------------------------------------------------------------

def test_backtracking_pattern_fails_naming_pattern_and_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    name = "a" * 48 + "b.tiff"  # nearly matches: (a|aa)+ tries every split of the a's before giving up
    tifffile.imwrite(images / name, make_blobs())
    path = write(tmp_path, "input: {path: images, pattern: '(?P<id>(a|aa)+)\\.tiff'}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # The timeout only guards the test run: with re the match would run for hours.
    done = subprocess.run([sys.executable, "-m", "scip", "check", str(path)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert "input.pattern" in done.stderr and name in done.stderr and "(a|aa)+" in done.stderr


def test_match_name_still_matches_and_reports_no_match():
    from scip.io.dataset import compile_pattern, match_name

    compiled = compile_pattern(r"(?P<id>\d+)_(?P<channel>\w+)\.tiff")
    assert match_name(compiled, "12_DAPI.tiff").groupdict() == {"id": "12", "channel": "DAPI"}
    assert match_name(compiled, "12_DAPI.tiff.bak") is None


# --- found by scip check, not after the run ---------------------------------------------------

def test_output_format_without_its_package_is_refused_up_front(tmp_path, blobs_tiff, monkeypatch, capsys):
    import scip.config.sections

    # anndata is installed in the test environment: pretend it is not.
    monkeypatch.setattr(scip.config.sections, "_import_problem",
                        lambda module: f"ModuleNotFoundError: No module named {module!r}" if module == "anndata" else None)
    path = write(tmp_path, f"input: {{path: {blobs_tiff}}}\noutput: {{formats: [csv, anndata]}}\n")
    rc, _, err = check(path, capsys)
    assert rc == 2
    assert "output.formats" in err and "'anndata'" in err and "scip[anndata]" in err
    # scip run stops at the same check, before any cluster starts or any file is written.
    rc = cli.main(["run", str(path), "--scheduler", "synchronous", "--no-progress"])
    assert rc == 2 and not (tmp_path / "results").exists()
    monkeypatch.undo()
    assert load_config(path).output.formats == ["csv", "anndata"]


def labelled_images(tmp_path: Path, n: int) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(n):
        tifffile.imwrite(images / f"field{i}.tif", make_blobs(seed=i))
    (tmp_path / "labels").mkdir()
    return images


def test_ground_truth_template_matching_no_file_is_an_error(tmp_path, capsys):
    labelled_images(tmp_path, 3)
    path = write(tmp_path, "input: {path: images}\nevaluate: {labels: 'labels/{image_id}_mask.tif'}\n")
    rc, out, err = check(path, capsys)
    assert rc == 2, out
    assert "evaluate.labels" in err and "no file for any of the 3 images" in err
    assert str(tmp_path / "labels" / "field0_mask.tif") in err


def test_ground_truth_template_matching_some_files_names_one_missing(tmp_path, capsys, caplog):
    labelled_images(tmp_path, 3)
    tifffile.imwrite(tmp_path / "labels" / "field1_mask.tif", [[0, 1], [1, 1]])
    path = write(tmp_path, "input: {path: images}\nevaluate: {labels: 'labels/{image_id}_mask.tif'}\n")
    with caplog.at_level("WARNING", logger="scip"):
        rc, out, _ = check(path, capsys)
    assert rc == 0, out
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "no file for 2 of the 3 images" in warning and "field0_mask.tif" in warning


def test_check_lists_the_images(tmp_path, capsys):
    labelled_images(tmp_path, 25)
    path = write(tmp_path, "input: {path: images}\n")
    rc, out, _ = check(path, capsys)
    assert rc == 0
    assert "config OK: 25 images" in out
    assert f"field0: {tmp_path / 'images' / 'field0.tif'}" in out
    assert "... and 5 more" in out
    rc = cli.main(["check", str(path), "--all"])
    out = capsys.readouterr().out
    assert rc == 0 and f"field24: {tmp_path / 'images' / 'field24.tif'}" in out and "more" not in out


def test_unreadable_first_tiff_is_an_input_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.tif").write_bytes(b"garbage")
    rc, _, err = check(write(tmp_path, "input: {path: images}\n"), capsys)
    assert rc == 2 and "x.tif" in err and "input.channels" in err and "unexpected error" not in err
