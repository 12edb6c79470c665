"""Z stacks as 3-D objects: per-plane segmentation + stitching, and the volume feature family.

(a) A synthetic stack (``scip.datasets.make_zstacks``, 48 × 512 × 512, 250
    separate nuclei): wall time of ``segment_stack`` (Otsu on every plane at
    the stack's level, ``stitch3d`` with one thread, ``min_planes`` 2) and its
    F1 at IoU 0.5 against the 3-D truth; median time of ``--repeats`` alternated runs
    of the ``volume`` family (22 columns) next to ``skimage.measure.regionprops_table``
    on the same truth labels (area, bbox, centroid, mean/min/max/std
    intensity: 13 columns).
(b) The DSB 3-D sample (``tests/data/stardist-dsb2018``): F1 at IoU 0.5 of
    Otsu and watershed per plane + stitching, and of stitching the truth's
    own planes (the bound stitching puts on any per-plane method).

    python benchmarks/bench_zstack.py --out benchmarks/results/zstack.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from _timing import alternate
import tifffile
from skimage.measure import regionprops_table
from skimage.segmentation import relabel_sequential

from scip.datasets import make_zstacks
from scip.features import extract
from scip.metrics import match_labels
from scip.segment import segment
from scip.segment.stack import segment_stack, stack_parameters

DSB = Path(__file__).parents[1] / "tests" / "data" / "stardist-dsb2018"


def _stitched(image: np.ndarray, method: str) -> np.ndarray:
    params = stack_parameters(image, method, {})
    return segment_stack(image, functools.partial(segment, method=method, **params), min_planes=2, threads=1)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    data = make_zstacks(1, shape=(48, 512, 512), nuclei_per_stack=250, seed=0)
    image, truth = data.images[0], data.labels[0]
    extract(image, truth, families=["volume"])  # numba compilation, not measured
    start = time.perf_counter()
    pred = _stitched(image[0], "otsu")
    seconds = time.perf_counter() - start
    timing = alternate({
        "volume": lambda: extract(image, truth, families=["volume"]),
        "regionprops": lambda: regionprops_table(truth, image[0], properties=[
            "label", "area", "bbox", "centroid", "intensity_mean", "intensity_min", "intensity_max",
            "intensity_std"]),
    }, args.repeats)
    synthetic = {
        "shape": list(truth.shape), "nuclei": int(truth.max()),
        "segment_stack_s": round(seconds, 3), "f1": match_labels(truth, pred, 0.5).f1,
        "volume_family_s": round(timing["volume"].median, 4),
        "regionprops_table_s": round(timing["regionprops"].median, 4),
        "timing": f"median of {args.repeats} alternated runs",
    }
    dsb_image, dsb_truth = tifffile.imread(DSB / "image3d.tif"), tifffile.imread(DSB / "labels3d.tif")
    dsb = {method: round(match_labels(dsb_truth, _stitched(dsb_image, method), 0.5).f1, 3)
           for method in ("otsu", "watershed")}
    dsb["truth_planes_stitched"] = round(match_labels(
        dsb_truth, segment_stack(dsb_truth, lambda p: relabel_sequential(p)[0]), 0.5).f1, 3)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "synthetic": synthetic, "dsb3d_f1": dsb}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
