"""Records to table rows: the columns of the output and one row per cell."""

from __future__ import annotations

import re
from typing import Iterable

import pandas as pd

from scip.features import columns as feature_columns
from scip.records import CellRecord, ImageRecord


def meta_name(field: str) -> str:
    """Column name of a metadata field: ``meta_<field>``."""
    return "meta_" + "_".join(re.findall(r"[A-Za-z0-9]+", field))


def table_columns(channels: tuple[str, ...], field_names: Iterable[str], masks: tuple[str, ...],
                  families: tuple[str, ...], evaluated: bool) -> dict[str, str]:
    """Every output column and its kind (``str``/``int``/``float``), known before any pixel is read."""
    cols = {"meta_image_id": "str", "meta_index": "int", "meta_path": "str", "meta_label": "int"}
    for f in sorted(set(field_names)):
        cols.setdefault(meta_name(f), "str")
    if evaluated:
        cols["meta_truth_label"] = "int"
    for mask in masks:
        for c in feature_columns(channels, families=families, mask_name=mask):
            cols[c.name] = "float"
    return cols


def cells_frame(records: Iterable[ImageRecord | CellRecord], columns: dict[str, str]) -> pd.DataFrame:
    """One row per exported cell (ok cell records), with exactly ``columns``."""
    rows = []
    for r in records:
        if not isinstance(r, CellRecord) or not r.status:
            continue
        row = {
            "meta_image_id": r.source.image_id,
            "meta_index": r.source.index,
            "meta_path": ";".join(p for p in r.source.paths if p),
            "meta_label": r.label,
            **{meta_name(k): v for k, v in r.source.fields.items()},
            **r.features,
        }
        if r.truth_label is not None:
            row["meta_truth_label"] = r.truth_label
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(columns))
    for name, kind in columns.items():
        frame[name] = frame[name].astype({"str": "string", "int": "Int64", "float": "float64"}[kind])
    return frame
