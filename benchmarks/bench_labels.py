"""Label images out (``output.labels``): what writing them costs.

(a) ``scip.io.labels.write_labels`` of one synthetic label image (disks on
    a square image, chunk 512, pyramid down to one chunk): wall time, bytes
    on disk; and ``scip.io.ngff.mode_downsample`` (six pairwise equalities)
    next to the comparison-cube version it replaced, on the same level 0.
(b) ``scip.run`` on synthetic fields (``scip.datasets.write_example``),
    in-process, with and without ``output.labels`` (plus one extra mask), after a warm-up run:
    wall time of the run and seconds of the ``labels`` step from ``run.json``.

    python benchmarks/bench_labels.py --out benchmarks/results/labels.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import alternate
from scipy import ndimage


def _cube_mode_downsample(block: np.ndarray) -> np.ndarray:
    """The version before: a (4, 4, h, w) comparison cube and argmax (the reference of (a))."""
    h, w = block.shape
    block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    v = np.stack([block[0::2, 0::2], block[0::2, 1::2], block[1::2, 0::2], block[1::2, 1::2]])
    counts = (v[:, None] == v[None, :]).sum(axis=1)
    return np.take_along_axis(v, counts.argmax(axis=0)[None], axis=0)[0]


def _disks(side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seeds = np.zeros((side, side), bool)
    n = side * side // 3000
    seeds[rng.integers(0, side, n), rng.integers(0, side, n)] = True
    return ndimage.label(ndimage.binary_dilation(seeds, iterations=6))[0].astype(np.uint32)



def bench_write(side: int, repeats: int) -> dict:
    from scip.io import labels, ngff

    lab = _disks(side)
    with tempfile.TemporaryDirectory() as tmp:
        labels.write_labels(Path(tmp) / "warm.zarr", "warm", {"cell": lab[:64, :64]})
        seconds = alternate({"write": lambda: labels.write_labels(Path(tmp) / "labels.zarr", "img", {"cell": lab})},
                            repeats, warmup=0)["write"].median
        size = sum(f.stat().st_size for f in (Path(tmp) / "labels.zarr").rglob("*") if f.is_file())
        levels = len(list((Path(tmp) / "labels.zarr" / "img" / "labels" / "cell").glob("[0-9]*")))
    assert np.array_equal(ngff.mode_downsample(lab), _cube_mode_downsample(lab))
    # The new downsampling and the cube version it replaced take turns, so load hits both alike.
    down = alternate({"mode": lambda: ngff.mode_downsample(lab), "cube": lambda: _cube_mode_downsample(lab)}, repeats)
    return {"side": side, "objects": int(lab.max()), "levels": levels, "write_s": round(seconds, 3),
            "bytes_on_disk": size, "bytes_uint32": lab.size * 4,
            "mode_downsample_s": round(down["mode"].median, 3),
            "cube_mode_downsample_s": round(down["cube"].median, 3), "timing": f"median of {repeats} runs"}


def bench_run(n_fields: int) -> dict:
    import scip
    from scip.datasets import write_example

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_example(Path(tmp) / "data", n_events=2, n_fields=n_fields, seed=3)
        # The first run pays for compiling the numba kernels: a warm-up run, not counted.
        for labelled in (None, False, True):
            config = {
                "input": {"path": str(paths["fields"]), "pattern": r"field(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff",
                          "channels": ["DNA", "cyto", "marker"]},
                "segment": {"method": "watershed", "channel": "cyto"},
                "masks": [{"name": "nucleus", "channel": "DNA"}],
                "output": {"path": str(Path(tmp) / f"out{labelled}"), "labels": bool(labelled)},
                "cluster": {"scheduler": "synchronous"},
            }
            start = time.perf_counter()
            result = scip.run(config, progress=False)
            wall = time.perf_counter() - start
            steps = result.summary["timings_s"]["steps"]
            if labelled is None:
                continue
            out["labels" if labelled else "plain"] = {"wall_s": round(wall, 2),
                                                     "labels_step_s": round(steps.get("labels", 0.0), 3),
                                                     "cells": result.summary["counts"]["cells"]["exported"]}
    return {"fields": n_fields, "field_size": "256 x 256", **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fields", type=int, default=16)
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               "write": [bench_write(side, args.repeats) for side in (1024, 4096)],
               "run": bench_run(args.fields)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
