#!/usr/bin/env bash
# A short GPU check: the CUDA tests, feature extraction on the GPU, and ResNet-18 batch 512 with compile + graphed views.
# Usage: bash bench/gpu_extra.sh [OUT_DIR]
set -uo pipefail
out=${1:-${OUT:-bench/out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=.:/tmp/site
fi
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  timeout 90 python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors tests/test_views.py tests/test_augment.py tests/test_views.py \
    tests/test_models.py tests/test_losses.py tests/test_evaluate.py -k "cuda or CUDA or graph" -rA 2>&1 | tail -25
  timeout 150 python3 - <<'PY'
import json, torch
from bench.bench_features import bench_features
from bench.pipeline import bench_train_step
res = {"features": bench_features("cuda", n_files=200, max_seconds=30.0)}
print(json.dumps(res["features"]), flush=True)
res["train_step"] = [bench_train_step("cuda", "resnet18", 512, compile=True, graphed=True)]
print(json.dumps(res["train_step"]), flush=True)
json.dump(res, open("runs-extra.json", "w"), indent=1)
PY
} 2>&1 | tee "$out/log.txt"
cp runs-extra.json "$out/" 2>/dev/null
