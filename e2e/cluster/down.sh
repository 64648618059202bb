#!/usr/bin/env bash
# Stops the control plane and Prometheus that up.sh recorded in STATE_DIR:
# TERM to every recorded PID that is still the recorded binary, KILL to those
# still running after LOCKKEEPER_STOP_TIMEOUT seconds (default 10). Logs stay
# in STATE_DIR/logs; etcd and Prometheus data are removed.
#
# Usage: e2e/cluster/down.sh [STATE_DIR]    (default: <repo>/.lockkeeper/cluster)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
[ $# -le 1 ] || die "usage: $0 [STATE_DIR]"
dir=${1:-$repo_root/.lockkeeper/cluster}
if [ ! -d "$dir" ]; then
  log "nothing recorded in $dir"
  exit 0
fi
state=$(resolve_state_dir "$dir")

exec 9>"$state/.lock"
flock -w 900 9 || die "another up.sh or down.sh has held $state/.lock for 15 minutes"

stop_recorded "$state" "${LOCKKEEPER_STOP_TIMEOUT:-10}"
rm -rf "$state/env" "$state/etcd" "$state/prometheus/data"
log "stopped the cluster in $state (logs kept in $state/logs)"
