"""Benchmark of scip.features against per-object scikit-image and cp_measure texture.

Single-threaded (all thread pools pinned to 1 before numpy is imported), so
the rates are cells per second per core. Measured on the same cells:

(i)  N synthetic 64x64 cells x 3 channels in one mosaic label image
     (``scip.features.extract`` is called once on the mosaic);
(ii) the real mnfinder nuclei in ``../shared/data/mnfinder/training-data``
     (one channel; skipped with a message if the folder is missing).

Methods:

(a) ``scip.features.extract`` with the default families, with the texture
    family only, and the Haralick part alone (``texture.haralick``,
    quantization included; over the strips ``extract`` cuts a large image
    into, ``scip.features._strips``);
(b) a straightforward per-object scikit-image implementation of the same
    Haralick features: per object and channel ``skimage.feature.graycomatrix``
    (symmetric, the 4 directions, the distances, ``levels = max level + 1``)
    with row/column 0 removed, then the 13 features from each matrix with
    plain numpy;
(c) cp_measure's texture (``get_texture(labels, levels, scale=d,
    gray_levels=256)``), default backend (mahotas per object) and, if
    ``cp_measure.set_accelerator("numba")`` works, its numba backend.

(b) and (c) get the gray levels scip computed (so no rescaling happens and
values are comparable; their time excludes quantization) and run on the first
cells of the scene (``--subset``); scip's Haralick features are timed on the
same cells, from the raw pixels (grouping and quantization included), for the
speed-up. Their values are checked against ours.

Timing: every method of a scene runs once per round, for ``--repeat`` rounds
(alternated, A, B, C, A, B, C, ...); the tables give medians, and each
speed-up is the median of the per-round ratios.

Usage::

    .venv/bin/python benchmarks/bench_features.py [--n 5000] [--subset 500] [--repeat 5]
        [--mnfinder ../shared/data/mnfinder/training-data]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scip import features  # noqa: E402
from scip.features import FeatureParams, texture  # noqa: E402
from scip.features._objects import Objects  # noqa: E402

TILE = 64
MNFINDER = ROOT.parent / "shared" / "data" / "mnfinder" / "training-data"
RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- data

def synthetic_mosaic(n: int, seed: int = 0, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` elliptic cells with textured intensities, one per 64x64 tile of a mosaic."""
    rng = np.random.default_rng(seed)
    grid = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / grid))
    labels = np.zeros((rows * TILE, grid * TILE), np.int32)
    pixels = np.zeros((channels, rows * TILE, grid * TILE), np.float32)
    yy, xx = np.mgrid[:TILE, :TILE].astype(np.float64)
    # shared noise fields, cut differently per cell, keep generation fast
    fields = [ndi.gaussian_filter(rng.normal(size=(4 * TILE, 4 * TILE)), s) for s in (1.0, 2.5, 5.0)]
    for i in range(n):
        r0, c0 = (i // grid) * TILE, (i % grid) * TILE
        a, b = rng.uniform(16, 29), rng.uniform(10, 22)
        th = rng.uniform(0, np.pi)
        cy, cx = TILE / 2 + rng.uniform(-3, 3), TILE / 2 + rng.uniform(-3, 3)
        u = (yy - cy) * np.cos(th) + (xx - cx) * np.sin(th)
        v = -(yy - cy) * np.sin(th) + (xx - cx) * np.cos(th)
        rho = (u / a) ** 2 + (v / b) ** 2
        mask = rho <= 1
        labels[r0:r0 + TILE, c0:c0 + TILE][mask] = i + 1
        for c in range(channels):
            f = fields[c % len(fields)]
            oy, ox = rng.integers(0, 3 * TILE, 2)
            tex = f[oy:oy + TILE, ox:ox + TILE]
            tex = tex / (tex.std() + 1e-12)
            body = 400 + 300 * c + 200 * np.exp(-rho * rng.uniform(0.5, 2))
            img = body * (1 + 0.25 * tex) * mask + rng.gamma(2.0, 10.0, (TILE, TILE))
            pixels[c, r0:r0 + TILE, c0:c0 + TILE] = img
    return pixels, labels


def mnfinder_images(folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    import tifffile

    out = []
    for lab_path in sorted(folder.glob("*/*_nuclei.tif")):
        img_path = lab_path.with_name(lab_path.name.replace("_nuclei.tif", ".tif"))
        if img_path.exists():
            out.append((str(img_path.relative_to(folder)), tifffile.imread(img_path), tifffile.imread(lab_path)))
    return out


# --------------------------------------------------------------------------- (b) scikit-image

def _haralick13_numpy(P: np.ndarray) -> np.ndarray:
    """The 13 features of one symmetric count matrix (with row/col 0 zeroed), as mahotas."""
    feats = np.empty(13)
    T = P.sum()
    if T == 0:
        return np.full(13, np.nan)
    p = P / T
    n = len(p)
    k = np.arange(n)
    i, j = np.mgrid[:n, :n]
    px = p.sum(0)
    py = p.sum(1)
    ux, uy = px @ k, py @ k
    vx, vy = px @ k**2 - ux**2, py @ k**2 - uy**2
    sx, sy = np.sqrt(vx), np.sqrt(vy)
    pxpy = np.bincount((i + j).ravel(), p.ravel(), minlength=2 * n)
    pxmy = np.bincount(np.abs(i - j).ravel(), p.ravel(), minlength=n)

    def entropy(q):
        q = q[q > 0]
        return -np.sum(q * np.log2(q))

    tk = np.arange(2 * n)
    feats[0] = np.sum(p * p)
    feats[1] = k**2 @ pxmy
    feats[2] = 1.0 if sx == 0 or sy == 0 else (np.sum(i * j * p) - ux * uy) / sx / sy
    feats[3] = vx
    feats[4] = np.sum(p / (1 + (i - j) ** 2))
    feats[5] = tk @ pxpy
    feats[6] = tk**2 @ pxpy - feats[5] ** 2
    feats[7] = entropy(pxpy)
    feats[8] = entropy(p)
    feats[9] = pxmy.var()
    feats[10] = entropy(pxmy)
    hx, hy = entropy(px), entropy(py)
    cross = np.outer(px, py)
    hxy1 = -np.sum(p[p > 0] * np.log2(cross[p > 0]))
    hxy2 = entropy(cross)
    feats[11] = (feats[8] - hxy1) / (max(hx, hy) if max(hx, hy) else 1.0)
    feats[12] = np.sqrt(max(0.0, 1 - np.exp(-2 * (hxy2 - feats[8]))))
    return feats


def skimage_texture(crops: list[np.ndarray], distances: tuple[int, ...]) -> np.ndarray:
    """(n, C, D, 4, 13) from per-object level crops (C, h, w) with 0 outside the object."""
    from skimage.feature import graycomatrix

    d = np.asarray(distances, dtype=np.float64)
    out = np.empty((len(crops), crops[0].shape[0], len(d), 4, 13))
    for o, crop in enumerate(crops):
        for c, img in enumerate(crop):
            levels = int(img.max()) + 1
            # scikit-image steps (round(d sin a), round(d cos a)): the diagonals
            # need distance d * sqrt(2) to step (d, d) as mahotas does; its
            # angle pi/4 is the offset (d, d) = our 135 degrees.
            axial = graycomatrix(img, d, [0, np.pi / 2], levels=levels, symmetric=True)
            diag = graycomatrix(img, d * np.sqrt(2), [np.pi / 4, 3 * np.pi / 4], levels=levels, symmetric=True)
            for k in range(len(d)):
                for a, P in enumerate((axial[:, :, k, 0], diag[:, :, k, 1], axial[:, :, k, 1], diag[:, :, k, 0])):
                    P = P.astype(np.int64)
                    P[0, :] = 0
                    P[:, 0] = 0
                    out[o, c, k, a] = _haralick13_numpy(P)
    return out


# --------------------------------------------------------------------------- (c) cp_measure

CP_NAMES = ["AngularSecondMoment", "Contrast", "Correlation", "Variance", "InverseDifferenceMoment",
            "SumAverage", "SumVariance", "SumEntropy", "Entropy", "DifferenceVariance",
            "DifferenceEntropy", "InfoMeas1", "InfoMeas2"]
CP_DIR = (0, 3, 2, 1)  # CellProfiler direction _00.._03 of our angles 0, 45, 90, 135


def cp_texture(fn, labels: np.ndarray, levels: np.ndarray, distances: tuple[int, ...]) -> np.ndarray:
    """(n, C, D, 4, 13) from cp_measure's texture on the level images ``levels`` (C, H, W)."""
    n = int(labels.max())
    out = np.empty((n, levels.shape[0], len(distances), 4, 13))
    for c, lev in enumerate(levels):
        for k, d in enumerate(distances):
            res = fn(labels, lev, scale=d, gray_levels=256)
            for a, cd in enumerate(CP_DIR):
                out[:, c, k, a] = np.stack([np.asarray(res[f"{nm}_{d}_{cd:02d}_256"]) for nm in CP_NAMES], axis=1)
    return out


# --------------------------------------------------------------------------- helpers

def max_rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    both = np.isfinite(ours) & np.isfinite(ref)
    if not both.any():
        return float("nan")
    diff = np.abs(ours[both] - ref[both]) / np.maximum(np.abs(ref[both]), 1e-12)
    return float(diff.max())


def subset_scene(pixels: np.ndarray, labels: np.ndarray, levels: np.ndarray, ids: np.ndarray):
    """Level crops, and the relabeled (1..n) label, level and pixel images of the objects ``ids``.

    The images cover the box holding the objects; pixels of other objects
    there are background in the label and level images.
    """
    slices = ndi.find_objects(labels)
    crops = []
    keep = np.isin(labels, ids)
    sub_labels = np.zeros_like(labels)
    lut = np.zeros(labels.max() + 1, labels.dtype)
    lut[ids] = np.arange(1, len(ids) + 1)
    sub_labels[keep] = lut[labels[keep]]
    sub_levels = np.where(keep, levels, 0).astype(np.uint8)
    for lab in ids:
        sl = slices[lab - 1]
        mask = labels[sl] == lab
        crops.append(np.where(mask, levels[(slice(None), *sl)], 0).astype(np.uint8))
    # only the region holding the subset, so that cp_measure's whole-image
    # steps (img_as_ubyte, regionprops) do not scan the rest of a mosaic
    rr, cc = np.nonzero(keep)
    box = (slice(rr.min(), rr.max() + 1), slice(cc.min(), cc.max() + 1))
    sub_pixels = np.ascontiguousarray(np.asarray(pixels)[(slice(None), *box)])
    return (crops, np.ascontiguousarray(sub_labels[box]), np.ascontiguousarray(sub_levels[(slice(None), *box)]),
            sub_pixels)


REPEAT = 5


def alternated(methods: dict[str, Callable[[], object]], repeat: int) -> tuple[dict[str, object], dict[str, list[float]]]:
    """Run every method once per round, ``repeat`` rounds (A, B, C, A, B, C, ...).

    Returns the last result and the wall times of every round per method:
    a ratio of two methods is then taken round by round, so a change of the
    machine's load hits both sides of it alike.
    """
    results: dict[str, object] = {}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return results, times


def run_scene(name: str, pixels: np.ndarray, labels: list[np.ndarray] | np.ndarray, params: FeatureParams,
              subset: int, rows: list[dict], checks: list[dict], background=None) -> None:
    """All methods on one scene (a mosaic, or a list of images: ``pixels`` then a list too), alternated."""
    import cp_measure
    from cp_measure import bulk

    images = list(zip(pixels, labels)) if isinstance(labels, list) else [(pixels, labels)]
    n_cells = int(sum(len(np.unique(lab)) - int((lab == 0).any()) for _, lab in images))
    families = list(features.DEFAULT_FAMILIES)
    bg = (lambda lab: background) if background is not None else (lambda lab: None)

    def make_objects(px, lab):
        # labels as they are (int32 here, the kernels' dtype): an int64 copy of the mosaic's labels was
        # 165 MB of fresh memory per call, timed with the Haralick features
        return Objects(np.ascontiguousarray(px), np.ascontiguousarray(lab),
                       lab == 0, tuple(f"c{i}" for i in range(px.shape[0])))

    # the subset for (b) and (c): the first `subset` objects (in image order),
    # cut out with the pixels around them, other objects' labels removed
    crops, sub_labels, sub_levels, sub_pixels = [], [], [], []
    left = subset
    for px, lab in images:
        if left <= 0:
            break
        objects = make_objects(px, lab)
        ids = objects.ids[:left]
        left -= len(ids)
        levels = np.stack([texture.quantize(objects, params, c) for c in range(px.shape[0])])
        cr, sl, sv, sp = subset_scene(px, np.asarray(lab, np.int64), levels, ids)
        crops.append(cr)
        sub_labels.append(sl)
        sub_levels.append(sv)
        sub_pixels.append(sp)
    n_sub = int(sum(len(np.unique(sl)) - 1 for sl in sub_labels))

    backends = [("mahotas per object (default)", None)]
    try:
        cp_measure.set_accelerator("numba")
        bulk.get_core_measurements(sanitize=False)["texture"]
        backends.append(("numba accelerator", "numba"))
        # compile outside the timing
        wl = np.zeros((16, 16), np.int64)
        wl[2:12, 2:12] = 1
        cp_texture(bulk.get_core_measurements(sanitize=False)["texture"], wl,
                   np.random.default_rng(0).integers(1, 33, (1, 16, 16)).astype(np.uint8) * (wl > 0), params.distances)
    except Exception as exc:  # noqa: BLE001 - report and go on
        print(f"cp_measure numba accelerator unavailable: {exc!r}")
    finally:
        cp_measure.set_accelerator(None)

    def cp_run(acc):
        def run():
            cp_measure.set_accelerator(acc)
            try:
                fn = bulk.get_core_measurements(sanitize=False)["texture"]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return np.concatenate([cp_texture(fn, sl, sv, params.distances)
                                           for sl, sv in zip(sub_labels, sub_levels)])
            finally:
                cp_measure.set_accelerator(None)
        return run

    # (method label, cells, callable); only small results are kept, so that a
    # timing does not pay for page faults of memory another one holds.
    methods = {
        f"(a) scip extract, default families ({', '.join(families)})": (n_cells, lambda: [
            len(features.extract(px, lab, families=families, background=bg(lab), params=params)) for px, lab in images]),
        "(a) scip extract, texture family (Haralick + Sobel)": (n_cells, lambda: [
            len(features.extract(px, lab, families=["texture"], background=bg(lab), params=params)) for px, lab in images]),
        # in extract's strips of a large image, as extract measures it (one Objects of all 5,000 cells
        # maps ~130 MiB of values afresh per call, whose cost on a VM varies by a factor of four)
        "(a) scip Haralick only (texture.haralick: grouping + quantization included)": (n_cells, lambda: [
            texture.haralick(strip, params) for px, lab in images
            for _, strip in features._strips(make_objects(px, lab), params)]),
        "(a) scip Haralick only, subset (grouping + quantization included)": (n_sub, lambda: np.concatenate([
            texture.haralick(make_objects(sp, sl), params) for sp, sl in zip(sub_pixels, sub_labels)])),
        "(b) scikit-image graycomatrix per object + numpy Haralick": (n_sub, lambda: np.concatenate(
            [skimage_texture(cr, params.distances) for cr in crops])),
    }
    for label, acc in backends:
        methods[f"(c) cp_measure texture, {label}"] = (n_sub, cp_run(acc))
    results, times = alternated({k: v[1] for k, v in methods.items()}, REPEAT)

    ref_name = "(a) scip Haralick only, subset (grouping + quantization included)"
    ref_times = np.array(times[ref_name])
    for method, (cells, _) in methods.items():
        t = np.array(times[method])
        row = dict(scene=name, method=method, cells=cells, seconds=float(np.median(t)), runs=t.tolist(),
                   reference=method == ref_name)
        if method.startswith(("(b)", "(c)")):
            # per round: the scip subset rate over this method's rate, same cells
            row["speedup_per_round"] = (t / ref_times).tolist()
            row["speedup"] = float(np.median(t / ref_times))
        rows.append(row)

    ours = results[ref_name]
    ref_b = results["(b) scikit-image graycomatrix per object + numpy Haralick"]
    checks.append(dict(scene=name, method="(b) scikit-image + numpy", cells=n_sub, max_rel_diff=max_rel_diff(ours, ref_b),
                       nan_pattern_equal=bool(np.array_equal(np.isnan(ours), np.isnan(ref_b)))))
    # cp_measure gives NaN for all directions of an object when one has no pair
    whole = np.isfinite(ours).all(axis=(3, 4), keepdims=True)
    for label, _ in backends:
        ref_c = results[f"(c) cp_measure texture, {label}"]
        checks.append(dict(scene=name, method=f"(c) cp_measure, {label}", cells=n_sub,
                           max_rel_diff=max_rel_diff(np.where(whole, ours, np.nan), ref_c),
                           nan_pattern_equal=bool(np.array_equal(np.isnan(ref_c), np.broadcast_to(~whole, ref_c.shape)))))


def render(rows: list[dict], checks: list[dict], meta: dict) -> str:
    lines = ["# Feature extraction benchmark", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; single thread (NUMBA/OMP/BLAS threads = 1); "
             f"numba {meta['versions']['numba']}, numpy {meta['versions']['numpy']}, "
             f"scikit-image {meta['versions']['skimage']}, mahotas {meta['versions']['mahotas']}, "
             f"cp-measure {meta['versions']['cp_measure']}. Load average (1 min) at the start "
             f"{meta['load_start']}, at the end {meta['load_end']}.", "",
             f"Times: median of {meta['repeat']} rounds; in each round every method of the scene runs once, "
             "in the order of the table (alternated: A, B, C, ..., A, B, C, ...).", "",
             f"Texture parameters: distances {meta['distances']}, gray levels {meta['gray_levels']} "
             "(per-object quantization). Work compared for the speed-up column, on the same first cells of "
             "the scene (`cells` column), same output (13 Haralick features x 4 directions x the distances x "
             "the channels per cell, values checked below):", "",
             "* scip (reference row): `texture.haralick` from the raw pixels and the label image of the box "
             "holding those cells: pixel grouping, per-object quantization to the gray levels, co-occurrence "
             "counting and the 13 features;",
             "* (b), (c): the same features from scip's gray-level image (already quantized: their time "
             "excludes quantization) and the label image; cp_measure's `get_texture` is called once per "
             "channel and distance, as CellProfiler does.", "",
             "Speed-up: per round, (b)/(c)'s time over scip's subset time; the median over the rounds.", ""]
    for scene in dict.fromkeys(r["scene"] for r in rows):
        lines += [f"## {scene}", "", "| method | cells | median seconds | cells/s/core | scip Haralick speed-up |",
                  "|---|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["scene"] == scene):
            rate = r["cells"] / r["seconds"]
            ratio = "1 (reference)" if r.get("reference") else (f"{r['speedup']:.1f}x" if "speedup" in r else "")
            lines.append(f"| {r['method']} | {r['cells']} | {r['seconds']:.3f} | {rate:,.0f} | {ratio} |")
        lines.append("")
        lines += ["Value check against scip's Haralick features (finite entries; relative difference "
                  "with a 1e-12 floor on the denominator):", "",
                  "| method | cells | max rel diff | same NaN pattern |", "|---|---:|---:|:---:|"]
        for ch in (c for c in checks if c["scene"] == scene):
            lines.append(f"| {ch['method']} | {ch['cells']} | {ch['max_rel_diff']:.2e} | {ch['nan_pattern_equal']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="synthetic cells (default 5000)")
    parser.add_argument("--subset", type=int, default=500, help="cells for (b) and (c) (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds of alternated runs; medians are reported (default 5, at least 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for features.md / features.json")
    parser.add_argument("--mnfinder", type=Path, default=MNFINDER,
                        help="mnfinder training-data folder for scene (ii) (default ../shared/data/mnfinder/training-data)")
    args = parser.parse_args(argv)
    global REPEAT
    REPEAT = max(3, args.repeat)
    params = FeatureParams()
    import cp_measure
    import mahotas
    import numba
    import skimage
    from importlib.metadata import version

    meta = dict(command=" ".join(["python", *sys.argv] if argv is None else ["python", "benchmarks/bench_features.py", *argv]),
                machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                        f"{platform.python_implementation()} {platform.python_version()}",
                versions=dict(numba=numba.__version__, numpy=np.__version__, skimage=skimage.__version__,
                              mahotas=mahotas.__version__, cp_measure=version("cp_measure")),
                distances=list(params.distances), gray_levels=params.gray_levels, repeat=REPEAT,
                load_start=os.getloadavg()[0])
    _ = cp_measure
    rows: list[dict] = []
    checks: list[dict] = []

    # warm-up: compile every kernel outside the timings
    wp, wl = synthetic_mosaic(4, seed=99)
    features.extract(wp, wl, params=params)

    print(f"generating {args.n} synthetic cells ...", flush=True)
    pixels, labels = synthetic_mosaic(args.n, seed=args.seed)
    run_scene(f"(i) synthetic: {args.n} cells of 64x64 px x 3 channels, one mosaic", pixels, labels, params,
              args.subset, rows, checks)
    del pixels, labels

    if args.mnfinder.is_dir():
        imgs = mnfinder_images(args.mnfinder)
        run_scene(f"(ii) mnfinder training nuclei: {len(imgs)} images of 768x869 px, 1 channel", [i[1][None] for i in imgs],
                  [i[2].astype(np.int64) for i in imgs], params, args.subset, rows, checks)
    else:
        print(f"skipping the real nuclei: {args.mnfinder} not found")

    meta["load_end"] = os.getloadavg()[0]
    text = render(rows, checks, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "features.md").write_text(text + "\n")
    (args.out / "features.json").write_text(json.dumps(dict(meta=meta, timings=rows, checks=checks), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
