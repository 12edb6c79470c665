"""dask-image against scip's own code, side by side in one run: labelling, smoothing, lazy reading.

Three cases (issue 16, item 4), each measurement in a fresh Python process so
that its time and peak RSS are its own; the implementations of a case
alternate (A B A B A B ...) and every figure is the median of ``--repeats``
runs (3 by default). Imports happen before the clock starts.

a. **label**: seam-free connected components of a thresholded large image.
   A synthetic nuclei slide (:func:`scip.slide.write_synthetic_slide`, 1024-px
   chunks) is thresholded at its image-wide Otsu level and labelled

   - by ``dask_image.ndmeasure.label`` on the slide as a dask array (1024-px
     blocks), through :func:`scip.engine.reference.label_reference`, written
     to a zarr array, on a local Dask cluster of 2 workers x 1 thread; with
     the thresholded mask persisted first (``dask_image``), and, at
     ``--lazy-sizes``, left lazy (``dask_image_lazy_mask``: dask-image then
     builds one graph per block face over the whole chain of reads and
     comparisons, which costs the driver far more);
   - by scip's tiled path, :func:`scip.slide.segment_slide` with ``otsu``,
     ``smooth: 0``, ``fill_holes: false``, ``min_size: 0``,
     ``remove_border: false``, slide-wide statistics, 512-px tiles, margin 48
     px, on the same kind of cluster (it also writes the pyramid and the cell
     table, which dask-image does not).

   Both use the same level (the tiled run computes it; the dask-image run
   computes it with :func:`scip.engine.reference.otsu_level`, a
   ``dask.array.histogram`` and scikit-image's Otsu, and the two are
   compared). Agreement: the two label images must partition the
   same pixels into the same objects (an exact bijection between labels).
b. **smooth**: an image-wide Gaussian background (sigma 50 px, ``nearest``
   edges, as ``illumination.smooth: gaussian``), and a 101-px uniform filter:
   ``dask_image.ndfilters`` on the slide as a dask array written to zarr
   (2 threads), vs plain scipy on the whole float64 numpy array, vs scip's
   :func:`scip.reduce.illumination.flat_field` (scipy on the mean image, then
   scaled to mean 1). The dask-image result is compared with scipy's.
c. **read**: ``dask_image.imread.imread`` (via pims) vs scip's TIFF reader
   (:func:`scip.io.open_dataset` + :func:`scip.io.read_images`) on a folder
   of many small TIFFs and on one multi-page z-stack TIFF: time to the first
   image's pixels (listing included) and to all pixels.

Usage::

    python benchmarks/bench_dask_image.py                        # all cases
    python benchmarks/bench_dask_image.py --cases label --sizes 4096 --repeats 3

Writes ``benchmarks/results/dask_image.json`` and prints each row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_wholeslide import TreeSampler, _maxrss  # noqa: E402

CLUSTER = {"workers": 2, "threads": 1, "memory_limit": "4GiB", "dashboard_address": ":0"}
TILE, DIAMETER = 512, 24


# ---------------------------------------------------------------------------------------------- case a: label
def child_label_tiled(path: str, out: str) -> dict:
    from scip.engine.cluster import quiet_logs
    from scip.slide import segment_slide

    quiet_logs()
    config = {"input": {"path": path},
              "segment": {"method": "otsu", "channel": 0, "smooth": 0, "fill_holes": False, "min_size": 0,
                          "remove_border": False},
              "tiles": {"size": TILE, "diameter": DIAMETER, "statistics": "slide"},
              "output": {"path": out, "overwrite": True}, "cluster": CLUSTER}
    t0 = time.perf_counter()
    with TreeSampler() as sampler:
        result = segment_slide(config, progress=False)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tree_peak_mib": sampler.peak / 2**20, **_maxrss(),
            "objects": result.summary["counts"]["objects"], "cut": result.summary["counts"]["cut"],
            "level": result.summary["statistics"].get("level"), "phases": result.summary["seconds"]}


def child_label_dask(path: str, out: str, persist: str) -> dict:
    import dask.array as da
    import zarr
    from dask.distributed import Client, LocalCluster
    from dask_image import ndfilters  # noqa: F401 - imported before the clock, as label_reference needs it

    from scip.engine.arrays import to_dask
    from scip.engine.cluster import quiet_logs
    from scip.engine.reference import as_dask, label_reference, otsu_level
    from scip.slide import open_slide

    quiet_logs()
    t0 = time.perf_counter()
    with TreeSampler() as sampler:
        with LocalCluster(n_workers=CLUSTER["workers"], threads_per_worker=CLUSTER["threads"],
                          memory_limit=CLUSTER["memory_limit"], dashboard_address=":0") as cluster, \
                Client(cluster):
            t_cluster = time.perf_counter() - t0
            image = to_dask(open_slide(path), 0, chunks=(1024, 1024))
            level = otsu_level(as_dask(image))
            t_level = time.perf_counter() - t0
            labels, _ = label_reference(image, level=level, persist=persist == "persist")
            t_graph = time.perf_counter() - t0
            shutil.rmtree(out, ignore_errors=True)
            target = zarr.open_array(out, mode="w", shape=labels.shape, chunks=(1024, 1024), dtype=labels.dtype)
            da.store(labels, target, lock=False)
            n = int(da.from_zarr(target).max().compute())
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cluster_seconds": t_cluster, "level_seconds": t_level - t_cluster,
            "graph_seconds": t_graph - t_level, "tree_peak_mib": sampler.peak / 2**20, **_maxrss(),
            "objects": n, "level": level}


def child_label_compare(reference: str, tiled: str) -> dict:
    """Exact agreement: the two label images split the same pixels into the same objects."""
    import zarr

    a = np.asarray(zarr.open_array(reference, mode="r")[...]).ravel()
    b = np.asarray(zarr.open_array(f"{tiled}/labels.zarr/labels/cell/0", mode="r")[...]).ravel()
    fg_a, fg_b = a != 0, b != 0
    both = fg_a & fg_b
    pairs = np.unique(np.stack([a[both].astype(np.int64), b[both].astype(np.int64)]), axis=1)
    n_a, n_b = np.unique(a[fg_a]).size, np.unique(b[fg_b]).size
    return {"pixels_differ": int((fg_a != fg_b).sum()), "reference_objects": int(n_a), "tiled_objects": int(n_b),
            "label_pairs": int(pairs.shape[1]),
            "identical": bool((fg_a == fg_b).all() and pairs.shape[1] == n_a == n_b)}


# --------------------------------------------------------------------------------------------- case b: smooth
SIGMA, UNIFORM = 50.0, 101


def child_smooth(kind: str, path: str, out: str) -> dict:
    import zarr
    from scipy import ndimage as ndi

    from scip.slide import open_slide

    source = open_slide(path)
    t0 = time.perf_counter()
    with TreeSampler() as sampler:
        if kind in ("dask_gaussian", "dask_uniform"):
            import dask
            import dask.array as da
            from dask_image import ndfilters

            from scip.engine.arrays import to_dask

            image = to_dask(source, 0, chunks=(1024, 1024)).astype(np.float64)
            smoothed = ndfilters.gaussian_filter(image, SIGMA, mode="nearest") if kind == "dask_gaussian" else \
                ndfilters.uniform_filter(image, UNIFORM, mode="nearest")
            shutil.rmtree(out, ignore_errors=True)
            target = zarr.open_array(out, mode="w", shape=image.shape, chunks=(1024, 1024), dtype=np.float64)
            with dask.config.set(scheduler="threads", num_workers=2):
                da.store(smoothed, target, lock=False)
        else:
            image = source.read([0], 0, source.shape[0], 0, source.shape[1])[0].astype(np.float64)
            if kind == "scipy_gaussian":
                smoothed = ndi.gaussian_filter(image, SIGMA, mode="nearest")
            elif kind == "scipy_uniform":
                smoothed = ndi.uniform_filter(image, UNIFORM, mode="nearest")
            else:  # scip's flat field of a one-image group: scipy on the mean image, then scaled to mean 1
                from scip.reduce.illumination import flat_field, summarize

                smoothed = flat_field(summarize(image[None]), "gaussian", SIGMA)[0]
            np.save(out, smoothed)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "tree_peak_mib": sampler.peak / 2**20, **_maxrss()}


def child_smooth_compare(dask_out: str, scipy_out: str) -> dict:
    import zarr

    a = np.asarray(zarr.open_array(dask_out, mode="r")[...])
    b = np.load(scipy_out)
    return {"max_abs_difference": float(np.abs(a - b).max()), "max_value": float(np.abs(b).max())}


# ----------------------------------------------------------------------------------------------- case c: read
def write_tiffs(folder: Path, n_files: int, side: int, stack: Path, planes: int, stack_side: int) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        tifffile.imwrite(folder / f"img{i:05d}.tif", rng.integers(0, 4096, (side, side), dtype=np.uint16))
    stack.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(stack) as tif:
        for _ in range(planes):
            tif.write(rng.integers(0, 4096, (stack_side, stack_side), dtype=np.uint16), contiguous=True)


def child_read(kind: str, path: str) -> dict:
    if kind.startswith("dask"):
        import dask
        from dask_image.imread import imread
    else:
        from scip.config import InputConfig
        from scip.io import open_dataset, read_images
    pattern = f"{path}/*.tif" if Path(path).is_dir() else path
    scheduler = "synchronous" if kind == "dask_sync" else "threads"
    t0 = time.perf_counter()
    with TreeSampler() as sampler:
        if kind.startswith("dask"):
            with dask.config.set(scheduler=scheduler, num_workers=2):
                stack = imread(pattern)
                first = stack[0].compute()
                t_first = time.perf_counter() - t0
                total = int(stack.sum(dtype=np.uint64).compute())
            shape = list(stack.shape)
        else:
            # The z-stack lies alone in its folder: scip lists folders.
            dataset = open_dataset(InputConfig(path=Path(path).parent if Path(path).is_file() else path))
            first = read_images(dataset, dataset.sources[:1])[0].pixels
            t_first = time.perf_counter() - t0
            records = read_images(dataset, dataset.sources)
            total = int(sum(int(r.pixels.sum(dtype=np.uint64)) for r in records))
            shape = [len(records), *records[0].pixels.shape]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "first_seconds": t_first, "tree_peak_mib": sampler.peak / 2**20, **_maxrss(),
            "shape": shape, "first_shape": list(first.shape), "checksum": total}


# ----------------------------------------------------------------------------------------------------- driver
def _child(args: list[str]) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    proc = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _alternate(kinds: dict[str, list[str]], repeats: int) -> dict[str, dict]:
    """Run every kind ``repeats`` times, interleaved, and keep the runs and the medians."""
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(repeats):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        for kind in order:
            runs[kind].append(_child(kinds[kind]))
            print(kind, json.dumps(runs[kind][-1]), flush=True)
    out = {}
    for kind, rows in runs.items():
        medians = {key: statistics.median(row[key] for row in rows)
                   for key in rows[0] if isinstance(rows[0][key], (int, float)) and not isinstance(rows[0][key], bool)}
        out[kind] = {"median": medians, "runs": rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["label", "smooth", "read"], choices=["label", "smooth", "read"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192], help="slide sides for label and smooth")
    parser.add_argument("--lazy-sizes", type=int, nargs="*", default=[4096],
                        help="sizes where dask-image also labels the mask unpersisted (slow: see the docstring)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=int, default=500, help="small TIFFs in the folder (case read)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scip-bench-dask-image"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dask_image.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    import psutil

    results: dict = {"command": "python benchmarks/bench_dask_image.py " + " ".join(sys.argv[1:]),
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                                 "load_average_at_start": os.getloadavg()},
                     "repeats": args.repeats}
    if args.out.is_file():
        results = {**json.loads(args.out.read_text()), **results}
    w = args.workdir
    for size in args.sizes if {"label", "smooth"} & set(args.cases) else []:
        slide = w / f"nuclei-{size}.ome.zarr"
        if not slide.exists():
            _child(["generate", str(slide), str(size)])
        if "label" in args.cases:
            kinds = {"dask_image": ["label_dask", str(slide), str(w / f"dask-labels-{size}.zarr"), "persist"],
                     "scip_tiled": ["label_tiled", str(slide), str(w / f"tiled-{size}")]}
            if size in args.lazy_sizes:
                kinds["dask_image_lazy_mask"] = ["label_dask", str(slide), str(w / f"dask-lazy-{size}.zarr"), "lazy"]
            row = _alternate(kinds, args.repeats)
            row["agreement"] = _child(["label_compare", str(w / f"dask-labels-{size}.zarr"), str(w / f"tiled-{size}")])
            results.setdefault("label", {})[str(size)] = row
            print("agreement", json.dumps(row["agreement"]), flush=True)
            args.out.write_text(json.dumps(results, indent=2))
        if "smooth" in args.cases:
            kinds = {k: ["smooth", k, str(slide), str(w / (f"{k}-{size}.zarr" if k.startswith("dask") else f"{k}-{size}.npy"))]
                     for k in ("dask_gaussian", "scipy_gaussian", "scip_flat_field", "dask_uniform", "scipy_uniform")}
            row = _alternate(kinds, args.repeats)
            row["gaussian_difference"] = _child(["smooth_compare", kinds["dask_gaussian"][-1], kinds["scipy_gaussian"][-1]])
            row["uniform_difference"] = _child(["smooth_compare", kinds["dask_uniform"][-1], kinds["scipy_uniform"][-1]])
            results.setdefault("smooth", {})[str(size)] = row
            args.out.write_text(json.dumps(results, indent=2))
    if "read" in args.cases:
        folder, stack = w / "tiffs", w / "stack" / "stack.tif"
        _child(["write_tiffs", str(folder), str(args.files), "256", str(stack), "64", "1024"])
        results["read"] = {
            "folder": {"files": args.files, "shape": [256, 256], "dtype": "uint16",
                       **_alternate({k: ["read", k, str(folder)] for k in ("dask_threads", "dask_sync", "scip")},
                                    args.repeats)},
            "zstack": {"planes": 64, "shape": [1024, 1024], "dtype": "uint16",
                       **_alternate({k: ["read", k, str(stack)] for k in ("dask_threads", "dask_sync", "scip")},
                                    args.repeats)}}
        args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "generate":
            from bench_wholeslide import child_generate
            result = child_generate(rest[0], int(rest[1]))
        elif kind == "write_tiffs":
            write_tiffs(Path(rest[0]), int(rest[1]), int(rest[2]), Path(rest[3]), int(rest[4]), int(rest[5]))
            result = {}
        else:
            result = {"label_tiled": child_label_tiled, "label_dask": child_label_dask,
                      "label_compare": child_label_compare, "smooth": child_smooth,
                      "smooth_compare": child_smooth_compare, "read": child_read}[kind](*rest)
        print(json.dumps(result))
    else:
        main()
