#!/usr/bin/env bash
# The one prepared GPU check: the library's CUDA tests, then the benchmark suite.
# Usage: bash bench/gpu_check.sh [OUT_DIR]   (default: $OUT when set, else bench/out). Writes log.txt + results there.
set -uo pipefail
out=${1:-${OUT:-bench/out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_views.py tests/test_augment.py tests/test_losses.py tests/test_models.py tests/test_evaluate.py -k "cuda or CUDA or gpu" 2>&1 | tail -5
  timeout 420 python3 -m bench --out "$out"
} 2>&1 | tee "$out/log.txt"
