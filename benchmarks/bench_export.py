"""Per-partition time of the export task (``graph._write``) of another checkout against this one, alternated.

The records handed to ``_write`` are captured once from a synchronous run of
the demo pipeline (the ``examples/config.yml`` steps on an IFC zarr, for
instance the 5,000 events of ``bench_scaling.write_example``) and pickled.
Both writers then take turns on the same partitions in one process
(``_timing.alternate``); the other checkout's ``cells_frame``, ``part_table``,
``write_part`` and ``arrow_schema`` are loaded from its files and composed as
its ``_write`` was at the time of writing (session 13). Its parts and
``report_table`` must read back equal to this checkout's before anything is
timed. Besides the whole task, its pieces are timed: ``cells_frame`` and
``part_table`` (old, new), and ``pq.write_table`` with pyarrow's default options
and with :func:`scip.io.parquet.write_options`.

Usage::

    python benchmarks/bench_export.py --old /path/to/main-export --data /tmp/s12/ab1/data \
        --records /tmp/records.pkl [--partitions 12] [--rounds 7]
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from _timing import alternate, load_module  # noqa: E402

import scip  # noqa: E402
from scip.accounting import summarize  # noqa: E402
from scip.engine import graph  # noqa: E402
from scip.io import parquet as new_parquet  # noqa: E402
from scip.io.manifest import save_partition  # noqa: E402
from scip.steps import export as new_export  # noqa: E402


def capture(data: Path, out: Path, n: int) -> None:
    """Run the demo steps synchronously on ``data`` and pickle the records of the first ``n`` writes."""
    kept = []
    original = graph._write

    def keep(records, index, directory, columns, progress, report_columns=()):
        if index < n:
            kept.append((records, index, columns, report_columns))
        return original(records, index, directory, columns, progress, report_columns)

    graph._write = keep
    with tempfile.TemporaryDirectory() as tmp:
        scip.run({
            "input": {"path": str(data / "ifc.zarr"), "channels": ["DNA", "cyto", "marker"], "images_per_partition": 64},
            "segment": {"method": "watershed", "channel": "cyto", "min_distance": 5, "remove_border": True},
            "masks": [{"name": "nucleus", "channel": "DNA"}],
            "filters": [{"measure": "signal", "channel": "cyto", "min": "otsu"}],
            "features": {"families": ["shape", "intensity", "texture", "bbox"], "distances": [3, 5], "gray_levels": 32},
            "evaluate": {"labels": str(data / "ifc_labels.zarr")},
            "output": {"path": str(Path(tmp) / "out")},
            "cluster": {"scheduler": "synchronous"},
        }, progress=False)
    graph._write = original
    out.write_bytes(pickle.dumps(sorted(kept, key=lambda k: k[1]), protocol=5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", type=Path, required=True, help="the other checkout (its scip/ folder is read)")
    ap.add_argument("--data", type=Path, help="folder with ifc.zarr and ifc_labels.zarr (to capture records)")
    ap.add_argument("--records", type=Path, required=True, help="pickled records; captured from --data if absent")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if not args.records.exists():
        capture(args.data, args.records, args.partitions)
    kept = pickle.loads(args.records.read_bytes())[:args.partitions]
    old_export = load_module("old_export", args.old / "scip" / "steps" / "export.py")
    old_parquet = load_module("old_parquet", args.old / "scip" / "io" / "parquet.py")

    def old_write(records, index, directory, columns, progress, report_columns=()):
        frame = old_export.cells_frame(records, columns)
        part = old_parquet.write_part(frame, Path(directory) / f"part-{index:05d}.parquet",
                                      old_parquet.arrow_schema(columns))
        summary = summarize(records)
        kept_columns = {c: columns[c] for c in report_columns if c in columns}
        if kept_columns:
            summary.report_table = old_parquet.part_table(frame, old_parquet.arrow_schema(kept_columns))
        save_partition(progress, index, part, summary)
        return summary

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {}
        for key in ("old", "new"):
            dirs[key] = (root / key / "cells", root / key / "progress")
            for d in dirs[key]:
                d.mkdir(parents=True)

        def every(write, key):
            cells, progress = dirs[key]
            return lambda: [write(r, i, str(cells), c, str(progress), rc) for r, i, c, rc in kept]

        old_summaries, new_summaries = every(old_write, "old")(), every(graph._write, "new")()
        for a, b in zip(old_summaries, new_summaries):
            assert a.report_table.equals(b.report_table)
        for _, i, _, _ in kept:
            a, b = (dirs[k][0] / f"part-{i:05d}.parquet" for k in ("old", "new"))
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
            assert pq.read_schema(a).metadata == pq.read_schema(b).metadata
        print(f"{len(kept)} parts and report tables equal")

        schemas = [new_parquet.arrow_schema(c) for _, _, c, _ in kept]
        frames = [new_export.cells_frame(r, c) for r, _, c, _ in kept]
        tables = [new_parquet.part_table(f, s) for f, s in zip(frames, schemas)]
        x = root / "x.parquet"
        res = alternate({
            "_write old": every(old_write, "old"),
            "_write new": every(graph._write, "new"),
            "cells_frame old": lambda: [old_export.cells_frame(r, c) for r, _, c, _ in kept],
            "cells_frame new": lambda: [new_export.cells_frame(r, c) for r, _, c, _ in kept],
            "part_table old": lambda: [old_parquet.part_table(f, s) for f, s in zip(frames, schemas)],
            "part_table new": lambda: [new_parquet.part_table(f, s) for f, s in zip(frames, schemas)],
            "pq.write_table default": lambda: [pq.write_table(t, x) for t in tables],
            "pq.write_table write_options": lambda: [pq.write_table(t, x, **new_parquet.write_options(s))
                                                     for t, s in zip(tables, schemas)],
        }, repeats=args.rounds)
        shutil.rmtree(root / "old", ignore_errors=True)
    n = len(kept)
    rows = sum(len(f) for f in frames)
    print(f"{n} partitions, {rows / n:.0f} cells x {len(schemas[0])} columns each; ms per partition, "
          f"median of {args.rounds} alternated rounds (each round's value after it)")
    for name, t in res.items():
        print(f"  {name:30s} {1000 * t.median / n:6.2f}   {' '.join(f'{1000 * v / n:.1f}' for v in t.times)}")
    print(f"  _write old / new: {res['_write old'].median / res['_write new'].median:.2f}x")


if __name__ == "__main__":
    main()
