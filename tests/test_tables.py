"""Extra table formats (AnnData, CSV) and reading any output folder back."""

import json
import shutil

import anndata
import numpy as np
import pandas as pd
import pytest

import scip
from conftest import DATA
from scip.config import ConfigError, load_config
from scip.io import tables
from scip.io.parquet import arrow_schema, write_part
from scip.io.tables import feature_descriptions, read, write_formats

FORMATS = ["parquet", "anndata", "csv"]


# --- a real run --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The per-channel TIFFs through the pipeline, then converted to h5ad and CSV."""
    out = tmp_path_factory.mktemp("tables") / "out"
    config = {
        "input": {"path": str(DATA / "scip-ifc" / "tiffs"),
                  "pattern": r"test(?P<id>\d+)_(?P<channel>\d+)\.tiff", "images_per_partition": 1},
        "segment": {"method": "watershed", "channel": "1"},
        "features": {"families": ["shape", "intensity"]},
        "output": {"path": str(out)},
        "cluster": {"scheduler": "synchronous"},
    }
    result = scip.run(config, progress=False)
    plan = scip.prepare(config)
    descriptions = feature_descriptions(plan.dataset.channels, plan.config)
    written = write_formats(out, ["anndata", "csv"], descriptions)
    return result, descriptions, written


def feature_cols(frame):
    return [c for c in frame.columns if c.startswith("feat_")]


def meta_cols(frame):
    return [c for c in frame.columns if not c.startswith("feat_")]


def test_pipeline_tables_round_trip(pipeline_run):
    result, descriptions, written = pipeline_run
    out = result.output
    assert written == {"anndata": out / "cells.h5ad", "csv": out / "cells.csv"}
    parquet = read(out, "parquet")
    raw = pd.read_parquet(result.table)  # pandas' own reading: same values, looser dtypes
    assert len(parquet) == len(raw) == result.summary["counts"]["cells"]["exported"] > 10
    assert list(parquet.columns) == list(raw.columns)
    assert parquet["meta_image_id"].dtype == "string" and parquet["meta_label"].dtype == "Int64"
    np.testing.assert_array_equal(parquet[feature_cols(parquet)].to_numpy(), raw[feature_cols(raw)].to_numpy())

    csv = read(out, "csv")
    pd.testing.assert_frame_equal(csv, parquet, check_exact=True)

    h5ad = read(out, "anndata")
    assert list(h5ad.columns) == list(parquet.columns)
    pd.testing.assert_frame_equal(h5ad[meta_cols(h5ad)], parquet[meta_cols(parquet)], check_exact=True)
    positions = tables.position_columns(list(parquet.columns))
    assert "feat_cell_intensity_center_mass_row_1" in positions
    pd.testing.assert_frame_equal(h5ad[positions], parquet[positions], check_exact=True)  # float64 in obs
    feats = [c for c in feature_cols(parquet) if c not in positions]
    assert (h5ad[feats].dtypes == np.float32).all()
    np.testing.assert_array_equal(h5ad[feats].to_numpy(), parquet[feats].to_numpy().astype(np.float32))
    np.testing.assert_allclose(h5ad[feats].to_numpy(np.float64), parquet[feats].to_numpy(), rtol=1e-6, atol=1e-30)


def test_pipeline_anndata_layout(pipeline_run):
    result, descriptions, _ = pipeline_run
    parquet = read(result.output)
    adata = anndata.read_h5ad(result.output / "cells.h5ad")
    positions = tables.position_columns(list(parquet.columns))
    feats = [c for c in feature_cols(parquet) if c not in positions]
    assert adata.X.dtype == np.float32 and adata.shape == (len(parquet), len(feats))
    assert np.isfinite(adata.X).all()
    assert list(adata.var_names) == feats
    assert list(adata.obs.columns) == [c for c in parquet.columns if c not in feats]
    assert "spatial" not in adata.obsm  # no bbox family in this run: no centroid
    assert adata.obs_names.is_unique
    assert list(adata.obs_names) == [f"{i}:{lab}" for i, lab in zip(parquet["meta_image_id"], parquet["meta_label"])]
    for name in ["feat_cell_shape_area", "feat_cell_intensity_mean_2"]:
        d = descriptions[name]
        row = adata.var.loc[name]
        assert (row["family"], row["definition"], row["unit"]) == (d.family, d.definition, d.unit)
        assert row["channel"] == ("" if d.channel is None else d.channel)
    assert adata.var.loc["feat_cell_intensity_mean_2", "channel"] == "2"
    assert (adata.var["definition"] != "").all()
    info = adata.uns["scip"]
    assert info["scip_version"] and info["source"] == "cells/part-*.parquet"
    json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in info.items()})
    assert list(info["columns"]) == list(parquet.columns)


def test_pipeline_lazy_reads(pipeline_run):
    out = pipeline_run[0].output
    eager = read(out)
    n_parts = len(list((out / "cells").glob("part-*.parquet")))
    assert n_parts == 2
    for fmt in FORMATS:
        lazy = read(out, fmt, lazy=True)
        if fmt == "parquet":
            assert lazy.npartitions == n_parts
        frame = lazy.compute().reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, read(out, fmt), check_exact=True)
        if fmt != "anndata":
            pd.testing.assert_frame_equal(frame, eager, check_exact=True)


# --- hand-made parts: the awkward values -------------------------------------------------------

COLUMNS = {"meta_image_id": "str", "meta_index": "int", "meta_path": "str", "meta_label": "int",
           "feat_cell_shape_area": "float", "feat_cell_intensity_mean_DNA": "float",
           "meta_plate": "str", "meta_truth_label": "int"}  # metadata after features: order must survive


def awkward_parts(out):
    cells = out / "cells"
    cells.mkdir(parents=True)
    schema = arrow_schema(COLUMNS)
    first = pd.DataFrame({
        "meta_image_id": pd.array(["img,1", "img,1", "img,1"], dtype="string"),
        "meta_index": pd.array([0, 0, 0], dtype="Int64"),
        "meta_path": pd.array(['a "quoted", path', "line\nbreak", "ü.tif"], dtype="string"),
        "meta_label": pd.array([1, 2, 3], dtype="Int64"),
        "feat_cell_shape_area": [0.1, np.nan, -0.0],
        "feat_cell_intensity_mean_DNA": [1 / 3, np.inf, 5e-324],
        "meta_plate": pd.array(["NA", None, "nan"], dtype="string"),
        "meta_truth_label": pd.array([None, 7, 0], dtype="Int64"),
    })
    second = first.assign(
        meta_image_id=pd.array(["img2"] * 3, dtype="string"),
        meta_index=pd.array([1, 1, 1], dtype="Int64"),
        feat_cell_shape_area=[1e300, -np.inf, 2 ** 0.5],  # 1e300 is beyond float32: inf in h5ad
        feat_cell_intensity_mean_DNA=[123456789.123456789, 1e-300, np.nan],
    )
    write_part(first, cells / "part-00000.parquet", schema)
    write_part(first.iloc[:0], cells / "part-00001.parquet", schema)  # a partition without cells
    write_part(second, cells / "part-00002.parquet", schema)
    (cells / ".part-00003.parquet.tmp").write_bytes(b"interrupted write")  # not a part
    return pd.concat([first, second], ignore_index=True)


@pytest.fixture
def awkward(tmp_path):
    out = tmp_path / "out"
    expected = awkward_parts(out)
    descriptions = {"feat_cell_shape_area": ("shape", None, "Pixels in the object.", "px^2")}
    written = write_formats(out, ["parquet", "anndata", "csv", "csv"], descriptions)
    return out, expected, written


def test_awkward_values_round_trip(awkward):
    out, expected, written = awkward
    assert set(written) == {"anndata", "csv"}
    assert not list(out.glob(".*.tmp"))
    parquet = read(out, "parquet")
    pd.testing.assert_frame_equal(parquet, expected, check_exact=True)

    csv = read(out, "csv")
    pd.testing.assert_frame_equal(csv, parquet, check_exact=True)
    for name in ["feat_cell_shape_area", "feat_cell_intensity_mean_DNA"]:  # bit for bit, -0.0 included
        np.testing.assert_array_equal(csv[name].to_numpy().view(np.int64), parquet[name].to_numpy().view(np.int64))
    assert csv["meta_plate"].tolist()[:3] == ["NA", pd.NA, "nan"]  # text that looks missing stays text
    text = (out / "cells.csv").read_text()
    assert text.count("meta_image_id") == 1  # one header for all parts
    assert "0.3333333333333333" in text

    h5ad = read(out, "anndata")
    assert list(h5ad.columns) == list(COLUMNS)
    meta = [c for c in COLUMNS if c.startswith("meta_")]
    pd.testing.assert_frame_equal(h5ad[meta], parquet[meta], check_exact=True)
    feats = [c for c in COLUMNS if c.startswith("feat_")]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h5ad[feats].to_numpy(), parquet[feats].to_numpy().astype(np.float32))
    assert h5ad.loc[3, "feat_cell_shape_area"] == np.inf

    adata = anndata.read_h5ad(out / "cells.h5ad")
    assert list(adata.obs_names) == ["img,1:1", "img,1:2", "img,1:3", "img2:1", "img2:2", "img2:3"]
    described = ["family", "channel", "definition", "unit"]
    assert adata.var.loc["feat_cell_shape_area", described].tolist() == ["shape", "", "Pixels in the object.", "px^2"]
    assert adata.var.loc["feat_cell_intensity_mean_DNA", described].tolist() == ["", "", "", ""]
    # NaN and the infinities (-inf, and 1e300 beyond float32) are filled with the median of the finite values
    # (0.1, -0.0, sqrt 2), and the layer says which entry was which.
    area = list(adata.var_names).index("feat_cell_shape_area")
    np.testing.assert_array_equal(adata.X[:, area], np.float32([0.1, 0.1, -0.0, 0.1, 0.1, 2 ** 0.5]))
    assert adata.layers["missing"][:, area].tolist() == [0, 1, 0, 2, 3, 0]
    assert adata.var.loc["feat_cell_shape_area", "n_missing"] == 3
    assert adata.var.loc["feat_cell_shape_area", "fill_value"] == np.float32(0.1)
    assert np.isfinite(adata.X).all()


def test_awkward_lazy_and_auto(awkward):
    out, expected, _ = awkward
    for fmt in FORMATS:
        lazy = read(out, fmt, lazy=True).compute().reset_index(drop=True)
        pd.testing.assert_frame_equal(lazy, read(out, fmt), check_exact=True)
    # auto prefers parquet, then h5ad, then csv
    pd.testing.assert_frame_equal(read(out), expected, check_exact=True)
    shutil.rmtree(out / "cells")
    assert (read(out).dtypes[["feat_cell_shape_area"]] == np.float32).all()
    (out / "cells.h5ad").unlink()
    pd.testing.assert_frame_equal(read(out), expected, check_exact=True)
    assert read(out, lazy=True).compute().shape == expected.shape


def test_tables_reads_and_writes_every_format_without_dask(awkward):
    """scip.io.tables is pandas and pyarrow only: Dask is imported for lazy=True alone (by scip.engine.frames).

    (h5ad is left out: the anndata package itself imports Dask when it is installed.)
    """
    import subprocess
    import sys

    out = awkward[0]
    code = ("import sys\n"
            "from scip.io.tables import read, write_formats\n"
            f"frames = [read({str(out)!r}, fmt) for fmt in ('parquet', 'csv')]\n"
            "print(len({len(f) for f in frames}), sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
            f"read({str(out)!r}, lazy=True)\n"
            "print('dask.dataframe' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["1 []", "True"]


def test_read_files_directly(awkward):
    out, expected, _ = awkward
    pd.testing.assert_frame_equal(read(out / "cells"), expected, check_exact=True)
    pd.testing.assert_frame_equal(read(out / "cells.csv"), expected, check_exact=True)
    pd.testing.assert_frame_equal(read(out / "cells" / "part-00002.parquet"), expected.iloc[3:].reset_index(drop=True),
                                  check_exact=True)
    assert read(out / "cells.h5ad").shape == expected.shape
    with pytest.raises(ValueError, match="csv file.*'anndata'"):
        read(out / "cells.csv", format="anndata")
    other = out / "notes.txt"
    other.write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt.*\.h5ad"):
        read(other)


def test_empty_table(tmp_path):
    out = tmp_path / "out"
    cells = out / "cells"
    cells.mkdir(parents=True)
    empty = pd.DataFrame({name: pd.Series([], dtype={"str": "string", "int": "Int64", "float": "float64"}[kind])
                          for name, kind in COLUMNS.items()})
    write_part(empty, cells / "part-00000.parquet", arrow_schema(COLUMNS))
    write_formats(out, ["anndata", "csv"])
    for fmt in FORMATS:
        frame = read(out, fmt)
        assert list(frame.columns) == list(COLUMNS) and len(frame) == 0
        assert frame["meta_label"].dtype == "Int64" and frame["meta_path"].dtype == "string"


def test_errors_name_what_is_wrong(tmp_path):
    out = tmp_path / "run"
    (out / "cells").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=str(out / "cells")):
        write_formats(out, ["csv"])
    assert write_formats(out, ["parquet"]) == {}  # nothing to convert, nothing read
    with pytest.raises(ValueError, match=r"'xlsx'.*parquet, anndata, csv"):
        write_formats(out, ["csv", "xlsx"])
    with pytest.raises(FileNotFoundError, match=r"cells/part-\*\.parquet, cells\.h5ad, cells\.csv"):
        read(out)
    with pytest.raises(FileNotFoundError, match=r"no csv table: looked for cells\.csv"):
        read(out, "csv")
    with pytest.raises(ValueError, match=r"'h5'.*auto, parquet, anndata, csv"):
        read(out, "h5")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read(tmp_path / "nowhere")


def test_scip_read_is_exported():
    assert scip.read is tables.read
    assert "read" in scip.__all__


# --- configuration -----------------------------------------------------------------------------

def config_with(tmp_path, formats):
    return load_config({"input": {"path": str(tmp_path)}, "output": {"formats": formats}})


def test_config_formats(tmp_path):
    assert load_config({"input": {"path": str(tmp_path)}}).output.formats == ["parquet"]
    assert config_with(tmp_path, ["anndata", "csv"]).output.formats == ["anndata", "csv"]
    assert config_with(tmp_path, ["parquet", "csv"]).output.formats == ["parquet", "csv"]
    assert config_with(tmp_path, "csv").output.formats == ["csv"]
    with pytest.raises(ConfigError, match=r"output\.formats: lists csv more than once"):
        config_with(tmp_path, ["csv", "anndata", "csv"])
    with pytest.raises(ConfigError, match=r"output\.formats\.0: 'xlsx' is not allowed; allowed values: parquet, anndata, csv"):
        config_with(tmp_path, ["xlsx"])
