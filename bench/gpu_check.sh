#!/usr/bin/env bash
# The one prepared GPU session: remake the course's pre-trained encoders (pretrained/make_pretrained.sh), evaluate
# them against random init (python -m uclser_lib evaluate), then run the benchmark suite (python -m bench).
# Usage: bash bench/gpu_check.sh [OUT_DIR] [PRETRAIN_EPOCHS] [EVAL_EPOCHS]   (OUT_DIR defaults to $OUT, else bench/out)
# Brings back log.txt, bundle.tar.gz (manifest, metrics, results, bench JSON/Markdown, logs) and the encoders,
# split into 15 MB parts (cat course-X.pt.part* > pretrained/course-X.pt).
set -uo pipefail
out=${1:-${OUT:-bench/out}}
epochs=${2:-200}
eval_epochs=${3:-100}
mkdir -p "$out" runs/bench
export PYTHONUNBUFFERED=1 PYTHONPATH=. UCLSER_DATA=${UCLSER_DATA:-/tmp/uclser-data}
if [ -d .whl ]; then  # soundfile (+ cffi) where the machine lacks it
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=.:/tmp/site
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  date -u +"%F %T start"
  timeout 280 bash pretrained/make_pretrained.sh "$epochs" python3
  for arch in resnet18 vgglike crnn; do tail -n 3 "runs/course-$arch.log"; done
  date -u +"%F %T pretrained"
  for arch in resnet18 vgglike crnn; do
    timeout 200 python3 -m uclser_lib evaluate --encoder "course-$arch" --epochs "$eval_epochs" \
      --out "runs/results-course-$arch.json" > "runs/eval-$arch.log" 2>&1 &
  done
  wait
  for arch in resnet18 vgglike crnn; do grep "test balanced" "runs/eval-$arch.log" || tail -n 5 "runs/eval-$arch.log"; done
  date -u +"%F %T evaluated"
  timeout 200 python3 -m bench --out runs/bench --update-results
  date -u +"%F %T done"
} 2>&1 | tee "$out/log.txt"
tar czf "$out/bundle.tar.gz" pretrained/manifest.json pretrained/*.metrics.json runs/*.log runs/results-*.json runs/bench 2>/dev/null
for f in pretrained/course-*.pt; do [ -f "$f" ] && split -b 15M -d "$f" "$out/$(basename "$f").part"; done
ls -la "$out"
