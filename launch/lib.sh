# Helpers shared by launch/local.sh and launch/tpu_vm.sh (sourced; slurm.sh keeps
# its own copies: sbatch runs a spooled copy of the script, away from this file).
die() { echo "${0##*/}: error: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/q;s/^# \{0,1\}//p}' "$0"; exit 0; }
q() {  # one shell word, quoted only when needed (like Python's shlex.quote)
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
show() { local out="" w; for w in "$@"; do out+="${out:+ }$(q "$w")"; done; printf '%s\n' "$out"; }
read_runs() {  # read_runs FILE: fills names[], workdirs[], argstrs[]
  local line n w a
  while IFS= read -r line || [[ -n $line ]]; do
    [[ -z ${line//[[:space:]]/} || $line == \#* ]] && continue
    IFS=$'\t' read -r n w a <<< "$line"
    names+=("$n"); workdirs+=("$w"); argstrs+=("$a")
  done < "$1"
}
# names[], workdirs[], argstrs[] from $runs_file, or one run of the TRAIN ARGS after `--`
# when $single; bin[] = the lusjax command. $1: the `lusjax sweep --emit` kind to suggest.
collect_runs() {
  names=(); workdirs=(); argstrs=()
  if (( single )); then
    names=(run); workdirs=(""); argstrs=("$(show ${train[@]+"${train[@]}"})")
  else
    [[ -n $runs_file ]] || die "give a runs file (lusjax sweep --emit $1) or -- TRAIN ARGS"
    [[ -f $runs_file ]] || die "runs file not found: $runs_file"
    read_runs "$runs_file"
    (( ${#names[@]} > 0 )) || die "no runs in $runs_file"
  fi
  read -r -a bin <<< "${LUSJAX_BIN:-lusjax}"
}
