"""Before/after timing of ``scip.features.extract`` between two checkouts, alternated: wall, CPU and page faults.

One long-lived process per checkout imports scip from it, loads the same
saved scene (the synthetic mosaic of ``bench_features.py``) and warms the
kernels up; then each round asks A, then B, to time one ``extract`` call with
the default families, single-threaded (A, B, A, B, ...). The per-round ratio
is A's time over B's; the report gives the medians over the rounds, so load
from other jobs hits both sides of each ratio alike. Each child also reports
its own ``getrusage`` for the call: user CPU time is what the cells/s/core
target counts, and system time and minor page faults show fresh mappings
of large arrays.

Usage::

    python benchmarks/ab_features.py --a /work/main --b . [--n 5000] [--rounds 7]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import os, resource, sys, time, json
for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
sys.path.insert(0, sys.argv[1])
import numpy as np
from scip import features
scene = np.load(sys.argv[2])
px, lab = scene["pixels"], scene["labels"]
features.extract(px[:, :128, :128], lab[:128, :128])  # compile / load the kernels outside the timing
print(json.dumps(dict(file=features.__file__)), flush=True)
for line in sys.stdin:  # one timed call per line
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    features.extract(px, lab)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps(dict(seconds=t1 - t0, user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime,
                          minflt=r1.ru_minflt - r0.ru_minflt)), flush=True)
"""


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    from _timing import ab_parser
    from bench_features import synthetic_mosaic

    parser = ab_parser(__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="JSON file for the raw times")
    args = parser.parse_args(argv)

    pixels, labels = synthetic_mosaic(args.n, seed=0)
    runs: dict[str, list[float]] = {"a": [], "b": []}
    usage: dict[str, list[dict]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.npz"
        np.savez(scene, pixels=pixels, labels=labels)
        del pixels, labels
        children = {}
        for side in ("a", "b"):
            root = str(getattr(args, side).resolve())
            child = subprocess.Popen([sys.executable, "-c", _CHILD, root, str(scene)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
            first = json.loads(child.stdout.readline())
            assert first["file"].startswith(root), (first["file"], root)
            children[side] = child
        load_start = os.getloadavg()[0]
        for _ in range(max(3, args.rounds)):
            for side, child in children.items():
                child.stdin.write("run\n")
                child.stdin.flush()
                got = json.loads(child.stdout.readline())
                runs[side].append(float(got["seconds"]))
                usage[side].append(got)
        for child in children.values():
            child.stdin.close()
            child.wait()
    a, b = np.array(runs["a"]), np.array(runs["b"])
    report = dict(a=str(args.a), b=str(args.b), n=args.n, a_seconds=a.tolist(), b_seconds=b.tolist(),
                  a_median=float(np.median(a)), b_median=float(np.median(b)),
                  speedup_median=float(np.median(a / b)), load_start=load_start, load_end=os.getloadavg()[0])
    for key in ("user", "sys", "minflt"):
        for side in ("a", "b"):
            report[f"{side}_{key}"] = [u[key] for u in usage[side]]
    print(json.dumps(report, indent=2))
    print(f"A {args.n / report['a_median']:,.0f} cells/s, B {args.n / report['b_median']:,.0f} cells/s, "
          f"B over A: {report['speedup_median']:.2f}x (median of {len(a)} alternated rounds)")
    for key in ("user", "sys", "minflt"):
        ua, ub = np.array(report[f"a_{key}"]), np.array(report[f"b_{key}"])
        print(f"{key:6s} per call: A median {np.median(ua):,.3f}, B median {np.median(ub):,.3f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
