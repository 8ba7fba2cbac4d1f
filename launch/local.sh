#!/usr/bin/env bash
# SSL pretraining on this machine: every run of a sweep, one after another.
#
#   bash launch/local.sh [--dry-run] [--procs N] [--cpu-devices K] [--port P] RUNS_FILE
#   bash launch/local.sh [--dry-run] [--procs N] ... -- TRAIN ARGS...          (one run)
#
# For each line of RUNS_FILE (written by `lusjax sweep --emit local`) it runs
#     lusjax train --quiet ARGS
# skipping finished runs (encoder.json in the workdir) and resuming unfinished
# ones; output is appended to WORKDIR/run.log, the exit status written to
# WORKDIR/run.rc (what `lusjax sweep-report` reads). A failed run does not stop
# the next; the exit status is 1 if any failed.
#
# --procs N starts each run as N JAX processes joined through
# LUSJAX_COORDINATOR=localhost:P, LUSJAX_NUM_PROCESSES=N, LUSJAX_PROCESS_ID=i
# (multi-host on one machine; process i>0 logs to WORKDIR/run.proc<i>.log).
# --cpu-devices K gives each process K CPU devices (LUSJAX_CPU_DEVICES).
# --port P: the coordinator port (default: a free one).
# --dry-run prints the commands and runs nothing.
# Environment: LUSJAX_BIN, the command to run (default `lusjax`).
set -euo pipefail

# shellcheck source=launch/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # die, usage, q, show, read_runs
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])' \
    2>/dev/null || echo $((20000 + RANDOM % 20000))
}

dry=0; procs=1; cpu_devices=""; port=""; runs_file=""; train=(); single=0
while (( $# )); do
  case $1 in
    --dry-run) dry=1 ;;
    --procs) procs=${2:?}; shift ;;              --procs=*) procs=${1#*=} ;;
    --cpu-devices) cpu_devices=${2:?}; shift ;;  --cpu-devices=*) cpu_devices=${1#*=} ;;
    --port) port=${2:?}; shift ;;                --port=*) port=${1#*=} ;;
    -h|--help) usage ;;
    --) shift; train=("$@"); single=1; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $runs_file ]] || die "one runs file only"; runs_file=$1 ;;
  esac
  shift
done
[[ $procs =~ ^[1-9][0-9]*$ ]] || die "--procs needs a positive integer"
collect_runs local

pids=()
cleanup() { local p; for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

failed=(); n=${#names[@]}
for i in "${!names[@]}"; do
  eval "args=(${argstrs[$i]})"  # written by shlex.join: quoted words only
  wd=${workdirs[$i]}
  if [[ -n $wd && -f $wd/encoder.json ]]; then
    echo "# skip ${names[$i]}: done ($wd/encoder.json exists)"; continue
  fi
  cmd=("${bin[@]}" train --quiet ${args[@]+"${args[@]}"})
  if (( procs == 1 )); then
    [[ -z $cpu_devices ]] || cmd=(env "LUSJAX_CPU_DEVICES=$cpu_devices" "${cmd[@]}")
    if (( dry )); then show "${cmd[@]}"; continue; fi
    echo "local.sh: [$((i + 1))/$n] ${names[$i]}"
    set +e
    if [[ -n $wd ]]; then
      mkdir -p "$wd"; rm -f "$wd/run.rc"
      echo "### local.sh $(date '+%F %T'): $(show "${cmd[@]}")" >> "$wd/run.log"
      "${cmd[@]}" 2>&1 | tee -a "$wd/run.log"; rc=${PIPESTATUS[0]}
      echo "$rc" > "$wd/run.rc"
    else
      "${cmd[@]}"; rc=$?
    fi
    set -e
  else
    p=${port:-$(free_port)}
    proc_cmd() {  # proc_cmd R: fills pcmd, the command of process R
      pcmd=(env "LUSJAX_COORDINATOR=localhost:$p" "LUSJAX_NUM_PROCESSES=$procs"
            "LUSJAX_PROCESS_ID=$1")
      [[ -z $cpu_devices ]] || pcmd+=("LUSJAX_CPU_DEVICES=$cpu_devices")
      pcmd+=("${cmd[@]}")
    }
    if (( dry )); then
      for ((r = 0; r < procs; r++)); do proc_cmd "$r"; echo "$(show "${pcmd[@]}") &"; done
      echo "wait"; continue
    fi
    echo "local.sh: [$((i + 1))/$n] ${names[$i]} ($procs processes, coordinator localhost:$p)"
    if [[ -n $wd ]]; then
      mkdir -p "$wd"; rm -f "$wd/run.rc"
      proc_cmd 0; echo "### local.sh $(date '+%F %T'): $(show "${pcmd[@]}") (x$procs)" >> "$wd/run.log"
    fi
    pids=()
    for ((r = 0; r < procs; r++)); do
      proc_cmd "$r"
      if [[ -z $wd ]]; then
        if (( r == 0 )); then "${pcmd[@]}" & else "${pcmd[@]}" > /dev/null 2>&1 & fi
      elif (( r == 0 )); then
        "${pcmd[@]}" >> "$wd/run.log" 2>&1 &
      else
        "${pcmd[@]}" >> "$wd/run.proc$r.log" 2>&1 &
      fi
      pids+=($!)
    done
    [[ -z $wd ]] || echo "local.sh: log: $wd/run.log"
    rc=0; left=("${pids[@]}")
    while (( ${#left[@]} )); do  # poll: a peer that died would leave the others hanging
      still=()
      for p_ in "${left[@]}"; do
        if kill -0 "$p_" 2>/dev/null; then still+=("$p_"); continue; fi
        set +e; wait "$p_"; prc=$?; set -e
        if (( prc != 0 && rc == 0 )); then rc=$prc; cleanup; fi
      done
      left=(${still[@]+"${still[@]}"})
      (( ${#left[@]} == 0 )) || sleep 0.5
    done
    pids=()
    [[ -z $wd ]] || echo "$rc" > "$wd/run.rc"
  fi
  if (( rc != 0 )); then failed+=("${names[$i]}"); echo "local.sh: ${names[$i]} failed (exit $rc)" >&2; fi
done
if (( ${#failed[@]} )); then
  echo "local.sh: ${#failed[@]} of $n run(s) failed: ${failed[*]}" >&2
  exit 1
fi
