"""Records to table rows: the columns of the output and one row per cell."""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import pandas as pd

from scip.features import FeatureParams
from scip.features import MICROMETRE_SUFFIX, micrometre_columns
from scip.features import columns as feature_columns
from scip.records import CellRecord, ImageRecord
from scip.segment.tiling import polygon_wkb
from scip.steps.micronuclei import COLUMNS as MICRONUCLEUS_COLUMNS


#: The column of the cells' outlines (``output.polygons``).
GEOMETRY = "geometry"
# pandas 2 copies the float block in concat unless told not to; pandas 3 copies lazily (copy-on-write) and
# warns that the keyword is deprecated.
_CONCAT_NO_COPY = {"copy": False} if int(pd.__version__.split(".")[0]) < 3 else {}


def add_polygons(records: list[ImageRecord | CellRecord], mask: str) -> list[ImageRecord | CellRecord]:
    """Give every ok cell its outline in mask ``mask`` as WKB (image coordinates: ``x`` column, ``y`` row).

    Parameters
    ----------
    records : list
        A partition's records; cells must still hold their masks (before the features step).
    mask : str
        The mask whose outline is taken (``segment.name``).

    Returns
    -------
    list
        The records, ok 2-D cells with :attr:`~scip.records.CellRecord.geometry` set (3-D cells: none).
    """
    # An outline is 2-D: 3-D objects of a z stack keep a null geometry.
    return [r.with_(geometry=polygon_wkb(r.masks[mask], r.origin))
            if isinstance(r, CellRecord) and r.status and mask in r.masks and r.masks[mask].ndim == 2 else r
            for r in records]


def meta_name(field: str) -> str:
    """Column name of a metadata field: ``meta_<field>``."""
    return "meta_" + "_".join(re.findall(r"[A-Za-z0-9]+", field))


def table_columns(channels: tuple[str, ...], field_names: Iterable[str], masks: tuple[str, ...],
                  families: tuple[str, ...], evaluated: bool, params: FeatureParams | None = None,
                  polygons: bool = False, micrometres: bool = False, micronuclei: bool = False) -> dict[str, str]:
    """Every output column and its kind (``str``/``int``/``float``/``wkb``), known before any pixel is read.

    ``polygons`` adds ``geometry``, each cell's outline as WKB (kind ``wkb``);
    ``micrometres`` (the input has pixel sizes) the micrometre versions of
    size features (:func:`micrometre_columns`), NaN for images without one;
    ``micronuclei`` adds ``micronucleus_count`` and ``micronucleus_area`` (kind ``int``).
    """
    cols = {"meta_image_id": "str", "meta_index": "int", "meta_path": "str", "meta_label": "int"}
    for f in sorted(set(field_names)):
        cols.setdefault(meta_name(f), "str")
    if evaluated:
        cols["meta_truth_label"] = "int"
    if polygons:
        cols[GEOMETRY] = "wkb"
    if micronuclei:
        cols.update(MICRONUCLEUS_COLUMNS)
    for mask in masks:
        found = feature_columns(channels, families=families, mask_name=mask, params=params)
        for c in found:
            cols[c.name] = "float"
        if micrometres:
            for c in micrometre_columns(found):
                cols[c.name] = "float"
    return cols


def _micrometres(block: np.ndarray, position: dict[str, int], pixel_sizes: list[float | None]) -> None:
    """Fill the ``_um``/``_um2`` columns of ``block`` from their pixel columns and each row's pixel size."""
    pairs = [(position[n[:-len(suffix)]], j, power) for n, j in position.items()
             for suffix, power in MICROMETRE_SUFFIX.values()
             if n.endswith(suffix) and n[:-len(suffix)] in position and ("_shape_" in n or "_bbox_" in n)]
    if not pairs or not len(block):
        return
    size = np.array([np.nan if p is None else p for p in pixel_sizes], dtype=np.float64)
    for base, j, power in pairs:
        block[:, j] = block[:, base] * size ** power


def _layout(keys: tuple[str, ...], position: dict[str, int],
            other: dict[str, list]) -> tuple[list[int], np.ndarray, list[tuple[int, str]]]:
    """Where the features of a cell whose keys are ``keys`` (in order) go.

    Returns
    -------
    tuple
        The indices in ``keys`` of the float columns' values (None when that
        is all of them, in order), their columns in the float block, and
        ``(index, column)`` of the values that go to the other columns
        (integer micronucleus counts); keys of neither are not exported.
    """
    picked = [(k, position[name]) for k, name in enumerate(keys) if name in position]
    to_other = [(k, name) for k, name in enumerate(keys) if name not in position and name in other]
    # None: every value is a float column's, in order (the usual case), and the values are taken as they are.
    indices = None if len(picked) == len(keys) else [k for k, _ in picked]
    return indices, np.array([j for _, j in picked], dtype=np.intp), to_other


def cells_frame(records: Iterable[ImageRecord | CellRecord], columns: dict[str, str]) -> pd.DataFrame:
    """One row per exported cell (ok cell records), with exactly ``columns``.

    Feature columns, hundreds of them, are filled as one float64 block
    rather than column by column, which would dominate the export time.
    """
    cells = [r for r in records if isinstance(r, CellRecord) and r.status]
    float_cols = [name for name, kind in columns.items() if kind == "float"]
    position = {name: j for j, name in enumerate(float_cols)}
    block = np.full((len(cells), len(float_cols)), np.nan)
    other: dict[str, list] = {name: [None] * len(cells) for name, kind in columns.items() if kind != "float"}
    # The cells of one feature extraction share their feature names, in the same order: where each value goes
    # is worked out once per distinct name sequence, and each cell's values land with one gather and one
    # scatter instead of hundreds of dictionary lookups and scalar stores (millions per run).
    layouts: dict[tuple[str, ...], tuple] = {}
    groups: dict[tuple[str, ...], tuple[list[int], list]] = {}
    for i, r in enumerate(cells):
        meta = {
            "meta_image_id": r.source.image_id,
            "meta_index": r.source.index,
            "meta_path": ";".join(p for p in r.source.paths if p),
            "meta_label": r.label,
            **{meta_name(k): v for k, v in r.source.fields.items()},
        }
        if r.truth_label is not None:
            meta["meta_truth_label"] = r.truth_label
        if r.geometry is not None:
            meta[GEOMETRY] = r.geometry
        for name, value in meta.items():
            if name in other:
                other[name][i] = value
            elif name in position:
                block[i, position[name]] = value
        if not r.features:
            continue
        keys = tuple(r.features)
        layout = layouts.get(keys)
        if layout is None:
            layout = layouts[keys] = _layout(keys, position, other)
            groups[keys] = ([], [])
        values = list(r.features.values())
        rows, gathered = groups[keys]
        rows.append(i)
        gathered.append(values if layout[0] is None else [values[k] for k in layout[0]])
        for k, name in layout[2]:  # integer values (micronucleus counts)
            other[name][i] = values[k]
    # After every row's metadata, as before: a feature of the same name as a metadata column wins.
    for keys, (rows, gathered) in groups.items():
        targets = layouts[keys][1]
        if len(targets):
            block[np.array(rows, dtype=np.intp)[:, None], targets] = np.array(gathered, dtype=np.float64)
    _micrometres(block, position, [r.source.pixel_size for r in cells])
    floats = pd.DataFrame(block, columns=float_cols, copy=False)
    dtypes = {"str": "string", "int": "Int64", "wkb": object}
    others = pd.DataFrame({name: pd.array(values, dtype=dtypes[columns[name]])
                           for name, values in other.items()}, index=floats.index)
    return pd.concat([others, floats], axis=1, **_CONCAT_NO_COPY)[list(columns)]
