"""The export step's rows (``cells_frame``): every value where a cell-by-cell fill puts it."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
    assert frame["micronucleus_count"].tolist() == [2, pd.NA, 0, pd.NA, pd.NA]
    assert frame["feat_b"].isna().tolist() == [False, True, False, True, True]
    assert np.signbit(frame["feat_b"].iloc[0])
