"""Whole-slide benchmark: peak memory and time of tiled segmentation vs image size, and seams.

Three parts, each measurement in a fresh Python process so that peak RSS is
that measurement's own:

1. **memory**: synthetic nuclei slides of 4096², 8192², 16384² and 32768² px
   (written lazily into OME-Zarr by :func:`scip.datasets.slides.write_synthetic_slide`,
   chunk by chunk, before timing) go through :func:`scip.run` with
   ``tiles.mode: always``, the ``otsu`` method on 512-px tiles, the ``bbox``
   feature family and ``output.labels: true``. Peak RSS counts the driver and
   every worker process: with a local Dask cluster the process tree is
   sampled every 0.1 s with psutil (sum of RSS over the tree), and
   ``getrusage`` gives each process's own peak. The comparison is a
   whole-image scikit-image ``threshold_otsu`` + ``label`` +
   ``regionprops_table`` on the same pixels, run only where its estimated
   memory (about 20 bytes per pixel) fits in 60 % of the memory available.
2. **seam**: whole-image ``segment`` vs ``scip.run`` in tiles (``watershed``,
   ``otsu``) on the synthetic 4096² slide: objects of the label image written
   by the run matched at IoU >= 0.95, split, merged, missing, extra.
3. **mosaic**: the same (methods `unet`, `watershed`, `otsu`) on a real mosaic, the 20 mnfinder 768×869 uint16
   nuclei images (``../shared/data/mnfinder``, RPE1 and U2OS) tiled 4 × 5.

Usage::

    python benchmarks/bench_wholeslide.py                     # all parts, all sizes
    python benchmarks/bench_wholeslide.py --sizes 4096 8192 --parts memory
    python benchmarks/bench_wholeslide.py --scheduler synchronous

Writes ``benchmarks/results/wholeslide.json`` (and prints a markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MNFINDER = ROOT.parent / "shared" / "data" / "mnfinder" / "training-data"


class TreeSampler:
    """Peak of the summed RSS of this process and all its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def _maxrss() -> dict:
    # Linux reports ru_maxrss in KiB; RUSAGE_CHILDREN is the largest single (waited-for) child. A process
    # started by fork + exec keeps its parent's RSS at the fork as a floor of its own ru_maxrss, which is
    # why the measuring parent stays small (it imports nothing heavy and generates data in a child).
    return {"self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "largest_child_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _run_config(path: str, out: str, method: str, cluster: dict, **tiles) -> dict:
    return {"input": {"path": path}, "segment": {"method": method, "channel": 0},
            "tiles": {"mode": "always", "size": 512, "diameter": 24, **tiles}, "features": {"families": ["bbox"]},
            "output": {"path": out, "overwrite": True, "labels": True}, "cluster": cluster}


def child_tiled(path: str, out: str, method: str, scheduler: str, workers: int) -> dict:
    import scip
    from scip.engine.cluster import quiet_logs

    quiet_logs()
    cluster = {"scheduler": "synchronous"} if scheduler == "synchronous" else \
        {"workers": workers, "threads": 1, "memory_limit": "4GiB", "dashboard_address": ":0"}
    t0 = time.perf_counter()
    with TreeSampler() as sampler:
        result = scip.run(_run_config(path, out, method, cluster), progress=False)
    seconds = time.perf_counter() - t0
    (image,) = result.summary["tiles"]["images"]
    return {"seconds": seconds, "tree_peak_mib": sampler.peak / 2**20, **_maxrss(), "objects": image["objects"],
            "counts": result.summary["counts"]["cells"], "tiles": image["tiles"],
            "steps_seconds": result.summary["timings_s"]["steps"]}


def child_whole(path: str) -> dict:
    import zarr
    from skimage import filters, measure

    t0 = time.perf_counter()
    with TreeSampler() as sampler:
        image = np.asarray(zarr.open_array(f"{path}/0", mode="r")[0])
        t_read = time.perf_counter() - t0
        mask = image > filters.threshold_otsu(image)
        labels = measure.label(mask, connectivity=1)
        table = measure.regionprops_table(labels, properties=("label", "area", "centroid", "bbox"))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "read_seconds": t_read, "tree_peak_mib": sampler.peak / 2**20, **_maxrss(),
            "objects": int(len(table["label"]))}


def child_generate(path: str, size: int) -> dict:
    from scip.datasets.slides import write_synthetic_slide

    t0 = time.perf_counter()
    write_synthetic_slide(path, size, chunk=1024, seed=0, truth=False, workers=2)
    return {"seconds": time.perf_counter() - t0}


def child_seam(path: str, out: str, diameter: float, method: str, statistics: str = "image",
               margin: str = "none", whole_unet_tile: str = "0") -> dict:
    import zarr

    import scip
    from scip.io.ngff import image_key
    from scip.io.windows import open_slide
    from scip.segment import segment
    from scip.segment.compare import compare_segmentations

    source = open_slide(path)
    image = source.read([0], 0, source.shape[0], 0, source.shape[1])[0]
    t0 = time.perf_counter()
    # The U-Net tiles a large image itself (512 px by default); a whole-image reference without those
    # internal seams needs one forward pass over the image (--whole-unet-tile).
    extra = {"tile": int(whole_unet_tile)} if method == "unet" and int(whole_unet_tile) else {}
    # Border objects stay in both label images (a run lists them in skipped.csv, tiled or not).
    whole = segment(image.astype(np.float32), method, **extra)
    t_whole = time.perf_counter() - t0
    config = _run_config(path, out, method, {"scheduler": "synchronous"}, diameter=diameter, statistics=statistics,
                         margin=None if margin == "none" else int(margin))
    t0 = time.perf_counter()
    result = scip.run(config, progress=False)
    t_tiled = time.perf_counter() - t0
    (info,) = result.summary["tiles"]["images"]
    tiled = np.asarray(zarr.open_array(f"{out}/labels.zarr/{image_key(info['image_id'])}/labels/cell/0", mode="r"))
    return {"whole_seconds": t_whole, "whole_params": extra, "tiled_seconds_synchronous": t_tiled,
            "shape": list(source.shape), "margin": info["margin"], "objects": info["objects"], "cut": info["cut"],
            "statistics": info["statistics"], "steps_seconds": result.summary["timings_s"]["steps"],
            **compare_segmentations(whole, tiled, iou=0.95)}


def make_mosaic(path: Path) -> dict:
    """The 20 mnfinder 768x869 uint16 training images in a 4 x 5 grid, as a plain zarr array."""
    import tifffile
    import zarr

    files = sorted(p for p in MNFINDER.glob("*/*.tif") if "_" not in p.stem)
    images = [(f, tifffile.imread(f)) for f in files]
    images = [(f, im) for f, im in images if im.shape == (768, 869) and im.dtype == np.uint16]
    rows, cols = 4, 5
    images = images[:rows * cols]
    mosaic = np.zeros((rows * 768, cols * 869), np.uint16)
    for k, (_, im) in enumerate(images):
        r, c = divmod(k, cols)
        mosaic[r * 768:(r + 1) * 768, c * 869:(c + 1) * 869] = im
    arr = zarr.open_array(str(path), mode="w", shape=mosaic.shape, chunks=(512, 512), dtype="uint16")
    arr[:] = mosaic
    return {"images": [str(f.relative_to(MNFINDER)) for f, _ in images], "shape": list(mosaic.shape)}


def _child(args: list[str]) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    proc = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True,
                          cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _available_bytes() -> int:
    import psutil

    return psutil.virtual_memory().available


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    parser.add_argument("--parts", nargs="+", default=["memory", "seam", "mosaic"],
                        choices=["memory", "seam", "mosaic"])
    parser.add_argument("--scheduler", choices=["local", "synchronous"], default="local")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mosaic-methods", nargs="+", default=["unet", "watershed", "otsu"],
                        help="methods compared whole-image vs tiled on the real mosaic")
    parser.add_argument("--statistics", nargs="+", default=["image", "tile"], choices=["image", "tile"],
                        help="tiles.statistics modes compared in the seam and mosaic parts")
    parser.add_argument("--margin", type=int, help="tiles.margin of the seam and mosaic runs (default 2 x diameter)")
    parser.add_argument("--whole-unet-tile", type=int, default=0,
                        help="unet tile of the whole-image reference (0: the method's default, 512)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scip-bench-wholeslide"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "wholeslide.json")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {"command": "python benchmarks/bench_wholeslide.py " + " ".join(sys.argv[1:]),
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "memory_gib": round(__import__("psutil").virtual_memory().total / 2**30, 1)},
                     "scheduler": args.scheduler, "workers": args.workers if args.scheduler == "local" else 0}
    if args.out.is_file():
        previous = json.loads(args.out.read_text())
        results = {**previous, **results}
    if "memory" in args.parts:
        rows = {r["size"]: r for r in results.get("memory", [])}
        for size in args.sizes:
            path = args.workdir / f"nuclei-{size}.ome.zarr"
            generate = _child(["generate", str(path), str(size)])["seconds"]
            row = {"size": size, "pixels": size * size, "generate_seconds": generate,
                   "tiled": _child(["tiled", str(path), str(args.workdir / f"out-{size}"), "otsu", args.scheduler,
                                    str(args.workers)])}
            need = 20 * size * size
            if need < 0.6 * _available_bytes():
                row["whole_image"] = _child(["whole", str(path)])
            else:
                row["whole_image"] = {"skipped": f"needs about {need / 2**30:.1f} GiB, "
                                                 f"{_available_bytes() / 2**30:.1f} GiB available"}
            rows[size] = row
            print(json.dumps(row), flush=True)
            shutil.rmtree(args.workdir / f"out-{size}", ignore_errors=True)
            if size > 8192:
                shutil.rmtree(path, ignore_errors=True)
            results["memory"] = [rows[k] for k in sorted(rows)]
            args.out.write_text(json.dumps(results, indent=2))
    if "seam" in args.parts:
        path = args.workdir / "nuclei-4096.ome.zarr"
        if not path.exists():
            _child(["generate", str(path), "4096"])
        results["seam"] = {m: {mode: _child(["seam", str(path), str(args.workdir / "seam"), "24", m, mode,
                                             "none" if args.margin is None else str(args.margin)])
                               for mode in args.statistics} for m in ("watershed", "otsu")}
        print(json.dumps(results["seam"]), flush=True)
        args.out.write_text(json.dumps(results, indent=2))
    if "mosaic" in args.parts:
        path = args.workdir / "mnfinder-mosaic.zarr"
        info = make_mosaic(path)
        margin = "none" if args.margin is None else str(args.margin)
        runs = {m: {mode: _child(["seam", str(path), str(args.workdir / "mosaic"), "30", m, mode, margin,
                                  str(args.whole_unet_tile)])
                    for mode in args.statistics} for m in args.mosaic_methods}
        results["mosaic"] = {**results.get("mosaic", {}), **info, **runs}
        print(json.dumps(results["mosaic"]), flush=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))


def markdown(results: dict) -> str:
    """The memory table of ``results`` in markdown."""
    lines = ["| size | pixels | tiled: time (s) | tiled: peak RSS, all processes (MiB) | driver / largest worker (MiB) "
             "| objects | whole image: time (s) | whole image: peak RSS (MiB) | objects |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in results.get("memory", []):
        t, w = row["tiled"], row["whole_image"]
        whole = (f"skipped ({w['skipped']}) | | " if "skipped" in w else
                 f"{w['seconds']:.1f} | {w['tree_peak_mib']:.0f} | {w['objects']}")
        lines.append(f"| {row['size']}² | {row['pixels'] / 1e6:.0f} M | {t['seconds']:.1f} | {t['tree_peak_mib']:.0f} "
                     f"| {t['self_mib']:.0f} / {t['largest_child_mib']:.0f} | {t['objects']} | {whole} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "generate":
            out = child_generate(rest[0], int(rest[1]))
        elif kind == "tiled":
            out = child_tiled(rest[0], rest[1], rest[2], rest[3], int(rest[4]))
        elif kind == "whole":
            out = child_whole(rest[0])
        else:
            out = child_seam(rest[0], rest[1], float(rest[2]), rest[3], *rest[4:])
        print(json.dumps(out))
    else:
        main()
