"""Column naming and metadata for feature tables."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Iterable

__all__ = ["FeatureColumn", "MICROMETRE_SUFFIX", "column_name", "micrometre_columns", "sanitize"]

_TOKEN = re.compile(r"[A-Za-z0-9]+")


@dataclass(frozen=True)
class FeatureColumn:
    """One column of a feature table, known before any pixel is read.

    Parameters
    ----------
    name : str
        Full column name, as made by :func:`column_name`.
    family : str
        Feature family (``"shape"``, ``"intensity"``, ...).
    feature : str
        Short feature name within the family (``"area"``, ``"mean"``, ...).
    channel : str or None
        Channel name as given by the caller (not sanitized), or None for
        features that do not depend on a channel.
    definition : str
        One-sentence definition.
    unit : str
        Unit of the values (``"px"``, ``"px^2"``, ``"intensity"``, ``"rad"``,
        ``"1"`` for dimensionless, ...).
    """

    name: str
    family: str
    feature: str
    channel: str | None
    definition: str
    unit: str


def sanitize(text: str) -> str:
    """Reduce ``text`` to runs of ``[A-Za-z0-9]`` joined by ``_``.

    Examples
    --------
    >>> sanitize("GFP 488")
    'GFP_488'
    >>> sanitize(" Ch-1 (BF) ")
    'Ch_1_BF'

    Raises
    ------
    ValueError
        If nothing alphanumeric is left, since the column would be unnamed.
    """
    tokens = _TOKEN.findall(str(text))
    if not tokens:
        raise ValueError(f"name {text!r} has no ASCII letters or digits; cannot use it in a column name")
    return "_".join(tokens)


def column_name(mask: str, family: str, feature: str, channel: str | None = None) -> str:
    """Name of a feature column.

    This is the only place column names are made, so that the schema built by
    :func:`scip.features.columns` and the table built by
    :func:`scip.features.extract` cannot disagree.

    Parameters
    ----------
    mask : str
        Name of the mask the object comes from (e.g. ``"cell"``); sanitized
        like channel names.
    family, feature : str
        Family and short feature name; used as given.
    channel : str, optional
        Channel name; sanitized to ``[A-Za-z0-9]+`` runs joined by ``_``.

    Returns
    -------
    str
        ``feat_<mask>_<family>_<feature>`` or
        ``feat_<mask>_<family>_<feature>_<channel>``.

    Examples
    --------
    >>> column_name("cell", "intensity", "mean", "GFP 488")
    'feat_cell_intensity_mean_GFP_488'
    >>> column_name("cell", "shape", "area")
    'feat_cell_shape_area'
    """
    name = f"feat_{sanitize(mask)}_{family}_{feature}"
    if channel is not None:
        name = f"{name}_{sanitize(channel)}"
    return name


#: Suffix of the micrometre version of a size feature, by the unit of its pixel version.
MICROMETRE_SUFFIX = {"px": ("_um", 1), "px^2": ("_um2", 2)}


def micrometre_columns(pixel_columns: Iterable[FeatureColumn]) -> list[FeatureColumn]:
    """The micrometre version of each size feature among ``pixel_columns``.

    The shape and bbox families' columns in ``px`` get ``<name>_um`` (value
    times the pixel size, unit ``µm``) and those in ``px^2`` ``<name>_um2``
    (times its square, ``µm^2``); moments and unitless features have none.

    Parameters
    ----------
    pixel_columns : iterable of FeatureColumn
        Feature columns, as :func:`scip.features.columns` gives them.

    Returns
    -------
    list of FeatureColumn
    """
    out = []
    for c in pixel_columns:
        if c.family in ("shape", "bbox") and c.unit in MICROMETRE_SUFFIX:
            suffix, power = MICROMETRE_SUFFIX[c.unit]
            out.append(dataclasses.replace(
                c, name=c.name + suffix, feature=c.feature + suffix, unit="µm" if power == 1 else "µm^2",
                definition=f"{c.definition} In micrometres: times the image's pixel size (run.json "
                           f"input.pixel_size_um){' squared' if power == 2 else ''}; empty without one."))
    return out
