"""Where the time of ``scip.features.extract`` goes: one stage at a time, single-threaded.

On the synthetic mosaic of ``bench_features.py`` (N cells of 64x64 px x 3
channels), after a warm-up, each stage is timed on its own with the same
inputs ``extract`` gives it, ``--repeat`` times (median). Stages nest: the
indented rows are parts of the row above them, and the parts do not add up
exactly to the whole (the rest is numpy glue between them).

Usage::

    python benchmarks/profile_features.py [--n 5000] [--repeat 5] [--out profile.json]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import synthetic_mosaic  # noqa: E402
from scip import features  # noqa: E402
from scip.features import FeatureParams, _check_inputs, bbox, columns, intensity, shape, texture  # noqa: E402
from scip.features._glcm import sobel_runs  # noqa: E402
from scip.features._objects import Objects  # noqa: E402
from scip.features._stats import run_bounds, run_stats  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    n = args.n
    wp, wl = synthetic_mosaic(4, seed=99)
    features.extract(wp, wl)
    px, lab = synthetic_mosaic(n, seed=0)
    params = FeatureParams()
    rows: list[dict] = []

    def stage(name: str, fn: Callable[[], object]) -> object:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t0)
        rows.append(dict(stage=name, seconds=float(np.median(times)), runs=times))
        print(f"{name:60s} {np.median(times) * 1e3:8.1f} ms", flush=True)
        return res

    load_start = os.getloadavg()[0]
    stage("extract, default families", lambda: features.extract(px, lab))
    stage("  input checks", lambda: _check_inputs(px, lab, None, None))
    pxc, labc, names, bg = _check_inputs(px, lab, None, None)

    def objects():
        return Objects(pxc, labc, bg, tuple(names))

    def coordinates(o):
        if hasattr(Objects, "local_centroid"):  # what the default families read: no per-pixel seg or local_rows
            o.rows, o.cols, o.box_min_row, o.box_min_col, o.box_height, o.local_centroid
        else:
            o.seg, o.rows, o.cols, o.local_rows, o.local_cols, o.box_min_row, o.box_min_col
        return o

    stage("  pixel grouping (Objects: counting sort by label)", objects)
    stage("  per-pixel coordinates (rows, cols, object, box-relative)", lambda: coordinates(objects()))
    o = coordinates(objects())
    if hasattr(Objects, "channel_values"):
        def gather():
            o.__dict__.pop("channel_values", None)  # the cached_property's slot: gather anew
            return o.channel_values

        stage("  gather channel values (float64, all channels)", gather)
    for module in (shape, intensity, texture, bbox):
        stage(f"  family {module.NAME}", lambda: module.compute(o, params))
        if module is intensity:
            if hasattr(intensity, "_edge_pixels"):
                # since session 14 the caller passes the scratch image (one more argument)
                edge_args = (o.labels, o.groups.index, 1, np.zeros((1, 1), bool), False)
                argcount = intensity._edge_pixels.py_func.__code__.co_argcount
                if argcount >= 6:
                    edge_args += (np.empty(o.labels.size, np.uint8),)
                if argcount == 7:  # since session 15: writes the edge positions, returns their number
                    at = np.empty(o.groups.index.size, np.int64)
                    edge_args += (at,)
                stage("    edge ring", lambda: intensity._edge_pixels(*edge_args))
                edge = intensity._edge_pixels(*edge_args)
                if argcount == 7:
                    edge = np.zeros(o.groups.index.size, bool)
                    edge[at[:intensity._edge_pixels(*edge_args)]] = True
            else:
                stage("    edge ring", lambda: intensity._edge_mask(o.labels, 1, None).ravel()[o.groups.index])
                edge = intensity._edge_mask(o.labels, 1, None).ravel()[o.groups.index]
            stage("    background band (owner of each pixel near an object)",
                  lambda: intensity._background_band(o, params.background_width))
            values = np.ravel(pxc[0])[o.groups.index].astype(np.float64)
            stage("    statistics of the object pixels, 1 channel (run_stats)", lambda: run_stats(values, o.seg, len(o)))
            stage("    statistics of the edge pixels, 1 channel (run_stats)",
                  lambda: run_stats(values[edge], o.seg[edge], len(o)))
            band, band_seg = intensity._background_band(o, params.background_width)
            starts, counts = run_bounds(band_seg, len(o))
            stage("    background median, 1 channel", lambda: intensity._run_median(
                np.ravel(pxc[0])[band].astype(np.float64), starts, counts))
        if module is texture:
            stage("    Haralick, all channels (quantization, co-occurrence, 13 features)",
                  lambda: texture.haralick(o, params))
            image = np.ascontiguousarray(pxc[0], dtype=np.float64)
            # Since session 12 the caller passes the output buffer (one for all channels): time it so,
            # and the older kernel that allocates its own as before.
            sobel_args = (image, o.rows, o.cols)
            if sobel_runs.py_func.__code__.co_argcount == 4:
                sobel_args += (np.empty(o.rows.shape[0]),)
            stage("    Sobel gradient, 1 channel (float64 image given)", lambda: sobel_runs(*sobel_args))
            grad = sobel_runs(*sobel_args)
            stage("    statistics of the Sobel gradient, 1 channel (run_stats)", lambda: run_stats(grad, o.seg, len(o)))
            buf = np.empty(pxc.shape[1:])
            stage("    float64 copy of 1 channel image (into a reused buffer)", lambda: np.copyto(buf, pxc[0]))
    cols = columns(names)
    values = {m.NAME: m.compute(o, params) for m in (shape, intensity, texture, bbox)}

    def assemble():
        data = {"label": o.ids.astype(np.int64)}
        for c in cols:
            data[c.name] = np.asarray(values[c.family][(c.feature, c.channel)], dtype=np.float64)
        return pd.DataFrame(data, columns=["label", *(c.name for c in cols)])

    stage(f"  DataFrame assembly ({len(cols) + 1} columns)", assemble)
    report = dict(n=n, file=features.__file__, load_start=load_start, load_end=os.getloadavg()[0], stages=rows)
    print(json.dumps({k: v for k, v in report.items() if k != "stages"}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
