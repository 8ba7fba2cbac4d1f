# Launch G: roofline of the R18 step with the blocks stem (HLO of the concatenate fusion),
# the blocks pool gradient as broadcast selects (pool=bcast) A/B on R18 and R50.
set -u
source benchmarks/device_setup.sh
export JAX_COMPILATION_CACHE_DIR=/tmp/jc CUDA_VISIBLE_DEVICES=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $OUT/gpu.txt
timeout 150 python3 benchmarks/roofline.py --config configs/simclr_resnet.py:r18 --batch-size 256 --out /tmp/rf18 --md > $OUT/rf18.log 2>&1; echo "rf18 rc $?"; head -c 2500 /tmp/rf18/roofline.md; echo
mkdir -p $OUT/rf18 && cp /tmp/rf18/*.json /tmp/rf18/*.md /tmp/rf18/*.gz $OUT/rf18/ 2>/dev/null
zcat /tmp/rf18/step.hlo.txt.gz | grep -n "concatenate" | cut -c1-400 | head -30
timeout 170 python3 benchmarks/ab_step.py --variants lusjax,pool=bcast,lusjax --config configs/simclr_resnet.py:r18 --batch-size 256 --profile /tmp/prof18 > $OUT/ab_r18.log 2>&1; echo "ab r18 rc $?"; grep '^{' $OUT/ab_r18.log | cut -c1-300
python3 benchmarks/profile_top.py --diff /tmp/prof18/lusjax /tmp/prof18/pool=bcast > $OUT/prof_r18_diff.json 2>&1; head -c 2000 $OUT/prof_r18_diff.json; echo
timeout $((570 - SECONDS)) python3 benchmarks/ab_step.py --variants lusjax,pool=bcast --config configs/simclr_resnet.py:r50 --batch-size 256 > $OUT/ab_r50.log 2>&1; echo "ab r50 rc $?"; grep '^{' $OUT/ab_r50.log | cut -c1-300
echo "elapsed $SECONDS"
