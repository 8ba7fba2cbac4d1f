# Launch E: stem A/Bs in the real step (4x4 space-to-depth conv; pool gradient unfused),
# ResNet-18 (with a repeat of the baseline) beside its torch.compile peer, and ResNet-50.
set -u
source benchmarks/device_setup.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jc CUDA_VISIBLE_DEVICES=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/gpu.txt
timeout 210 python3 benchmarks/ab_step.py --variants lusjax,stem=s2d4,maxpool=unfused,stem=s2d4+maxpool=unfused,lusjax --config configs/simclr_resnet.py:r18 --batch-size 256 --profile /tmp/prof18 > $OUT/ab_r18.log 2>&1; echo "ab r18 rc $?"; grep '^{' $OUT/ab_r18.log | cut -c1-300
python3 benchmarks/profile_top.py --diff /tmp/prof18/lusjax /tmp/prof18/stem=s2d4+maxpool=unfused > $OUT/prof_r18_diff.json 2>&1; head -c 3000 $OUT/prof_r18_diff.json; echo
timeout 130 python3 benchmarks/peer_torch.py --model resnet18 --image-size 224 --batch-size 256 --steps 30 --warmup 5 > $OUT/peer_r18.jsonl 2>$OUT/peer_r18.err; echo "peer r18 rc $?"; cut -c1-300 $OUT/peer_r18.jsonl
timeout $((585 - SECONDS)) python3 benchmarks/ab_step.py --variants lusjax,stem=s2d4,maxpool=unfused --config configs/simclr_resnet.py:r50 --batch-size 256 > $OUT/ab_r50.log 2>&1; echo "ab r50 rc $?"; grep '^{' $OUT/ab_r50.log | cut -c1-300
echo "elapsed $SECONDS"
