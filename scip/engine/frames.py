"""Feature tables as lazy Dask DataFrames: the Dask half of ``scip.read(..., lazy=True)``.

:mod:`scip.io.tables` reads and converts tables with pandas and pyarrow
alone; for ``lazy=True`` it hands the files and the dtypes it decided to
these functions, so the lazy table has exactly the eager table's columns
and dtypes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import dask.dataframe as dd
import pandas as pd

__all__ = ["DaskFrame", "parquet_frame", "csv_frame", "pandas_frame"]

#: The type :func:`scip.io.tables.read` returns for ``lazy=True``.
DaskFrame = dd.DataFrame


def parquet_frame(files: list[Path], types_mapper: Callable[[Any], Any]) -> dd.DataFrame:
    """Parquet parts as one partition each, Arrow types mapped by ``types_mapper`` (as the eager reader does)."""
    return dd.read_parquet([str(f) for f in files], arrow_to_pandas={"types_mapper": types_mapper})


def csv_frame(path: Path, dtypes: dict[str, Any], options: dict[str, Any]) -> dd.DataFrame:
    """A CSV file in 64 MB blocks, read with pandas ``options`` and given ``dtypes``."""
    return with_dtypes(dd.read_csv(str(path), dtype=dtypes, **options), dtypes)


def pandas_frame(frame: pd.DataFrame, rows: int) -> dd.DataFrame:
    """An in-memory table (an h5ad file is read whole) in partitions of ``rows`` rows, its dtypes kept."""
    lazy = dd.from_pandas(frame, npartitions=max(1, math.ceil(len(frame) / rows)), sort=False)
    return with_dtypes(lazy, frame.dtypes.to_dict())


def with_dtypes(lazy: dd.DataFrame, dtypes: dict[str, Any]) -> dd.DataFrame:
    """Dask may turn strings into pyarrow strings: keep the eager reader's dtypes in every format."""
    meta = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()}, columns=list(dtypes))
    return lazy.map_partitions(pd.DataFrame.astype, dtypes, meta=meta)
