"""The feature table in other formats, and one reader for every format.

Layout of an output folder
--------------------------
A run always writes the table as Parquet parts, one per partition, all with
the same schema::

    output/
        cells/part-00000.parquet   # always: the table, split by partition
        cells/part-00001.parquet
        ...
        cells.h5ad                 # output.formats includes "anndata"
        cells.csv                  # output.formats includes "csv"
        run.json, skipped.csv, ...

The columns are ``meta_*`` (metadata: strings, or nullable integers for
``meta_index``, ``meta_label`` and ``meta_truth_label``) and ``feat_*``
(float64 features); see ``docs/features.md`` for the feature names.

:func:`write_formats` converts the parts, once they all exist, into

``cells.h5ad`` (AnnData, ready for scanpy)
    ``X``: the ``feat_*`` columns that describe the cell as a dense
    **float32** matrix (cells × features, column order kept), **with no NaN
    or infinity**, so that ``sc.pp.scale → sc.tl.pca → sc.pp.neighbors →
    sc.tl.umap`` runs as it is. NaN policy: an entry that is not a finite
    float32 (a feature undefined for that object, such as the texture of a
    one-pixel-wide object, or a value beyond float32's range) holds its
    column's *fill value*, the median of the column's finite values (0 if
    it has none), so it sits at the column's centre and does not drive a
    PCA. ``layers["missing"]`` (uint8, same shape) says which entries were
    filled and why (:data:`MISSING_CODES`: 0 measured, 1 NaN, 2 +inf,
    3 -inf); ``var["n_missing"]`` counts them per feature and
    ``var["fill_value"]`` is the value used. A column that is constant
    (e.g. all filled) stays in ``X``; scanpy's ``pp.scale`` maps it to 0.
    ``obs``: the ``meta_*`` columns (strings as categoricals, integers as
    nullable integers) and the **position columns**
    (:func:`position_columns`: bounding boxes, centroids, center of mass
    and maximum locations, as exact float64), indexed by a cell id
    ``"<meta_image_id>:<meta_label>"`` (made unique by appending
    ``":<row>"`` if a table repeats one). ``obsm["spatial"]``: each cell's
    centroid as ``(x, y)`` = (column, row) in its image's pixels, from the
    first mask's ``bbox`` (or ``volume``) centroid; absent when neither
    family was measured. Coordinates are per image (``obs["meta_image_id"]``
    tells the images apart). ``var``: one row per feature of ``X`` with
    ``family``, ``channel``, ``definition``, ``unit`` (empty strings where
    no description was given, and ``channel`` for features of no channel),
    ``n_missing`` and ``fill_value``. ``uns["scip"]``: the source, the scip
    version, and the table's column names and kinds
    (``str``/``int``/``float``), so that :func:`read` restores the column
    order, dtypes and the NaN and infinities of ``X``.
``cells.csv``
    Every column, one header line, written part by part (constant memory).
    Floats are written with the shortest text that reads back to the same
    float64 (Python's ``repr``), missing values as an empty field.

:func:`read` reads any of them back into the same pandas table.

What the formats keep
---------------------
* Parquet and CSV give exactly the same table: same columns, order, dtypes
  (``string``, ``Int64``, ``float64``) and values, bit for bit.
* h5ad features of ``X`` are **float32**: they come back as float32 columns,
  equal to ``float32(parquet value)`` (about 7 significant digits; values
  beyond float32's range become ±inf; NaN stays NaN). Position columns and
  the metadata are exact.
* CSV cannot tell an empty string from a missing one: both are an empty
  field and read back as missing (``<NA>``). Pipeline tables hold no empty
  metadata strings. CSV carries no types either: :func:`read` gives
  ``meta_index``, ``meta_label`` and ``meta_truth_label`` the ``Int64``
  dtype, other ``meta_*`` columns ``string``, and every other column
  ``float64``, as the pipeline writes them.

Memory
------
Writing ``cells.h5ad`` holds the whole matrix in memory once, as float32,
and its ``missing`` layer: 5 bytes per cell and feature (1 million cells ×
700 features: 3.5 GB), plus
the metadata (a few hundred bytes per cell) and one Parquet part at a time.
Writing ``cells.csv`` holds one part at a time. Reading with ``lazy=False``
loads the whole table (8 bytes per value for Parquet and CSV); ``lazy=True``
reads Parquet and CSV partition by partition, while h5ad is read eagerly and
wrapped (see :func:`read`).
"""

from __future__ import annotations

import os
import re
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scip.features import FeatureColumn
from scip.features import columns as feature_columns
from scip.features import micrometre_columns
from scip.io.atomic import atomic_path
from scip.io.manifest import MANIFEST, IncompleteRunError, check_complete
from scip.steps.export import GEOMETRY, table_columns

if TYPE_CHECKING:
    from scip.engine.frames import DaskFrame

__all__ = ["FORMATS", "FILES", "MISSING_CODES", "write_formats", "read", "feature_descriptions", "part_files",
           "position_columns", "IncompleteRunError"]

#: Table formats a run can write; ``parquet`` is always written.
FORMATS: tuple[str, ...] = ("parquet", "anndata", "csv")

#: Where each format lives in an output folder.
FILES: dict[str, str] = {"parquet": "cells", "anndata": "cells.h5ad", "csv": "cells.csv"}

_READ_FORMATS = ("auto", *FORMATS)
_SUFFIXES = {".parquet": "parquet", ".h5ad": "anndata", ".csv": "csv"}
_PARTS = "part-*.parquet"
_FEATURE_PREFIX = "feat_"
_DESCRIPTION_FIELDS = ("family", "channel", "definition", "unit")
# The metadata columns of fixed kind, from the one place that defines them.
_FIXED_KINDS = table_columns((), (), (), (), evaluated=True)
# Lazy h5ad tables are split into partitions of this many rows.
_H5AD_CHUNK_ROWS = 100_000
_CSV_READ_OPTIONS = {"float_precision": "round_trip", "keep_default_na": False, "na_values": [""]}


def _types_mapper(arrow_type: pa.DataType) -> Any:
    """Arrow to pandas dtypes as the pipeline makes them: ``string`` and ``Int64``."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype()
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    return None


def _kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_binary(arrow_type):
        return "wkb"
    raise ValueError(f"column type {arrow_type} is not one of the table's kinds (string, integer, float, WKB)")


def _dtype(kind: str) -> Any:
    return {"str": pd.StringDtype(), "int": pd.Int64Dtype(), "float": np.dtype("float64"), "wkb": object}[kind]


def _wkb_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Outlines (WKB) as WKT text, for the formats that hold no bytes (CSV, AnnData's ``obs``)."""
    if GEOMETRY not in frame.columns:
        return frame
    import shapely

    text = shapely.to_wkt(shapely.from_wkb(frame[GEOMETRY].to_numpy()))
    return frame.assign(**{GEOMETRY: pd.array(text, dtype="string")})


def _kind_by_name(name: str) -> str:
    """A column's kind from its name alone (for CSV, which stores no types; outlines there are WKT text)."""
    if name in _FIXED_KINDS:
        return _FIXED_KINDS[name]
    if name == GEOMETRY:
        return "str"
    return "str" if name.startswith("meta_") else "float"


def part_files(folder: str | os.PathLike) -> list[Path]:
    """The Parquet parts of a ``cells`` folder, in partition order.

    Only ``part-*.parquet`` files count: temporary files of an interrupted
    write (``.part-*.tmp``) and anything else in the folder are ignored.
    """
    return sorted(Path(folder).glob(_PARTS))


def _parts_of_output(output: Path) -> list[Path]:
    cells = output / FILES["parquet"]
    parts = part_files(cells) if cells.is_dir() else []
    if not parts:
        raise FileNotFoundError(f"{output}: no table to convert: found no {_PARTS} in {cells}; "
                                "write_formats runs after the pipeline has written its parts")
    return parts


def _read_part(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).to_pandas(types_mapper=_types_mapper)


def _schema(parts: list[Path]) -> pa.Schema:
    schema = pq.read_schema(parts[0])
    for part in parts[1:]:
        other = pq.read_schema(part)
        if not other.equals(schema, check_metadata=False):
            raise ValueError(f"{part}: its columns differ from those of {parts[0]}; "
                             "the parts of one table must all have the same schema")
    return schema


def feature_descriptions(channels: Sequence[str], config: Any) -> dict[str, FeatureColumn]:
    """Every feature column of a run, by name, for :func:`write_formats`.

    Parameters
    ----------
    channels : sequence of str
        The channels that get features (``plan.dataset.channels``).
    config : scip.config.Config
        The run's configuration: its masks and ``features`` section.

    Returns
    -------
    dict of str to FeatureColumn
        The same columns, in the same order, as the table's ``feat_*``.
    """
    params = config.features.params()
    out: dict[str, FeatureColumn] = {}
    for mask in config.mask_names:
        found = feature_columns(channels, families=config.features.families, mask_name=mask, params=params)
        for c in [*found, *micrometre_columns(found)]:
            out[c.name] = c
    return out


def _description(value: Any) -> dict[str, str]:
    if isinstance(value, (tuple, list)):
        if len(value) != len(_DESCRIPTION_FIELDS):
            raise ValueError(f"a feature description is {', '.join(_DESCRIPTION_FIELDS)}; got {value!r}")
        fields = dict(zip(_DESCRIPTION_FIELDS, value))
    else:
        fields = {f: getattr(value, f) for f in _DESCRIPTION_FIELDS}
    return {f: "" if v is None else str(v) for f, v in fields.items()}


def _check_formats(formats: Sequence[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown table format {unknown[0]!r}; allowed: {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def write_formats(output: str | os.PathLike, formats: Sequence[str],
                  descriptions: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the table of a finished run in more formats, next to its Parquet parts.

    Parameters
    ----------
    output : path
        The run's output folder, holding ``cells/part-*.parquet``.
    formats : sequence of str
        Any of ``parquet``, ``anndata``, ``csv`` (``output.formats``).
        ``parquet`` needs no work (the parts are the Parquet table); a
        format listed twice is written once.
    descriptions : mapping, optional
        Feature column name to its description for the AnnData ``var``
        table: a :class:`~scip.features.FeatureColumn` (or any object with
        ``family``, ``channel``, ``definition``, ``unit``), or a tuple
        ``(family, channel, definition, unit)``; see
        :func:`feature_descriptions`. Features not in it get empty strings.

    Returns
    -------
    dict of str to Path
        The files written, by format (``anndata``: ``cells.h5ad``, ``csv``:
        ``cells.csv``); ``parquet`` is not among them. Each file is written
        under a temporary name and renamed when complete.

    Raises
    ------
    ValueError
        For an unknown format (the message names it and the allowed ones),
        or parts whose schemas differ.
    FileNotFoundError
        When ``output/cells`` holds no ``part-*.parquet``.
    """
    formats = _check_formats(formats)
    output = Path(output)
    todo = [f for f in formats if f != "parquet"]
    if not todo:
        return {}
    parts = _parts_of_output(output)
    schema = _schema(parts)
    writers = {"anndata": _write_h5ad, "csv": _write_csv}
    written: dict[str, Path] = {}
    for fmt in todo:
        path = output / FILES[fmt]
        with atomic_path(path) as tmp:
            writers[fmt](parts, schema, tmp, descriptions or {})
        written[fmt] = path
    return written


def _scip_version() -> str:
    try:
        return metadata.version("scip")
    except metadata.PackageNotFoundError:
        return "unknown"


def _cell_ids(obs: pd.DataFrame) -> pd.Index:
    n = len(obs)
    if {"meta_image_id", "meta_label"} <= set(obs.columns):
        image = obs["meta_image_id"].astype("string").fillna("<NA>").astype(str).to_numpy(dtype=object)
        label = obs["meta_label"].astype("string").fillna("<NA>").astype(str).to_numpy(dtype=object)
        ids = pd.Index(image + ":" + label if n else np.array([], dtype=object), dtype=object)
        if ids.is_unique:
            return ids
        return pd.Index(ids + ":" + pd.Index(np.arange(n).astype(str), dtype=object), dtype=object)
    return pd.Index(np.arange(n).astype(str), dtype=object)


#: Feature columns that say where an object is, not what it is: kept out of AnnData's ``X`` (in ``obs``).
_POSITION = re.compile(r"^feat_.+?_(?:bbox_.+"
                       r"|intensity_(?:center_mass|max)_(?:row|col)_.+"
                       r"|volume_(?:min|max|centroid)_(?:z|row|col))$")
#: ``layers["missing"]`` codes: why an entry of ``X`` holds its column's fill value instead of a measurement.
MISSING_CODES: dict[int, str] = {0: "measured", 1: "NaN (undefined for the object)",
                                 2: "+inf (beyond float32)", 3: "-inf (beyond float32)"}


def position_columns(names: Sequence[str]) -> list[str]:
    """The feature columns that hold positions or boxes in image coordinates, in table order.

    These are the ``bbox`` family, the ``intensity`` family's center of
    mass and maximum locations, and the ``volume`` family's box and
    centroid. ``cells.h5ad`` keeps them in ``obs`` (float64) rather than in
    ``X``: where a cell lies in its image says nothing about the cell, and
    it would dominate a PCA.

    Parameters
    ----------
    names : sequence of str
        Column names of a table.

    Returns
    -------
    list of str
        The names among ``names`` that are positions.
    """
    return [n for n in names if _POSITION.match(n)]


def _spatial_columns(names: Sequence[str]) -> tuple[str, str] | None:
    """The (column, row) centroid of the first mask that has one: ``obsm["spatial"]``'s (x, y)."""
    for name in names:
        for family in ("bbox", "volume"):
            suffix = f"_{family}_centroid_row"
            if name.startswith(_FEATURE_PREFIX) and name.endswith(suffix):
                col = name[: -len("row")] + "col"
                if col in names:
                    return col, name
    return None


def _impute(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace non-finite entries of ``x`` in place by their column's median; codes, fill values, counts."""
    missing = np.zeros(x.shape, dtype=np.uint8)
    fill = np.zeros(x.shape[1], dtype=np.float32)
    # Column by column: a whole-matrix nanmedian would copy the matrix.
    for j in range(x.shape[1]):
        column = x[:, j]
        finite = np.isfinite(column)
        if finite.all():
            continue
        missing[:, j] = np.where(np.isnan(column), 1, np.where(column > 0, 2, 3)) * ~finite
        if finite.any():
            fill[j] = np.median(column[finite])
        column[~finite] = fill[j]
    return missing, fill, (missing > 0).sum(axis=0)


def _write_h5ad(parts: list[Path], schema: pa.Schema, path: Path, descriptions: Mapping[str, Any]) -> None:
    import anndata

    names = schema.names
    # Outlines go into obs as WKT text (h5ad holds no bytes there).
    kinds = [{"wkb": "str"}.get(k, k) for k in (_kind(schema.field(n).type) for n in names)]
    positions = set(position_columns(names))
    feats = [n for n in names if n.startswith(_FEATURE_PREFIX) and n not in positions]
    meta = [n for n in names if n not in feats]
    bad = [n for n, k in zip(names, kinds) if n.startswith(_FEATURE_PREFIX) and k != "float"]
    if bad:
        raise ValueError(f"feature column {bad[0]!r} is not a float column; AnnData's X holds floats only")
    n_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    # One float32 matrix filled part by part: the whole table is never held as float64.
    x = np.empty((n_rows, len(feats)), dtype=np.float32)
    obs_parts = []
    start = 0
    for part in parts:
        table = pq.read_table(part)
        stop = start + table.num_rows
        with np.errstate(over="ignore"):  # beyond float32's range: +-inf, then counted as missing
            for j, name in enumerate(feats):
                x[start:stop, j] = table.column(name).to_numpy()  # nulls become NaN
        obs_parts.append(_wkb_as_text(table.select(meta).to_pandas(types_mapper=_types_mapper)))
        start = stop
    obs = pd.concat(obs_parts, ignore_index=True) if obs_parts else pd.DataFrame(columns=meta)
    for name in meta:
        if isinstance(obs[name].dtype, pd.StringDtype):
            obs[name] = pd.Categorical(obs[name].astype(object).where(obs[name].notna(), None))
        elif name in positions:
            obs[name] = obs[name].astype("float64")
    obs.index = _cell_ids(obs)
    missing, fill, n_missing = _impute(x)
    var = pd.DataFrame([_description(descriptions[n]) if n in descriptions else dict.fromkeys(_DESCRIPTION_FIELDS, "")
                        for n in feats], columns=list(_DESCRIPTION_FIELDS),
                       index=pd.Index(feats, dtype=object))
    var["n_missing"] = n_missing.astype(np.int64)
    var["fill_value"] = fill
    uns = {"scip": {
        "source": f"{FILES['parquet']}/{_PARTS}",
        "scip_version": _scip_version(),
        "columns": list(names),
        "kinds": kinds,
        "features_dtype": "float32",
        "obs_names": "meta_image_id:meta_label",
        "positions_in_obs": sorted(positions, key=names.index),
        "missing_codes": {str(k): v for k, v in MISSING_CODES.items()},
    }}
    obsm = {}
    spatial = _spatial_columns(names)
    if spatial is not None:
        obsm["spatial"] = obs[list(spatial)].to_numpy(dtype=np.float64)
        uns["scip"]["spatial"] = list(spatial)
    adata = anndata.AnnData(X=x, obs=obs, var=var, uns=uns, obsm=obsm, layers={"missing": missing})
    adata.write_h5ad(path)


def _write_csv(parts: list[Path], schema: pa.Schema, path: Path, descriptions: Mapping[str, Any]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        for i, part in enumerate(parts):
            frame = _wkb_as_text(_read_part(part))
            # float_format None: pandas writes repr(float), the shortest text that reads back exactly.
            frame.to_csv(f, header=i == 0, index=False, na_rep="", float_format=None, lineterminator="\n")


def _resolve(path: Path, format: str) -> tuple[str, Path]:
    """Which format to read and from where."""
    if format not in _READ_FORMATS:
        raise ValueError(f"unknown table format {format!r}; allowed: {', '.join(_READ_FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        fmt = _SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{path}: not a table file; expected a name ending in {', '.join(_SUFFIXES)}")
        if format not in ("auto", fmt):
            raise ValueError(f"{path}: a {fmt} file, but format={format!r} was asked for")
        return fmt, path
    # A cells folder itself (RunResult.table) holds the parts directly.
    if format in ("auto", "parquet") and part_files(path) and not (path / FILES["parquet"]).is_dir():
        return "parquet", path
    candidates = {"parquet": path / FILES["parquet"], "anndata": path / FILES["anndata"], "csv": path / FILES["csv"]}

    def present(fmt: str) -> bool:
        where = candidates[fmt]
        return bool(part_files(where)) if fmt == "parquet" else where.is_file()

    looked = {"parquet": f"{FILES['parquet']}/{_PARTS}", "anndata": FILES["anndata"], "csv": FILES["csv"]}
    if format != "auto":
        if not present(format):
            raise FileNotFoundError(f"{path}: no {format} table: looked for {looked[format]}")
        return format, candidates[format]
    for fmt in FORMATS:
        if present(fmt):
            return fmt, candidates[fmt]
    raise FileNotFoundError(f"{path}: no feature table: looked for {', '.join(looked.values())}")


def _run_folder(path: Path) -> Path | None:
    """The run folder (holding ``manifest.json``) that ``path`` is, or is the ``cells`` folder of."""
    if not path.is_dir():
        return None
    if (path / MANIFEST).is_file():
        return path
    if path.name == FILES["parquet"] and (path.parent / MANIFEST).is_file():
        return path.parent
    return None


def read(output_dir: str | os.PathLike, format: str = "auto", lazy: bool = False,
         partial: bool = False) -> pd.DataFrame | DaskFrame:
    """Read the feature table of a run, whatever format it was written in.

    Parameters
    ----------
    output_dir : path
        A run's output folder; or its ``cells`` folder; or one table file
        (``.parquet`` part, ``.h5ad`` or ``.csv``), read as it is.
    format : {"auto", "parquet", "anndata", "csv"}
        ``auto`` takes the first present of ``cells/part-*.parquet``,
        ``cells.h5ad``, ``cells.csv``; for a file, its name's suffix decides.
    lazy : bool
        Return a :class:`dask.dataframe.DataFrame` instead of reading the
        table into memory. Parquet and CSV are then read partition by
        partition when computed (one partition per Parquet part, or per
        64 MB block of CSV; the index restarts in each partition). **h5ad is
        read eagerly** (it is one HDF5 file) and wrapped with
        :func:`dask.dataframe.from_pandas` in partitions of 100,000 rows.
        The lazy frames are built by :mod:`scip.engine.frames`: this module
        imports no Dask, and ``lazy=False`` needs none.
    partial : bool
        For a run folder (or its ``cells`` folder) whose ``manifest.json``
        says the run did not finish: warn and read the partitions that verify
        instead of raising. Folders without a manifest (a plain table) and
        single files are read as they are.

    Returns
    -------
    pandas.DataFrame or dask.dataframe.DataFrame
        The table, columns in their written order, a default ``RangeIndex``.
        Metadata columns have the ``string`` or ``Int64`` dtype (missing
        values are ``<NA>``); features are float64 from Parquet and CSV, and
        float32 from h5ad, whose ``X`` stores float32 (the values equal the
        float32 rounding of the Parquet values, NaN where ``layers["missing"]``
        says so), except the position columns, float64 from h5ad's ``obs``.

    Raises
    ------
    ValueError
        For an unknown ``format``, a file whose suffix is not a table's, or a
        file of another format than the one asked for.
    FileNotFoundError
        For a path that does not exist, or a folder without the table asked
        for (the message lists the files looked for).
    IncompleteRunError
        (a :class:`ValueError`) For a run that did not finish, or whose parts
        went missing since, unless ``partial``: the message says how many
        partitions are missing and that ``scip run --resume`` completes them.
    """
    output_dir = Path(output_dir)
    run = _run_folder(output_dir)
    verified = check_complete(run, partial=partial) if run is not None else None
    fmt, path = _resolve(output_dir, format)
    if fmt == "parquet":
        return _read_parquet(path, lazy, files=verified)
    if fmt == "csv":
        return _read_csv(path, lazy)
    frame = _read_h5ad(path)
    if lazy:
        from scip.engine.frames import pandas_frame

        return pandas_frame(frame, _H5AD_CHUNK_ROWS)
    return frame


# The lazy readers are the engine's (scip.engine.frames): this module stays pandas and pyarrow only.
def _read_parquet(path: Path, lazy: bool, files: list[Path] | None = None) -> pd.DataFrame | DaskFrame:
    if files is None:
        files = [path] if path.is_file() else part_files(path)
    if lazy:
        from scip.engine.frames import parquet_frame

        return parquet_frame(files, _types_mapper)
    _schema(files)
    tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables).to_pandas(types_mapper=_types_mapper)


def _read_csv(path: Path, lazy: bool) -> pd.DataFrame | DaskFrame:
    names = list(pd.read_csv(path, nrows=0, **_CSV_READ_OPTIONS).columns)
    dtypes = {n: _dtype(_kind_by_name(n)) for n in names}
    if lazy:
        from scip.engine.frames import csv_frame

        return csv_frame(path, dtypes, _CSV_READ_OPTIONS)
    return pd.read_csv(path, dtype=dtypes, **_CSV_READ_OPTIONS)


def _read_h5ad(path: Path) -> pd.DataFrame:
    import anndata

    adata = anndata.read_h5ad(path)
    info = adata.uns.get("scip", {})
    obs = adata.obs.reset_index(drop=True)
    feats = list(adata.var_names)
    x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)
    if "missing" in adata.layers:
        # X holds fill values where nothing was measured: put the measured NaN and infinities back.
        missing = np.asarray(adata.layers["missing"])
        x = x.copy()
        for code, value in ((1, np.nan), (2, np.inf), (3, -np.inf)):
            x[missing == code] = value
    features = pd.DataFrame(x, columns=pd.Index(feats, dtype=object))
    names = [str(n) for n in info.get("columns", [*obs.columns, *feats])]
    kinds = dict(zip(names, [str(k) for k in info.get("kinds", [_kind_by_name(n) for n in names])]))
    data: dict[str, Any] = {}
    for name in names:
        if name in features.columns:
            data[name] = features[name]
        else:
            column = obs[name]
            if isinstance(column.dtype, pd.CategoricalDtype):
                column = column.astype(object).where(column.notna(), None)
            kind = kinds.get(name, _kind_by_name(name))
            data[name] = column.astype(_dtype(kind)) if kind != "float" else column.astype("float64")
    return pd.DataFrame(data, columns=names)
