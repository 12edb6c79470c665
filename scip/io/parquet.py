"""Parquet output: one file per partition, all with the same schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scip.io.atomic import atomic_path, sha256_file


def arrow_schema(columns: dict[str, str]) -> pa.Schema:
    """Arrow schema from ``{column: kind}`` with kind ``str``, ``int``, ``float`` or ``wkb``.

    A ``wkb`` column (the cells' outlines) is binary, and the schema carries
    GeoParquet 1.0 metadata naming it, so geopandas reads it as geometry.
    """
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "wkb": pa.binary()}
    schema = pa.schema([(name, types[kind]) for name, kind in columns.items()])
    geometry = [name for name, kind in columns.items() if kind == "wkb"]
    if geometry:
        schema = schema.with_metadata({b"geo": json.dumps({
            "version": "1.0.0", "primary_column": geometry[0],
            "columns": {name: {"encoding": "WKB", "geometry_types": ["Polygon", "MultiPolygon"], "crs": None}
                        for name in geometry}}).encode()})
    return schema


#: From this many float columns on, :func:`part_table` slices them out of one Arrow array.
_SLICED = 64


def part_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame``'s columns of ``schema`` as the Arrow table :func:`write_part` writes.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows, with at least the schema's columns.
    schema : pyarrow.Schema
        The columns wanted and their types (:func:`arrow_schema`, or a part of it).

    Returns
    -------
    pyarrow.Table
        NaN in a float column becomes null, as in the written part; reading
        the table back (``to_pandas``) gives what ``pandas.read_parquet``
        gives of the part.
    """
    # pyarrow's pandas conversion, and even pulling a thousand feature columns out of
    # the frame one by one, cost more than the write itself: the float columns leave
    # the frame as one block, transposed once so that each column is contiguous.
    floats = [field.name for field in schema if pa.types.is_floating(field.type)]
    n = len(frame)
    block = np.ascontiguousarray(frame[floats].to_numpy(dtype=np.float64).T) if floats else None
    # Many columns (a part's features) become one Arrow array, NaN to null in one pass, of
    # which each column is a zero-copy slice: ~1 us a column instead of a ~4 us conversion.
    # A few (the report's table, which travels to the driver) are converted one by one,
    # so that each column owns its buffers and pickles only its own values.
    flat = pa.array(block.ravel(), type=pa.float64(), from_pandas=True) if len(floats) >= _SLICED else None
    row = {name: j for j, name in enumerate(floats)}
    arrays = []
    for field in schema:
        if field.name not in row:
            arrays.append(pa.array(frame[field.name], type=field.type, from_pandas=True))
        elif flat is None:
            arrays.append(pa.array(block[row[field.name]], type=field.type, from_pandas=True))
        else:
            column = flat.slice(row[field.name] * n, n)
            arrays.append(column if field.type == column.type else column.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_options(schema: pa.Schema) -> dict:
    """``pyarrow.parquet.write_table`` options for a part of ``schema``: dictionaries and statistics where they help.

    A part holds one partition's cells (tens to hundreds of rows) in up to
    thousands of float feature columns, and the writer's per-column work
    dominated its time: a dictionary tried on every column (the values of a
    float feature hardly ever repeat, so pyarrow gave it up each time) and
    min/max statistics of every column. Only the metadata and integer
    columns keep both: they repeat within a part (image ids, paths, labels),
    and their statistics are what a filtered read (``filters=`` on
    ``meta_*``) prunes parts by. A feature's range over a part's cells
    nearly always straddles any threshold, so its statistics pruned nothing;
    outlines (WKB) neither repeat nor order. The values, types and schema
    metadata (GeoParquet) written are the same; compression stays snappy.

    Parameters
    ----------
    schema : pyarrow.Schema
        The part's schema (:func:`arrow_schema`).

    Returns
    -------
    dict
        ``use_dictionary`` and ``write_statistics``, each the list of those columns.
    """
    kept = [field.name for field in schema
            if not (pa.types.is_floating(field.type) or pa.types.is_binary(field.type))]
    return {"use_dictionary": kept, "write_statistics": kept}


def write_part(frame: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema) -> dict:
    """Write ``frame`` to ``path`` atomically and durably (temporary name, fsync, rename).

    Every part has the full schema, also when it holds no rows, so the
    dataset reads as one table with ``pandas.read_parquet`` or
    ``dask.dataframe.read_parquet``, and an interrupted write never leaves a
    truncated file under the final name.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows, with at least the schema's columns.
    path : str or os.PathLike
        The part's final name.
    schema : pyarrow.Schema
        The table's schema (:func:`arrow_schema`).

    Returns
    -------
    dict
        ``rows``, ``bytes`` and ``sha256`` of the file written: what a
        resumed run checks before it trusts the part.
    """
    path = Path(path)
    table = part_table(frame, schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **write_options(schema))
        record = {"rows": table.num_rows, "bytes": tmp.stat().st_size, "sha256": sha256_file(tmp)}
    return record
