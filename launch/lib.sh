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
