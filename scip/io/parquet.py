"""Parquet output: one file per partition, all with the same schema."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def arrow_schema(columns: dict[str, str]) -> pa.Schema:
    """Arrow schema from ``{column: kind}`` with kind ``str``, ``int`` or ``float``."""
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
    return pa.schema([(name, types[kind]) for name, kind in columns.items()])


def write_part(frame: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema) -> None:
    """Write ``frame`` to ``path`` atomically (temporary name, then rename).

    Every part has the full schema, also when it holds no rows, so the
    dataset reads as one table with ``pandas.read_parquet`` or
    ``dask.dataframe.read_parquet``, and an interrupted write never leaves a
    truncated file under the final name.
    """
    path = Path(path)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
