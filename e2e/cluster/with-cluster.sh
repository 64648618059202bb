#!/usr/bin/env bash
# Runs CMD against a fresh local control plane and Prometheus, then stops
# them, and exits with CMD's exit status.
#
# Usage: e2e/cluster/with-cluster.sh CMD [ARGS...]
#   e.g. e2e/cluster/with-cluster.sh cargo test --test integration
#
# Environment:
#   LOCKKEEPER_CLUSTER_STATE=DIR   state directory (default <repo>/.lockkeeper/test-cluster)
#   LOCKKEEPER_KEEP_CLUSTER=1      leave the cluster running afterwards
#   LOCKKEEPER_EXTERNAL_CLUSTER=1  run against the cluster named by KUBECONFIG
#                                  instead (a local Prometheus is still started)
#   KUBEBUILDER_ASSETS=DIR         take etcd and kube-apiserver from envtest
#
# CMD sees the variables of STATE_DIR/env: KUBECONFIG,
# LOCKKEEPER_CLUSTER_STATE, LOCKKEEPER_PROMETHEUS_URL,
# LOCKKEEPER_PROMETHEUS_TARGETS_DIR, LOCKKEEPER_BIN_DIR.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case ${1:-} in -h | --help | "") sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; [ $# -gt 0 ]; exit ;; esac

state=$(resolve_state_dir "${LOCKKEEPER_CLUSTER_STATE:-$repo_root/.lockkeeper/test-cluster}")
if [ "${LOCKKEEPER_EXTERNAL_CLUSTER:-0}" = 1 ] && [ -z "${KUBECONFIG:-}" ]; then
  die "LOCKKEEPER_EXTERNAL_CLUSTER=1 needs KUBECONFIG to name the cluster to test against"
fi

# shellcheck disable=SC2317 # called by the EXIT trap
stop_cluster() {
  if [ "${LOCKKEEPER_KEEP_CLUSTER:-0}" = 1 ]; then
    log "LOCKKEEPER_KEEP_CLUSTER=1: leaving the cluster running; stop it with: $cluster_dir/down.sh $state"
  else
    "$cluster_dir/down.sh" "$state" || true
  fi
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# up.sh's summary goes to stderr so that CMD's standard output stays its own.
"$cluster_dir/up.sh" --fresh "$state" >&2
# shellcheck disable=SC1091
. "$state/env"

status=0
"$@" || status=$?
exit "$status"
