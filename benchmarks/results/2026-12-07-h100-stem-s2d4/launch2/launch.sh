# Launch F: ResNet's stem kept in 4x4 space-to-depth blocks through BN, ReLU and the pool
# (stem=blocks) A/B, R18 (baseline repeated) and R50; the R50 torch.compile peer; R50 b512.
set -u
source benchmarks/device_setup.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jc CUDA_VISIBLE_DEVICES=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/gpu.txt
timeout 150 python3 benchmarks/ab_step.py --variants lusjax,stem=blocks,lusjax --config configs/simclr_resnet.py:r18 --batch-size 256 --profile /tmp/prof18 > $OUT/ab_r18.log 2>&1; echo "ab r18 rc $?"; grep '^{' $OUT/ab_r18.log | cut -c1-300
python3 benchmarks/profile_top.py --diff /tmp/prof18/lusjax /tmp/prof18/stem=blocks > $OUT/prof_r18_diff.json 2>&1; head -c 1500 $OUT/prof_r18_diff.json; echo
timeout 130 python3 benchmarks/ab_step.py --variants lusjax,stem=blocks --config configs/simclr_resnet.py:r50 --batch-size 256 > $OUT/ab_r50.log 2>&1; echo "ab r50 rc $?"; grep '^{' $OUT/ab_r50.log | cut -c1-300
timeout 160 python3 benchmarks/peer_torch.py --model resnet50 --image-size 224 --batch-size 256 --steps 30 --warmup 5 > $OUT/peer_r50.jsonl 2>$OUT/peer_r50.err; echo "peer r50 rc $?"; cut -c1-300 $OUT/peer_r50.jsonl
(( SECONDS < 330 )) && timeout $((${END_S:-450} - SECONDS)) python3 benchmarks/ab_step.py --variants lusjax --config configs/simclr_resnet.py:r50 --batch-size 512 --steps 20 > $OUT/ab_r50_b512.log 2>&1; echo "ab r50 b512 rc $?"; grep '^{' $OUT/ab_r50_b512.log | cut -c1-300
echo "elapsed $SECONDS"
