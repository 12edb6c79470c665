"""What the comparison and quality tests stand on: recorded test data and reference packages that must be there."""

import tifffile

from conftest import DATA, data_source

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
