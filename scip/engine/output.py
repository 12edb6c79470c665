"""The output folder: what a run may write and remove there, its manifest, and what ``--resume`` trusts.

Every file a run writes into the output folder is first recorded in
``manifest.json`` (:mod:`scip.io.manifest`); ``--overwrite`` removes only
recorded files, never the input nor a file of the user's. ``--resume`` trusts
an earlier attempt only when its config, scip version and input files are
the same, and a partition only when its part verifies against its summary.
"""

from __future__ import annotations

import logging
import platform
import shutil
from importlib import metadata
from pathlib import Path

from scip import report
from scip.accounting import PartitionSummary
from scip.config import ConfigError
from scip.engine import graph, tiles
from scip.io.manifest import (LAYOUT, ManifestError, PartitionUnverified, changed_inputs, differences, fingerprint,
                              input_stats, load_partition, part_name, read_manifest, recorded_files,
                              samples_name, summarize_changes, summary_name)
from scip.io import labels
from scip.io.tables import FILES

log = logging.getLogger("scip")

__all__ = ["OUTPUT_FILES", "prepare_output", "planned_files", "new_manifest", "partition_entries", "resumable",
           "done_partitions", "versions"]


#: Names a run, ``scip classify`` and ``scip predict`` write at the top of an output folder.
OUTPUT_FILES = (tiles.SCRATCH, "cells", "run.json", "skipped.csv", "illumination.npz", "cells.h5ad", "cells.csv", "report.html",
                "report_cells.npz", "classification", "predictions.csv", "predictions_scores.json", "manifest.json", "progress", labels.LABELS)


#: Folders of ours that ``--overwrite`` removes once the files recorded in them are gone, if nothing else is left.
_OUR_FOLDERS = ("cells", "progress", "classification")


def _input_paths(p: graph.Plan, out: Path) -> list[tuple[str, Path]]:
    """What this run reads, as ``(config key, path)``: input folder, labels, saved correction, and the input files
    themselves when they could lie inside ``out``."""
    config = p.config
    paths = [("input.path", Path(config.input.path))]
    if config.illumination is not None and config.illumination.reuse is not None:
        paths.append(("illumination.reuse", Path(config.illumination.reuse)))
    if config.evaluate is not None:
        template = config.evaluate.labels
        if "{" not in template:
            paths.append(("evaluate.labels", Path(template)))
        else:
            for s in p.dataset.sources:
                try:
                    paths.append(("evaluate.labels", Path(template.format(image_id=s.image_id, index=s.index,
                                                                          **s.fields))))
                except (KeyError, IndexError, ValueError):
                    continue
    root = Path(config.input.path).resolve()
    if out == root or out.is_relative_to(root):
        # Only then can input files lie in the output folder.
        paths += [("input file", Path(f)) for s in p.dataset.sources for f in s.paths if f]
    return paths


def _check_overlap(p: graph.Plan, out: Path, ours: set[str]) -> None:
    """Refuse an output folder where writing or removing our files could touch the input."""
    for key, path in _input_paths(p, out):
        path = path.resolve()
        if path == out:
            raise ConfigError(f"output.path: {out} is also {key}; write the results to another folder, "
                              "never into the input itself")
        if path.is_relative_to(out):
            top = path.relative_to(out).parts[0]
            if top in ours:
                raise ConfigError(f"{key}: {path} lies in the output folder {out}, under {top!r}, a name scip "
                                  "writes and --overwrite removes; move it out of the output folder, or choose "
                                  "another output.path")


def planned_files(p: graph.Plan, parts: list) -> list[str]:
    """Every file this run writes into the output folder, relative to it."""
    config = p.config
    files = [name for i in range(len(parts)) for name in (part_name(i), summary_name(i), samples_name(i))]
    files += ["run.json", "skipped.csv", report.SAMPLES_FILE, report.REPORT_FILE]
    if config.illumination is not None and config.illumination.reuse is None:
        files.append("illumination.npz")
    files += [FILES[f] for f in config.output.formats if f != "parquet"]
    if config.output.labels:
        files.append(labels.LABELS)
    return files


def _existing(out: Path, p: graph.Plan, parts: list) -> list[str]:
    """Files in ``out`` at names this run writes, or that would pass for its results."""
    found = [name for name in ("manifest.json", *planned_files(p, parts)) if "/" not in name
             and (out / name).exists()]
    for folder in ("cells", "progress"):
        if (out / folder).is_dir():
            found += [f"{folder}/{f.name}" for f in sorted((out / folder).iterdir())
                      if f.name.startswith(("part-", ".part-"))]
        elif (out / folder).exists():
            found.append(folder)
    if p.config.output.labels and (out / labels.LABELS).exists():
        found.append(labels.LABELS)
    # A classification in the folder would be shown in the new report as if it described the new table.
    if (out / report.CLASSIFICATION_FILE).exists():
        found.append(report.CLASSIFICATION_FILE.as_posix())
    return found


def _removable(out: Path, manifest: dict) -> set[str]:
    """The recorded files of an earlier run that may go: regular files inside ``out`` under names of ours."""
    out_ok = set()
    for rel in recorded_files(manifest):
        if rel.split("/")[0] not in OUTPUT_FILES:
            log.warning("scip: manifest.json lists %s, not a name scip writes; it is left alone", rel)
            continue
        target = out / rel
        if rel == labels.LABELS and target.is_dir() and not target.is_symlink():
            # A tree, not a file: removed only while scip's marker says scip wrote it.
            if labels.is_scip_labels(target):
                out_ok.add(rel)
            else:
                log.warning("scip: %s has no scip marker in its attributes; it is left alone", target)
            continue
        for name in (rel, str(Path(rel).with_name(f".{Path(rel).name}.tmp").as_posix())):
            target = out / name
            if target.is_file() and not target.is_symlink() and target.resolve().is_relative_to(out):
                out_ok.add(name)
    return out_ok


def prepare_output(path: Path, overwrite: bool, p: graph.Plan, parts: list) -> Path:
    """Make ``path`` ready for a new run; with ``overwrite``, remove exactly what the earlier run recorded.

    Nothing is removed before every check has passed: the input must not lie
    under a name we write, and every file at such a name must be one the
    earlier run's manifest recorded (else the user's, and we refuse).
    """
    out = path.resolve()
    manifest, why = None, ""
    if (out / "manifest.json").exists():
        try:
            manifest = read_manifest(out)
        except ManifestError as e:
            why = f" ({e})"
    else:
        why = " (there is no manifest.json)"
    recorded = recorded_files(manifest) if manifest is not None else []
    _check_overlap(p, out, set(OUTPUT_FILES) | {r.split("/")[0] for r in recorded})
    existing = _existing(out, p, parts)
    if existing and not overwrite:
        raise ConfigError(
            f"output.path: {path} already holds results ({summarize_changes(existing)}); "
            "choose another folder, or set output.overwrite: true (--overwrite)"
        )
    removable = _removable(out, manifest) if overwrite and manifest is not None else set()
    foreign = [name for name in existing if name not in removable and name != "manifest.json"]
    if manifest is None and existing:
        foreign = existing
    if foreign:
        raise ConfigError(
            f"output.path: {path} holds {summarize_changes(foreign)}, which no scip run recorded writing{why}; "
            "--overwrite removes only the files a scip run recorded in the folder's manifest.json, so these are "
            "left alone: move or delete them yourself, or choose another folder"
        )
    # The old manifest last: until then it still records what is left, should this be interrupted.
    for name in sorted(removable, key=lambda n: (n == "manifest.json", n)):
        if name == labels.LABELS:
            shutil.rmtree(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    for folder in _OUR_FOLDERS:
        target = out / folder
        if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
            target.rmdir()
    cells = path / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    return cells


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


VERSIONS = ("scip", "numpy", "scipy", "scikit-image", "pandas", "pyarrow", "dask", "distributed", "zarr",
             "numcodecs", "tifffile", "pydantic", "dask-jobqueue")


def _images(p: graph.Plan) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.image_id, tuple(str(x) for x in s.paths)) for s in p.dataset.sources]


def _input_files(p: graph.Plan) -> list[str]:
    return list(dict.fromkeys(f for s in p.dataset.sources for f in s.paths if f))


def partition_entries(parts: list) -> list[dict]:
    """The manifest's ``partitions``: each partition's images, and the part and summary it writes."""
    return [{"index": i, "images": len(part), "first_image": part[0].image_id, "last_image": part[-1].image_id,
             "part": part_name(i), "summary": summary_name(i)} for i, part in enumerate(parts)]


def new_manifest(p: graph.Plan, parts: list, stats: bool = True) -> dict:
    config = p.config
    dumped = config.model_dump(mode="json")
    verify = config.output.verify
    return {
        "layout": LAYOUT,
        "scip": versions()["scip"],
        "fingerprint": fingerprint(dumped, _images(p), versions()["scip"]),
        "inputs": {"verify": verify,
                   "files": input_stats(_input_files(p), content=verify == "content") if stats else {}},
        "config": dumped,
        "partitions": partition_entries(parts),
        "files": ["manifest.json", *planned_files(p, parts)],
        "reductions": None,
        # Which images are read in tiles, and pass 1's counts: what --resume must do the same way.
        "tiles": tiles.to_json(p.tiled),
        "complete": False,
    }


def resumable(out: Path, p: graph.Plan, parts: list) -> dict:
    """The manifest of the interrupted run in ``out``, checked against this run."""
    try:
        manifest = read_manifest(out)
    except ManifestError as e:
        raise ConfigError(f"--resume: {e}") from None
    new = new_manifest(p, parts, stats=False)
    old_print, new_print = manifest["fingerprint"], new["fingerprint"]
    if old_print != new_print:
        changed = differences(manifest["config"], new["config"])
        if old_print.get("images") != new_print["images"]:
            changed.append(f"the input images ({old_print.get('n_images')} then, "
                           f"{new_print['n_images']} now, or other files)")
        if old_print.get("scip") != new_print["scip"]:
            changed.append(f"the scip version ({old_print.get('scip')} then, {new_print['scip']} now)")
        raise ConfigError(f"--resume: {out} was computed with a different run: " + "; ".join(changed or ["(format)"])
                          + ". Resume with the same config and input, or run again with --overwrite")
    inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
    recorded = inputs.get("files") if isinstance(inputs.get("files"), dict) else {}
    content = inputs.get("verify") == "content"
    if p.config.output.verify == "content" and not content:
        log.warning("scip: --resume: the first attempt recorded no content hashes (output.verify: stat); "
                    "the input is checked by size and modification time only")
    changed = changed_inputs(recorded, input_stats(_input_files(p), content=content))
    if changed:
        raise ConfigError(f"--resume: {len(changed)} input file(s) changed since the first attempt in {out}: "
                          f"{summarize_changes(changed)}. Its partitions would mix old and new input: restore the "
                          "input, or run again with --overwrite")
    return manifest


def labels_written(p: graph.Plan, parts: list, done: dict[int, PartitionSummary]) -> dict[int, PartitionSummary]:
    """The done partitions whose images' label images are all in ``labels.zarr`` (``output.labels``).

    A partition writes its label images before its part, so a done partition
    has them, unless ``labels.zarr`` lost them since (removed by hand): that
    partition is computed again rather than leaving holes in the labels.
    """
    written = set(labels.images(graph.labels_root(p.config)))
    kept = {}
    for i, summary in done.items():
        stopped = {str(row.get("image_id")) for row in summary.skipped if row.get("kind") == "image"}
        missing = [s.image_id for s in parts[i] if s.image_id not in stopped and s.image_id not in written]
        if missing:
            log.info("scip: --resume: partition %d is computed again: no label images of %s in %s", i,
                     summarize_changes(missing), labels.LABELS)
        else:
            kept[i] = summary
    return kept


def done_partitions(out: Path, n: int) -> dict[int, PartitionSummary]:
    """Summaries of the partitions already complete in ``out``: those whose part verifies against its summary."""
    done, redo = {}, []
    for i in range(n):
        try:
            done[i] = load_partition(out, i)
        except PartitionUnverified as e:
            if (out / summary_name(i)).exists() or (out / part_name(i)).exists():
                redo.append(f"part-{i:05d} ({e})")
    if redo:
        log.info("scip: --resume: %d partition(s) do not verify and are computed again: %s", len(redo),
                 summarize_changes(redo))
    return done
