"""CellProfiler's names for the scip features that share CellProfiler's definitions.

Profiling pipelines (pycytominer, CellProfiler-based workflows) find their
features by CellProfiler's naming scheme,
``<Object>_<Category>_<Feature>[_<Image>]``: ``Cells_AreaShape_Area``,
``Cells_Intensity_MeanIntensity_DNA``, ``Nuclei_Location_CenterMassIntensity_X_DNA``;
and metadata by the ``Metadata_`` prefix. :func:`to_cellprofiler` renames a
scip table that way.

Only features whose definition is CellProfiler's get a CellProfiler
measurement name (:func:`cellprofiler_name`); the feature tests compare
them with cp-measure (CellProfiler's measurement code as a library) or with
the scikit-image ``regionprops`` values that CellProfiler itself reports:

* ``AreaShape``: Area, ConvexArea, Perimeter, Eccentricity, Solidity,
  Extent, MajorAxisLength, MinorAxisLength, EulerNumber,
  EquivalentDiameter, MinFeretDiameter, Zernike_n_m, the spatial,
  central and normalized moments and Hu moments CellProfiler lists,
  Center_X/Y and BoundingBoxMinimum/Maximum_X/Y (``bbox`` family).
* ``Intensity``: Integrated/Mean/Std/Min/Max/Median/MAD/Lower and
  UpperQuartile intensity, MassDisplacement, and the ``*IntensityEdge``
  values when ``features.edge_width`` is 1 (CellProfiler's edge);
  ``Location``: CenterMassIntensity_X/Y and MaxIntensity_X/Y.

X is CellProfiler's column, Y its row. CellProfiler measures images it has
scaled to [0, 1] (an integer image divided by its type's maximum), scip
the values as stored: intensity sums, means and quantiles differ by that
factor (ratios, shapes and locations do not).

Not mapped, because the definition differs: texture (scip quantizes each
object between its own minimum and maximum, CellProfiler the whole image),
``Orientation`` (CellProfiler: degrees), ``MaxFeretDiameter``
(CellProfiler: pixel centres of the hull; scip: scikit-image's contour),
``edge_*`` with ``edge_width`` other than 1, and scip's own features.
Those keep a name in CellProfiler's scheme with the category ``SCIP``
(``Cells_SCIP_texture_contrast_3_0_DNA``), so that tools which pick
features by object prefix keep them, and nobody mistakes them for
CellProfiler's.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import pandas as pd

from scip._featureparams import FAMILIES

from . import DEFAULT_FAMILIES, columns, intensity
from ._objects import FeatureParams

__all__ = ["OBJECT_NAMES", "cellprofiler_name", "mapping", "mapping_markdown", "object_name", "to_cellprofiler"]

#: scip mask names and the object names CellProfiler pipelines conventionally give them.
OBJECT_NAMES: Mapping[str, str] = {"cell": "Cells", "cells": "Cells", "nucleus": "Nuclei", "nuclei": "Nuclei",
                                   "cytoplasm": "Cytoplasm"}

_COLUMN = re.compile(r"^feat_(?P<mask>[A-Za-z0-9_]+?)_(?P<family>" + "|".join(FAMILIES) + r")_(?P<rest>.+)$")

_SHAPE = {
    "area": "Area", "area_convex": "ConvexArea", "perimeter": "Perimeter", "eccentricity": "Eccentricity",
    "solidity": "Solidity", "extent": "Extent", "axis_major_length": "MajorAxisLength",
    "axis_minor_length": "MinorAxisLength", "euler_number": "EulerNumber",
    "equivalent_diameter_area": "EquivalentDiameter", "feret_diameter_min": "MinFeretDiameter",
}
_BBOX = {
    "min_row": "BoundingBoxMinimum_Y", "min_col": "BoundingBoxMinimum_X", "max_row": "BoundingBoxMaximum_Y",
    "max_col": "BoundingBoxMaximum_X", "centroid_row": "Center_Y", "centroid_col": "Center_X",
}
_INTENSITY = {
    "sum": "Intensity_IntegratedIntensity", "mean": "Intensity_MeanIntensity", "std": "Intensity_StdIntensity",
    "min": "Intensity_MinIntensity", "max": "Intensity_MaxIntensity", "median": "Intensity_MedianIntensity",
    "mad": "Intensity_MADIntensity", "lower_quartile": "Intensity_LowerQuartileIntensity",
    "upper_quartile": "Intensity_UpperQuartileIntensity", "mass_displacement": "Intensity_MassDisplacement",
    "center_mass_row": "Location_CenterMassIntensity_Y", "center_mass_col": "Location_CenterMassIntensity_X",
    "max_row": "Location_MaxIntensity_Y", "max_col": "Location_MaxIntensity_X",
}
_EDGE = {
    "edge_sum": "Intensity_IntegratedIntensityEdge", "edge_mean": "Intensity_MeanIntensityEdge",
    "edge_std": "Intensity_StdIntensityEdge", "edge_min": "Intensity_MinIntensityEdge",
    "edge_max": "Intensity_MaxIntensityEdge",
}
# The moments CellProfiler's MeasureObjectSizeShape reports (advanced features): spatial and central p <= 2.
_MOMENT = re.compile(r"^moments_(?:(?P<kind>central|normalized|hu)_)?(?P<index>\d+)$")
_ZERNIKE = re.compile(r"^zernike_(\d+)_(\d+)$")
# Longest first, so that "max_row_DNA" is max_row of DNA, not max of "row_DNA".
_INTENSITY_FEATURES = sorted({f for f, *_ in intensity.describe(["x"], FeatureParams())}, key=len, reverse=True)


def _shape_name(feature: str) -> str | None:
    if feature in _SHAPE:
        return _SHAPE[feature]
    zernike = _ZERNIKE.match(feature)
    if zernike:
        return f"Zernike_{zernike[1]}_{zernike[2]}"
    moment = _MOMENT.match(feature)
    if not moment:
        return None
    kind, index = moment["kind"], moment["index"]
    if kind == "hu":
        return f"HuMoment_{index}"
    if len(index) != 2:
        return None
    p, q = int(index[0]), int(index[1])
    if kind == "normalized":
        return f"NormalizedMoment_{p}_{q}" if p <= 3 and q <= 3 else None
    if p > 2 or q > 3:
        return None
    return f"{'CentralMoment' if kind == 'central' else 'SpatialMoment'}_{p}_{q}"


def _split(name: str) -> tuple[str, str, str, str | None] | None:
    """``(mask, family, feature, channel)`` of a scip feature column; None for any other column."""
    match = _COLUMN.match(name)
    if not match:
        return None
    mask, family, rest = match["mask"], match["family"], match["rest"]
    if family == "intensity":
        for feature in _INTENSITY_FEATURES:
            if rest.startswith(feature + "_"):
                return mask, family, feature, rest[len(feature) + 1:]
    return mask, family, rest, None


def object_name(mask: str, objects: Mapping[str, str] | None = None) -> str:
    """CellProfiler object name of a scip mask: :data:`OBJECT_NAMES`, else the mask name capitalized."""
    table = {**OBJECT_NAMES, **(objects or {})}
    return table.get(mask, mask[:1].upper() + mask[1:])


def cellprofiler_name(column: str, edge_width: int = 1) -> str | None:
    """CellProfiler's measurement name of a scip feature column, if it shares CellProfiler's definition.

    Parameters
    ----------
    column : str
        A scip feature column, e.g. ``feat_cell_intensity_mean_DNA``.
    edge_width : int, optional
        The run's ``features.edge_width``; the edge intensities are
        CellProfiler's only for 1.

    Returns
    -------
    str or None
        The measurement name without the object, e.g.
        ``Intensity_MeanIntensity_DNA`` or ``AreaShape_Area``; None when
        the feature is not one of CellProfiler's (see the module docstring).

    Examples
    --------
    >>> cellprofiler_name("feat_cell_shape_zernike_3_1")
    'AreaShape_Zernike_3_1'
    >>> cellprofiler_name("feat_nucleus_intensity_center_mass_col_DNA")
    'Location_CenterMassIntensity_X_DNA'
    >>> cellprofiler_name("feat_cell_texture_contrast_3_0_DNA") is None
    True
    """
    parts = _split(column)
    if parts is None:
        return None
    _, family, feature, channel = parts
    if family == "shape":
        name = _shape_name(feature)
        return None if name is None else f"AreaShape_{name}"
    if family == "bbox":
        return f"AreaShape_{_BBOX[feature]}" if feature in _BBOX else None
    if family == "intensity" and channel is not None:
        name = _INTENSITY.get(feature) or (_EDGE.get(feature) if edge_width == 1 else None)
        return None if name is None else f"{name}_{channel}"
    return None


def _renamed(column: str, edge_width: int, objects: Mapping[str, str] | None) -> str:
    if column.startswith("meta_"):
        return "Metadata_" + column[len("meta_"):]
    parts = _split(column)
    if parts is None:
        return column
    mask = parts[0]
    measurement = cellprofiler_name(column, edge_width)
    if measurement is None:
        measurement = "SCIP_" + column[len(f"feat_{mask}_"):]
    return f"{object_name(mask, objects)}_{measurement}"


def mapping(columns: Sequence[str], edge_width: int = 1, objects: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The scip ↔ CellProfiler name table of some columns.

    Parameters
    ----------
    columns : sequence of str
        Column names of a scip table (other columns pass through unchanged).
    edge_width : int, optional
        The run's ``features.edge_width`` (see :func:`cellprofiler_name`).
    objects : mapping of str to str, optional
        Mask name to CellProfiler object name, over :data:`OBJECT_NAMES`.

    Returns
    -------
    pandas.DataFrame
        One row per column: ``scip``, ``cellprofiler`` (the name
        :func:`to_cellprofiler` gives it) and ``shared`` (True when it is a
        CellProfiler measurement of the same definition, False for
        ``SCIP_`` names, metadata and other columns).
    """
    rows = [{"scip": c, "cellprofiler": _renamed(c, edge_width, objects),
             "shared": cellprofiler_name(c, edge_width) is not None} for c in columns]
    return pd.DataFrame(rows, columns=["scip", "cellprofiler", "shared"])


def to_cellprofiler(table: pd.DataFrame, edge_width: int = 1, objects: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A scip table with CellProfiler's column names, for pycytominer and CellProfiler-based tools.

    ``meta_<x>`` becomes ``Metadata_<x>``; a feature of mask ``<mask>``
    becomes ``<Object>_<measurement>``, where ``<Object>`` is
    :func:`object_name` (``cell`` → ``Cells``, ``nucleus`` → ``Nuclei``)
    and ``<measurement>`` CellProfiler's name where the definition is shared
    (:func:`cellprofiler_name`), else ``SCIP_<family>_<feature>[_<channel>]``.
    Values are not changed.

    Parameters
    ----------
    table : pandas.DataFrame
        A scip table (:func:`scip.read`).
    edge_width : int, optional
        The run's ``features.edge_width``.
    objects : mapping of str to str, optional
        Mask name to CellProfiler object name, over :data:`OBJECT_NAMES`.

    Returns
    -------
    pandas.DataFrame
        The same table (not a copy of the values), renamed.

    Raises
    ------
    ValueError
        When two columns would get the same name (e.g. masks ``cell`` and
        ``cells``); the message names both.
    """
    names = mapping(list(table.columns), edge_width, objects)
    duplicated = names[names["cellprofiler"].duplicated(keep=False)]
    if len(duplicated):
        first = duplicated.iloc[:2]
        raise ValueError(f"columns {first['scip'].iloc[0]!r} and {first['scip'].iloc[1]!r} would both be named "
                         f"{first['cellprofiler'].iloc[0]!r}; give their masks distinct object names (objects=)")
    return table.rename(columns=dict(zip(names["scip"], names["cellprofiler"])), copy=False)


def mapping_markdown(families: Sequence[str] = DEFAULT_FAMILIES, params: FeatureParams | None = None) -> str:
    """Markdown table of the shared names, with ``<mask>``/``<Object>`` and ``<channel>`` placeholders.

    Parameters
    ----------
    families : sequence of str, optional
        Feature families; default the default families.
    params : FeatureParams, optional
        Feature parameters (``edge_width`` decides whether the edge
        intensities are CellProfiler's).

    Returns
    -------
    str
        One row per scip column that has a CellProfiler name.
    """
    params = params if params is not None else FeatureParams()
    mask, channel = "MASKNAME", "CHANNELNAME"
    lines = ["| scip | CellProfiler |", "|---|---|"]
    for c in columns([channel], families, mask_name=mask, params=params):
        name = cellprofiler_name(c.name, params.edge_width)
        if name is not None:
            scip = c.name.replace(mask, "<mask>").replace(channel, "<channel>")
            lines.append(f"| `{scip}` | `<Object>_{name.replace(channel, '<channel>')}` |")
    return "\n".join(lines) + "\n"
