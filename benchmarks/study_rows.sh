#!/usr/bin/env bash
# Runs the rows of an ablation (`lusjax study` runs) several at a time on the GPUs of
# one machine, each row in its own process, and collects their study.json/study.md.
#
#   bash benchmarks/study_rows.sh ROWS.tsv ROOT [SECONDS]
#
# ROWS.tsv: one row per line, `NAME<TAB>CONFIG<TAB>OVERRIDES` (lines starting with #
# are skipped), e.g.
#   base	configs/study.py:lus_simclr	--config.train.total_steps=1000
# Each row runs `lusjax study --config CONFIG --config.out_dir=ROOT/NAME OVERRIDES`
# after $STUDY_ARGS (settings shared by every row, e.g. the data), with its log in
# ROOT/NAME.log. PARALLEL rows run at once (default 4), spread over
# the GPUs round robin (GPUS="0 1", default: all that nvidia-smi lists); rows that
# share a GPU allocate its memory as they need it (no preallocation). After SECONDS
# (default: no limit) the rows still running are stopped; what finished is kept.
# `python benchmarks/study_table.py ROOT/*/study.json` prints the comparison table.
set -uo pipefail
rows_file="${1:?usage: study_rows.sh ROWS.tsv ROOT [SECONDS]}"
root="${2:?usage: study_rows.sh ROWS.tsv ROOT [SECONDS]}"
limit="${3:-0}"
[ -f "$rows_file" ] || { echo "study_rows.sh: error: no rows file $rows_file" >&2; exit 2; }
mkdir -p "$root"
parallel="${PARALLEL:-4}"
read -r -a gpus <<< "${GPUS:-$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr '\n' ' ')}"
(( ${#gpus[@]} > 0 )) || gpus=("")
start=$(date +%s)
i=0
while IFS=$'\t' read -r name cfg overrides || [[ -n ${name:-} ]]; do
  [[ -z ${name//[[:space:]]/} || $name == \#* ]] && continue
  while (( $(jobs -rp | wc -l) >= parallel )); do sleep 1; done
  if (( limit > 0 && $(date +%s) - start >= limit )); then
    echo "study_rows: time is up, not starting $name" >&2; continue
  fi
  gpu="${gpus[$(( i % ${#gpus[@]} ))]}"; i=$((i + 1))
  echo "study_rows: start $name (gpu ${gpu:-default}) $(date +%T)" >&2
  (
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
    [ -n "$gpu" ] && export CUDA_VISIBLE_DEVICES="$gpu"
    t0=$(date +%s)
    # shellcheck disable=SC2086  # overrides are words
    python3 -m lusjax.cli study --config "$cfg" --config.out_dir="$root/$name" \
      --config.progress=False ${STUDY_ARGS:-} $overrides > "$root/$name.log" 2>&1
    rc=$?
    echo "study_rows: end $name status $rc after $(( $(date +%s) - t0 )) s" >&2
    tail -n 3 "$root/$name.log" >&2
  ) &
done < "$rows_file"
if (( limit > 0 )); then
  while (( $(jobs -rp | wc -l) > 0 && $(date +%s) - start < limit )); do sleep 2; done
  # The row's lusjax process first: once its subshell is gone it is no longer a child
  # of $p and would run on (measured: a study outlived the limit by 90 s).
  for p in $(jobs -rp); do pkill -TERM -P "$p" 2>/dev/null; kill -TERM -- "$p" 2>/dev/null; done
fi
wait
echo "study_rows: all done after $(( $(date +%s) - start )) s" >&2
