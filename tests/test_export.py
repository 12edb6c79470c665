"""The export step's rows (``cells_frame``): every value where a cell-by-cell fill puts it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scip.records import CellRecord, ImageRecord, Source, skipped
from scip.steps.export import cells_frame

COLUMNS = {"meta_image_id": "str", "meta_index": "int", "meta_path": "str", "meta_label": "int",
           "meta_well": "str", "micronucleus_count": "int", "micronucleus_area": "int",
           "feat_a": "float", "feat_b": "float", "feat_c": "float"}


def _cell(index: int, features: dict, label: int = 1, ok: bool = True) -> CellRecord:
    source = Source(image_id=f"img{index}", index=index, paths=(f"img{index}.tif",), fields={"well": f"w{index}"})
    cell = CellRecord(source=source, channels=("a",), label=label, bbox=(0, 0, 1, 1), origin=(0, 0), features=features)
    return cell if ok else cell.with_(status=skipped("features", "every feature is NaN"))


def _expected(cells: list[CellRecord]) -> pd.DataFrame:
    """The frame filled one value at a time, the plain way the vectorized fill must agree with."""
    rows = []
    for r in cells:
        row = {"meta_image_id": r.source.image_id, "meta_index": r.source.index, "meta_path": r.source.paths[0],
               "meta_label": r.label, "meta_well": r.source.fields["well"]}
        row.update({k: v for k, v in r.features.items() if k in COLUMNS})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({name: {"str": "string", "int": "Int64", "float": "float64"}[kind]
                         for name, kind in COLUMNS.items()})


def test_cells_of_several_feature_layouts_land_in_their_columns():
    # Two extractions with their names in different orders, an integer count set before the features (to the
    # integer columns), a name the table does not have (dropped), a cell without features (all NaN), a skipped
    # cell and an image record (no rows), -0.0 and NaN kept as they are.
    cells = [
        _cell(0, {"micronucleus_count": 2, "feat_a": 1.5, "feat_b": -0.0, "feat_c": np.nan}),
        _cell(1, {"feat_c": 3.25, "feat_a": 7.0, "feat_extra": 9.0}),
        _cell(2, {"micronucleus_count": 0, "feat_a": 1e300, "feat_b": 2.0, "feat_c": -4.0}, label=3),
        _cell(3, {}),
        _cell(4, {"feat_c": 5.0, "feat_a": -1.0, "feat_extra": 1.0}),
        _cell(6, {"feat_b": 0.25, "feat_a": -3.0}),  # only float columns' names: the values taken as they are
    ]
    image = ImageRecord(source=Source(image_id="x", index=9, paths=("x.tif",)), channels=("a",))
    records = [image, *cells[:2], _cell(5, {"feat_a": 99.0}, ok=False), *cells[2:]]
    frame = cells_frame(records, COLUMNS)
    expected = _expected(cells)
    assert list(frame.columns) == list(COLUMNS)
    assert (frame.dtypes == expected.dtypes).all()
    for name, kind in COLUMNS.items():
        if kind == "float":
            # Bit for bit: the sign of zero and NaN positions included.
            assert np.array_equal(frame[name].to_numpy().view(np.int64), expected[name].to_numpy().view(np.int64)), name
        else:
            pd.testing.assert_series_equal(frame[name], expected[name], check_names=True)
    assert frame["micronucleus_count"].tolist() == [2, pd.NA, 0, pd.NA, pd.NA, pd.NA]
    assert frame["feat_b"].isna().tolist() == [False, True, False, True, True, False]
    assert frame["feat_a"].iloc[-1] == -3.0 and np.isnan(frame["feat_c"].iloc[-1])
    assert np.signbit(frame["feat_b"].iloc[0])


def test_part_keeps_values_schema_and_metadata_statistics(tmp_path):
    # The writer skips dictionaries and statistics on feature and outline columns only: what comes back is the
    # same, GeoParquet metadata included, and the metadata columns keep the statistics filtered reads prune by.
    import json

    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    from shapely.geometry import box

    from scip.io.parquet import arrow_schema, part_table, write_part

    columns = {**COLUMNS, "geometry": "wkb"}
    cells = [_cell(i, {"micronucleus_count": i, "feat_a": 0.5 * i, "feat_b": -0.0, "feat_c": np.nan})
             .with_(geometry=box(0, 0, i + 1, 2).wkb) for i in range(4)]
    frame = cells_frame(cells, columns)
    schema = arrow_schema(columns)
    path = tmp_path / "part-00000.parquet"
    record = write_part(frame, path, schema)
    assert record["rows"] == 4
    assert pq.read_table(path).equals(part_table(frame, schema))
    plain = tmp_path / "plain.parquet"  # pyarrow's defaults: dictionaries and statistics everywhere
    pq.write_table(part_table(frame, schema), plain)
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, pd.read_parquet(plain))
    assert np.array_equal(back["feat_b"].to_numpy().view(np.int64), frame["feat_b"].to_numpy().view(np.int64))
    assert json.loads(pq.read_schema(path).metadata[b"geo"])["primary_column"] == "geometry"
    stats = pq.ParquetFile(path).metadata.row_group(0)
    by_name = {stats.column(j).path_in_schema: stats.column(j) for j in range(stats.num_columns)}
    assert by_name["meta_index"].statistics.min == 0 and by_name["meta_index"].statistics.max == 3
    assert by_name["micronucleus_count"].statistics.max == 3
    assert by_name["meta_image_id"].is_stats_set
    assert not by_name["feat_a"].is_stats_set and not by_name["geometry"].is_stats_set
    # A filter on a metadata column prunes the part by its statistics, and on a feature still selects rows.
    assert ds.dataset(path).to_table(filter=ds.field("meta_index") > 3).num_rows == 0
    assert ds.dataset(path).to_table(filter=ds.field("feat_a") > 0.6).num_rows == 2


@pytest.mark.parametrize("n_floats", [3, 70])
def test_part_table_same_arrays_with_few_or_many_float_columns(n_floats, tmp_path):
    # Few float columns are converted one by one, many sliced out of one array: the table and the part read
    # back are the same either way (NaN as null, -0.0 and infinities kept, no rows too).
    import pyarrow as pa

    from scip.io.parquet import arrow_schema, part_table, write_part

    columns = {"meta_image_id": "str", "meta_label": "int", **{f"feat_{j}": "float" for j in range(n_floats)}}
    rng = np.random.default_rng(1)
    values = rng.normal(size=(5, n_floats))
    values[0, 0], values[1, -1], values[2, n_floats // 2], values[3, 1] = np.nan, -0.0, np.inf, -np.inf
    frame = pd.DataFrame({"meta_image_id": pd.array(list("abcde"), dtype="string"),
                          "meta_label": pd.array([1, 2, None, 4, 5], dtype="Int64"),
                          **{f"feat_{j}": values[:, j] for j in range(n_floats)}})
    schema = arrow_schema(columns)
    for rows in (frame, frame.iloc[:0]):
        table = part_table(rows, schema)
        expected = pa.Table.from_arrays([pa.array(rows[f.name], type=f.type, from_pandas=True) for f in schema],
                                        schema=schema)
        assert table.equals(expected)
        assert table.column("feat_0").null_count == (1 if len(rows) else 0)
        write_part(rows, tmp_path / "part.parquet", schema)
        back = pd.read_parquet(tmp_path / "part.parquet")
        assert len(back) == len(rows)
        for j in range(n_floats):
            assert np.array_equal(back[f"feat_{j}"].to_numpy().view(np.int64), rows[f"feat_{j}"].to_numpy().view(np.int64))
