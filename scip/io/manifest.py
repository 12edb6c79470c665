"""``manifest.json``: what a run set out to compute and write, and what a later run may trust.

The manifest is written before any partition is computed. It holds

* the fingerprint of the config, of the image list and of the scip version,
  and the size and modification time (``mtime_ns``) of every input file, or
  with ``output.verify: content`` their SHA-256 too (``inputs``);
* the partitions (which images each holds and where its part and summary go);
* the dataset-wide reductions once decided, so a resumed run filters and
  normalizes with exactly the same thresholds;
* ``files``: every file this run writes into the output folder, as paths
  relative to it, recorded *before* the file is written (``scip classify``
  and ``scip predict`` add theirs when they write into the run folder);
* ``complete``: true once the table, ``run.json`` and ``skipped.csv`` are all
  written.

What is trusted, and how far:

* ``--overwrite`` removes only the regular files listed in ``files`` (and
  their temporaries), then the folders ``cells``, ``progress`` and
  ``classification`` if that left them empty; nothing else, and nothing
  outside the output folder whatever the manifest says.
* ``--resume`` trusts a partition only if it verifies
  (:func:`load_partition`): its summary ``progress/part-<index>.json`` is
  JSON of the right shape (no pickle is ever read), and its part has the byte
  size and SHA-256 the summary recorded and a Parquet footer with the
  recorded row count. Every other partition is computed again.
* ``--resume`` is refused when the config (outside ``cluster`` and
  ``output``), the image list, the scip version or any input file's size,
  mtime (or content, when recorded) changed.
* :func:`scip.read` refuses the table of a run that is not ``complete``, or
  whose parts are missing or changed size since it finished (the sizes are
  recorded in ``partitions`` at the end), with :class:`IncompleteRunError`,
  unless asked for a partial table (then only the partitions that verify are
  read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import posixpath
from pathlib import Path
from typing import Any, Iterable

from scip.io.atomic import atomic_path, sha256_file

__all__ = ["MANIFEST", "ManifestError", "IncompleteRunError", "PartitionUnverified", "fingerprint",
           "write_manifest", "read_manifest", "reductions_to_json", "reductions_from_json", "differences",
           "input_stats", "changed_inputs", "record_files", "recorded_files", "part_name", "summary_name",
           "samples_name", "save_partition", "load_partition", "check_complete", "summarize_changes", "LAYOUT"]

log = logging.getLogger("scip")

MANIFEST = "manifest.json"
#: Version of the manifest's layout; an older manifest is not trusted to say what its run wrote.
LAYOUT = 2
_SUMMARY_FORMAT = "scip-partition-summary"
_SUMMARY_VERSION = 1
#: Changed input files named in a refusal before "and N more".
_SHOWN = 10
#: Config sections that may change between a run and its resumption: they do not change the table.
_FREE_SECTIONS = ("cluster", "output", "errors")
#: Keys of ``output`` that change what each partition writes (its label images, its table's columns): a
#: resumption with other values would mix two kinds of partitions, so these are not free.
_BOUND_OUTPUT = ("labels", "polygons", "pyramid_levels")


def _bound_output(config: dict) -> dict:
    """The bound ``output`` keys set away from their defaults (so a default config keeps its old fingerprint)."""
    output = config.get("output") if isinstance(config.get("output"), dict) else {}
    return {k: output[k] for k in _BOUND_OUTPUT if output.get(k) not in (None, False)}


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or does not match the run to resume."""


class IncompleteRunError(ValueError):
    """The output folder holds a run that did not finish: its table lacks partitions.

    Raised by :func:`scip.read` (and :meth:`scip.RunResult.read`) unless
    ``partial=True``; the message says how many partitions are missing and
    that ``scip run --resume`` completes them.
    """


class PartitionUnverified(ValueError):
    """A partition whose part or summary does not verify; the message says why."""


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(config: dict, images: list[tuple[str, tuple[str, ...]]], version: str | None = None) -> dict:
    """Fingerprints of the parts of a run that decide its table.

    ``config`` is ``Config.model_dump(mode="json")``; ``images`` the
    ``(image_id, paths)`` of every image in order; ``version`` scip's.
    The input files' sizes and times are compared apart
    (:func:`input_stats`), so a refusal can name the files.
    """
    table_config = {k: v for k, v in config.items() if k not in _FREE_SECTIONS}
    if _bound_output(config):
        table_config["output"] = _bound_output(config)
    return {"config": _digest(table_config), "images": _digest(images), "n_images": len(images), "scip": version}


def _stat_entry(path: str, content: bool) -> dict:
    """Size and mtime (and SHA-256) of a file; of a folder (a Zarr store), over all files in it."""
    if not os.path.isdir(path):
        st = os.stat(path)
        entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if content:
            entry["sha256"] = sha256_file(path)
        return entry
    size = mtime = count = 0
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            size, mtime, count = size + st.st_size, max(mtime, st.st_mtime_ns), count + 1
            if content:
                digest.update(os.path.relpath(full, path).encode() + b"\0" + sha256_file(full).encode() + b"\0")
    # A removed or added chunk file changes the count even when total size and latest time agree.
    entry = {"size": size, "mtime_ns": mtime, "files": count}
    if content:
        entry["sha256"] = digest.hexdigest()
    return entry


def input_stats(paths: Iterable[str], content: bool = False) -> dict[str, dict]:
    """Size and modification time (and SHA-256) of every input file, by path.

    Parameters
    ----------
    paths : iterable of str
        Input files or stores (each counted once).
    content : bool
        Also hash every byte (``output.verify: content``): catches a change
        that keeps size and mtime, at the cost of reading the input once more.

    Returns
    -------
    dict of str to dict
        ``{"size", "mtime_ns"}`` per file, with ``sha256`` when ``content``;
        a folder (a Zarr store) gets its files' total size, latest mtime and
        count (``files``), and one hash over all of them. A file that cannot
        be read gets ``{"error": ...}``.
    """
    out: dict[str, dict] = {}
    for path in paths:
        if path and path not in out:
            try:
                out[path] = _stat_entry(path, content)
            except OSError as e:
                out[path] = {"error": str(e.strerror or e)}
    return out


def changed_inputs(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """The input files that differ between two :func:`input_stats`, each with what changed.

    Parameters
    ----------
    old, new : dict
        :func:`input_stats` of the first attempt (from its manifest) and now.

    Returns
    -------
    list of str
        ``"<path> (<what changed>)"`` per file, sorted by path: size, file
        count (a store), modification time, or content. Content hashes are
        compared only when both sides have them.
    """
    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if not isinstance(a, dict) or not isinstance(b, dict):
            out.append(f"{path} ({'added' if a is None else 'removed' if b is None else 'unreadable record'})")
            continue
        what = [f"{key} {a.get(key)} -> {b.get(key)}" for key in ("size", "files", "error") if a.get(key) != b.get(key)]
        if a.get("mtime_ns") != b.get("mtime_ns"):
            what.append("modified")
        if "sha256" in a and "sha256" in b and a["sha256"] != b["sha256"]:
            what.append("content differs")
        if what:
            out.append(f"{path} ({', '.join(what)})")
    return out


def summarize_changes(changed: list[str], shown: int = _SHOWN) -> str:
    """A list for a message, cut so that it stays readable.

    Parameters
    ----------
    changed : list of str
        The items (file names, with what changed).
    shown : int
        How many to name.

    Returns
    -------
    str
        The first ``shown`` items joined by commas, then "and N more".
    """
    head = ", ".join(changed[:shown])
    return head + (f" and {len(changed) - shown} more" if len(changed) > shown else "")


def differences(old: dict, new: dict) -> list[str]:
    """Config keys (dotted paths) whose values differ, outside the sections free to change."""
    out: list[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if not path and key in _FREE_SECTIONS:
                    continue
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")

    walk(old, new, "")
    before, after = _bound_output(old), _bound_output(new)
    given = [(old.get("output") or {}) if isinstance(old.get("output"), dict) else {},
             (new.get("output") or {}) if isinstance(new.get("output"), dict) else {}]
    out += [f"output.{k}: {given[0].get(k)!r} -> {given[1].get(k)!r}" for k in _BOUND_OUTPUT
            if before.get(k) != after.get(k)]
    return out


def part_name(index: int) -> str:
    """Partition ``index``'s Parquet part, relative to the output folder."""
    return f"cells/part-{index:05d}.parquet"


def summary_name(index: int) -> str:
    """Partition ``index``'s summary (JSON), relative to the output folder."""
    return f"progress/part-{index:05d}.json"


def samples_name(index: int) -> str:
    """Partition ``index``'s sampled cells for the report (``.npz``, no pickle), relative to the output folder."""
    return f"progress/part-{index:05d}.samples.npz"


def write_manifest(directory: Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically into ``directory``."""
    path = Path(directory) / MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
    return path


def read_manifest(directory: Path) -> dict:
    """Read ``directory``'s manifest; :class:`ManifestError` names the file when it is missing or broken.

    A manifest of another layout (an older scip's) is refused too: it does
    not record what its run wrote nor how its parts verify.
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path} does not exist: there is no interrupted run here to resume "
                            "(run without --resume to start one)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path} cannot be read ({e}); run again without --resume (and with --overwrite)") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path} is not a scip manifest (not a JSON object)")
    for key, kind in (("fingerprint", dict), ("partitions", list), ("config", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ManifestError(f"{path} has no valid '{key}': not a scip manifest, or from an incompatible version")
    if manifest.get("layout") != LAYOUT:
        raise ManifestError(f"{path} was written by an older scip (layout {manifest.get('layout', 1)}, this scip "
                            f"writes {LAYOUT}): it records neither the files its run wrote nor checksums of its "
                            "parts, so it can be neither resumed nor overwritten; remove the results yourself, "
                            "or choose another output folder")
    return manifest


def _number(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _float(x: float | None) -> float:
    return math.nan if x is None else float(x)


def reductions_to_json(bounds: list | None, ranges: dict | None, report: dict) -> dict:
    """The filters' thresholds, normalization ranges and report, as JSON (floats round-trip exactly)."""
    return {
        "bounds": None if bounds is None else [[_number(lo), _number(hi)] for lo, hi in bounds],
        "ranges": None if ranges is None else [[list(group), [list(b) for b in per_channel]]
                                               for group, per_channel in ranges.items()],
        "report": report,
    }


def reductions_from_json(saved: dict) -> tuple[list | None, dict | None, dict]:
    """Inverse of :func:`reductions_to_json`."""
    bounds = saved.get("bounds")
    if bounds is not None:
        bounds = [(_float(lo), _float(hi)) for lo, hi in bounds]
    ranges = saved.get("ranges")
    if ranges is not None:
        ranges = {tuple(group): tuple((float(lo), float(hi)) for lo, hi in per_channel) for group, per_channel in ranges}
    return bounds, ranges, saved.get("report", {})


# ---------------------------------------------------------------------------------------------- files written


def _safe_relative(entry: Any) -> str | None:
    """``entry`` as a normalized relative path inside the output folder, or None if it is not one."""
    if not isinstance(entry, str) or not entry or "\\" in entry or "\0" in entry:
        return None
    norm = posixpath.normpath(entry)
    if posixpath.isabs(norm) or norm == "." or norm == ".." or norm.startswith("../"):
        return None
    return norm


def recorded_files(manifest: dict) -> list[str]:
    """The files a manifest says its run wrote: relative paths that stay inside the output folder.

    Entries that are not such paths (absolute, with ``..``, not strings) are
    dropped with a warning: a manifest is a file in a folder anyone may have
    written to, and must never make scip remove something elsewhere.
    """
    out = []
    for entry in manifest.get("files") or []:
        norm = _safe_relative(entry)
        if norm is None:
            log.warning("scip: manifest.json lists %r among its files: not a path inside the output folder; ignored",
                        entry)
        else:
            out.append(norm)
    return out


def record_files(directory: str | os.PathLike, paths: Iterable[str], manifest: dict | None = None) -> dict | None:
    """Add ``paths`` (relative to ``directory``) to the manifest's ``files``, before they are written.

    Parameters
    ----------
    directory : str or os.PathLike
        The run's output folder.
    paths : iterable of str
        Files about to be written there, relative to it (``/``-separated).
    manifest : dict, optional
        The manifest in memory (updated in place); by default the one in
        ``directory`` is read.

    Returns
    -------
    dict or None
        The manifest written, or None when ``directory`` holds no manifest of
        this layout (a folder that is not a run's: nothing to record).
    """
    if manifest is None:
        try:
            manifest = json.loads((Path(directory) / MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("layout") != LAYOUT:
            return None
    files = manifest.setdefault("files", [])
    new = [p for p in (_safe_relative(p) for p in paths) if p is not None and p not in files]
    if new:
        files.extend(new)
        write_manifest(directory, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------- partitions


def save_partition(directory: str | os.PathLike, index: int, part: dict, summary) -> None:
    """Save a partition's summary beside its part (written before): samples first, the JSON last.

    Parameters
    ----------
    directory : str or os.PathLike
        The ``progress`` folder.
    index : int
        The partition.
    part : dict
        ``rows``, ``bytes``, ``sha256`` of the part, from
        :func:`scip.io.parquet.write_part`.
    summary : scip.accounting.PartitionSummary
        Its counts; the sampled cells' arrays go to ``part-<index>.samples.npz``.
    """
    from scip.accounting import summary_to_json
    from scip.report import save_samples

    directory = Path(directory)
    if summary.samples:
        save_samples(directory / Path(samples_name(index)).name, summary.samples)
    document = {"format": _SUMMARY_FORMAT, "version": _SUMMARY_VERSION, "index": index,
                "part": {"name": Path(part_name(index)).name, **part}, "samples": len(summary.samples),
                "summary": summary_to_json(summary)}
    with atomic_path(directory / Path(summary_name(index)).name) as tmp:
        tmp.write_text(json.dumps(document))


def _read_document(path: Path, index: int) -> dict:
    if not path.is_file():
        raise PartitionUnverified("no summary")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PartitionUnverified(f"summary unreadable ({type(e).__name__})") from None
    part = document.get("part") if isinstance(document, dict) else None
    if (not isinstance(document, dict) or document.get("format") != _SUMMARY_FORMAT
            or document.get("version") != _SUMMARY_VERSION or document.get("index") != index
            or not isinstance(part, dict)):
        raise PartitionUnverified("summary is not a scip partition summary of this partition")
    for key, kind in (("rows", int), ("bytes", int), ("sha256", str)):
        if not isinstance(part.get(key), kind) or isinstance(part.get(key), bool):
            raise PartitionUnverified(f"summary records no valid part {key}")
    return document


def _verify_part(path: Path, part: dict, checksum: bool) -> None:
    if not path.is_file():
        raise PartitionUnverified("no part file")
    size = path.stat().st_size
    if size != part["bytes"]:
        raise PartitionUnverified(f"part is {size} bytes, its summary recorded {part['bytes']}")
    if checksum and sha256_file(path) != part["sha256"]:
        raise PartitionUnverified("part's SHA-256 differs from the one its summary recorded")
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as e:  # noqa: BLE001 - any failure to read the footer means "not a good part"
        raise PartitionUnverified(f"part's Parquet footer unreadable ({type(e).__name__})") from None
    if rows != part["rows"]:
        raise PartitionUnverified(f"part has {rows} rows, its summary recorded {part['rows']}")


def load_partition(directory: str | os.PathLike, index: int, checksum: bool = True):
    """A partition's summary, if the partition verifies.

    Parameters
    ----------
    directory : str or os.PathLike
        The run's output folder.
    index : int
        The partition.
    checksum : bool
        Also compare the part's SHA-256 (reads the whole part); without it,
        size, footer and row count only.

    Returns
    -------
    scip.accounting.PartitionSummary
        With its sampled cells, when their file reads (they only feed the
        report's montage: a broken samples file costs the samples, not the
        partition).

    Raises
    ------
    PartitionUnverified
        The summary is missing, not JSON of the expected shape, or the part
        is missing or differs from what the summary recorded; the message
        says which.
    """
    from scip.accounting import summary_from_json

    directory = Path(directory)
    document = _read_document(directory / summary_name(index), index)
    try:
        summary = summary_from_json(document.get("summary"))
    except ValueError as e:
        raise PartitionUnverified(f"summary has the wrong shape ({e})") from None
    if summary.cells_exported != document["part"]["rows"]:
        raise PartitionUnverified(f"summary counts {summary.cells_exported} exported cells but records "
                                  f"{document['part']['rows']} part rows")
    _verify_part(directory / part_name(index), document["part"], checksum)
    samples = document.get("samples")
    if isinstance(samples, int) and samples > 0:
        from scip.report import load_samples

        try:
            summary.samples = load_samples(directory / samples_name(index))
        except Exception as e:  # noqa: BLE001 - samples feed the report only
            log.warning("scip: %s unreadable (%s): the report's montage will lack its cells",
                        directory / samples_name(index), e)
    return summary


def check_complete(directory: str | os.PathLike, partial: bool = False) -> list[Path] | None:
    """Check that the run in ``directory`` finished, before its table is read.

    Parameters
    ----------
    directory : str or os.PathLike
        A run's output folder, holding ``manifest.json``.
    partial : bool
        Instead of raising for an incomplete run, warn and return the parts
        that verify.

    Returns
    -------
    list of Path or None
        None when the run is complete (read the table as it is); with
        ``partial``, the verified parts of an incomplete run.

    Raises
    ------
    IncompleteRunError
        The run did not finish, or parts of a finished run are missing or
        changed (a cheap check: existence, and the size the manifest recorded
        when the run finished), and ``partial`` is false; or no partition
        verifies at all. The partitions of an unfinished run are verified in
        full (:func:`load_partition`).
    """
    import warnings

    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        partitions = manifest["partitions"]
        if not isinstance(partitions, list):
            raise TypeError("partitions is not a list")
        n = len(partitions)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IncompleteRunError(f"{directory / MANIFEST} cannot be read ({type(e).__name__}): cannot tell whether "
                                 "the run finished; read the parts directly if you trust them") from None
    complete = manifest.get("complete") is True
    problems: dict[int, str] = {}
    good: list[Path] = []
    for i in range(n):
        part = directory / part_name(i)
        try:
            if complete:
                # A finished run: existence and the size recorded at the end catch a deleted or truncated part.
                entry = partitions[i] if isinstance(partitions[i], dict) else {}
                if not part.is_file():
                    raise PartitionUnverified("no part file")
                size, recorded = part.stat().st_size, entry.get("bytes")
                if isinstance(recorded, int) and size != recorded:
                    raise PartitionUnverified(f"part is {size} bytes, the manifest recorded {recorded}")
            else:
                load_partition(directory, i)
            good.append(part)
        except PartitionUnverified as e:
            problems[i] = str(e)
    if complete and not problems:
        return None
    first = ", ".join(f"part-{i:05d} ({why})" for i, why in list(problems.items())[:3])
    if not problems:
        state = f"did not finish: all {n} partitions are written, but not run.json and skipped.csv"
    else:
        state = (f"{'finished, but' if complete else 'did not finish:'} {len(problems)} of {n} partitions are "
                 f"missing or do not verify, e.g. {first}")
    message = (f"{directory}: the run {state}. Run `scip run <config> --resume` to complete it"
               + ("" if partial else ", or pass partial=True to read the partitions that verify"))
    if not partial or not good:
        raise IncompleteRunError(message + ("" if good else "; no partition verifies"))
    warnings.warn(message + f"; reading the {len(good)} partitions that verify", stacklevel=3)
    return good
