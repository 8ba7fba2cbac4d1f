#!/usr/bin/env bash
# Data-parallel scaling and correctness on all GPUs of this host (issue #11 numbers).
#   bash benchmarks/multi_gpu.sh OUTDIR [METHODS, default "simclr mocov2 byol"]
# 1. multi_device_check.py: 1-GPU vs all-GPU step on one global batch (loss, gradients,
#    BN statistics), SimCLR/MoCo v2/BYOL/SwAV in float32 and SimCLR in bfloat16.
# 2. kill_resume.py: SIGKILL a run on all GPUs mid-way, resume, compare to an
#    uninterrupted run (deterministic GPU ops).
# 3. Scaling: `lusjax bench step` ResNet-50@224 at a fixed per-GPU batch of 256 on
#    1 GPU and on all of them (SimCLR also end to end from the grain pipeline, and
#    with per-device BatchNorm).
set -uo pipefail
out="${1:?usage: multi_gpu.sh OUTDIR [METHODS]}"; methods="${2:-simclr mocov2 byol}"
here="$(cd "$(dirname "$0")/.." && pwd)"
export NCCL_NVLS_ENABLE=0   # never NVLink multicast on shared hosts
n=$(nvidia-smi -L | wc -l)
XLA_FLAGS=--xla_gpu_autotune_level=0 python3 "$here/benchmarks/multi_device_check.py" \
  --methods simclr,mocov2,byol,swav --dtypes float32 | tee -a "$out/check.jsonl"
XLA_FLAGS=--xla_gpu_autotune_level=0 python3 "$here/benchmarks/multi_device_check.py" \
  --methods simclr --dtypes bfloat16 | tee -a "$out/check.jsonl"
XLA_FLAGS=--xla_gpu_deterministic_ops=true python3 "$here/benchmarks/kill_resume.py" \
  --workdir /tmp/kill_resume --steps 200 --kill-after 100 --ckpt-every 50 \
  --config.image_size=64 --config.aug.size=64 --config.batch_size=256 \
  --config.probe.eval_every=0 | tee -a "$out/kill_resume.jsonl"
for m in $methods; do
  inp=synthetic; [ "$m" = simclr ] && inp=synthetic,pipeline
  for g in 1 "$n"; do
    CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((g - 1))) python3 -m lusjax.cli bench step \
      --config "$here/configs/${m}_resnet.py:r50" --batch-size $((256 * g)) --input "$inp" \
      --workers $((12 * g)) --steps 20 --warmup 5 --config.data.synthetic.size=224 \
      | tee -a "$out/scaling.jsonl"
  done
done
# What synchronised BatchNorm costs: SimCLR with per-device BN on all GPUs (on one
# GPU it is the run above: one device has nothing to synchronise).
python3 -m lusjax.cli bench step --config "$here/configs/simclr_resnet.py:r50" \
  --batch-size $((256 * n)) --steps 20 --warmup 5 --config.model.sync_bn=False \
  | tee -a "$out/scaling.jsonl"
