"""The ``scip`` command.

Exit codes: 0 success, 2 invalid configuration or input (a message names
the key, the value and what is allowed), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from scip.config import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scip", description="Per-cell feature tables from microscopy and imaging flow cytometry.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipeline described by a config file")
    run.add_argument("config", type=Path, help="YAML config (see docs/config.md)")
    run.add_argument("--output", type=Path, help="output folder (overrides output.path)")
    run.add_argument("--overwrite", action="store_true", default=None, help="replace results already in the output folder")
    run.add_argument("--scheduler", help="address of a running Dask scheduler, or 'synchronous'")
    run.add_argument("--workers", type=int, help="local cluster: number of worker processes")
    run.add_argument("--threads", type=int, help="local cluster: threads per worker")
    run.add_argument("--memory-limit", help="local cluster: memory per worker, e.g. '4GiB' or 'auto'")
    run.add_argument("--no-progress", action="store_true", help="do not show the progress bar")

    check = sub.add_parser("check", help="validate a config and list its images, without running")
    check.add_argument("config", type=Path)

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
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    cluster = {k: v for k, v in {"scheduler": args.scheduler, "workers": args.workers, "threads": args.threads,
                                 "memory_limit": args.memory_limit}.items() if v is not None}
    # A command-line path is relative to where the command runs, not to the config file.
    output = {k: v for k, v in {"path": str(args.output.resolve()) if args.output else None,
                                "overwrite": args.overwrite}.items() if v is not None}
    return {k: v for k, v in {"cluster": cluster, "output": output}.items() if v}


def _cmd_run(args: argparse.Namespace) -> int:
    from scip.config import load_config
    from scip.run import run

    config = load_config(args.config, overrides=_overrides(args))
    result = run(config, progress=not args.no_progress)
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
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from scip.run import prepare

    p = prepare(args.config)
    d = p.dataset
    print(f"config OK: {len(d.sources)} images ({d.format}), channels: {', '.join(d.channels)}")
    if d.z_planes is not None and d.z_planes > 1:
        print(f"z stacks of {d.z_planes} planes, projected by {p.config.input.z_projection}")
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
    return 0


def _cmd_example(args: argparse.Namespace) -> int:
    from scip.datasets import write_example

    paths = write_example(args.path, n_events=args.events, n_fields=args.fields, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from scip.config import FeaturesConfig, load_config
    from scip.features import columns
    from scip.features.reference import markdown_table

    section = load_config(args.config).features if args.config else FeaturesConfig()
    families, params = tuple(section.families), section.params()
    if args.markdown:
        print(markdown_table(families, params), end="")
        return 0
    channels = [ch.strip() for ch in args.channels.split(",")]
    for mask in (m.strip() for m in args.mask.split(",")):
        for c in columns(channels, families, mask_name=mask, params=params):
            print(c.name if args.names else f"{c.name}\t{c.unit}\t{c.definition}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scip`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from scip.cluster import quiet_logs

    quiet_logs()
    commands = {"run": _cmd_run, "check": _cmd_check, "example-data": _cmd_example, "features": _cmd_features}
    try:
        return commands[args.command](args)
    except ConfigError as e:
        print(f"scip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scip: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a message, not a bare traceback, unless asked for
        if args.debug:
            raise
        print(f"scip: unexpected error: {type(e).__name__}: {e}\n(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
