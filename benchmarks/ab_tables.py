"""Are two checkouts' feature tables equal bit for bit? The scenes a speed-up must not change.

Each checkout computes, in a process of its own (``sys.path`` set to it), the
default tables of: the synthetic mosaic of ``bench_features.py``; edge cases
on it (an all-zero, an all-NaN and an all--0.0 object, scattered NaN pixels,
many ties for the maximum, a zero-mean object, 1e300 pixels, a large
offset; float32 pixels with ``edge_width=2, background_width=5``); bbox alone
(numpy grouping) and with shape (compiled grouping); packed crops with
per-object origins; 3-D volumes whose rows wrap between planes; and mnfinder
nuclei images when the data is there. Every float column is compared
bitwise (NaN payloads and the sign of zero included).

Usage::

    python benchmarks/ab_tables.py --a /path/to/before --b . [--n 400] [--nuclei 6]
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NUCLEI = "/work/shared/data/mnfinder/training-data/*/*_nuclei.tif"

_CHILD = r"""
import glob, os, pickle, sys
for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
root, out, here, n, n_nuclei, nuclei = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sys.path.insert(0, root)
import numpy as np
from scipy import ndimage
from scip import features  # before bench_features, which puts its own checkout on sys.path
from scip.features.crops import extract_crops
from scip.features.volume import extract_volumes
assert features.__file__.startswith(root), features.__file__
sys.path.insert(0, here)
from bench_features import synthetic_mosaic

tables = {}
px, lab = synthetic_mosaic(n, seed=0)
tables["mosaic"] = features.extract(px, lab)
p2 = px.astype(np.float64)
ids = np.unique(lab)[1:]
rng = np.random.default_rng(5)
p2[0][lab == ids[0]] = 0.0
p2[1][lab == ids[1]] = np.nan
p2[0].ravel()[np.flatnonzero((lab == ids[2]).ravel())[::7]] = np.nan
p2[2] = np.round(p2[2] / 200)
m = lab == ids[3]
p2[1][m] = p2[1][m] - p2[1][m].mean()
p2[0][lab == ids[4]] = -0.0
p2[1][lab == ids[5]] = 1e300
with np.errstate(over="ignore"):
    tables["edge_cases"] = features.extract(p2, lab, offset=(17, 1000003))
    p32 = p2.astype(np.float32)
tables["edge_cases_f32"] = features.extract(p32, lab, edge_width=2, background_width=5)
tables["bbox_only"] = features.extract(px, lab, families=["bbox"])
tables["bbox_compiled"] = features.extract(px, lab, families=["bbox", "shape"])
crops, masks, origins = [], [], []
for k in range(min(60, len(ids))):
    r0, c0 = (k // 10) * 64, (k % 10) * 64
    if r0 + 64 > lab.shape[0] or c0 + 64 > lab.shape[1]:
        continue
    crops.append(p32[:, r0:r0 + 64, c0:c0 + 64])
    masks.append(lab[r0:r0 + 64, c0:c0 + 64] == lab[r0 + 32, c0 + 32])
    origins.append((int(rng.integers(0, 10**6)), int(rng.integers(0, 10**6))))
tables["crops"] = extract_crops(crops, masks, ["a", "b", "c"], origins=origins, max_pixels=40_000)
# as the pipeline measures nuclei: a mask inside each cell, the band around the cell, background outside it
inner = [ndimage.binary_erosion(m, iterations=4) for m in masks]
tables["crops_in_cells"] = extract_crops(crops, inner, ["a", "b", "c"], origins=origins, max_pixels=40_000,
                                         band_masks=masks, backgrounds=[~m for m in masks])
tables["crops_cells_band"] = extract_crops(crops, masks, ["a", "b", "c"], origins=origins, max_pixels=40_000,
                                           band_masks=masks, backgrounds=[~m for m in masks])
vols, vmasks = [], []
for k in range(20):
    vol = np.zeros((5, 30, 40), bool)
    vol[1:4, 3 + k % 5:20 + k % 7, 2 + k % 3:30] = True
    vol[2, 0:2, :] = True  # rows above the first plane's top row: rows wrap between planes
    vols.append(rng.random((2, 5, 30, 40)).astype(np.float32))
    vmasks.append(vol)
tables["volumes"] = extract_volumes(vols, vmasks, ["a", "b"], origins=[(k, 2 * k, 3 * k) for k in range(20)])
files = sorted(glob.glob(nuclei))
if files and n_nuclei:
    import tifffile
    for f in files[:: max(1, len(files) // n_nuclei)]:
        image = tifffile.imread(f.replace("_nuclei.tif", ".tif"))
        tables["nuclei " + f] = features.extract(
            image[None] if image.ndim == 2 else image, tifffile.imread(f).astype(np.int64))
with open(out, "wb") as fh:
    pickle.dump(tables, fh)
"""


def _same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout A (e.g. before)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (e.g. after)")
    parser.add_argument("--n", type=int, default=400, help="synthetic cells (default 400)")
    parser.add_argument("--nuclei", type=int, default=6, help="mnfinder nuclei images, if present (default 6)")
    args = parser.parse_args(argv)
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("a", "b"):
            out = Path(tmp) / f"{side}.pkl"
            subprocess.run([sys.executable, "-c", _CHILD, str(getattr(args, side).resolve()), str(out), str(HERE),
                            str(args.n), str(args.nuclei), NUCLEI], check=True)
            with open(out, "rb") as fh:
                tables[side] = pickle.load(fh)
    a, b = tables["a"], tables["b"]
    differing = 0
    for scene in a:
        ta, tb = a[scene], b[scene]
        if list(ta.columns) != list(tb.columns) or ta.shape != tb.shape:
            print(f"{scene}: columns or shape differ")
            differing += 1
            continue
        bad = [c for c in ta.columns if not _same_bits(ta[c].to_numpy(), tb[c].to_numpy())]
        differing += len(bad)
        print(f"{scene}: {ta.shape[0]} rows, {ta.shape[1]} columns, {len(bad)} differ {bad[:5]}")
    print(f"columns differing: {differing}")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
