#!/usr/bin/env bash
# One GPU session that re-makes encoders on the current course dataset (v2) and their evidence (docs/results.md):
# pre-train each ARCH (the paper's recipe, EPOCHS epochs, lr drops at 65 % and 85 %, kNN monitor K = 10), export it
# into pretrained/, then its protocol tables: linear evaluation against every baseline and the authors' encoder
# (100 epochs), fine-tuning on the few clean labels against training from scratch (the short recipe of
# pretrained/results/v2/short-finetune, which fits a CPU: 30 epochs at batch 32, lr from {0.003, 0.01, 0.03}, no
# probe), and the linear-probe label curves (200 epochs), 3 seeds each. On 2026-11-30 (log in
# bench/gpu-evidence-2026-11-30/) everything but the curves ran in 7.5 minutes; the curves need more than the
# CURVES_TIMEOUT seconds left to them (default 90, which keeps one call under 10 minutes): set it higher in a
# session with more device time.
# Usage: bash bench/gpu_evidence.sh [OUT_DIR] ["vgglike crnn"] [EPOCHS]
#   The authors' encoders are read from UCLSER_CACHE (default .zoo: VGG_best.pth, as `download released-encoders`
#   leaves it); soundfile and soxr wheels from .whl where the machine lacks them (bench/RESULTS.md says how).
# Brings back log.txt, bundle.tar.gz (manifest, metrics, results, logs) and the encoder files.
set -uo pipefail
out=${1:-${OUT:-bench/out}}
preset=${PRESET:-course}  # PRESET=tiny: a dry run of the whole script in seconds
archs=${2:-"vgglike crnn"}
epochs=${3:-200}
mkdir -p "$out" runs/gpu/v2/short-finetune
export PYTHONUNBUFFERED=1 PYTHONPATH=. UCLSER_DATA=${UCLSER_DATA:-/tmp/uclser-data} UCLSER_CACHE=${UCLSER_CACHE:-$PWD/.zoo}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=.:/tmp/site
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  date -u +"%F %T start"
  ARCHS="$archs" MADE_ON="one NVIDIA H200, bf16, $(date -u +%F)" timeout 300 \
    bash pretrained/make_pretrained.sh "$epochs" python3 "$preset"  # extract, pre-train, export
  date -u +"%F %T pre-trained"
  for arch in $archs; do
    (
      timeout 120 python3 -m uclser_lib evaluate --encoder "course-$arch" --stages linear:noisy --epochs 100 \
        --released released:vgglike --out "runs/gpu/v2/results-course-$arch.json"
      timeout 100 python3 -m uclser_lib evaluate --encoder "course-$arch" --stages finetune:clean --epochs 30 \
        --batch-size 32 --finetune-lrs 0.003 0.01 0.03 --probe-epochs 0 \
        --out "runs/gpu/v2/short-finetune/results-course-$arch.json"
      timeout "${CURVES_TIMEOUT:-90}" python3 -m uclser_lib evaluate --encoder "course-$arch" --stages --label-efficiency \
        --label-noise 0 0.2 0.4 0.6 --curve-stage linear --out "runs/gpu/v2/curves-course-$arch.json"
    ) > "runs/gpu/eval-$arch.log" 2>&1 &
  done
  wait
  for arch in $archs; do grep -E "test balanced|gain|error" "runs/gpu/eval-$arch.log" | tail -n 12; done
  date -u +"%F %T done"
} 2>&1 | tee "$out/log.txt"
tar czf "$out/bundle.tar.gz" --exclude "*.pt" pretrained/manifest.json pretrained/*.metrics.json runs/gpu runs/course-*.log 2>/dev/null
for arch in $archs; do cp "pretrained/course-$arch.pt" "$out/" 2>/dev/null; done
ls -la "$out"
