#!/usr/bin/env bash
# Input pipeline vs the step it feeds, on one GPU (issue #6 numbers).
#   bash benchmarks/input_e2e.sh OUT.jsonl [WORKERS, default "4,8,14"]
# 1. `lusjax bench input`: frames/s of grain decode+sample+batch at 224 px for
#    0 and WORKERS worker processes, and the on-device augmentation time.
# 2. `lusjax bench step` ResNet-18@224 SimCLR, batch 256: the same compiled step
#    fed with synthetic on-device views, then by the grain pipeline over 224 px
#    ArrayRecord shards (+ on-device augmentation) for each worker count.
set -uo pipefail
out="${1:?usage: input_e2e.sh OUT.jsonl [WORKERS]}"; workers="${2:-4,8,14}"
here="$(cd "$(dirname "$0")/.." && pwd)"
python3 -m lusjax.cli bench input --size 224 --n-clips 96 --n-frames 32 --batch-size 256 \
  --workers "0,$workers" --batches 40 --warmup 5 | tee -a "$out"
python3 -m lusjax.cli bench step --config "$here/configs/simclr_resnet.py:r18" \
  --batch-size 256 --input synthetic,pipeline --workers "$workers" --steps 60 --warmup 10 \
  --config.data.synthetic.size=224 | tee -a "$out"
