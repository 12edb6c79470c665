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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scip", description="Per-cell feature tables from microscopy and imaging flow cytometry.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline described by a config file", epilog=RUN_EXIT_CODES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", type=Path, help="YAML config (see docs/config.md)")
    run.add_argument("--output", type=Path, help="output folder (overrides output.path)")
    run.add_argument("--overwrite", action="store_true", default=None, help="replace results already in the output folder")
    run.add_argument("--scheduler", help="address of a running Dask scheduler, or 'synchronous'")
    run.add_argument("--workers", type=int, help="local cluster: number of worker processes")
    run.add_argument("--threads", type=int, help="local cluster: threads per worker")
    run.add_argument("--memory-limit", help="local cluster: memory per worker, e.g. '4GiB' or 'auto'")
    run.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run in its output folder: compute only the missing partitions")
    run.add_argument("--cluster", choices=("local", "slurm"),
                     help="where workers start: this machine, or SLURM jobs (the config's cluster.slurm section, "
                          "or defaults)")
    run.add_argument("--gpu-workers", type=int,
                     help="local cluster: workers with the GPU resource (one per GPU with dask-cuda; without GPUs, "
                          "workers that take the segmentation tasks but compute on the CPU)")
    run.add_argument("--retries", type=int, help="times a failed task is retried (default 2)")

    slide = sub.add_parser("slide", help="alias: scip run with every image read in tiles (a slide config)",
                           description="A slide config run as `scip run` with tiles.mode: always and "
                                       "output.labels: true (see docs/wholeslide.md).")
    slide.add_argument("config", type=Path, help="YAML slide config (see docs/config.md, scip slide)")
    slide.add_argument("--output", type=Path, help="output folder (overrides output.path)")
    slide.add_argument("--overwrite", action="store_true", default=None, help="replace results in the output folder")
    slide.add_argument("--scheduler", help="address of a running Dask scheduler, or 'synchronous'")
    slide.add_argument("--workers", type=int, help="local cluster: number of worker processes")
    slide.add_argument("--threads", type=int, help="local cluster: threads per worker")
    slide.add_argument("--memory-limit", help="local cluster: memory per worker, e.g. '4GiB' or 'auto'")
    slide.add_argument("--no-progress", action="store_true", help="do not show the progress bars")

    check = sub.add_parser("check", help="validate a config and list its images, without running")
    check.add_argument("config", type=Path)
    check.add_argument("--all", action="store_true", help=f"list every image (default: the first {_CHECK_LISTED})")

    example = sub.add_parser("example-data", help="write the built-in synthetic example data set")
    example.add_argument("path", type=Path, help="folder to write into")
    example.add_argument("--events", type=int, default=500, help="imaging-flow-cytometry events (default 500)")
    example.add_argument("--fields", type=int, default=4, help="multi-cell fields of view (default 4)")
    example.add_argument("--seed", type=int, default=0)

    features = sub.add_parser("features", help="describe the feature columns")
    features.add_argument("--list", action="store_true", required=True, help="list every column with definition and unit")
    features.add_argument("--channels", default="ch0", help="comma-separated channel names (default ch0)")
    features.add_argument("--mask", default="cell", help="mask name(s), comma-separated (default cell)")
    features.add_argument("--config", type=Path, help="take families and parameters from this config's 'features' section")
    form = features.add_mutually_exclusive_group()
    form.add_argument("--names", action="store_true", help="print column names only, one per line")
    form.add_argument("--markdown", action="store_true", help="print a markdown table with <mask> and <channel> placeholders")

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
    from scip.run import run

    config = load_config(args.config, overrides=_overrides(args))
    result = run(config, progress=not args.no_progress, resume=args.resume)
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

    cluster = {k: v for k, v in {"scheduler": args.scheduler, "workers": args.workers, "threads": args.threads,
                                 "memory_limit": args.memory_limit}.items() if v is not None}
    output = {k: v for k, v in {"path": str(args.output.resolve()) if args.output else None,
                                "overwrite": args.overwrite}.items() if v is not None}
    result = segment_slide(args.config, progress=not args.no_progress,
                           overrides={k: v for k, v in {"cluster": cluster, "output": output}.items() if v})
    for image in result.summary["tiles"]["images"]:
        print(f"scip: {image['image_id']}: {image['objects']} objects in {image['tiles']} tiles of {image['size']} px "
              f"(margin {image['margin']} px); {image['cut']} touch a tile's margin edge (larger than the margin "
              "allows)")
    print(f"scip: results in {result.output.resolve()}  (labels: {(result.output / 'labels.zarr').resolve()}, "
          f"table: {result.table.resolve()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scip`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command in ("run", "slide", "check"):
        try:
            _read_yaml_first(args.config)
        except ConfigError as e:
            print(f"scip: error: {e}", file=sys.stderr)
            return 2
    from scip.cluster import ClusterError, quiet_logs
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
        again = f"scip run {args.config}" + (f" --output {args.output}" if getattr(args, "output", None) else "")
        print(f"scip: the disk holding {e.folder} is full ({e.free}): free space and run `{again} --resume`",
              file=sys.stderr)
        return 1
    except RunFailed as e:
        print(f"scip: run failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = "; `scip run ... --resume` continues from the partitions already written" if args.command == "run" else ""
        print(f"scip: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a message, not a bare traceback, unless asked for
        if args.debug:
            raise
        print(f"scip: unexpected error: {type(e).__name__}: {e}\n(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
