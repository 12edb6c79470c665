"""Run scip from Python: the same pipeline as `scip run`, then look at the table.

    python examples/run_from_python.py

Writes a small synthetic data set to examples/data/python/ and results to
examples/results/python/.
"""

from pathlib import Path

import scip
from scip.engine import graph
from scip.datasets import write_example


def main() -> None:
    here = Path(__file__).parent
    paths = write_example(here / "data" / "python", n_events=100, n_fields=1, seed=1)

    config = {
        "input": {"path": str(paths["ifc"]), "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "evaluate": {"labels": str(paths["ifc_labels"])},
        "output": {"path": str(here / "results" / "python"), "overwrite": True},
    }

    # Lazy: validate, list the events and build the graph without reading pixels.
    plan = scip.prepare(config)
    frame = graph.build_dataframe(plan)
    print(f"{len(plan.dataset.sources)} events, {len(frame.columns)} columns, {frame.npartitions} partitions (not computed yet)")

    # The whole run on a local cluster sized to this machine (pass client=... to use your own).
    result = scip.run(config)
    table = result.read()
    print(table.filter(like="feat_cell_intensity_mean").describe().T[["mean", "std"]])
    print("recall against ground truth:", result.summary["evaluation"]["recall"])
    print("results in", result.output)


# Worker processes re-import this file; the guard keeps them from running it.
if __name__ == "__main__":
    main()
