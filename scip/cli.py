"""The ``scip`` command.

Exit codes: 0 success, 2 invalid configuration or input (a message names
the key, the value and what is allowed), 3 the run finished but images or
cells were stopped by unexpected errors (``scip run``), 1 anything else
(the run failed: too many errors, a full disk, a cluster that did not start).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scip.yamlfile import ConfigError

if TYPE_CHECKING:
    from scip.records import Source


#: Images ``scip check`` lists without ``--all``.
_CHECK_LISTED = 20


#: ``scip run``'s exit codes, for ``scip run --help`` (README.md says the same).
RUN_EXIT_CODES = """exit codes:
  0  the run finished; every image and cell is in the table or in skipped.csv with its reason
  1  the run failed: more unexpected errors than errors.max (stopped early; run.json has
     status failed), a full disk, a cluster that did not start, or another unexpected failure
  2  invalid configuration or input (the message names the key and the value)
  3  the run finished with unexpected errors (at most errors.max): images or cells stopped by
     an exception that is a bug, not a data problem; see run.json (errors) and skipped.csv"""


def _verbosity() -> argparse.ArgumentParser:
    """``-q`` / ``-v``, accepted before and after the subcommand (``scip -q run`` and ``scip run -q``)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: the subcommand's parser must not reset what was given before the subcommand.
    loud = common.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                      help="only warnings and errors; no progress bars")
    loud.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                      help="more detail: scip's debug messages (with --version: versions of the main dependencies)")
    return common


def _parser() -> argparse.ArgumentParser:
    common = _verbosity()
    parser = argparse.ArgumentParser(prog="scip", parents=[common],
                                     description="Per-cell feature tables from microscopy and imaging flow cytometry.")
    parser.add_argument("--version", action="store_true", help="print scip's version (with -v: its dependencies' too)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser = sub.add_parser

    def with_common(name: str, **kwargs) -> argparse.ArgumentParser:
        return add_parser(name, parents=[common], **kwargs)

    sub.add_parser = with_common  # every subcommand takes -q / -v

    run = sub.add_parser("run", help="run the pipeline described by a config file", epilog=RUN_EXIT_CODES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", type=Path, help="YAML config (see docs/config.md)")
    slide = sub.add_parser("slide", help="alias: scip run with every image read in tiles (a slide config)",
                           description="A slide config run as `scip run` with tiles.mode: always and "
                                       "output.labels: true (see docs/wholeslide.md).")
    slide.add_argument("config", type=Path, help="YAML slide config (see docs/wholeslide.md)")
    # `scip slide` is `scip run` on a translated config: the same options.
    for command in (run, slide):
        command.add_argument("--output", type=Path, help="output folder (overrides output.path)")
        command.add_argument("--overwrite", action="store_true", default=None,
                             help="replace results already in the output folder")
        command.add_argument("--scheduler", help="address of a running Dask scheduler, or 'synchronous'")
        command.add_argument("--workers", type=int, help="local cluster: number of worker processes")
        command.add_argument("--threads", type=int, help="local cluster: threads per worker")
        command.add_argument("--memory-limit", help="local cluster: memory per worker, e.g. '4GiB' or 'auto'")
        command.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
        command.add_argument("--resume", action="store_true",
                             help="continue an interrupted run in its output folder: compute only the missing "
                                  "partitions")
        command.add_argument("--cluster", choices=("local", "slurm"),
                             help="where workers start: this machine, or SLURM jobs (the config's cluster.slurm "
                                  "section, or defaults)")
        command.add_argument("--gpu-workers", type=int,
                             help="local cluster: workers with the GPU resource (one per GPU with dask-cuda; "
                                  "without GPUs, workers that take the segmentation tasks but compute on the CPU)")
        command.add_argument("--retries", type=int, help="times a failed task is retried (default 2)")

    check = sub.add_parser("check", help="validate a config and list its images, without running")
    check.add_argument("config", type=Path)
    check.add_argument("--all", action="store_true", help=f"list every image (default: the first {_CHECK_LISTED})")

    example = sub.add_parser("example-data", help="write the built-in synthetic example data set")
    example.add_argument("path", type=Path, help="folder to write into")
    example.add_argument("--events", type=int, default=500, help="imaging-flow-cytometry events (default 500)")
    example.add_argument("--fields", type=int, default=4, help="multi-cell fields of view (default 4)")
    example.add_argument("--stacks", type=int, default=2, help="z stacks of nuclei, for input.z: stitch (default 2)")
    example.add_argument("--seed", type=int, default=0)

    features = sub.add_parser("features", help="describe the feature columns")
    features.add_argument("--list", action="store_true", required=True, help="list every column with definition and unit")
    features.add_argument("--channels", default="ch0", help="comma-separated channel names (default ch0)")
    features.add_argument("--mask", default="cell", help="mask name(s), comma-separated (default cell)")
    features.add_argument("--config", type=Path, help="take families and parameters from this config's 'features' section")
    features.add_argument("--micrometres", action="store_true",
                          help="add the _um/_um2 columns a run adds for images with a pixel size (docs: formats)")
    form = features.add_mutually_exclusive_group()
    form.add_argument("--names", action="store_true", help="print column names only, one per line")
    form.add_argument("--markdown", action="store_true", help="print a markdown table with <mask> and <channel> placeholders")
    features.add_argument("--naming", choices=["scip", "cellprofiler"], default="scip",
                          help="cellprofiler: each column's CellProfiler name beside its scip name (docs/features.md)")

    classify = sub.add_parser("classify", help="cross-validate and fit a cell classifier from a labels file",
                              description="Join labels to the cell table, cross-validate an XGBoost classifier "
                                          "and fit it on all labelled cells (see docs: classification).")
    classify.add_argument("output_dir", type=Path, help="a run's output folder (or a cell table file)")
    classify.add_argument("--labels", type=Path, required=True, help="CSV, TSV or parquet file of labels")
    classify.add_argument("--on", required=True,
                          help="comma-separated key columns in both files, e.g. meta_image_id,meta_label")
    classify.add_argument("--target", required=True, help="column of the labels file holding the class")
    classify.add_argument("--group", help="keep cells with the same value of this column in one fold (e.g. meta_image_id)")
    classify.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    classify.add_argument("--seed", type=int, default=0)
    classify.add_argument("--out", type=Path, help="results folder (default <output_dir>/classification)")
    classify.add_argument("--max-nan", type=float, default=0.5,
                          help="drop features NaN in more than this fraction of labelled cells (default 0.5)")
    classify.add_argument("--trees", type=int, help="number of boosted trees (default 200)")
    classify.add_argument("--jobs", type=int, help="XGBoost threads (default all cores)")

    predict = sub.add_parser("predict", help="apply a classifier written by 'scip classify' to a cell table")
    predict.add_argument("model_dir", type=Path, help="folder with model.json and model_meta.json")
    predict.add_argument("output_dir", type=Path, help="a run's output folder (or a cell table file)")
    predict.add_argument("--out", type=Path, help="CSV to write (default predictions.csv in the run's output folder)")
    predict.add_argument("--jobs", type=int, help="XGBoost threads (default all cores)")
    predict.add_argument("--labels", type=Path,
                         help="score the predictions against this labels file (CSV, TSV or parquet, as scip classify "
                              "takes): balanced accuracy, per-class recall and the confusion matrix, printed and "
                              "written to <predictions>_scores.json")
    predict.add_argument("--on", help="with --labels: key columns (default: those the model was trained with)")
    predict.add_argument("--target", help="with --labels: the class column (default: the model's target)")

    rep = sub.add_parser("report", help="(re)write report.html of a run's output folder")
    rep.add_argument("output_dir", type=Path, help="a run's output folder")
    rep.add_argument("--group", help="group the montage and histograms by this column or metadata field")
    rep.add_argument("--features", help="comma-separated feature columns to plot (default area and mean intensities)")

    trn = sub.add_parser("train", help="train or fine-tune a U-Net or superpixel-GNN segmentation model (needs torch)",
                         description="Train a U-Net model from image/label folders as a training config describes "
                                     "(see docs/segmentation.md), or fine-tune an existing model; a config with "
                                     "'kind: superpixel_gnn' trains a superpixel graph network instead.")
    trn.add_argument("config", type=Path, help="training YAML, e.g. examples/train_nuclei.yml")
    trn.add_argument("--output", type=Path, help="output folder (overrides the config's output)")
    trn.add_argument("--finetune", metavar="MODEL", help="start from this model: a built-in name (nuclei) or a file")
    trn.add_argument("--freeze", metavar="SCHEDULE",
                     help="fine-tuning schedule: all (every layer trains), encoder (encoder convolutions fixed, its "
                          "batch norms adapt), decoder (only decoder and head train), last:K (only the last K blocks)")
    trn.add_argument("--epochs", type=int, help="most epochs (overrides the config)")
    trn.add_argument("--resume", action="store_true", help="continue from checkpoint.pt in the output folder")

    exp = sub.add_parser("export-model", help="export a U-Net model to ONNX, checked against torch with onnxruntime")
    exp.add_argument("model", help="a built-in model name (nuclei) or a model file")
    exp.add_argument("--onnx", type=Path, required=True, metavar="OUT", help="ONNX file to write")
    exp.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    cluster = {k: v for k, v in {"scheduler": args.scheduler, "workers": args.workers, "threads": args.threads,
                                 "memory_limit": args.memory_limit, "gpu_workers": args.gpu_workers,
                                 "retries": args.retries}.items() if v is not None}
    if args.cluster is not None:
        cluster["slurm"] = {} if args.cluster == "slurm" else None
    # A command-line path is relative to where the command runs, not to the config file.
    output = {k: v for k, v in {"path": str(args.output.resolve()) if args.output else None,
                                "overwrite": args.overwrite}.items() if v is not None}
    return {k: v for k, v in {"cluster": cluster, "output": output}.items() if v}


def _cmd_run(args: argparse.Namespace) -> int:
    from scip.config import load_config
    from scip.engine.warm import start_early

    config = load_config(args.config, overrides=_overrides(args))
    # Before the imports below (a second or more): compiling the largest feature kernel meanwhile uses the core
    # they leave idle on a small machine.
    early = start_early(config)
    try:
        from scip.run import run

        result = run(config, progress=not args.no_progress, resume=args.resume, early=early)
    finally:
        if early is not None:
            early.stop()
    cells = result.summary["counts"]["cells"]
    images = result.summary["counts"]["images"]
    print(f"scip: {images['total']} images, {cells['found']} cells found, {cells['exported']} exported, "
          f"{cells['skipped']} cells and {images['skipped']} images skipped (see skipped.csv)")
    if "evaluation" in result.summary:
        ev = result.summary["evaluation"]
        print(f"scip: against ground truth: recall {ev['recall']}, precision {ev['precision']} "
              f"({ev['matched']}/{ev['truth_cells']} true cells found at IoU {ev['iou_threshold']}); "
              f"{ev['exported_matched']} of them exported")
    print(f"scip: results in {result.output.resolve()}  (table: {result.table.resolve()})")
    for entry in result.summary.get("reductions", {}).get("filters", []):
        print(f"scip: filter {entry['filter']}: {entry['cells_dropped']} of {entry['cells_measured']} cells dropped")
    if (result.output / "report.html").is_file():
        print(f"scip: report: {(result.output / 'report.html').resolve()}")
    errors = result.summary.get("errors", [])
    if result.summary.get("status") == "finished_with_errors":
        first = errors[0] if errors else {}
        print(f"scip: finished with {result.summary['counts']['errors']} unexpected error(s) (errors.max = "
              f"{result.summary.get('errors_max')}), e.g. {first.get('message', '?')} at step {first.get('step', '?')} "
              f"on image {first.get('image_id', '?')}; tracebacks in {(result.output / 'run.json').resolve()}",
              file=sys.stderr)
        return 3
    return 0


def _cmd_slide(args: argparse.Namespace) -> int:
    from scip.slide import segment_slide

    result = segment_slide(args.config, progress=not args.no_progress, resume=args.resume,
                           overrides=_overrides(args))
    for image in result.summary["tiles"]["images"]:
        print(f"scip: {image['image_id']}: {image['objects']} objects in {image['tiles']} tiles of {image['size']} px "
              f"(margin {image['margin']} px); {image['cut']} touch a tile's margin edge (larger than the margin "
              "allows)")
    print(f"scip: results in {result.output.resolve()}  (labels: {(result.output / 'labels.zarr').resolve()}, "
          f"table: {result.table.resolve()})")
    return 0

def _cmd_check(args: argparse.Namespace) -> int:
    from scip.run import prepare

    p = prepare(args.config)
    d = p.dataset
    print(f"config OK: {len(d.sources)} images ({d.format}), channels: {', '.join(d.channels)}")
    if d.z_planes is not None and d.z_planes > 1:
        z = p.config.input.z
        what = ("segmented plane by plane and stitched into 3-D objects" if z == "stitch"
                else f"plane {z} used" if isinstance(z, int) else f"projected by {z}")
        print(f"z stacks of {d.z_planes} planes, {what}")
    print(f"segment: {p.config.segment.method} on channel {p.config.segment.channel!r}; {len(p.columns)} output columns")
    c = p.config
    steps = [name for name, on in (("illumination correction", c.illumination is not None),
                                   ("normalization", c.normalize is not None),
                                   (f"{len(c.filters)} filter(s)", bool(c.filters))) if on]
    if steps:
        passes = 2 if c.illumination is not None and c.illumination.reuse is None else 1
        print(f"dataset-wide: {', '.join(steps)}; the input is read {passes} time(s)")
    if d.unmatched:
        print(f"{len(d.unmatched)} files do not match input.pattern, e.g. {d.unmatched[0]}")
    if d.excluded:
        print(f"{len(d.excluded)} excluded by input.exclude, e.g. {d.excluded[0]}")
    shown = d.sources if args.all else d.sources[:_CHECK_LISTED]
    print(f"images ({_reading_rule(p)}):")
    for source in shown:
        print(f"  {_describe_image(source, d.format)}{_image_header(p, source)}")
    if len(shown) < len(d.sources):
        print(f"  ... and {len(d.sources) - len(shown)} more (scip check --all lists every image)")
    return 0


def _read_yaml_first(path: Path) -> None:
    """Refuse a file that is not a sane YAML document before the heavy imports (Dask, numba) are paid."""
    from scip.yamlfile import parse_yaml

    try:
        data = Path(path).read_bytes()
    except OSError:
        return  # the config loader says what is wrong with the path, naming it
    parse_yaml(data, str(path))


def _describe_image(source: "Source", fmt: str) -> str:
    """One line of ``scip check``'s image list: id, where its pixels are, and what is missing."""
    if fmt == "ifc_zarr":
        where = f"event {source.index} of {source.paths[0]}"
    else:
        where = ", ".join(p for p in dict.fromkeys(source.paths) if p)
    missing = source.locator[1] if source.locator[:1] == ("missing",) else ()
    note = f"  (no file for channel(s) {', '.join(missing)}: will be skipped)" if missing else ""
    return f"{source.image_id}: {where}{note}"


def _reading_rule(p) -> str:
    """How ``scip run`` decides, for this config, whether an image is read whole or in tiles."""
    from scip.io.limits import format_bytes
    from scip.steps.tiles import TILED_FORMATS

    c = p.config
    if p.dataset.format not in TILED_FORMATS or c.input.z == "stitch" or c.tiles.mode == "never":
        return "each read whole" + (f"; over {format_bytes(p.budget.bytes)} decoded: skipped" if p.budget else "")
    if c.tiles.mode == "always":
        return f"each read in tiles of {c.tiles.size} px"
    if p.budget is None:
        return ("read whole, or in tiles when over a quarter of the smallest worker's memory once decoded "
                "(input.max_image_bytes: auto, decided when the workers are up)")
    return f"read whole, or in tiles when over {format_bytes(p.budget.bytes)} decoded ({p.budget.origin})"


def _image_header(p, source: "Source") -> str:
    """What an image's header says (size, type, channels, decoded bytes) and how the run reads it; reads no pixels."""
    from scip.io.limits import format_bytes
    from scip.steps.tiles import WindowError, window_reader

    c = p.config
    try:
        reader = window_reader(p.dataset, source, c.input.z if c.input.z != "stitch" else None)
    except WindowError:
        return ""  # IFC events, z stacks kept whole: nothing more to say before reading
    except Exception as e:  # noqa: BLE001 - a file the run will skip: say so, the run gives the reason
        return f"  (header unreadable: {type(e).__name__}: {e})"
    h, w = reader.shape
    if c.input.z == "stitch":
        how = "whole"
    elif c.tiles.mode == "always" or (c.tiles.mode == "auto" and p.budget is not None
                                     and reader.declared_bytes > p.budget.bytes):
        how = "in tiles"
    elif c.tiles.mode == "never" and p.budget is not None and reader.declared_bytes > p.budget.bytes:
        how = "skipped (over the budget)"
    elif c.tiles.mode == "auto" and p.budget is None and p.dataset.format != "ifc_zarr":
        how = "whole unless over the workers' budget"
    else:
        how = "whole"
    return (f"  [{h} x {w} px, {reader.dtype}, {len(p.dataset.channels)} channel(s), "
            f"{format_bytes(reader.declared_bytes)} decoded; read {how}]")


def _cmd_example(args: argparse.Namespace) -> int:
    from scip.datasets import write_example

    paths = write_example(args.path, n_events=args.events, n_fields=args.fields, n_stacks=args.stacks, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from scip.config import FeaturesConfig, load_config
    from scip.features import columns, micrometre_columns
    from scip.features.reference import markdown_table

    section = load_config(args.config).features if args.config else FeaturesConfig()
    families, params = tuple(section.families), section.params()
    if args.naming == "cellprofiler":
        from scip.features.cellprofiler import mapping, mapping_markdown

        if args.markdown:
            print(mapping_markdown(families, params), end="")
            return 0
        names = [c.name for m in args.mask.split(",") for c in columns(
            [ch.strip() for ch in args.channels.split(",")], families, mask_name=m.strip(), params=params)]
        for row in mapping(names, edge_width=params.edge_width).itertuples():
            print(row.cellprofiler if args.names else f"{row.scip}\t{row.cellprofiler}\t{'shared' if row.shared else 'scip'}")
        return 0
    if args.markdown:
        print(markdown_table(families, params), end="")
        return 0
    channels = [ch.strip() for ch in args.channels.split(",")]
    for mask in (m.strip() for m in args.mask.split(",")):
        found = columns(channels, families, mask_name=mask, params=params)
        for c in [*found, *(micrometre_columns(found) if args.micrometres else [])]:
            print(c.name if args.names else f"{c.name}\t{c.unit}\t{c.definition}")
    if args.config and load_config(args.config).micronuclei is not None:
        from scip.steps.micronuclei import DESCRIPTIONS

        for name, (unit, definition) in DESCRIPTIONS.items():
            print(name if args.names else f"{name}\t{unit}\t{definition}")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    import warnings

    from scip.classify import ClassifyError, ClassifyWarning, classify

    if args.trees is not None and args.trees < 1:
        raise ClassifyError(f"--trees must be at least 1, got {args.trees}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClassifyWarning)  # printed below, once
        result = classify(args.output_dir, args.labels, on=args.on, target=args.target, group=args.group,
                          folds=args.folds, seed=args.seed, out=args.out, max_nan=args.max_nan, n_jobs=args.jobs,
                          params={"n_estimators": args.trees} if args.trees else None)
    for message in result.warnings:
        print(f"scip: warning: {message}", file=sys.stderr)
    c = result.counts
    grouped = f", grouped by {args.group}" if args.group else ""
    print(f"scip: {c['cells_labelled']} labelled cells ({c['labels_matched']} of {c['labels']} labels matched, "
          f"{c['cells_unlabelled']} cells without a label), {len(result.classes)} classes: "
          f"{', '.join(map(str, result.classes))}")
    print(f"scip: {len(result.features)} features used, {len(result.dropped_features)} dropped; "
          f"{result.folds}-fold cross-validation{grouped}: balanced accuracy {result.balanced_accuracy:.3f} "
          f"(folds {min(result.balanced_accuracy_folds):.3f} to {max(result.balanced_accuracy_folds):.3f}), "
          f"accuracy {result.accuracy:.3f}")
    print(f"scip: results in {result.out.resolve()}")
    _refresh_report(args.output_dir)
    return 0


def _refresh_report(output_dir: Path) -> None:
    """Rewrite the run's report so it shows the new classification; a table file has no report."""
    from scip import report

    if (Path(output_dir) / "run.json").is_file():
        path = report.write_report(output_dir)
        print(f"scip: report updated: {path.resolve()}")


def _cmd_report(args: argparse.Namespace) -> int:
    from scip import report

    if not (args.output_dir / "run.json").is_file():
        raise ConfigError(f"{args.output_dir} holds no run.json: not the output folder of a scip run")
    features = [f.strip() for f in args.features.split(",")] if args.features else None
    try:
        path = report.write_report(args.output_dir, group_by=args.group, features=features)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(f"scip: report in {path.resolve()}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from scip.classify import predict, run_folder

    out = args.out if args.out is not None else run_folder(args.output_dir) / "predictions.csv"
    if args.labels is None and (args.on or args.target):
        raise ConfigError("--on and --target go with --labels (the labels file to score the predictions against)")
    frame = predict(args.model_dir, args.output_dir, out=out, n_jobs=args.jobs)
    counts = frame["predicted"].value_counts()
    print(f"scip: {len(frame)} cells predicted: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"scip: predictions in {Path(out).resolve()}")
    if args.labels is not None:
        _score(args, frame, Path(out))
    return 0


def _score(args: argparse.Namespace, frame, out: Path) -> None:
    """``scip predict --labels``: score, print and write the scores beside the predictions."""
    import json
    import warnings

    from scip.classify import ClassifyWarning, score_predictions, scores_path

    meta = json.loads((args.model_dir / "model_meta.json").read_text())
    on, target = args.on or meta.get("on"), args.target or meta.get("target")
    if not on or not target:
        raise ConfigError(f"{args.model_dir / 'model_meta.json'} names no key columns or target: give --on and --target")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClassifyWarning)  # printed below, once
        s = score_predictions(frame, args.labels, on, target, classes=meta.get("classes") or (),
                              out=scores_path(out))
    for message in s["warnings"]:
        print(f"scip: warning: {message}", file=sys.stderr)
    c = s["counts"]
    print(f"scip: against {args.labels}: {c['cells_labelled']} labelled cells ({c['labels_matched']} of "
          f"{c['labels']} labels matched): balanced accuracy {s['balanced_accuracy']:.3f}, "
          f"accuracy {s['accuracy']:.3f}")
    print("scip: recall per class: " + ", ".join(
        f"{k} {v['recall']:.3f} (n={v['support']})" for k, v in s["per_class"].items() if v["support"]))
    corner = "true\\pred"
    width = max(len(str(x)) for x in [*s["classes"], corner, *(n for row in s["confusion"] for n in row)])
    print("scip: confusion matrix (rows: true class, columns: predicted class):")
    for row in [[corner, *s["classes"]], *([name, *counts] for name, counts in zip(s["classes"], s["confusion"]))]:
        print("  " + " ".join(f"{x:>{width}}" for x in row))
    print(f"scip: scores in {scores_path(out).resolve()}")


def _unet_errors():
    """Model-file and data problems of train / export-model are input errors (exit code 2)."""
    from scip.segment.unet import require_torch

    try:
        require_torch()
    except ImportError as e:
        raise ConfigError(str(e)) from None
    from scip.segment.unet.modelfile import ModelFileError

    return (ModelFileError, FileNotFoundError)


def _cmd_train(args: argparse.Namespace) -> int:
    from scip.segment.superpixel_gnn.trainconfig import training_kind

    if training_kind(args.config) == "superpixel_gnn":
        from scip.segment.superpixel_gnn.command import train_command

        return train_command(args.config, output=args.output, epochs=args.epochs, finetune=args.finetune,
                             freeze=args.freeze, resume=args.resume)
    errors = _unet_errors()
    from scip.segment.unet.train import train
    from scip.segment.unet.trainconfig import load_train_config

    # Command-line paths are relative to where the command runs, not to the config file.
    overrides = {k: v for k, v in {"output": str(args.output.resolve()) if args.output else None,
                                   "freeze": args.freeze, "epochs": args.epochs}.items() if v is not None}
    if args.finetune is not None:
        from scip.segment.unet.modelfile import builtin_models

        overrides["finetune"] = args.finetune if args.finetune in builtin_models() else str(Path(args.finetune).resolve())
    config = load_train_config(args.config, overrides=overrides)
    try:
        result = train(config, resume=args.resume, base_dir=args.config.resolve().parent)
    except (*errors, ValueError) as e:  # data that cannot be used: no pairs, shapes or channels that differ
        raise ConfigError(str(e)) from None
    f = result.final
    print(f"scip: kept epoch {result.best['epoch']} of {len(result.history)}: validation F1@0.5 {f['f1']:.3f}, "
          f"object Jaccard {f['object_jaccard']:.3f}, pixel Jaccard {f['pixel_jaccard']:.3f} ({result.seconds:.0f} s)")
    print(f"scip: model in {result.model.resolve()}; report in {(result.output / 'report.md').resolve()}")
    return 0


def _cmd_export_model(args: argparse.Namespace) -> int:
    errors = _unet_errors()
    from scip.segment.unet.export import export_onnx

    try:
        check = export_onnx(args.model, args.onnx, opset=args.opset)
    except errors as e:
        raise ConfigError(str(e)) from None
    print(f"scip: ONNX model in {args.onnx.resolve()}; onnxruntime vs torch on a {check.shape} test input: "
          f"largest difference {check.max_abs_diff:.2e} in probability")
    return 0


#: Packages ``scip -v --version`` names besides scip, when installed.
_VERSION_DETAILS = ("numpy", "pandas", "dask", "distributed", "zarr", "tifffile", "numba", "torch", "xgboost",
                    "xgboost-cpu")


def version_text(details: bool = False) -> str:
    """What ``scip --version`` prints: one line, plus a line per main dependency with ``details``.

    Parameters
    ----------
    details : bool
        Add Python's and the installed dependencies' versions (from package metadata: nothing is imported).

    Returns
    -------
    str
    """
    import platform
    from importlib import metadata

    import scip

    try:
        own = metadata.version("scip")
    except metadata.PackageNotFoundError:  # a source checkout on sys.path, not installed
        own = scip.__version__
    lines = [f"scip {own} (python {platform.python_version()}, {Path(scip.__file__).parent})"]
    if details:
        for name in _VERSION_DETAILS:
            try:
                lines.append(f"  {name} {metadata.version(name)}")
            except metadata.PackageNotFoundError:
                continue
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scip`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", 0)
    if args.version:
        print(version_text(verbose > 0))
        return 0
    if args.command is None:
        parser.error("a command is required (scip --help lists them)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("scip").setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    if quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    if args.command in ("run", "slide", "check"):
        try:
            _read_yaml_first(args.config)
        except ConfigError as e:
            print(f"scip: error: {e}", file=sys.stderr)
            return 2
    from scip.engine.cluster import ClusterError, quiet_logs
    from scip.failures import DiskFull, RunFailed

    quiet_logs()
    commands = {"run": _cmd_run, "slide": _cmd_slide, "check": _cmd_check, "example-data": _cmd_example, "features": _cmd_features,
                "classify": _cmd_classify, "predict": _cmd_predict, "report": _cmd_report, "train": _cmd_train,
                "export-model": _cmd_export_model}
    try:
        return commands[args.command](args)
    except ConfigError as e:
        print(f"scip: error: {e}", file=sys.stderr)
        return 2
    except ClusterError as e:
        print(f"scip: cluster error: {e}", file=sys.stderr)
        return 1
    except DiskFull as e:
        again = f"scip {args.command} {args.config}" + (f" --output {args.output}" if getattr(args, "output", None) else "")
        print(f"scip: the disk holding {e.folder} is full ({e.free}): free space and run `{again} --resume`",
              file=sys.stderr)
        return 1
    except RunFailed as e:
        print(f"scip: run failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = (f"; `scip {args.command} ... --resume` continues from the partitions already written"
                if args.command in ("run", "slide") else "")
        print(f"scip: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a message, not a bare traceback, unless asked for
        if args.debug:
            raise
        print(f"scip: unexpected error: {type(e).__name__}: {e}\n(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
