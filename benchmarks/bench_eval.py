"""Evaluation against ground truth: ``match_labels``, ``evaluate_image`` and ``attach_truth``, before vs now.

The previous implementation is ``scip/metrics.py`` and ``scip/io/ground_truth.py``
at ``--before`` (a git revision), loaded from ``git show`` next to this
checkout's; every pair is timed alternated in one process (``_timing.alternate``),
medians of ``--repeats`` rounds, and the results are compared field by field.

(a) IFC: the label images of an IFC ground-truth store (``--labels``, e.g. the
    5,000 events of the demo data) matched against a perturbed copy of
    themselves (even events shifted one pixel, odd ones eroded at label
    boundaries; every label times 3), as ``evaluate_image`` does at the
    default IoU 0.5; then ``evaluate_image`` itself on records holding them.
(b) A 2048² field of about 2,000 touching cells
    (``scip.segment._flows_synthetic.cell_labels``) against a copy shifted 3
    pixels and relabelled ``2 * label + 5``; the same with every label plus
    2**40 (ranked by sorting), and a field of about 20,000 cells (too many for
    a dense contingency table).
(c) ``attach_truth`` over the store in partitions of ``--partition`` events,
    as the load tasks call it (the new one parses the header once per
    process: the warm-up round pays it).

    python benchmarks/bench_eval.py --labels /tmp/s12/ab1/data/ifc_labels.zarr --before faceebe --repeats 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _timing import alternate, load_module  # noqa: E402

from scip import metrics  # noqa: E402
from scip.io import ground_truth, ifc_zarr  # noqa: E402
from scip.records import ImageRecord, Source  # noqa: E402
from scip.segment._flows_synthetic import cell_labels  # noqa: E402
from scip.steps import evaluate  # noqa: E402


def load_before(rev: str, path: str, name: str):
    """The module at ``path`` as of git revision ``rev``, imported under ``name``."""
    text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=HERE.parent, check=True,
                          capture_output=True, text=True).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(text)
    return load_module(name, file)


def perturbed(labels: np.ndarray, i: int) -> np.ndarray:
    if i % 2:
        inner = ndimage.minimum_filter(labels, 3) == ndimage.maximum_filter(labels, 3)
        out = np.where(inner, labels, 0)
    else:
        out = np.roll(labels, 1, axis=i % 4 // 2)
    return np.where(out > 0, out * 3, 0).astype(labels.dtype)


def same(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) if isinstance(getattr(a, f), np.ndarray)
               else getattr(a, f) == getattr(b, f) for f in a.__dataclass_fields__)


def report(name: str, timings: dict, per: int) -> None:
    old, new = timings["before"].median, timings["now"].median
    print(f"{name}: before {old:.4f} s, now {new:.4f} s (median of {len(timings['now'].times)}), "
          f"{old / new:.2f}x; per item before {old / per * 1e3:.4f} ms, now {new / per * 1e3:.4f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", required=True, help="IFC ground-truth zarr store")
    parser.add_argument("--before", default="faceebe", help="git revision of the previous implementation")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--partition", type=int, default=64)
    args = parser.parse_args()
    old_metrics = load_before(args.before, "scip/metrics.py", "metrics_before")
    old_truth = load_before(args.before, "scip/io/ground_truth.py", "ground_truth_before")

    header = ifc_zarr.read_ifc_header(args.labels)
    truth = [img[0] for _, img in ifc_zarr.read_ifc_events(header, range(header.n_events))]
    preds = [perturbed(t, i) for i, t in enumerate(truth)]
    n = len(truth)
    assert all(same(old_metrics.match_labels(t, p), metrics.match_labels(t, p)) for t, p in zip(truth, preds))
    print(f"(a) {n} events, {sum(np.unique(t).size - 1 for t in truth)} true cells, results identical")
    report("match_labels, IFC", alternate({
        "before": lambda: [old_metrics.match_labels(t, p) for t, p in zip(truth, preds)],
        "now": lambda: [metrics.match_labels(t, p) for t, p in zip(truth, preds)]}, args.repeats), n)

    records = [ImageRecord(source=Source(str(i), i, ()), channels=("c",), labels={"cell": p}, truth=t)
               for i, (t, p) in enumerate(zip(truth, preds))]

    def evaluate_with(match):
        evaluate.match_labels = match
        try:
            return [evaluate.evaluate_image(r, "cell") for r in records]
        finally:
            evaluate.match_labels = metrics.match_labels

    assert evaluate_with(old_metrics.match_labels) == evaluate_with(metrics.match_labels)
    report("evaluate_image, IFC", alternate({"before": lambda: evaluate_with(old_metrics.match_labels),
                                             "now": lambda: evaluate_with(metrics.match_labels)}, args.repeats), n)

    field = cell_labels((2048, 2048), 2000, seed=0)
    moved = np.roll(field, 3, axis=1)
    moved = np.where(moved > 0, 2 * moved + 5, 0).astype(np.int32)
    a, b = old_metrics.match_labels(field, moved), metrics.match_labels(field, moved)
    assert same(a, b)
    print(f"(b) 2048^2 field: {a.n_true} cells, {a.tp} matched, results identical")
    report("match_labels, 2048^2 field", alternate({
        "before": lambda: old_metrics.match_labels(field, moved),
        "now": lambda: metrics.match_labels(field, moved)}, args.repeats), 1)

    # The slower paths: labels too large to index a table (ranked by sorting), and too many objects for a
    # dense contingency table (its non-zero cells found by sorting the pairs' codes).
    huge = np.where(field > 0, field.astype(np.int64) + 2**40, 0), np.where(moved > 0, moved.astype(np.int64) + 2**40, 0)
    many = cell_labels((2048, 2048), 20000, seed=1)
    many = many, np.where(np.roll(many, 1, axis=0) > 0, 3 * np.roll(many, 1, axis=0), 0).astype(np.int32)
    for name, (g, p) in (("labels + 2**40", huge), (f"{int(many[0].max())} cells", many)):
        a, b = old_metrics.match_labels(g, p), metrics.match_labels(g, p)
        assert same(a, b)
        report(f"match_labels, 2048^2 field, {name}", alternate({
            "before": lambda: old_metrics.match_labels(g, p),
            "now": lambda: metrics.match_labels(g, p)}, args.repeats), 1)

    sources = [Source(str(i), i, ()) for i in range(n)]
    parts = [[ImageRecord(source=s, channels=("c",)) for s in sources[i:i + args.partition]]
             for i in range(0, n, args.partition)]

    def attach(module):
        return [module.attach_truth(part, args.labels) for part in parts]

    assert all(np.array_equal(x.truth, y.truth) for pa, pb in zip(attach(old_truth), attach(ground_truth))
               for x, y in zip(pa, pb))
    report(f"attach_truth, {len(parts)} partitions", alternate({
        "before": lambda: attach(old_truth), "now": lambda: attach(ground_truth)}, args.repeats), n)


if __name__ == "__main__":
    main()
