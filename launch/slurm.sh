#!/usr/bin/env bash
# SSL pretraining on SLURM: one array task per run of a sweep, one task per node.
#
#   bash launch/slurm.sh [--dry-run] [--max-parallel N] [SBATCH OPTIONS...] RUNS_FILE
#   bash launch/slurm.sh [--dry-run] [SBATCH OPTIONS...] -- TRAIN ARGS...     (one run)
#
# Outside a job (on a login node) it submits itself: `sbatch --array=0-(N-1)`,
# N = the runs in RUNS_FILE (written by `lusjax sweep --emit slurm`). Inside the
# job, array task i runs line i of RUNS_FILE on every node of its allocation:
#     srun --ntasks-per-node=1 lusjax train --quiet ARGS
# and lusjax.distributed takes the coordinator (first node), the process count and
# this process's id from SLURM's environment. A finished run (encoder.json in its
# workdir) is skipped; an unfinished one resumes from its latest checkpoint.
# Output goes to WORKDIR/run.log, the exit status to WORKDIR/run.rc (read by
# `lusjax sweep-report`), SLURM's own log to RUNS_FILE's folder/slurm-logs/.
#
# SBATCH OPTIONS override the defaults below, e.g. --nodes=2 --gpus-per-node=8
# --partition=gpu --time=12:00:00 --account=A. The command must be the last
# argument or follow `--`. --dry-run prints what would run and runs nothing.
# Environment: LUSJAX_BIN, the command to run (default `lusjax`; e.g.
# "python -m lusjax.cli"); the job inherits the submitting shell's environment,
# so activate lusjax's virtualenv before submitting.
#
# Defaults, read by sbatch (SLURM runs a spooled copy of this script, so the job
# side below never looks for files next to it):
#SBATCH --job-name=lusjax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
# (SIGTERM 2 minutes before the time limit, to every trainer process of the job
# step, not to this batch shell (no "B:"): `lusjax train` saves its current step
# and exits 3, and this script then requeues the task (`scontrol requeue`); the
# requeued task resumes from that step. A run that SLURM preempts gets SIGTERM
# the same way and is requeued by SLURM itself.)
set -euo pipefail

die() { echo "slurm.sh: error: $*" >&2; exit 2; }
usage() { sed -n '2,/^#SBATCH/{/^#SBATCH/q;s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0; }
q() {  # one shell word, quoted only when needed (like Python's shlex.quote)
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
show() { local out="" w; for w in "$@"; do out+="${out:+ }$(q "$w")"; done; printf '%s\n' "$out"; }
abspath() { printf '%s/%s' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }
count_runs() { grep -cv -e '^#' -e '^[[:space:]]*$' "$1" || true; }
read_run() {  # read_run FILE INDEX: sets run_name, run_workdir, run_args
  local i=0 line argstr
  while IFS= read -r line || [[ -n $line ]]; do
    [[ -z ${line//[[:space:]]/} || $line == \#* ]] && continue
    if (( i == $2 )); then
      IFS=$'\t' read -r run_name run_workdir argstr <<< "$line"
      eval "run_args=($argstr)"  # written by shlex.join: quoted words only
      return 0
    fi
    i=$((i + 1))
  done < "$1"
  return 1
}

dry=0; maxpar=""; runs_file=""; opts=(); train=(); single=0
while (( $# )); do
  case $1 in
    --dry-run) dry=1 ;;
    --max-parallel) maxpar=${2:?--max-parallel needs a number}; shift ;;
    --max-parallel=*) maxpar=${1#*=} ;;
    -h|--help) usage ;;
    --) shift; train=("$@"); single=1; break ;;
    *) if (( $# == 1 )); then runs_file=$1; else opts+=("$1"); fi ;;
  esac
  shift
done
(( single )) || [[ -n $runs_file ]] || die "give a runs file (lusjax sweep --emit slurm) or -- TRAIN ARGS"
[[ $runs_file != -* ]] || die "the runs file must be the last argument (got option $runs_file)"
read -r -a bin <<< "${LUSJAX_BIN:-lusjax}"

if [[ -z ${SLURM_JOB_ID:-} ]]; then
  # ---- Submit: one array task per run. ----
  self=$(abspath "${BASH_SOURCE[0]}")
  if (( single )); then
    cmd=(sbatch --chdir="$PWD" ${opts[@]+"${opts[@]}"} "$self" -- ${train[@]+"${train[@]}"})
  else
    [[ -f $runs_file ]] || die "runs file not found: $runs_file"
    n=$(count_runs "$runs_file")
    (( n > 0 )) || die "no runs in $runs_file"
    runs_file=$(abspath "$runs_file")
    logdir="$(dirname "$runs_file")/slurm-logs"
    cmd=(sbatch --array="0-$((n - 1))${maxpar:+%$maxpar}" --chdir="$PWD"
         --output="$logdir/%x-%A_%a.out" ${opts[@]+"${opts[@]}"} "$self" "$runs_file")
    if (( dry )); then show mkdir -p "$logdir"; else mkdir -p "$logdir"; fi
  fi
  if (( dry )); then show "${cmd[@]}"; exit 0; fi
  exec "${cmd[@]}"
fi

# ---- Inside the job: this array task's run, on every node. ----
workdir=""; run_name="run"
if (( single )); then
  args=(${train[@]+"${train[@]}"})
else
  idx=${SLURM_ARRAY_TASK_ID:-0}
  read_run "$runs_file" "$idx" || die "no run number $idx in $runs_file"
  args=(${run_args[@]+"${run_args[@]}"}); workdir=$run_workdir
fi
nodes=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
cmd=(srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 --kill-on-bad-exit=1)
[[ -z ${SLURM_CPUS_PER_TASK:-} ]] || cmd+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
cmd+=("${bin[@]}" train --quiet ${args[@]+"${args[@]}"})
local_wd=0; [[ -n $workdir && $workdir != *://* ]] && local_wd=1
if (( local_wd )) && [[ -f $workdir/encoder.json ]]; then
  echo "# skip $run_name: done ($workdir/encoder.json exists)"; exit 0
fi
if (( dry )); then show "${cmd[@]}"; exit 0; fi
cd "${SLURM_SUBMIT_DIR:-.}"
echo "slurm.sh: task ${SLURM_ARRAY_TASK_ID:-0} ($run_name) on $nodes node(s): $(show "${cmd[@]}")"
# A SIGTERM to this shell too (SLURM preemption signals every process): keep going,
# the trainer saves and exits 3, then the task is requeued below.
trap 'echo "slurm.sh: SIGTERM: waiting for the trainer to save" >&2' TERM
set +e
if (( local_wd )); then
  mkdir -p "$workdir"; rm -f "$workdir/run.rc"
  echo "### slurm job ${SLURM_JOB_ID} task ${SLURM_ARRAY_TASK_ID:-0} $(date '+%F %T'): $(show "${cmd[@]}")" >> "$workdir/run.log"
  # tee ignores SIGTERM: it must outlive the trainer's last lines (the saved step).
  "${cmd[@]}" 2>&1 | (trap '' TERM; exec tee -a "$workdir/run.log")
  rc=${PIPESTATUS[0]}
  echo "$rc" > "$workdir/run.rc"
else
  "${cmd[@]}"; rc=$?
fi
set -e
if (( rc == 3 )); then  # lusjax's PREEMPTED_EXIT: the step is saved, a rerun resumes
  echo "slurm.sh: preempted, checkpoint saved (exit 3): requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID" || echo "slurm.sh: requeue failed: submit again to resume" >&2
fi
exit "$rc"
