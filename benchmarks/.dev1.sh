set -u
source benchmarks/device_setup.sh > $OUT/setup.log 2>&1; tail -3 $OUT/setup.log
printf 'final5\tconfigs/study.py:lus_simclr\t--config.run_folds= --config.train.data.workers=3\n' > /tmp/final.tsv
export JAX_COMPILATION_CACHE_DIR=/tmp/jc
STUDY_ARGS="--config.data_dir=.data/pocus224_5fps" PARALLEL=1 bash benchmarks/study_rows.sh /tmp/final.tsv /tmp/st 500 2> $OUT/rows.log
tail -20 $OUT/rows.log
python3 benchmarks/study_table.py /tmp/st/*/study.json --json $OUT/final5.json 2>&1 | tail -30
cd /tmp/st && tar czf $OUT/final5.tgz --exclude=checkpoints --exclude=encoder --exclude='*.npz' . ; ls -la $OUT
