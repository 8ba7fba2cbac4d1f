#!/usr/bin/env bash
# lusjax's SimCLR step vs the PyTorch peer (benchmarks/peer_torch.py), one GPU, one launch.
#
#   bash benchmarks/compare_peer.sh OUT.jsonl [ROW ...]      ROW = "MODEL SIZE BATCH"
#
# For each row, on the same GPU one after the other: `lusjax bench step` twice,
#   1. the full step (synthetic on-device uint8 input: augmentation, both views,
#      SimCLR head and loss, online probe, LARS), and
#   2. the peer's work: views already augmented (float32, as with
#      data.worker_side_aug), SGD; the online probe stays (SAME_WORK=0 skips run 2),
# and then the torch.compile peer; every JSON line goes to OUT.jsonl.
# `python benchmarks/table.py OUT.jsonl` prints the Markdown table.
# PROFILE_DIR=DIR also traces each lusjax step and appends the kernel summary
# (benchmarks/profile_top.py) to OUT.profile.json. Extra lusjax options (e.g. --config.model.dtype=float32) go in $LUSJAX_BENCH_ARGS.
set -uo pipefail
out="${1:?usage: compare_peer.sh OUT.jsonl [\"MODEL SIZE BATCH\" ...]}"; shift
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=("resnet18 224 256" "resnet50 224 256" \
                               "mobilenetv3_small 224 512" "resnet18 128 512")
here="$(cd "$(dirname "$0")/.." && pwd)"
for row in "${rows[@]}"; do
  read -r model size batch <<<"$row"
  case "$model" in
    mobilenetv3_*) cfg="$here/configs/simclr_mobilenetv3.py:${model#mobilenetv3_}" ;;
    *) cfg="$here/configs/simclr_resnet.py" ;;
  esac
  echo "== $model ${size}px batch $batch" >&2
  prof=(); [ -n "${PROFILE_DIR:-}" ] && prof=(--profile "$PROFILE_DIR/$model-$size-$batch")
  python3 -m lusjax.cli bench step "${prof[@]}" --config "$cfg" --config.model.name="$model" \
    --config.image_size="$size" --config.aug.size="$size" --batch-size "$batch" \
    --steps "${STEPS:-30}" --warmup 5 ${LUSJAX_BENCH_ARGS:-} | tee -a "$out"
  [ "${SAME_WORK:-1}" = 1 ] && python3 -m lusjax.cli bench step --config "$cfg" \
    --config.model.name="$model" --config.image_size="$size" --config.aug.size="$size" \
    --batch-size "$batch" --steps "${STEPS:-30}" --warmup 5 \
    --config.data.worker_side_aug=True --config.optim.name=sgd ${LUSJAX_BENCH_ARGS:-} | tee -a "$out"
  [ -n "${PROFILE_DIR:-}" ] && python3 "$here/benchmarks/profile_top.py" \
    "$PROFILE_DIR/$model-$size-$batch" >> "${out%.jsonl}.profile.json"
  python3 "$here/benchmarks/peer_torch.py" --model "$model" --image-size "$size" \
    --batch-size "$batch" --steps "${STEPS:-30}" --warmup 5 | tee -a "$out"
done
