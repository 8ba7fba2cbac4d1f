# Launch H: R18 roofline with the blocks stem's broadcast pool gradient (HLO of the top gap
# kernels), same-launch peer ratios R18 and R50 at batch 256, R50 at batch 512.
set -u
source benchmarks/device_setup.sh > /tmp/setup.log 2>&1; tail -2 /tmp/setup.log
export JAX_COMPILATION_CACHE_DIR=/tmp/jc CUDA_VISIBLE_DEVICES=0
L=$OUT/run.log
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a $L
timeout 150 python3 benchmarks/roofline.py --config configs/simclr_resnet.py:r18 --batch-size 256 --out /tmp/rf18 --md --hlo 8 > /tmp/rf18.log 2>&1; echo "rf18 rc $?" | tee -a $L
cp /tmp/rf18/roofline.md /tmp/rf18/gap_hlo.txt /tmp/rf18/roofline.json $OUT/ 2>/dev/null; head -c 1500 /tmp/rf18/roofline.md; echo
timeout 100 python3 benchmarks/ab_step.py --variants lusjax,stem=nhwc --config configs/simclr_resnet.py:r18 --batch-size 256 > /tmp/ab18.log 2>&1; echo "ab r18 rc $?" | tee -a $L; grep '^{' /tmp/ab18.log >> $L
timeout 80 python3 benchmarks/ab_step.py --variants lusjax --config configs/simclr_resnet.py:r18 --batch-size 256 --config.data.worker_side_aug=True > /tmp/ab18n.log 2>&1; echo "ab r18 no device aug rc $?" | tee -a $L; grep '^{' /tmp/ab18n.log >> $L
timeout 120 python3 benchmarks/peer_torch.py --model resnet18 --image-size 224 --batch-size 256 --steps 30 --warmup 5 > /tmp/p18.jsonl 2>/tmp/p18.err; echo "peer r18 rc $?" | tee -a $L; cat /tmp/p18.jsonl >> $L; tail -3 /tmp/p18.err
timeout 100 python3 benchmarks/ab_step.py --variants lusjax --config configs/simclr_resnet.py:r50 --batch-size 256 > /tmp/ab50.log 2>&1; echo "ab r50 rc $?" | tee -a $L; grep '^{' /tmp/ab50.log >> $L
timeout 170 python3 benchmarks/peer_torch.py --model resnet50 --image-size 224 --batch-size 256 --steps 30 --warmup 5 > /tmp/p50.jsonl 2>/tmp/p50.err; echo "peer r50 rc $?" | tee -a $L; cat /tmp/p50.jsonl >> $L; tail -3 /tmp/p50.err
(( SECONDS < 470 )) && timeout $((585 - SECONDS)) python3 benchmarks/ab_step.py --variants lusjax --config configs/simclr_resnet.py:r50 --batch-size 512 --steps 20 > /tmp/ab50b.log 2>&1; echo "ab r50 b512 rc $?" | tee -a $L; grep '^{' /tmp/ab50b.log >> $L
echo "elapsed $SECONDS" | tee -a $L
cut -c1-330 $L
