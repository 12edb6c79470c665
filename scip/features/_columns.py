"""Column naming and metadata for feature tables."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FeatureColumn", "column_name", "sanitize"]

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
