# Shared by up.sh, down.sh and with-cluster.sh (sourced, not run).
# shellcheck shell=bash

cluster_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
repo_root=$(cd "$cluster_dir/../.." && pwd)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# Absolute, symlink-free form of a state directory (created if missing).
# Component command lines carry this exact string, which is how a recorded
# PID is told apart from a recycled one or another cluster's process.
resolve_state_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd -P)
}

# True when PID is still the process that up.sh started for component NAME
# in STATE: its executable is the recorded binary and its command line names
# this state directory. Anything else is left alone.
pid_is_ours() {
  local state=$1 name=$2 pid=$3 want exe
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  want=$(cat "$state/pids/$name.exe" 2>/dev/null) || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [ "$exe" = "$want" ] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$state"
}

# A process that exited but was not reaped yet still has /proc/PID.
pid_alive() {
  local state
  [ -r "/proc/$1/stat" ] || return 1
  state=$(sed 's/.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] && [ "$state" != X ]
}

# Waits up to SECONDS for every NAME:PID entry to exit; those still running
# at the deadline are left in the array still_running.
still_running=()
wait_exit() {
  local deadline=$((SECONDS + $1)) entry
  shift
  local -a left
  while :; do
    left=()
    for entry in "$@"; do pid_alive "${entry#*:}" && left+=("$entry"); done
    [ ${#left[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      still_running=("${left[@]}")
      return 1
    fi
    set -- "${left[@]}"
    sleep 0.1
  done
}

# stop_names STATE TIMEOUT NAME...: TERM to each named component that is
# still ours, KILL to those running after TIMEOUT seconds.
stop_names() {
  local state=$1 timeout=$2 name pid entry
  shift 2
  local -a ours=()
  for name in "$@"; do
    pid=$(cat "$state/pids/$name" 2>/dev/null || true)
    if pid_is_ours "$state" "$name" "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      ours+=("$name:$pid")
    fi
  done
  [ ${#ours[@]} -gt 0 ] || return 0
  wait_exit "$timeout" "${ours[@]}" && return 0
  for entry in "${still_running[@]}"; do
    if pid_is_ours "$state" "${entry%%:*}" "${entry#*:}"; then
      log "${entry%%:*} (pid ${entry#*:}) still running ${timeout}s after TERM; sending KILL"
      kill -KILL "${entry#*:}" 2>/dev/null || true
    fi
  done
  wait_exit 5 "${still_running[@]}" || log "could not stop: ${still_running[*]}"
}

# Stops every component recorded under STATE/pids, clients of the API server
# first and etcd last, so nothing spends its shutdown retrying a vanished
# dependency. Logs are kept.
stop_recorded() {
  local state=$1 timeout=${2:-10} f name
  local -a first=()
  [ -d "$state/pids" ] || return 0
  for f in "$state"/pids/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    case $name in *.exe | kube-apiserver | etcd) continue ;; esac
    first+=("$name")
  done
  stop_names "$state" "$timeout" "${first[@]}"
  stop_names "$state" "$timeout" kube-apiserver
  stop_names "$state" "$timeout" etcd
  rm -f "$state"/pids/*
}
