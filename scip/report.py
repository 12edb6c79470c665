"""The run report: one self-contained HTML page about a finished run.

:func:`write_report` reads what a run wrote (``run.json``, the
``cells/part-*.parquet`` table, ``illumination.npz``, and when present
``classification/classification.json`` and the sampled cells of
``report_cells.npz``) and writes ``report.html`` next to them. The page
needs nothing but a browser: every image is an inline base64 PNG, the CSS
is inline, and it loads no external URL, font or script library. Its one
inline script counts, once the page has loaded, how many images the
browser could decode (element ``#image-check``), so a headless browser can
check the page.

Sections, each shown only when its data is there:

1. header: dataset (input path, format, images, channels), scip version,
   when the run finished, wall time;
2. counts at each step: images and cells found, skipped at each step (with
   the most common reasons), dropped by each filter (with its threshold) and
   exported. Every number sits in a cell with a stable ``data-count``
   attribute, e.g. ``<td data-count="cells-exported">458</td>``;
3. task time per step: a bar chart and a table;
4. a montage of sampled cells with their mask outlines, optionally grouped;
   the label images (``output.labels``) of images read in tiles or larger
   than one chunk: each one's coarsest pyramid level, coloured, and the
   cells and tiles per image;
5. histograms of a few feature columns, optionally per group;
6. evaluation against ground truth, and the dataset-wide reductions
   (filter thresholds, normalization ranges, illumination flat fields);
7. classification: balanced accuracy over folds, confusion matrix,
   per-class precision and recall, most important features.

The sampled cells travel from the workers in
:attr:`scip.accounting.PartitionSummary.samples`; :func:`save_samples`
writes them to one ``.npz`` file (no pickle) and :func:`load_samples`
reads them back.

Plots are drawn with matplotlib's Agg canvas on :class:`matplotlib.figure.Figure`
objects, never through ``pyplot``, so no global figure state is touched.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from scip._jsonvalues import plain
from scip.io.atomic import atomic_path

__all__ = ["REPORT_FILE", "SAMPLES_FILE", "CLASSIFICATION_FILE", "save_samples", "load_samples", "run_columns",
           "write_report"]

#: Name of the report, in the output folder.
REPORT_FILE = "report.html"
#: Name of the sampled cells file, in the output folder.
SAMPLES_FILE = "report_cells.npz"
#: Where the classification step writes its results, relative to the output folder.
CLASSIFICATION_FILE = Path("classification") / "classification.json"

_SAMPLES_FORMAT = "scip-report-cells"
_SAMPLES_VERSION = 1
_MAX_GROUPS = 12  # distinct groups shown; the rest are pooled as "(other)"
_OTHER = "(other)"
_MISSING = "(missing)"
_THUMB = 64  # longest side of a cell thumbnail, pixels
_THUMB_SHOWN = 96  # longest side it is shown at, CSS pixels
_STEP_ORDER = ("load", "illumination", "check", "segment", "evaluate", "micronuclei", "cells", "masks", "labels", "filter",
               "features", "export")
_OUTLINE = np.array([1.0, 1.0, 1.0])  # mask outline colour (white)


# ---------------------------------------------------------------------------
# Sampled cells


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, tuples and paths turned into JSON types (anything else: its text)."""
    return plain(value, lambda v: v if v is None or isinstance(v, (bool, int, float, str)) else str(v))


def save_samples(path: str | os.PathLike, samples: Sequence[Mapping[str, Any]]) -> None:
    """Write sampled cells to one ``.npz`` file, without pickle.

    Parameters
    ----------
    path : str or os.PathLike
        File to write, used exactly as given (no ``.npz`` is appended); its
        folder is created if needed. It is written under a temporary name
        and renamed, so a reader never sees half a file.
    samples : sequence of mapping
        One mapping per cell, as in
        :attr:`scip.accounting.PartitionSummary.samples`: ``image_id``,
        ``index``, ``label``, ``truth_label``, ``fields``, ``channels``,
        ``crop`` (``(C, h, w)`` array) and ``mask`` (``(h, w)`` bool array).
        Every array value ``key`` of cell ``i`` is stored as the array
        ``<key>_<i>``; every other value goes, made JSON-able, into the JSON
        string array ``meta``.
    """
    path = Path(path)
    cells = []
    arrays: dict[str, np.ndarray] = {}
    for i, sample in enumerate(samples):
        entry: dict[str, Any] = {}
        keys = []
        for key, value in sample.items():
            if isinstance(value, np.ndarray):
                arrays[f"{key}_{i}"] = value
                keys.append(str(key))
            else:
                entry[str(key)] = _jsonable(value)
        entry["_arrays"] = keys
        cells.append(entry)
    document = {"format": _SAMPLES_FORMAT, "version": _SAMPLES_VERSION, "cells": cells}
    arrays["meta"] = np.array(json.dumps(document))
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)


def load_samples(path: str | os.PathLike) -> list[dict]:
    """Read the sampled cells written by :func:`save_samples`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    list of dict
        One dict per cell, in the order saved, with its metadata and arrays.

    Raises
    ------
    ValueError
        If the file is not a sampled-cells file.
    """
    with np.load(Path(path), allow_pickle=False) as z:
        if "meta" not in z.files:
            raise ValueError(f"{path}: not a scip sampled-cells file (no meta)")
        document = json.loads(str(z["meta"]))
        if document.get("format") != _SAMPLES_FORMAT:
            raise ValueError(f"{path}: not a scip sampled-cells file (format {document.get('format')!r})")
        out = []
        for i, entry in enumerate(document["cells"]):
            cell = {k: v for k, v in entry.items() if k != "_arrays"}
            for key in entry.get("_arrays", []):
                cell[key] = z[f"{key}_{i}"]
            out.append(cell)
    return out


# ---------------------------------------------------------------------------
# Small HTML and image helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _slug(text: Any) -> str:
    """``text`` as a stable id part: lower-case ``[a-z0-9]`` runs joined by ``-``."""
    return "-".join(re.findall(r"[a-z0-9]+", str(text).lower())) or "x"


def _num(value: Any, digits: int = 4) -> str:
    """A number for display: integers as they are, floats to ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.{digits}g}"
    return str(value)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _rgb_png(rgb: np.ndarray) -> str:
    """``(h, w, 3)`` floats in ``[0, 1]`` (or uint8) as a PNG data URI."""
    from PIL import Image

    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return _png_uri(buf.getvalue())


def _figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas, outside pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=80)
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig, tight: bool = True) -> str:
    """Render ``fig`` to a PNG data URI and release it; ``tight`` crops it to its content (one more pass)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight" if tight else None, metadata={"Software": None})
    fig.clear()
    return _png_uri(buf.getvalue())


def _img(uri: str, alt: str, width: int | None = None, height: int | None = None, cls: str = "") -> str:
    size = (f' width="{width}"' if width else "") + (f' height="{height}"' if height else "")
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} src="{uri}" alt="{_e(alt)}"{size}>'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", id_: str = "") -> str:
    """An HTML table; ``rows`` hold ready-made ``<td>`` strings or plain text (escaped)."""
    attrs = (f' id="{id_}"' if id_ else "") + (f' class="{cls}"' if cls else "")
    out = [f"<table{attrs}>",
           "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in rows:
        cells = [c if c.startswith("<td") or c.startswith("<th") else f"<td>{_e(c)}</td>" for c in row]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _td(value: Any, **data: Any) -> str:
    """A numeric ``<td>`` with ``data-*`` attributes (``data_count=...`` → ``data-count``)."""
    attrs = "".join(f' data-{k.replace("_", "-")}="{_e(v)}"' for k, v in data.items() if v is not None)
    return f'<td class="num"{attrs}>{_e(_num(value))}</td>'


def _section(id_: str, title: str, body: str) -> str:
    return f'<section id="{id_}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


# ---------------------------------------------------------------------------
# The feature table


class _Table:
    """Lazy access to a few columns of ``cells/part-*.parquet``.

    ``carried``: some columns of the whole table, the parts in order, already
    in memory (what a run's workers returned); :meth:`read` takes the columns
    from it when it has them all, else reads the parts.
    """

    def __init__(self, directory: Path, carried: Any = None):
        self.parts = sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []
        self._columns: list[str] | None = None
        self.carried = carried

    @property
    def columns(self) -> list[str]:
        if self._columns is None:
            import pyarrow.parquet as pq

            self._columns = list(pq.read_schema(self.parts[0]).names) if self.parts else []
        return self._columns

    def read(self, columns: Sequence[str]):
        import pandas as pd

        columns = [c for c in dict.fromkeys(columns) if c in self.columns]
        if self.carried is not None and set(columns) <= set(self.carried.column_names):
            if not self.carried.num_rows:
                return pd.DataFrame({c: [] for c in columns})
            # What the parts read back with pandas give, concatenated: the same Arrow types, converted alike.
            return self.carried.select(columns).to_pandas()
        frames = [pd.read_parquet(p, columns=columns) for p in self.parts]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame({c: [] for c in columns})
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


# ---------------------------------------------------------------------------
# Groups


def _table_column(name: str, columns: Sequence[str]) -> str | None:
    """The table column ``name`` refers to: itself, ``meta_<name>``, or its sanitized ``meta_`` name."""
    from scip.steps.export import meta_name

    for candidate in (name, f"meta_{name}", meta_name(name)):
        if candidate in columns:
            return candidate
    return None


def _is_truth(group_by: str) -> bool:
    return group_by in ("truth_label", "meta_truth_label")


def _group_value(group_by: str, value: Any) -> str:
    """The group of one value; ``truth_label`` groups cells by whether they matched a true cell."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if not missing:
        try:
            import pandas as pd

            missing = bool(pd.isna(value))
        except (TypeError, ValueError):
            missing = False
    if _is_truth(group_by):
        return "matched to ground truth" if not missing and value not in (0, "0", "") else "no ground-truth match"
    return _MISSING if missing else str(value)


def _pool(values: list[str]) -> list[str]:
    """Keep the most common groups, pooling the rest as ``(other)``."""
    counts = Counter(values)
    if len(counts) <= _MAX_GROUPS:
        return values
    keep = {g for g, _ in counts.most_common(_MAX_GROUPS - 1)}
    return [v if v in keep else _OTHER for v in values]


def _group_order(values: Iterable[str]) -> list[str]:
    def key(g: str):
        try:
            return (0, float(g), g)
        except ValueError:
            return (1 if g not in (_OTHER, _MISSING) else 2, 0.0, g)

    return sorted(set(values), key=key)


def _sample_groups(samples: list[dict], group_by: str, table: _Table) -> list[str]:
    """The group of each sampled cell: from its own metadata, or joined from the table."""
    values: list[Any] = []
    field_key = group_by[5:] if group_by.startswith("meta_") else group_by
    from scip.steps.export import meta_name

    for s in samples:
        fields = s.get("fields") or {}
        if _is_truth(group_by):
            values.append(s.get("truth_label"))
        elif group_by in s and group_by not in ("crop", "mask", "fields", "channels"):
            values.append(s[group_by])
        elif field_key in fields:
            values.append(fields[field_key])
        else:
            named = [v for k, v in fields.items() if meta_name(k) == group_by or k == group_by]
            if not named:
                break
            values.append(named[0])
    else:
        return _pool([_group_value(group_by, v) for v in values])
    column = _table_column(group_by, table.columns)
    if column is None:
        known = sorted({k for s in samples for k in (s.get("fields") or {})} | {"image_id", "truth_label"}
                       | {c for c in table.columns if c.startswith("meta_")})
        raise ValueError(f"group_by {group_by!r}: neither a field of the sampled cells nor a column of the table; "
                         f"known: {', '.join(known)}")
    frame = table.read(["meta_image_id", "meta_label", column])
    lookup = {(str(i), int(lab)): v for i, lab, v in zip(frame["meta_image_id"], frame["meta_label"], frame[column])}
    return _pool([_group_value(group_by, lookup.get((str(s.get("image_id")), int(s.get("label", -1)))))
                  for s in samples])


# ---------------------------------------------------------------------------
# Sections


def _header(summary: dict, output: Path, run_json: Path) -> str:
    inp = summary.get("input", {})
    config = summary.get("config", {})
    versions = summary.get("versions", {})
    finished = _dt.datetime.fromtimestamp(run_json.stat().st_mtime).astimezone()
    now = _dt.datetime.now().astimezone()
    segment = config.get("segment", {})
    rows = [
        ("Input", str(config.get("input", {}).get("path", "–"))),
        ("Format", str(inp.get("format", "–"))),
        ("Images", _num(inp.get("images"))),
        ("Channels", ", ".join(map(str, inp.get("channels", []))) or "–"),
        ("Segmentation", f"{segment.get('method', '–')} on {segment.get('channel', '–')}"),
        ("Output", str(output)),
        ("scip version", str(versions.get("scip", _version()))),
        ("Python", str(versions.get("python", "–"))),
        ("Run finished", finished.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("Wall time", f"{_num(summary.get('timings_s', {}).get('wall'))} s"),
        ("Report written", now.strftime("%Y-%m-%d %H:%M:%S %Z")),
    ]
    keys = ["input", "format", "images", "channels", "segmentation", "output", "version", "python", "finished",
            "wall", "written"]
    body = "\n".join(f'<tr><th>{_e(k)}</th><td data-header="{key}">{_e(v)}</td></tr>'
                     for (k, v), key in zip(rows, keys))
    return f'<header id="header">\n<h1>scip run report</h1>\n<table class="kv">{body}</table>\n</header>'


def _version() -> str:
    try:
        from scip import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "unknown"


def _threshold_text(entry: Mapping[str, Any]) -> str:
    parts = []
    if entry.get("min_threshold") is not None:
        rule = f" ({entry['min']})" if entry.get("min") not in (None, "") else ""
        parts.append(f"below {_num(entry['min_threshold'])}{rule}")
    if entry.get("max_threshold") is not None:
        rule = f" ({entry['max']})" if entry.get("max") not in (None, "") else ""
        parts.append(f"above {_num(entry['max_threshold'])}{rule}")
    return "dropped if " + " or ".join(parts) if parts else "no bound"


def _counts(summary: dict) -> str:
    counts = summary.get("counts", {})
    images, cells = counts.get("images", {}), counts.get("cells", {})
    filters = summary.get("reductions", {}).get("filters", [])
    rows: list[list[str]] = []

    def row(kind: str, what: str, key: str, value: Any, detail: str = "", cls: str = "", **data: Any) -> None:
        rows.append([f'<td class="{cls}">{_e(kind)}</td>' if cls else kind, what, _td(value, count=key, **data),
                     detail])

    row("images", "listed", "images-total", images.get("total"))
    for step, n in images.get("skipped_by_step", {}).items():
        row("images", f"skipped at step {step}", f"images-skipped-{_slug(step)}", n, step=step)
    row("images", "skipped in all", "images-skipped", images.get("skipped"))
    if images.get("errors"):
        row("images", "  of which unexpected errors", "images-errors", images["errors"], "tracebacks in run.json")
    row("images", "with cells", "images-with-cells", images.get("with_cells"), cls="total")
    row("cells", "found", "cells-found", cells.get("found"))
    by_step = dict(cells.get("skipped_by_step", {}))
    for step, n in by_step.items():
        row("cells", f"skipped at step {step}", f"cells-skipped-{_slug(step)}", n, step=step)
        if step == "filter":
            for entry in filters:
                name = entry.get("filter", "?")
                row("cells", f"  dropped by filter {name}", f"cells-filtered-{_slug(name)}",
                    entry.get("cells_dropped"), _threshold_text(entry), filter=name,
                    threshold_min=entry.get("min_threshold"), threshold_max=entry.get("max_threshold"))
    if "filter" not in by_step:
        for entry in filters:  # filters that dropped nothing still show their threshold
            name = entry.get("filter", "?")
            row("cells", f"dropped by filter {name}", f"cells-filtered-{_slug(name)}", entry.get("cells_dropped", 0),
                _threshold_text(entry), filter=name, threshold_min=entry.get("min_threshold"),
                threshold_max=entry.get("max_threshold"))
    row("cells", "skipped in all", "cells-skipped", cells.get("skipped"))
    if cells.get("errors"):
        row("cells", "  of which unexpected errors", "cells-errors", cells["errors"], "tracebacks in run.json")
    row("cells", "exported", "cells-exported", cells.get("exported"), cls="total")
    body = _table(["", "step", "count", "detail"], rows, cls="counts", id_="counts-table")
    for kind, part in (("image", images), ("cell", cells)):
        reasons = part.get("most_common_reasons", {})
        if reasons:
            items = "".join(f'<tr><td class="num" data-reason-count="{kind}">{_e(_num(n))}</td><td>{_e(r)}</td></tr>'
                            for r, n in reasons.items())
            body += (f'\n<details class="reasons" id="{kind}-reasons"><summary>Most common reasons a {kind} '
                     f'was skipped ({len(reasons)} shown; all are in skipped.csv)</summary>'
                     f'<table><thead><tr><th>count</th><th>reason</th></tr></thead><tbody>{items}</tbody></table>'
                     '</details>')
    return _section("counts", "Counts at each step", body)


def _ordered_steps(steps: Mapping[str, float]) -> list[str]:
    known = [s for s in _STEP_ORDER if s in steps]
    return known + sorted(s for s in steps if s not in _STEP_ORDER)


def _timings(summary: dict) -> str:
    timings = summary.get("timings_s", {})
    steps = {k: float(v) for k, v in timings.get("steps", {}).items() if isinstance(v, (int, float))}
    if not steps:
        return ""
    order = _ordered_steps(steps)
    total = sum(steps.values())
    fig = _figure(6.5, 0.35 * len(order) + 0.8)
    ax = fig.add_subplot()
    ax.barh(order[::-1], [steps[s] for s in order[::-1]], color="#4878a8")
    ax.set_xlabel("task time (s, summed over workers)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    chart = _img(_figure_png(fig), "task time per step", cls="plot")
    rows = [[s, _td(steps[s], timing=s), f"{100 * steps[s] / total:.1f} %" if total else "–"] for s in order]
    rows.append(["<th>all steps</th>", _td(round(total, 3), timing="total"), "100 %" if total else "–"])
    note = (f'<p class="note">Wall time {_e(_num(timings.get("wall")))} s. '
            f'{_e(timings.get("note", ""))}</p>')
    body = f'<div class="row">{chart}\n{_table(["step", "seconds", "share"], rows, id_="timings-table")}</div>{note}'
    return _section("timings", "Time per step", body)


def _channel_ranges(samples: list[dict]) -> list[tuple[float, float]]:
    """Per channel, the 0.5th and 99.8th percentiles of the sampled crops' pixels inside their cells."""
    n = max((np.asarray(s["crop"]).shape[0] for s in samples), default=0)
    ranges = []
    for c in range(n):
        values = [np.asarray(s["crop"])[c][np.asarray(s["mask"], bool)] for s in samples
                  if np.asarray(s["crop"]).shape[0] > c]
        values = [v for v in values if v.size]
        if not values:
            ranges.append((0.0, 1.0))
            continue
        v = np.concatenate(values).astype(np.float64)
        v = v[np.isfinite(v)]
        lo, hi = (np.percentile(v, [0.5, 99.8]) if v.size else (0.0, 1.0))
        ranges.append((float(lo), float(hi) if hi > lo else float(lo) + 1.0))
    return ranges


def _composite(crop: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """``(h, w, 3)`` colour composite in ``[0, 1]``: grey, magenta/green, or the first three channels as RGB."""
    crop = np.asarray(crop, dtype=np.float32)
    scaled = [np.clip((np.nan_to_num(crop[c]) - lo) / (hi - lo), 0, 1) for c, (lo, hi) in
              zip(range(crop.shape[0]), ranges)]
    if len(scaled) == 1:
        planes = [scaled[0]] * 3
    elif len(scaled) == 2:
        planes = [scaled[0], scaled[1], scaled[0]]
    else:
        planes = scaled[:3]
    return np.stack(planes, axis=-1)


def _colour_legend(channels: Sequence[str]) -> str:
    if not channels:
        return ""
    if len(channels) == 1:
        return f"grey: {channels[0]}"
    if len(channels) == 2:
        return f"magenta: {channels[0]}, green: {channels[1]}"
    return f"red: {channels[0]}, green: {channels[1]}, blue: {channels[2]}"


def _thumbnail(crop: np.ndarray, mask: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """The composite of a cell, at most ``_THUMB`` pixels on a side, with its mask outline."""
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    rgb = _composite(crop, ranges)
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    if max(h, w) > _THUMB:
        scale = _THUMB / max(h, w)
        shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        rgb = resize(rgb, shape + (3,), anti_aliasing=True, preserve_range=True)
        mask = resize(mask, shape, order=0, anti_aliasing=False, preserve_range=True).astype(bool)
    outline = find_boundaries(mask, mode="inner")
    rgb = rgb.copy()
    rgb[outline] = _OUTLINE
    return rgb


def _montage(samples: list[dict], groups: list[str] | None, group_by: str | None, max_cells: int) -> str:
    if not samples:
        return ""
    def position(i: int) -> tuple:
        s = samples[i]
        index, label = s.get("index"), s.get("label")
        return (index if isinstance(index, int) else math.inf, str(s.get("image_id", "")),
                label if isinstance(label, int) else math.inf)

    order = sorted(range(len(samples)), key=position)
    ranges = _channel_ranges(samples)
    channels = [str(c) for c in samples[0].get("channels", [])]
    by_group: dict[str, list[int]] = {}
    for i in order:
        by_group.setdefault(groups[i] if groups is not None else "", []).append(i)
    parts = []
    shown = 0
    for group in _group_order(by_group):
        members = by_group[group]
        figures = []
        for i in members[:max_cells]:
            s = samples[i]
            rgb = _thumbnail(s["crop"], s["mask"], ranges)
            h, w = rgb.shape[:2]
            zoom = _THUMB_SHOWN / max(h, w, 1)
            caption = f"image {s.get('image_id', '?')} · cell {s.get('label', '?')}"
            about = {**(s.get("fields") or {}), "index": s.get("index"), "truth_label": s.get("truth_label")}
            title = "; ".join(f"{k}={v}" for k, v in about.items() if v is not None)
            figures.append(f'<figure class="cell" title="{_e(title)}">'
                           f'{_img(_rgb_png(rgb), caption, round(w * zoom), round(h * zoom))}'
                           f'<figcaption>{_e(caption)}</figcaption></figure>')
        shown += len(figures)
        heading = (f'<h3>{_e(group_by)} = {_e(group)} <span class="note">({len(figures)} of {len(members)} '
                   f'sampled)</span></h3>' if groups is not None else "")
        parts.append(f'<div class="group" data-group="{_e(group)}">{heading}<div class="montage">'
                     + "".join(figures) + "</div></div>")
    note = (f'<p class="note">{shown} of {len(samples)} sampled exported cells; {_e(_colour_legend(channels))}, '
            "each channel scaled between its 0.5th and 99.8th percentile over the sampled cells; "
            "the white line is the cell's mask outline.</p>")
    return _section("cells", "Sampled cells", note + "\n".join(parts))


def _wanted_features(mask: str, channels: Sequence[str]) -> list[str]:
    """The histograms' default columns: the cell area and each channel's mean intensity."""
    from scip.features import column_name

    wanted = [column_name(mask, "shape", "area")]
    for channel in channels:
        try:
            wanted.append(column_name(mask, "intensity", "mean", channel))
        except ValueError:
            continue
    return wanted


def _default_features(summary: dict, columns: Sequence[str]) -> list[str]:
    mask = summary.get("config", {}).get("segment", {}).get("name", "cell")
    wanted = _wanted_features(mask, summary.get("input", {}).get("channels", []))
    present = [c for c in wanted if c in columns]
    if present:
        return present[:7]
    return [c for c in columns if c.startswith("feat_")][:4]


def _distributions(summary: dict, table: _Table, features: Sequence[str] | None, group_by: str | None) -> str:
    if not table.parts:
        return ""
    columns = table.columns
    asked = list(features) if features is not None else _default_features(summary, columns)
    resolved, missing = [], []
    for name in asked:
        column = name if name in columns else (f"feat_{name}" if f"feat_{name}" in columns else None)
        (resolved if column else missing).append(column or name)
    group_column = _table_column(group_by, columns) if group_by else None
    note = ""
    if missing:
        note += f'<p class="note">Not in the table: {_e(", ".join(missing))}.</p>'
    if group_by and group_column is None:
        note += f'<p class="note">{_e(group_by)} is not a table column: the histograms are not grouped.</p>'
    if not resolved:
        return _section("features", "Feature distributions", note) if note else ""
    frame = table.read(resolved + ([group_column] if group_column else []))
    groups = None
    if group_column:
        groups = np.array(_pool([_group_value(group_by, v) for v in frame[group_column]]), dtype=object)
    ncols = 4 if len(resolved) == 4 else min(3, len(resolved))
    nrows = math.ceil(len(resolved) / ncols)
    legend = 0.45 if group_column else 0.0  # inches above the plots for the legend
    height = 2.7 * nrows + legend
    fig = _figure(3.8 * ncols, height)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    fig.subplots_adjust(left=0.25 / ncols, right=0.98, bottom=0.35 / height, top=1 - (0.3 + legend) / height,
                        wspace=0.3, hspace=0.45)
    rows = []
    for ax, column in zip(axes, resolved):
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(values)
        ok = values[finite]
        label = column[5:] if column.startswith("feat_") else column
        ax.set_title(label, fontsize=9)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if ok.size:
            bins = np.histogram_bin_edges(ok, bins=int(np.clip(np.sqrt(ok.size) * 1.5, 8, 50)))
            if groups is None:
                # One filled outline, not one bar patch per bin: half the section's time, the same pixels.
                ax.stairs(np.histogram(ok, bins=bins)[0], bins, fill=True, color="#4878a8")
            else:
                for g in _group_order(groups):
                    ax.hist(values[finite & (groups == g)], bins=bins, histtype="step", linewidth=1.4, label=g)
            rows.append([label, _td(int(ok.size), feature_n=column), _td(int((~finite).sum())),
                         _td(float(np.mean(ok))), _td(float(np.median(ok))), _td(float(np.percentile(ok, 5))),
                         _td(float(np.percentile(ok, 95)))])
        else:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
            rows.append([label, _td(0, feature_n=column), _td(int((~finite).sum())), "–", "–", "–", "–"])
        ax.tick_params(labelsize=8)
    for ax in axes[len(resolved):]:
        ax.set_visible(False)
    if groups is not None and len(resolved):
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, [f"{group_by} = {label}" for label in labels], loc="upper center",
                       ncol=min(len(labels), 4), fontsize=8, frameon=False)
    chart = _img(_figure_png(fig, tight=False), "feature histograms", cls="plot")
    stats = _table(["feature", "cells", "missing", "mean", "median", "5th pct", "95th pct"], rows,
                   id_="features-table")
    grouped = f" by {_e(group_by)}" if groups is not None else ""
    intro = f'<p class="note">{len(frame)} exported cells{grouped}.</p>'
    return _section("features", "Feature distributions", intro + note + chart + stats)


def _tile_counts(summary: dict) -> dict[str, int]:
    """Tiles per tiled image, from ``run.json``'s ``tiles.images`` (:func:`scip.engine.tiles.report`);
    ``{}`` when the run read every image whole."""
    tiles = summary.get("tiles")
    images = tiles.get("images") if isinstance(tiles, dict) else None
    if not isinstance(images, list):
        return {}
    return {e["image_id"]: e["tiles"] for e in images
            if isinstance(e, dict) and isinstance(e.get("image_id"), str) and isinstance(e.get("tiles"), int)}


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """Labels as RGB: each label its own hue (golden-ratio steps, so neighbours differ), background black."""
    from matplotlib.colors import hsv_to_rgb

    ids, inverse = np.unique(labels, return_inverse=True)
    hues = (ids.astype(np.float64) * 0.6180339887) % 1.0
    rgb = hsv_to_rgb(np.stack([hues, np.full_like(hues, 0.65), np.full_like(hues, 0.95)], axis=-1))
    rgb[ids == 0] = 0.0
    return rgb[inverse.reshape(labels.shape)]


def _label_overview(root: Path, key: str, name: str, levels: int, side: int = 360) -> tuple[str, tuple[int, ...]]:
    """The coarsest pyramid level of a label image, coloured, as a PNG; and the full-resolution shape."""
    import zarr

    group = zarr.open_group(str(root / key / "labels" / name), mode="r")
    shape = tuple(group["0"].shape)
    coarse = np.asarray(group[str(levels - 1)][...])
    if coarse.ndim == 3:  # a z-stack: every object seen from above
        coarse = coarse.max(axis=0)
    step = max(1, math.ceil(max(coarse.shape) / side))
    return _rgb_png(_label_colours(coarse[::step, ::step])), shape


def _label_images(summary: dict, output: Path, table: _Table, shown: int = 12, listed: int = 200) -> str:
    """Label images (``output.labels``): a low-resolution overview of each tiled or multi-level image, and counts.

    Shown when ``labels.zarr`` holds an image that was read in tiles or whose
    label image is larger than one chunk (it has a pyramid); small fields are
    in the montage already.
    """
    from scip.io import labels

    root = output / labels.LABELS
    if not labels.is_scip_labels(root):
        return ""
    import zarr

    tiles = _tile_counts(summary)
    found = []
    for image_id, key in labels.images(root).items():
        names = labels.label_names(root, image_id)
        if not names:
            continue
        multiscales = zarr.open_group(str(root / key / "labels" / names[0]), mode="r").attrs.get("multiscales") or [{}]
        levels = len(multiscales[0].get("datasets", [])) or 1
        found.append((image_id, key, names, levels))
    large = [f for f in found if f[3] > 1 or f[0] in tiles]
    if not large:
        return ""
    cells = table.read(["meta_image_id"])
    per_image = cells["meta_image_id"].value_counts().to_dict() if "meta_image_id" in cells else {}
    figures, rows = [], []
    for image_id, key, names, levels in large[:shown]:
        uri, shape = _label_overview(root, key, names[0], levels)
        caption = f"{image_id}: {names[0]}, {' x '.join(map(str, shape))} px, level {levels - 1} of {levels}"
        figures.append(f'<figure class="field" data-label-image="{_e(image_id)}">{_img(uri, caption)}'
                       f"<figcaption>{_e(caption)}</figcaption></figure>")
    for image_id, key, names, levels in found[:listed]:
        rows.append([image_id, _td(per_image.get(image_id, 0), label_cells=image_id),
                     _td(tiles[image_id], label_tiles=image_id) if image_id in tiles else "whole",
                     _td(levels), ", ".join(names), f"{labels.LABELS}/{key}/labels"])
    more = (f'<p class="note">{len(found) - listed} more images are in {labels.LABELS}.</p>'
            if len(found) > listed else "")
    note = (f'<p class="note">Each object its own colour, at the lowest resolution of its pyramid; open '
            f'{_e(labels.LABELS)} in napari or Fiji for every pixel (docs/labels.md). A table row joins its pixels '
            'by meta_image_id and meta_label.</p>')
    body = (f'<div class="montage">{"".join(figures)}</div>{note}'
            + _table(["image", "cells in table", "tiles", "levels", "label images", "path"], rows,
                     id_="label-images-table") + more)
    return _section("label-images", "Label images", body)


def _evaluation(summary: dict) -> str:
    ev = summary.get("evaluation")
    if not ev:
        return ""
    labels = [("truth_cells", "true cells"), ("found_cells", "cells found"), ("matched", "matched"),
              ("recall", "recall"), ("precision", "precision"), ("f1", "F1"),
              ("exported_matched", "exported and matched"), ("exported_recall", "recall after export"),
              ("images_without_truth", "images without ground truth")]
    rows = [[text, _td(ev.get(key), evaluation=key)] for key, text in labels if key in ev]
    body = (f'<p class="note">Cells matched one to one to true cells at IoU ≥ {_e(_num(ev.get("iou_threshold")))}.'
            "</p>" + _table(["", "value"], rows, id_="evaluation-table"))
    body += _evaluation_breakdown(ev)
    errors = ev.get("errors") or []
    if errors:
        body += "<details><summary>Images without ground truth</summary><ul>" + "".join(
            f"<li>{_e(e)}</li>" for e in errors) + "</ul></details>"
    return _section("evaluation", "Evaluation against ground truth", body)


#: Images the report's per-image evaluation table shows (the lowest F1 first); run.json lists more.
_EVALUATION_IMAGES_SHOWN = 20
_SCORE_COLUMNS = (("truth_cells", "true cells"), ("found_cells", "found"), ("matched", "matched"),
                  ("recall", "recall"), ("precision", "precision"), ("f1", "F1"),
                  ("exported_matched", "exported and matched"))


def _evaluation_breakdown(ev: Mapping) -> str:
    """The per-group tables (``evaluate.group_by``) and the images scored worst, from run.json's evaluation."""
    out = []
    for column, rows in (ev.get("per_group") or {}).items():
        if not isinstance(rows, list):
            continue
        cells = [[str(r.get(column, "")), _td(r.get("images")),
                  *(_td(r.get(k), score=k) for k, _ in _SCORE_COLUMNS)] for r in rows if isinstance(r, Mapping)]
        out.append(f"<h3>By {_e(column)}</h3>" + _table([column, "images", *(t for _, t in _SCORE_COLUMNS)], cells,
                                                        id_=f"evaluation-by-{_e(column)}"))
    images = [r for r in ev.get("per_image") or [] if isinstance(r, Mapping) and not r.get("error")]
    if len(images) > 1:
        worst = sorted(images, key=lambda r: (r.get("f1") is not None, r.get("f1") or 0.0))[:_EVALUATION_IMAGES_SHOWN]
        total = ev.get("per_image_total", len(images))
        out.append(f"<h3>Images, lowest F1 first</h3><p class=\"note\">{len(worst)} of {_e(_num(total))} images; "
                   "run.json lists them one by one (evaluation.per_image).</p>"
                   + _table(["image", *(t for _, t in _SCORE_COLUMNS)],
                            [[str(r.get("image_id", "")), *(_td(r.get(k), score=k) for k, _ in _SCORE_COLUMNS)]
                             for r in worst], id_="evaluation-images-table"))
    return "".join(out)


def _illumination_fields(path: Path, max_groups: int = 6) -> str:
    from scip.reduce import illumination

    try:
        fields, meta = illumination.load(path)
    except Exception as e:  # noqa: BLE001 - the report shows what it can
        return f'<p class="note">Could not read {_e(path)}: {_e(e)}</p>'
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    channels = list(meta.get("channels", []))
    out = []
    for key, field in list(fields.items())[:max_groups]:
        lo, hi = float(field.min()), float(field.max())
        imgs = []
        for c in range(field.shape[0]):
            plane = field[c][:: max(1, math.ceil(max(field.shape[1:]) / 160)), :: max(1, math.ceil(
                max(field.shape[1:]) / 160))]
            rgb = cmap((plane - lo) / (hi - lo) if hi > lo else np.zeros_like(plane))[..., :3]
            name = channels[c] if c < len(channels) else str(c)
            imgs.append(f'<figure class="field">{_img(_rgb_png(rgb), f"flat field {name}")}'
                        f"<figcaption>{_e(name)}</figcaption></figure>")
        group = "/".join(key) or "all"
        out.append(f'<div class="group"><h4>group {_e(group)}: flat field from {_e(_num(lo))} to {_e(_num(hi))} '
                   f'(mean 1)</h4><div class="montage">{"".join(imgs)}</div></div>')
    return "".join(out)


def _reductions(summary: dict, output: Path) -> str:
    red = summary.get("reductions") or {}
    parts = []
    filters = red.get("filters") or []
    if filters:
        rows = [[f.get("filter", "?"), str(f.get("min") or "–"), _td(f.get("min_threshold")),
                 str(f.get("max") or "–"), _td(f.get("max_threshold")), _td(f.get("cells_measured")),
                 _td(f.get("cells_dropped"), dropped=f.get("filter"))] for f in filters]
        parts.append("<h3>Filters</h3>" + _table(["filter", "min rule", "min threshold", "max rule", "max threshold",
                                                  "cells measured", "cells dropped"], rows, id_="filters-table"))
    norm = red.get("normalize")
    if norm:
        rows = [[group, channel, _td(lo), _td(hi)]
                for group, by_channel in norm.get("ranges", {}).items()
                for channel, (lo, hi) in by_channel.items()]
        by = ", ".join(norm.get("group_by", [])) or "none"
        parts.append(f'<h3>Normalization</h3><p class="note">Each channel mapped from its '
                     f'{_e(_num(norm.get("lower")))} to its {_e(_num(norm.get("upper")))} quantile over the kept '
                     f"cells' pixels (group by: {_e(by)}).</p>"
                     + _table(["group", "channel", "low", "high"], rows, id_="normalize-table"))
    ill = red.get("illumination")
    if ill:
        rows = [[str(g), _td(n)] for g, n in (ill.get("groups") or {}).items()]
        text = (f"reused from {ill['reused']}" if ill.get("reused") else
                f"{ill.get('smooth', '?')} smoothing of size {_num(ill.get('size'))} px")
        body = (f'<h3>Illumination correction</h3><p class="note">{_e(text)}.</p>'
                + _table(["group", "images"], rows, id_="illumination-table"))
        path = Path(ill["file"]) if ill.get("file") else output / "illumination.npz"
        if ill.get("reused"):
            path = Path(ill["reused"])
        if path.is_file():
            body += _illumination_fields(path)
        parts.append(body)
    if "input_passes" in red:
        parts.append(f'<p class="note">The input was read {_e(red["input_passes"])} time(s).</p>')
    if not (filters or norm or ill):
        return ""
    return _section("reductions", "Dataset-wide reductions", "\n".join(parts))


# ---------------------------------------------------------------------------
# Classification


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _per_class(value: Any) -> dict[str, dict]:
    """``metrics.per_class`` of ``classification.json``: ``{class: {precision, recall, f1, support}}``."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): dict(v) for k, v in value.items() if isinstance(v, Mapping)}


def _importances(value: Any) -> list[tuple[str, float]]:
    """``importances.top`` of ``classification.json``: ``[{feature, gain}]``, largest first."""
    top = value.get("top") if isinstance(value, Mapping) else None
    kind = value.get("type") if isinstance(value, Mapping) else None
    out = [(str(v["feature"]), float(v[kind])) for v in top or []
           if isinstance(v, Mapping) and "feature" in v and _number(v.get(kind)) is not None]
    return sorted(out, key=lambda t: -t[1])


def _confusion(value: Any) -> tuple[np.ndarray | None, list[str]]:
    """``metrics.confusion_matrix`` of ``classification.json``: ``{labels, matrix}`` (rows: true class)."""
    if not isinstance(value, Mapping):
        return None, []
    classes = [str(c) for c in value.get("labels") or []]
    try:
        matrix = np.asarray(value.get("matrix"), dtype=np.float64)
    except (TypeError, ValueError):
        return None, classes
    if matrix.ndim != 2 or matrix.shape != (len(classes), len(classes)) or matrix.size == 0:
        return None, classes
    return matrix, classes


def _confusion_plot(matrix: np.ndarray, classes: list[str]) -> str:
    n = len(classes)
    side = min(1.2 + 0.55 * n, 9)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, _num(matrix[i, j] if matrix[i, j] % 1 else int(matrix[i, j])), ha="center",
                        va="center", fontsize=8, color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return _img(_figure_png(fig), "confusion matrix", cls="plot")


def _importance_plot(items: list[tuple[str, float]], label: str) -> str:
    fig = _figure(7, 0.28 * len(items) + 0.8)
    ax = fig.add_subplot()
    names = [n[5:] if n.startswith("feat_") else n for n, _ in items][::-1]
    ax.barh(names, [v for _, v in items][::-1], color="#4878a8")
    ax.set_xlabel(label)
    ax.tick_params(axis="y", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _img(_figure_png(fig), "feature importances", cls="plot")


def _classification(output: Path) -> str:
    """The section for ``classification/classification.json`` as ``scip classify`` writes it.

    A file that is there but lacks some of what the section shows gets a note
    naming the missing keys, never an empty section.
    """
    path = output / CLASSIFICATION_FILE
    if not path.is_file():
        return ""
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, Mapping):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return _section("classification", "Classification",
                        f'<p class="note">Could not read {_e(CLASSIFICATION_FILE)}: {_e(e)}</p>')
    metrics = doc.get("metrics") if isinstance(doc.get("metrics"), Mapping) else {}
    missing: list[str] = []
    parts = []
    mean = _number(metrics.get("balanced_accuracy"))
    if mean is None:
        missing.append("metrics.balanced_accuracy")
    else:
        sd = _number(metrics.get("balanced_accuracy_std"))
        folds = [float(v) for v in metrics.get("balanced_accuracy_folds") or [] if _number(v) is not None]
        classes = doc.get("classes") or []
        spread = f" ± {_num(sd, 3)}" if sd is not None else ""
        over = f" over {len(folds)} folds" if folds else ""
        chance = f" (chance: {_num(1 / len(classes), 3)})" if classes else ""
        fold_text = (f' <span class="note">per fold: {_e(", ".join(_num(f, 3) for f in folds))}</span>'
                     if folds else "")
        parts.append(f'<p class="headline">Balanced accuracy <b data-metric="balanced-accuracy" '
                     f'data-value="{_e(mean)}">{_e(_num(mean, 3))}</b>{_e(spread)}{_e(over)}{_e(chance)}'
                     f"{fold_text}</p>")
    matrix, cm_classes = _confusion(metrics.get("confusion_matrix"))
    if matrix is None:
        missing.append("metrics.confusion_matrix")
    else:
        rows = [[f"<th>{_e(c)}</th>"] + [_td(matrix[i, j] if matrix[i, j] % 1 else int(matrix[i, j]),
                                             cm=f"{_slug(c)}-{_slug(p)}") for j, p in enumerate(cm_classes)]
                for i, c in enumerate(cm_classes)]
        parts.append('<h3>Confusion matrix</h3><div class="row">' + _confusion_plot(matrix, cm_classes)
                     + _table(["true \\ predicted"] + cm_classes, rows, id_="confusion-table") + "</div>")
    per_class = _per_class(metrics.get("per_class"))
    if not per_class:
        missing.append("metrics.per_class")
    else:
        names = [m for m in ("precision", "recall", "f1", "support") if any(m in v for v in per_class.values())]
        rows = [[name] + [_td(v.get(m), metric=f"{_slug(name)}-{m}") for m in names] for name, v in per_class.items()]
        parts.append("<h3>Per class</h3>" + _table(["class"] + names, rows, id_="per-class-table"))
    importances = _importances(doc.get("importances"))
    if not importances:
        missing.append("importances.top")
    else:
        parts.append(f"<h3>Most important features</h3>{_importance_plot(importances[:20], doc['importances']['type'])}")
    inputs = doc.get("inputs") if isinstance(doc.get("inputs"), Mapping) else {}
    details = [(name, value) for name, value in (
        ("target", inputs.get("target")), ("grouped by", inputs.get("group")), ("labels", inputs.get("labels")),
        ("cells labelled", doc.get("n_cells")), ("features", doc.get("n_features")),
        ("features dropped", len(doc["dropped_features"]) if isinstance(doc.get("dropped_features"), list) else None),
        ("folds", doc.get("folds")), ("accuracy", metrics.get("accuracy")), ("scip", doc.get("scip_version")))
        if isinstance(value, (str, int, float)) and len(str(value)) < 200]
    if details:
        parts.append("<h3>Details</h3>" + _table(["", "value"], [[k, _num(v)] for k, v in details],
                                                 id_="classification-details"))
    if missing:
        parts.insert(0, f'<p class="note" data-missing="{_e(" ".join(missing))}">{_e(CLASSIFICATION_FILE)} has no '
                        f'{_e(", ".join(missing))}: not shown. Rerun <code>scip classify</code> to rewrite it.</p>')
    return _section("classification", "Classification", "\n".join(parts))


# ---------------------------------------------------------------------------
# The page


def _heat_colour(value: float, low: float, high: float) -> str:
    """A light-to-dark blue for ``value`` in ``[low, high]``, so text on it stays readable."""
    f = 0.0 if high <= low else (value - low) / (high - low)
    r, g, b = (int(round(a + (z - a) * f)) for a, z in ((239, 8), (243, 81), (255, 156)))
    return f"#{r:02x}{g:02x}{b:02x};color:{'#fff' if f > 0.55 else '#222'}"


def _plate_grid(title: str, values: Mapping[tuple[str, str], float], rows: list[str], columns: list[str],
                attribute: str, digits: int) -> str:
    found = [v for v in values.values() if v == v]
    low, high = (min(found), max(found)) if found else (0.0, 0.0)
    scale = f" (light {_num(low, digits or 4)} to dark {_num(high, digits or 4)})" if found else ""
    lines = [f"<h3>{_e(title)}</h3>", f'<p class="note">Blank: a well with no exported cell{scale}.</p>',
             '<table class="plate">',
             "<thead><tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for column in columns:
            value = values.get((row, column))
            if value is None:
                cells.append('<td class="empty"></td>')
                continue
            shown = "" if value != value else (f"{int(value)}" if digits == 0 else _num(value, digits))
            style = f' style="background:{_heat_colour(value, low, high)}"' if value == value else ""
            cells.append(f'<td class="num" data-well="{_e(row)}{_e(column)}" data-{attribute}="{_e(shown)}"{style}>'
                         f"{_e(shown)}</td>")
        lines.append(f"<tr><th>{_e(row)}</th>{''.join(cells)}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _plate(summary: dict, table: _Table, feature: str | None) -> str:
    """Heatmaps of a plate: cells per well and the per-well median of ``feature`` (``output.plate_feature``).

    Drawn when the table has ``meta_row`` and ``meta_column`` (an HCS plate,
    or a pattern with groups named ``row`` and ``column``).
    """
    if not table.parts or not {"meta_row", "meta_column"} <= set(table.columns):
        return ""
    columns = table.columns
    if feature is not None:
        column = next((c for c in (feature, f"feat_{feature}") if c in columns), None)
        if column is None:
            return _section("plate", "Plate", f'<p class="note">output.plate_feature {_e(feature)!s} is not a column '
                                              "of the table; no per-well feature map.</p>")
    else:
        column = next(iter(_default_features(summary, columns)), None)
    frame = table.read(["meta_row", "meta_column", *([column] if column else [])])
    if not len(frame):
        return ""
    frame = frame.astype({"meta_row": str, "meta_column": str})
    rows, cols = _group_order(frame["meta_row"].unique()), _group_order(frame["meta_column"].unique())
    grouped = frame.groupby(["meta_row", "meta_column"], sort=False)
    counts = {k: float(v) for k, v in grouped.size().items()}
    parts = [f'<p class="note">{len(counts)} wells with cells; rows {_e(", ".join(rows))}, columns '
             f'{_e(", ".join(cols))}.</p>', _plate_grid("cells per well", counts, rows, cols, "cells", 0)]
    if column is not None:
        medians = {k: float(v) for k, v in grouped[column].median().items()}
        parts.append(_plate_grid(f"median of {column} per well", medians, rows, cols, "median", 4))
    return _section("plate", "Plate", "\n".join(parts))


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:0 24px 48px;color:#222;background:#fff}
h1{font-size:24px;margin:24px 0 8px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}h4{font-size:13px;margin:10px 0 4px;font-weight:600}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}th,td{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}thead th{border-bottom:2px solid #ccc}td.num{text-align:right;
font-variant-numeric:tabular-nums}td.total{font-weight:600}table.kv th{font-weight:600;color:#555}
table.counts td:nth-child(2){white-space:pre}.note{color:#666;font-size:12px}.headline{font-size:16px}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}img.plot{max-width:100%;height:auto}
.montage{display:flex;flex-wrap:wrap;gap:6px}figure{margin:0}figure.cell{width:104px;text-align:center}
figure.cell img{image-rendering:pixelated;background:#000;display:block;margin:0 auto}
figure figcaption{font-size:10px;color:#555;line-height:1.2;margin-top:2px;overflow-wrap:anywhere}
figure.field img{max-width:200px;height:auto}details{margin:6px 0}summary{cursor:pointer;color:#345}
footer{margin-top:40px;color:#888;font-size:12px}
table.plate td{text-align:center;min-width:34px;border:1px solid #fff}table.plate td.empty{background:#f6f6f6}
"""

_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  // An image counts as shown when it decoded and its last pixel is opaque (all of scip's images are),
  // which a truncated PNG's is not.
  var images = document.images, loaded = 0, failed = 0, checked = 0;
  var canvas = document.createElement("canvas"), ctx = canvas.getContext("2d");
  for (var i = 0; i < images.length; i++) {
    var img = images[i], ok = img.complete && img.naturalWidth > 0;
    if (ok && ctx) {
      try {
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        ctx.clearRect(0, 0, canvas.width, canvas.height);
        ctx.drawImage(img, 0, 0);
        ok = ctx.getImageData(canvas.width - 1, canvas.height - 1, 1, 1).data[3] === 255;
        checked++;
      } catch (e) { /* a tainted canvas: counted by naturalWidth only */ }
    }
    if (ok) { loaded++; } else { failed++; }
  }
  var el = document.getElementById("image-check");
  el.setAttribute("data-total", images.length);
  el.setAttribute("data-loaded", loaded);
  el.setAttribute("data-failed", failed);
  el.setAttribute("data-checked", checked);
  el.textContent = loaded + " of " + images.length + " images shown" + (failed ? ", " + failed + " failed" : "");
});
"""


# ---------------------------------------------------------------------------
# Micronuclei (``micronuclei:`` in the config)

_MN_COLOUR = np.array([1.0, 0.85, 0.0])  # micronucleus outline colour (yellow)
_MN_BINS = 4  # the histogram's last bar holds this many micronuclei or more


def _mn_thumbnail(sample: dict, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """A cell's thumbnail with its micronuclei outlined in yellow (their pixels lie outside the cell's mask)."""
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    rgb = _thumbnail(sample["crop"], sample["mask"], ranges)
    mn = np.asarray(sample["micronuclei"], bool)
    if mn.shape != rgb.shape[:2]:
        mn = resize(mn, rgb.shape[:2], order=0, anti_aliasing=False, preserve_range=True).astype(bool)
    rgb[find_boundaries(mn, mode="outer") & ~mn] = _MN_COLOUR
    return rgb


def _micronuclei(summary: dict, table: _Table, samples: list[dict], max_cells: int) -> str:
    found = summary.get("micronuclei")
    if not isinstance(found, dict) or not table.parts or "micronucleus_count" not in table.columns:
        return ""
    counts = table.read(["micronucleus_count"])["micronucleus_count"].to_numpy(dtype=np.float64, na_value=np.nan)
    counts = counts[np.isfinite(counts)].astype(int)
    if not counts.size:
        return _section("micronuclei", "Micronuclei", '<p class="note">No exported cells.</p>')
    with_mn = int((counts > 0).sum())
    unassigned = found.get("unassigned") if isinstance(found.get("unassigned"), dict) else {}
    dropped = found.get("dropped") if isinstance(found.get("dropped"), dict) else {}
    rows = [["found (detections)", _td(found.get("found"))]]
    rows += [[f"dropped: {reason}", _td(n)] for reason, n in dropped.items()]
    rows += [["assigned to exported cells", _td(found.get("assigned"))]]
    rows += [[f"unassigned: {reason}", _td(n)] for reason, n in unassigned.items()]
    intro = (f'<p><strong>{with_mn}</strong> of {counts.size} exported cells '
             f'(<strong>{100 * with_mn / counts.size:.1f} %</strong>) have at least one micronucleus; '
             f'{int(counts.sum())} micronuclei in all.</p>')
    bars = np.bincount(np.minimum(counts, _MN_BINS), minlength=_MN_BINS + 1)
    labels = [str(i) for i in range(_MN_BINS)] + [f"≥{_MN_BINS}"]
    fig = _figure(3.8, 2.6)
    ax = fig.subplots()
    ax.bar(labels, bars, color="#4878a8")
    ax.set_xlabel("micronuclei per cell", fontsize=9)
    ax.set_ylabel("cells", fontsize=9)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    chart = _img(_figure_png(fig), "micronuclei per cell", cls="plot")
    histogram = _table(["micronuclei per cell", "cells"], [[l, _td(int(n))] for l, n in zip(labels, bars)],
                       id_="micronuclei-histogram")
    shown = [s for s in samples if int(s.get("micronucleus_count") or 0) > 0 and "micronuclei" in s]
    montage = ""
    if shown:
        ranges = _channel_ranges(shown)
        figures = []
        for s in shown[:max_cells]:
            rgb = _mn_thumbnail(s, ranges)
            h, w = rgb.shape[:2]
            zoom = _THUMB_SHOWN / max(h, w, 1)
            caption = f"image {s.get('image_id', '?')} · cell {s.get('label', '?')} · {s['micronucleus_count']} MN"
            figures.append(f'<figure class="cell">{_img(_rgb_png(rgb), caption, round(w * zoom), round(h * zoom))}'
                           f"<figcaption>{_e(caption)}</figcaption></figure>")
        montage = (f'<h3>Micronucleated cells <span class="note">({len(figures)} of {len(shown)} sampled)</span></h3>'
                   '<p class="note">White: the nucleus mask outline; yellow: its micronuclei (those inside the crop).</p>'
                   f'<div class="montage">{"".join(figures)}</div>')
    return _section("micronuclei", "Micronuclei", intro + chart + histogram
                    + _table(["micronuclei", "count"], rows, id_="micronuclei-counts") + montage)


#: What drawing the report imports; :func:`import_in_background` imports it ahead.
_PLOT_MODULES = ("matplotlib.figure", "matplotlib.backends.backend_agg", "PIL.Image", "skimage.segmentation",
                 "skimage.transform")


def _import_plot_modules() -> None:
    import importlib

    for name in _PLOT_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - only ahead of time: write_report imports them again and says what fails
            return


def import_in_background() -> threading.Thread:
    """Start importing the plotting libraries the report needs, in a daemon thread, and return the thread.

    A run calls this while its workers compute the last pass and the driver
    only waits: matplotlib and the rest then cost no wall time at the end.
    """
    thread = threading.Thread(target=_import_plot_modules, name="scip-report-imports", daemon=True)
    thread.start()
    return thread


def run_columns(mask: str, channels: Sequence[str], plate_feature: str | None = None,
                labels: bool = False) -> list[str]:
    """Table columns that :func:`write_report` with its defaults may draw, for a run's workers to return.

    Parameters
    ----------
    mask : str
        The cell mask's name (``segment.name``).
    channels : sequence of str
        The run's channels.
    plate_feature : str, optional
        ``output.plate_feature``.
    labels : bool, optional
        Whether the run writes label images (``output.labels``): their section
        counts cells per image.

    Returns
    -------
    list of str
        Candidates, some possibly not in the table. A column the report reads
        that is not among them is read from the parts, so this list decides
        only how fast the report is, never what it shows.
    """
    names = [*_wanted_features(mask, channels), "meta_row", "meta_column", "micronucleus_count"]
    if plate_feature:
        names += [plate_feature, f"feat_{plate_feature}"]
    if labels:
        names.append("meta_image_id")
    return list(dict.fromkeys(names))


def write_report(output_dir: str | os.PathLike, samples: Sequence[Mapping[str, Any]] | None = None,
                 group_by: str | None = None, features: Sequence[str] | None = None, max_cells: int = 48,
                 plate_feature: str | None = None, table: Any = None) -> Path:
    """Write ``report.html``, a self-contained page about the run in ``output_dir``.

    Parameters
    ----------
    output_dir : str or os.PathLike
        A run's output folder: it must hold ``run.json``; ``cells/``,
        ``illumination.npz``, ``report_cells.npz`` and
        ``classification/classification.json`` are used when present.
    samples : sequence of mapping, optional
        Sampled cells for the montage (see :func:`save_samples`). By default
        they are read from ``output_dir/report_cells.npz`` when it exists;
        without any, the page has no montage.
    group_by : str, optional
        Group the montage and the histograms by this: a key of the sampled
        cells (``image_id``), a metadata field (``field`` or its column name
        ``meta_field``), or any column of the table (e.g. a class column),
        looked up for the sampled cells by image and label. ``truth_label``
        groups cells by whether they matched a true cell. At most 12 groups
        are shown; the rest are pooled as ``(other)``.
    features : sequence of str, optional
        Feature columns to draw histograms of (with or without the ``feat_``
        prefix). By default the cell area and the mean intensity of each
        channel, when the table has them.
    max_cells : int, optional
        Most cells shown in a montage (per group when grouped).
    plate_feature : str, optional
        With ``meta_row``/``meta_column`` in the table, the plate heatmap
        shows this column's per-well median next to the cells per well
        (default: the run's ``output.plate_feature``, else the cell area).
    table : pyarrow.Table, optional
        Some columns of the run's whole table, its parts in order (a run's
        workers return them: :attr:`scip.accounting.PartitionSummary.report_table`).
        A section whose columns are all in it takes them from there instead
        of reading every part again; the others read the parts.

    Returns
    -------
    Path
        The report file, ``output_dir/report.html``.

    Raises
    ------
    FileNotFoundError
        If ``output_dir`` has no ``run.json``.
    ValueError
        If ``group_by`` names neither a field of the sampled cells nor a
        table column.
    """
    output = Path(output_dir)
    run_json = output / "run.json"
    if not run_json.is_file():
        raise FileNotFoundError(f"{run_json}: no run.json; write_report needs the output folder of a finished run")
    summary = json.loads(run_json.read_text())
    if samples is None:
        path = output / SAMPLES_FILE
        samples = load_samples(path) if path.is_file() else []
    samples = [dict(s) for s in samples if "crop" in s and "mask" in s]
    # Cells sampled for another section (``extra``: micronucleated ones) would bias the random montage.
    picked, samples = samples, [s for s in samples if not s.get("extra")]
    table = _Table(output / "cells", table)
    groups = _sample_groups(samples, group_by, table) if group_by and samples else None
    sections = [
        _counts(summary),
        _timings(summary),
        _montage(samples, groups, group_by, max(0, int(max_cells))),
        _micronuclei(summary, table, picked, max(0, int(max_cells))),
        _label_images(summary, output, table),
        _distributions(summary, table, features, group_by),
        _plate(summary, table, plate_feature or (summary.get("config", {}).get("output") or {}).get("plate_feature")),
        _evaluation(summary),
        _reductions(summary, output),
        _classification(output),
    ]
    title = f"scip report: {output.resolve().name}"
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_CHECK_SCRIPT}</script>",
        "</head><body>",
        _header(summary, output, run_json),
        *[s for s in sections if s],
        '<footer>Written by scip; this page needs no network. '
        '<span id="image-check" data-total="" data-loaded="" data-failed="" data-checked=""></span></footer>',
        "</body></html>",
    ])
    target = output / REPORT_FILE
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target
