#!/usr/bin/env bash
# Remake the course's pre-trained encoders (pretrained/course-*.pt + manifest.json) with the project's own CLI:
# the paper's recipe (pretrain.yaml) on the course dataset, EPOCHS epochs with the lr drops at 65% and 85%, and a
# kNN monitor with K = 10 (the paper's K = 200 exceeds the course's small val set: ~20 patches per class).
# Usage: bash pretrained/make_pretrained.sh [EPOCHS] [PYTHON] [PRESET] [--key value ...]
#   (one GPU: a few minutes for all three; CPU: hours). Extra --key value pairs override pretrain.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-200}
py=${2:-python3}
preset=${3:-course}
shift $(($# < 3 ? $# : 3))
"$py" -m uclser_lib extract --preset "$preset"
dataset=$("$py" -c "from uclser_lib.datasets import course_dataset_name; print(course_dataset_name('$preset'))")
archs=${ARCHS:-resnet18 vgglike crnn}  # ARCHS="vgglike crnn": some of them only
mkdir -p runs
milestones="[$((epochs * 65 / 100)), $((epochs * 85 / 100))]"
for arch in $archs; do  # they share one GPU
  "$py" -m uclser_lib pretrain --config pretrain.yaml --data.preset "$preset" --arch "$arch" --epochs "$epochs" \
    --milestones "$milestones" --knn_k 10 --run_dir "runs/course-$arch" "$@" > "runs/course-$arch.log" 2>&1 &
done
wait
for arch in $archs; do  # MADE_ON: how they were made, in words, for the manifest
  tail -n 2 "runs/course-$arch.log"
  "$py" -m uclser_lib export --run-dir "runs/course-$arch" --name "course-$arch" --dataset "$dataset" --replace-shipped \
    ${MADE_ON:+--made-on "$MADE_ON"}
done
