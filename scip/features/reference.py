"""The feature reference table of ``docs/features.md``, made from the code.

The table lists every column :func:`scip.features.columns` makes, with
``<mask>`` and ``<channel>`` in place of real names, so the documentation
cannot drift from what the code computes: a test compares the two.
"""

from __future__ import annotations

from typing import Sequence

from . import FAMILIES, FeatureParams, columns, micrometre_columns

__all__ = ["markdown_table", "micrometre_table"]

_MASK, _CHANNEL = "MASKNAME", "CHANNELNAME"


def markdown_table(families: Sequence[str] = FAMILIES, params: FeatureParams | None = None) -> str:
    """Markdown table of every feature column: name pattern, family, unit, definition.

    Parameters
    ----------
    families : sequence of str, optional
        Feature families, in column order; default every family (the
        documentation lists them all, ``volume`` included).
    params : FeatureParams, optional
        Feature parameters; they decide e.g. the texture distances listed.

    Returns
    -------
    str
        The table, one row per column of one mask and one channel.
    """
    lines = ["| column | family | unit | definition |", "|---|---|---|---|"]
    for c in columns([_CHANNEL], families, mask_name=_MASK, params=params):
        name = c.name.replace(_MASK, "<mask>").replace(_CHANNEL, "<channel>")
        definition = c.definition.replace("|", "\\|")
        lines.append(f"| `{name}` | {c.family} | {c.unit} | {definition} |")
    return "\n".join(lines) + "\n"


def micrometre_table(params: FeatureParams | None = None) -> str:
    """Markdown table of the micrometre columns a run adds when its images have a pixel size.

    Parameters
    ----------
    params : FeatureParams, optional
        Feature parameters.

    Returns
    -------
    str
        One row per ``_um``/``_um2`` column of one mask: name pattern, unit, the pixel column it scales.
    """
    lines = ["| column | unit | from |", "|---|---|---|"]
    for c in micrometre_columns(columns([_CHANNEL], ("shape", "bbox"), mask_name=_MASK, params=params)):
        name = c.name.replace(_MASK, "<mask>")
        suffix = "_um2" if c.unit == "µm^2" else "_um"
        lines.append(f"| `{name}` | {c.unit} | `{name[:-len(suffix)]}` |")
    return "\n".join(lines) + "\n"
