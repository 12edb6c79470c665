#!/usr/bin/env bash
# The CUDA paths that CI (no GPU) cannot take, checked on a machine with an NVIDIA GPU.
#
# Needs: scip importable (installed, or PYTHONPATH=<repo>), torch with CUDA, dask-cuda for the GPU worker.
# Run from the repository root:   bash benchmarks/gpu_checks.sh [work folder]
#
# 1. The U-Net tests: with a GPU, device "auto" picks CUDA, so every U-Net test runs its network there,
#    and the CUDA-only test (FP16 against FP32) runs instead of skipping.
# 2. The same micronucleus assay run twice, the U-Net on a dask-cuda GPU worker and on CPU workers:
#    the two tables must hold the same cells (run.json's evaluate figures and cell counts are printed
#    side by side, and which workers ran the segmentation tasks).
# Every step prints PASS/FAIL; the exit status counts the failures.
set -u
PY=${PYTHON:-python3}
WORK=${1:-/tmp/scip-gpu-checks}
mkdir -p "$WORK"
fails=0
step() { echo; echo "=== $1"; }
result() { if [ "$1" -eq 0 ]; then echo "PASS: $2"; else echo "FAIL ($1): $2"; fails=$((fails + 1)); fi; }

step "environment"
$PY - <<'EOF'
import torch, numpy, scip
print("torch", torch.__version__, "| CUDA available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "| numpy", numpy.__version__)
try:
    import dask_cuda
    from dask_cuda.utils import get_n_gpus
    print("dask-cuda", dask_cuda.__version__, "| GPUs:", get_n_gpus())
except Exception as e:  # reported, not fatal: step 2 then runs without a dask-cuda worker
    print("dask-cuda not usable:", type(e).__name__, e)
EOF

step "1. U-Net tests with CUDA"
timeout 600 $PY -m pytest -q -p no:cacheprovider -rs tests/test_unet.py tests/test_unet_pipeline.py
result $? "U-Net tests on CUDA"

step "2. micronucleus assay: U-Net on a GPU worker vs on CPU workers"
$PY -m scip example-data "$WORK/data" --events 10 --fields 1 --stacks 1 -q
for dev in cuda cpu; do
  cat > "$WORK/$dev.yml" <<EOF
input:
  path: data/micronuclei
  pattern: 'image(?P<id>\d+)_(?P<channel>[A-Za-z]+)\.tiff'
  channels: [DNA]
segment:
  method: unet
  channel: DNA
  model: nuclei
  device: $dev
micronuclei:
  method: spot
evaluate:
  labels: data/micronuclei_labels/image{id}.tiff
output:
  path: results-$dev
EOF
done
timeout 600 $PY -m scip run "$WORK/cuda.yml" --overwrite --gpu-workers 1 --workers 2
result $? "scip run, U-Net on CUDA (GPU worker)"
timeout 600 $PY -m scip run "$WORK/cpu.yml" --overwrite --gpu-workers 0 --workers 2
result $? "scip run, U-Net on CPU"
$PY - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
import pandas as pd
work = Path(sys.argv[1])
runs = {d: json.loads((work / f"results-{d}" / "run.json").read_text()) for d in ("cuda", "cpu")}
for d, r in runs.items():
    print(d, "| evaluation:", json.dumps(r.get("evaluation"), default=str)[:400])
    stream = r.get("timings_s", {}).get("task_stream", {})
    print(d, "| segment tasks per worker:", stream.get("workers", {}).get("segment"),
          "| cluster:", json.dumps(r.get("cluster"), default=str)[:300])
tables = {d: pd.concat([pd.read_parquet(p) for p in sorted((work / f"results-{d}").rglob("*.parquet"))
                        if "cells" in p.as_posix()], ignore_index=True) for d in runs}
n = {d: len(t) for d, t in tables.items()}
print("cells:", n)
routed = runs["cuda"]["cluster"].get("routing", {}).get("segment", {})
print("segmentation routed to:", routed)
sys.exit(0 if "GPU" in routed and n["cuda"] and abs(n["cuda"] - n["cpu"]) <= max(1, 0.02 * n["cpu"]) else 1)
EOF
result $? "segmentation on the GPU worker; same cells (within 2 %) as the CPU run"

echo
echo "failures: $fails"
exit "$fails"
