#!/usr/bin/env bash
# The guided tour: a local control plane, the operator, and one Release taken
# through three revisions: v1 (first deploy), v2 (blue/green switch) and v3
# (its pods never become ready, so it rolls back and traffic stays on v2).
# Every runbook step is printed as it happens.
#
# Environment: LOCKKEEPER_KEEP_CLUSTER=1 leaves the cluster and the operator
# running afterwards, for kubectl.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
state=$repo/.lockkeeper/demo
ns=shop

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building the operator"
cargo build --quiet --locked
bin=${CARGO_TARGET_DIR:-$repo/target}/debug/lockkeeper

say "starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
e2e/cluster/up.sh --fresh "$state" >&2
# shellcheck disable=SC1091
. "$state/env"
export PATH="$LOCKKEEPER_BIN_DIR:$PATH"

operator_pid= health_pid=
cleanup() {
  [ -z "$health_pid" ] || kill "$health_pid" 2>/dev/null || true
  if [ "${LOCKKEEPER_KEEP_CLUSTER:-0}" = 1 ]; then
    echo "cluster and operator left running: export KUBECONFIG=$KUBECONFIG; stop with: kill $operator_pid; e2e/cluster/down.sh $state"
    return
  fi
  [ -z "$operator_pid" ] || kill "$operator_pid" 2>/dev/null || true
  e2e/cluster/down.sh "$state" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "installing the CRDs and starting the operator"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=Established crd/releases.lockkeeper.dev >/dev/null
kubectl create namespace "$ns" >/dev/null
kubectl apply -n "$ns" -f e2e/demo/services.yaml >/dev/null
# The stand-in for the application's health endpoint and its database.
health_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$state/www" && echo ok > "$state/www/health"
python3 -m http.server "$health_port" --bind 127.0.0.1 --directory "$state/www" >"$state/logs/health.log" 2>&1 &
health_pid=$!
"$bin" run --leader-elect=false --namespace "$ns" --metrics-addr 127.0.0.1:0 >"$state/logs/operator.log" 2>&1 &
operator_pid=$!

follow() { python3 e2e/demo/follow.py "$ns" shop "$1"; }

apply_version() {
  sed -e "s/VERSION/$1/g" -e "s/BEHAVIOR/$2/" -e "s/CHANGE/$3/" -e "s/HEALTH_PORT/$health_port/g" e2e/demo/release.yaml | kubectl apply -n "$ns" -f - >/dev/null
}

selector() { kubectl get service shop -n "$ns" -o jsonpath='{.spec.selector.lockkeeper\.dev/color}'; }

say "v1: the first revision deploys into blue and points Service shop at it"
apply_version v1 healthy "first release"
follow 1
echo "  Service shop -> $(selector)"

say "v2: blue/green: green comes up beside blue, traffic switches, blue scales down after 5s"
apply_version v2 healthy "user management"
follow 2
echo "  Service shop -> $(selector)"

say "v3: a broken build (pods never become ready): the deploy times out and rolls back"
apply_version v3 never-ready "faster checkout"
follow 3
echo "  Service shop -> $(selector) (traffic never left v2)"

say "the deployment record (status.history)"
kubectl get release shop -n "$ns" -o json | python3 -c "$(cat <<'PY'
import json, sys
for h in json.load(sys.stdin)["status"].get("history", []):
    print(f"  r{h['revision']:<3} {h['version']:<4} {h['result']:<11} {h.get('reason', '')}")
PY
)"

say "what kubectl shows"
kubectl get release,deployments,services -n "$ns"
echo
echo "Events:"
kubectl get events -n "$ns" --field-selector involvedObject.kind=Release --sort-by=.metadata.creationTimestamp \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message | head -40
