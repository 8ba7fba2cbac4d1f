#!/usr/bin/env bash
# SSL pretraining on a Cloud TPU VM pod: every run of a sweep, one after another,
# each on all hosts of the pod at once.
#
#   bash launch/tpu_vm.sh [--dry-run] --name TPU --zone ZONE [--project P]
#        [--remote-dir DIR] [--setup CMD] RUNS_FILE
#   bash launch/tpu_vm.sh [--dry-run] --name TPU --zone ZONE ... -- TRAIN ARGS...
#
# For each line of RUNS_FILE (written by `lusjax sweep --root gs://... --emit tpu`):
#     gcloud compute tpus tpu-vm ssh TPU --zone ZONE --worker=all --command "
#         cd DIR && SETUP && LUSJAX_DISTRIBUTED=auto lusjax train --quiet ARGS"
# The same command runs on every host; `LUSJAX_DISTRIBUTED=auto` makes
# lusjax.distributed call jax.distributed.initialize(), which finds the pod's
# hosts itself. Workdirs must be shared by the hosts: gs://BUCKET/... (see
# launch/README.md for what orbax needs). A failed run does not stop the next;
# the exit status is 1 if any failed. Re-running resumes unfinished runs.
#
# --remote-dir: the lusjax checkout on every host, relative to the home
#   directory (default: lusjax); config paths in ARGS are relative to it.
# --setup: shell run there first (default: activate DIR/.venv if it exists).
# --name/--zone/--project default to $TPU_NAME, $ZONE, $PROJECT.
# --dry-run prints the gcloud commands and runs nothing.
set -euo pipefail

# shellcheck source=launch/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # die, usage, q, show, read_runs

dry=0; name=${TPU_NAME:-}; zone=${ZONE:-}; project=${PROJECT:-}; remote_dir=lusjax
setup='if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi'
runs_file=""; train=(); single=0
while (( $# )); do
  case $1 in
    --dry-run) dry=1 ;;
    --name) name=${2:?}; shift ;;        --name=*) name=${1#*=} ;;
    --zone) zone=${2:?}; shift ;;        --zone=*) zone=${1#*=} ;;
    --project) project=${2:?}; shift ;;  --project=*) project=${1#*=} ;;
    --remote-dir) remote_dir=${2:?}; shift ;;  --remote-dir=*) remote_dir=${1#*=} ;;
    --setup) setup=$2; shift ;;          --setup=*) setup=${1#*=} ;;
    -h|--help) usage ;;
    --) shift; train=("$@"); single=1; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $runs_file ]] || die "one runs file only"; runs_file=$1 ;;
  esac
  shift
done
[[ -n $name ]] || die "--name TPU (or \$TPU_NAME) is required"
[[ -n $zone ]] || die "--zone ZONE (or \$ZONE) is required"
collect_runs tpu

failed=()
for i in "${!names[@]}"; do
  eval "args=(${argstrs[$i]})"  # written by shlex.join: quoted words only
  if [[ -n ${workdirs[$i]} && ${workdirs[$i]} != gs://* ]]; then
    echo "tpu_vm.sh: warning: ${workdirs[$i]} is not on gs://: the pod's hosts will not share it" >&2
  fi
  remote="cd $(q "$remote_dir") && ${setup:-true} && LUSJAX_DISTRIBUTED=auto $(show "${bin[@]}" train --quiet ${args[@]+"${args[@]}"})"
  cmd=(gcloud compute tpus tpu-vm ssh "$name" --zone "$zone")
  [[ -z $project ]] || cmd+=(--project "$project")
  cmd+=(--worker=all --command "$remote")
  if (( dry )); then show "${cmd[@]}"; continue; fi
  echo "tpu_vm.sh: [$((i + 1))/${#names[@]}] ${names[$i]}"
  if ! "${cmd[@]}"; then failed+=("${names[$i]}"); fi
done
if (( ${#failed[@]} )); then
  echo "tpu_vm.sh: ${#failed[@]} run(s) failed: ${failed[*]}" >&2
  exit 1
fi
