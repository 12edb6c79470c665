"""What the comparison and quality tests stand on: recorded test data and reference packages that must be there."""

import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

from conftest import DATA, REQUIRE_REFERENCES, data_source, require

pytest_plugins = ["pytester"]

TESTS = Path(__file__).parent

#: Files in tests/data that are not data.
NOT_DATA = {"README.md", "sources.csv", "feature_columns.txt"}


def _data_files() -> set[str]:
    """Every data file under tests/data, a Zarr store counted as one file."""
    found = set()
    for path in DATA.rglob("*"):
        inside_zarr = any(p.suffix == ".zarr" for p in path.relative_to(DATA).parents)
        if inside_zarr or path.name in NOT_DATA or (path.is_dir() and path.suffix != ".zarr"):
            continue
        found.add(path.relative_to(DATA).as_posix())
    return found


def test_every_test_data_file_records_its_source_image():
    # Without a row, a quality test could not tell whether its image is one the model was trained on.
    files = _data_files()
    assert "mnfinder/rpe1_2198_crop.tif" in files and "scip-ifc/test.zarr" in files
    for file in sorted(files):
        row = data_source(file)
        assert row["source"] and row["image"], file
        assert bool(row["rows"]) == bool(row["cols"]), file
        if row["rows"]:  # the recorded window is the file's size
            (r0, r1), (c0, c1) = (map(int, row[k].split("-")) for k in ("rows", "cols"))
            with tifffile.TiffFile(DATA / file) as tif:
                assert tif.pages[0].shape == (r1 - r0 + 1, c1 - c0 + 1), file


SUITE = """
from conftest import missing_reference, require


def test_present():
    assert require("json").dumps(1) == "1"


def test_missing_module():
    require("scip_no_such_reference")


def test_missing_program():
    missing_reference("no such browser")
"""


@pytest.fixture
def suite(pytester):
    """A test run with this conftest: references present and missing, in tests and at module level."""
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(test_refs=SUITE, test_module_level="from conftest import require\n\n"
                        "require('scip_no_such_reference.sub')\n\n\ndef test_never_runs():\n    pass\n")
    return pytester


@pytest.mark.parametrize("value", [None, "", "0"])
def test_missing_references_skip_by_default(suite, monkeypatch, value):
    if value is None:
        monkeypatch.delenv(REQUIRE_REFERENCES, raising=False)
    else:
        monkeypatch.setenv(REQUIRE_REFERENCES, value)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(["*scip_no_such_reference*set SCIP_REQUIRE_REFERENCES=1 to fail instead*"])


def test_missing_references_fail_when_required(suite, monkeypatch):
    monkeypatch.setenv(REQUIRE_REFERENCES, "1")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--continue-on-collection-errors")
    # The module-level require is a collection error: nothing in that module runs, and the run fails.
    result.assert_outcomes(passed=1, failed=2, errors=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'scip_no_such_reference'*SCIP_REQUIRE_REFERENCES is set*",
                                 "*no such browser*SCIP_REQUIRE_REFERENCES is set*"], consecutive=False)


def test_reference_imports_go_through_require():
    # A plain pytest.importorskip would skip in CI too when its package failed to install.
    needle = "importor" + "skip("  # spelled in two parts so that this file does not match itself
    offenders = [p.name for p in TESTS.glob("*.py") if needle in p.read_text()]
    assert offenders == []


def test_the_cuda_check_still_skips_without_a_gpu(monkeypatch):
    # A missing GPU is not a missing reference: under the switch the CUDA-only test skips (or runs) but never fails.
    torch = require("torch")
    monkeypatch.setenv(REQUIRE_REFERENCES, "1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          str(TESTS / "test_unet.py") + "::test_cuda_fp16_matches_fp32"],
                         capture_output=True, text=True, cwd=TESTS.parent).stdout
    expected = "1 passed" if torch.cuda.is_available() else "1 skipped"
    assert expected in out and "failed" not in out and "error" not in out, out
