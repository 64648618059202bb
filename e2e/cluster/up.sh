#!/usr/bin/env bash
# Starts a local Kubernetes control plane on 127.0.0.1 - etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, and kwok acting as the kubelet of
# three fake Nodes - plus a Prometheus, or reuses the ones recorded in
# STATE_DIR while they are healthy. Ports are picked free at every start, so
# several clusters can run side by side on one machine.
#
# Usage: e2e/cluster/up.sh [--fresh] [STATE_DIR]
#   STATE_DIR   default: <repo>/.lockkeeper/cluster
#   --fresh     never reuse: stop what STATE_DIR recorded and start anew
#
# Environment:
#   LOCKKEEPER_EXTERNAL_CLUSTER=1  use the cluster named by $KUBECONFIG and
#                                  start only Prometheus
#   LOCKKEEPER_PROMETHEUS          prometheus binary (default: from PATH; when
#                                  missing, apt-get installs Debian's package)
#   LOCKKEEPER_START_TIMEOUT       seconds allowed for each startup step (120)
#
# Leaves in STATE_DIR: kubeconfig (cluster admin), env (shell-sourceable:
# KUBECONFIG, LOCKKEEPER_PROMETHEUS_URL, LOCKKEEPER_PROMETHEUS_TARGETS_DIR,
# LOCKKEEPER_CLUSTER_STATE, ...), pids/<component>, logs/<component>.log.
# Prometheus scrapes every target listed in STATE_DIR/prometheus/targets/*.json
# (file_sd format) once a second.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

fresh=0 state_arg=
while [ $# -gt 0 ]; do
  case $1 in
    --fresh) fresh=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$state_arg" ] || die "more than one STATE_DIR given"; state_arg=$1 ;;
  esac
  shift
done

for tool in curl openssl flock base64 setsid; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (Debian: apt-get install -y curl openssl util-linux coreutils)"
done

state=$(resolve_state_dir "${state_arg:-$repo_root/.lockkeeper/cluster}")
case $state in *"'"*) die "the state directory path must not contain a single quote: $state" ;; esac
external=${LOCKKEEPER_EXTERNAL_CLUSTER:-0}
[ "$external" = 1 ] || external=0
step_timeout=${LOCKKEEPER_START_TIMEOUT:-120}
service_cidr=10.96.0.0/16

# Tests running in several processes may all ask for the same cluster.
exec 9>"$state/.lock"
flock -w 900 9 || die "another up.sh has held $state/.lock for 15 minutes"

now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

ensure_prometheus() {
  prometheus_bin=${LOCKKEEPER_PROMETHEUS:-$(command -v prometheus || true)}
  [ -n "$prometheus_bin" ] || [ ! -x /usr/bin/prometheus ] || prometheus_bin=/usr/bin/prometheus
  if [ -z "$prometheus_bin" ]; then
    local sudo=
    if [ "$(id -u)" != 0 ]; then
      sudo -n true 2>/dev/null || die "Prometheus is missing; install it with: sudo apt-get install -y prometheus"
      sudo="sudo -n"
    fi
    command -v apt-get >/dev/null 2>&1 || die "Prometheus is missing and there is no apt-get; install Prometheus and set LOCKKEEPER_PROMETHEUS to its binary"
    log "installing Debian's prometheus package"
    local apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get"
    if ! $apt install -y --no-install-recommends prometheus >&2; then
      log "install failed; refreshing the package lists and trying again"
      if ! { $apt update >&2 && $apt install -y --no-install-recommends prometheus >&2; }; then
        die "could not install Prometheus. Retry with: ${sudo:+sudo }apt-get update && ${sudo:+sudo }apt-get install -y prometheus"
      fi
    fi
    prometheus_bin=/usr/bin/prometheus
  fi
  [ -x "$prometheus_bin" ] || die "Prometheus binary $prometheus_bin is not executable"
}

# The recorded cluster is reused when it was started in the same mode, every
# recorded process is still ours and alive, and the API server and Prometheus
# answer.
healthy() {
  [ -f "$state/env" ] && [ -d "$state/pids" ] || return 1
  local f n=0
  for f in "$state"/pids/*; do
    [ -f "$f" ] || continue
    case $f in *.exe) continue ;; esac
    pid_is_ours "$state" "$(basename "$f")" "$(cat "$f")" || return 1
    n=$((n + 1))
  done
  [ $n -gt 0 ] || return 1
  # A cluster started from other binaries (say, before a version bump) is
  # not the one asked for.
  if [ "$external" = 0 ]; then
    [ "$(cat "$state/pids/kube-apiserver.exe" 2>/dev/null)" = "$(readlink -f "$bin_dir/kube-apiserver")" ] || return 1
  fi
  (
    # shellcheck disable=SC1091
    . "$state/env"
    [ "${LOCKKEEPER_EXTERNAL_CLUSTER:-0}" = "$external" ] || exit 1
    curl -fsS --max-time 3 "$LOCKKEEPER_PROMETHEUS_URL/-/ready" >/dev/null || exit 1
    [ "$external" = 1 ] || "$kubectl" --kubeconfig "$KUBECONFIG" --request-timeout=3s get --raw /readyz >/dev/null
  ) 2>/dev/null
}

# Random ports below the kernel's ephemeral range (which starts at 32768 by
# default), skipping any port with a socket on it and any picked already.
picked=" "
port_in_use() {
  local hex
  hex=$(printf '%04X' "$1")
  grep -qE "^ *[0-9]+: [0-9A-F]+:$hex " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
prometheus_port='' etcd_port=''
# shellcheck disable=SC2034 # out is a nameref: assigning it sets the caller's variable
pick_port() {
  local -n out=$1
  local p i
  for i in $(seq 1 500); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    case $picked in *" $p "*) continue ;; esac
    port_in_use "$p" && continue
    picked="$picked$p "
    out=$p
    return 0
  done
  die "found no free TCP port in 20000-31999 after $i tries"
}

# start NAME BINARY ARGS...: runs a component in its own session (so a Ctrl-C
# meant for whoever called up.sh does not reach it), without the lock's file
# descriptor, logging to logs/NAME.log. The resolved binary path is recorded
# next to the PID so that only this process is ever signalled later.
started=()
start() {
  local name=$1 bin=$2 exe
  shift 2
  exe=$(readlink -f "$bin")
  [ -x "$exe" ] || die "$name: $bin is not an executable"
  printf '%s\n' "$exe" >"$state/pids/$name.exe"
  setsid "$exe" "$@" </dev/null >>"$state/logs/$name.log" 2>&1 9>&- &
  printf '%s\n' "$!" >"$state/pids/$name"
  started+=("$name")
}

# Exits when a started component has died: with status 75 when it could not
# bind its port (the caller retries with other ports), 1 otherwise.
check_started() {
  local name pid status
  for name in "${started[@]}"; do
    pid=$(cat "$state/pids/$name")
    pid_alive "$pid" && continue
    status=0
    wait "$pid" 2>/dev/null || status=$?
    log "$name (pid $pid) exited with status $status during startup; last 30 lines of $state/logs/$name.log:"
    tail -n 30 "$state/logs/$name.log" | sed 's/^/    /' >&2
    stop_recorded "$state" 5
    if grep -qiE 'address already in use' "$state/logs/$name.log"; then exit 75; fi
    exit 1
  done
}

# wait_until DESCRIPTION LOG_OF_INTEREST COMMAND...: polls COMMAND until it
# succeeds, failing fast when a component dies and after the step timeout.
wait_until() {
  local what=$1 logname=$2 deadline=$((SECONDS + step_timeout))
  shift 2
  until "$@" >/dev/null 2>&1; do
    check_started
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${step_timeout}s waiting for $what; last 30 lines of $state/logs/$logname.log:"
      tail -n 30 "$state/logs/$logname.log" | sed 's/^/    /' >&2
      stop_recorded "$state" 5
      exit 1
    fi
    sleep 0.2
  done
}

gen_pki() {
  local d=$state/pki
  mkdir -p "$d"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  new_ca() { # NAME COMMON_NAME
    openssl req -x509 "${ec[@]}" -keyout "$d/$1.key" -out "$d/$1.crt" -days 365 -subj "/CN=$2" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  }
  issue() { # CA NAME SUBJECT EXTENSIONS
    openssl req -new "${ec[@]}" -keyout "$d/$2.key" -subj "$3" 2>/dev/null |
      openssl x509 -req -CA "$d/$1.crt" -CAkey "$d/$1.key" -CAcreateserial -CAserial "$d/$1.srl" \
        -days 365 -out "$d/$2.crt" -extfile <(printf '%s\n' "$4") 2>/dev/null
  }
  local client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  new_ca ca lockkeeper-local-ca
  issue ca apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:${service_cidr%.0/*}.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue ca admin "/O=system:masters/CN=lockkeeper-admin" "$client"
  issue ca kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  issue ca kube-scheduler "/CN=system:kube-scheduler" "$client"
  # kwok writes the status of Nodes and Pods like a kubelet of many nodes.
  issue ca kwok "/O=system:masters/CN=kwok" "$client"
  # The aggregation layer's front proxy, as kubeadm sets it up: lets
  # components that delegate authentication, and any aggregated API server a
  # later test adds, trust requests the API server forwards.
  new_ca front-proxy-ca lockkeeper-front-proxy-ca
  issue front-proxy-ca front-proxy-client "/CN=front-proxy-client" "$client"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$d/sa.key" 2>/dev/null
  openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  chmod 600 "$d"/*.key
}

write_kubeconfig() { # FILE USER
  local d=$state/pki
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lockkeeper-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$d/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"$d/$2.crt")
    client-key-data: $(base64 -w0 <"$d/$2.key")
contexts:
- name: lockkeeper-local
  context:
    cluster: lockkeeper-local
    user: $2
current-context: lockkeeper-local
EOF
  chmod 600 "$1"
}

start_prometheus() {
  pick_port prometheus_port
  mkdir -p "$state/prometheus/targets" "$state/prometheus/data"
  cat >"$state/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  # A test registers a target by writing a file_sd JSON file; a "job" label
  # in the file overrides the job name below.
  - job_name: lockkeeper-tests
    file_sd_configs:
      - files: ['$state/prometheus/targets/*.json']
        refresh_interval: 1s
EOF
  start prometheus "$prometheus_bin" \
    --config.file="$state/prometheus/prometheus.yml" \
    --storage.tsdb.path="$state/prometheus/data" \
    --storage.tsdb.retention.time=1d \
    --web.listen-address="127.0.0.1:$prometheus_port" \
    --log.level=warn
}

prometheus_ready() { curl -fsS --max-time 2 "http://127.0.0.1:$prometheus_port/-/ready"; }
etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'; }
kc() { "$kubectl" --kubeconfig "$state/kubeconfig" --request-timeout=5s "$@"; }
apiserver_ready() { kc get --raw /readyz; }
node_count=$(grep -c '^kind: Node$' "$cluster_dir/nodes.yaml")
nodes_ready() {
  local ready
  ready=$(kc get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -cx True)
  [ "$ready" -ge "$node_count" ]
}
default_service_account() { kc -n default get serviceaccount default; }

# One attempt at starting everything; runs in a subshell so that a port clash
# (exit 75) can be retried from scratch.
start_all() {
  local t0 t_ready
  t0=$(now)
  rm -rf "$state/etcd" "$state/pki" "$state/prometheus" "$state/kubeconfig" "$state/env" \
    "$state"/*.kubeconfig "$state/logs.previous"
  [ -d "$state/logs" ] && mv "$state/logs" "$state/logs.previous"
  mkdir -p "$state/pids" "$state/logs"

  start_prometheus
  if [ "$external" = 1 ]; then
    wait_until "Prometheus /-/ready" prometheus prometheus_ready
    write_env "$KUBECONFIG"
    log "Prometheus ready in $(since "$t0")s; using the external cluster in $KUBECONFIG"
    return 0
  fi

  local etcd_peer_port api_port kcm_port scheduler_port
  pick_port etcd_port
  pick_port etcd_peer_port
  pick_port api_port
  pick_port kcm_port
  pick_port scheduler_port

  start etcd "$bin_dir/etcd" \
    --name=lockkeeper --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="lockkeeper=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --log-level=warn

  gen_pki
  write_kubeconfig "$state/kubeconfig" admin
  for c in kube-controller-manager kube-scheduler kwok; do write_kubeconfig "$state/$c.kubeconfig" "$c"; done
  wait_until "etcd /health" etcd etcd_healthy

  # The Node authorizer comes first as on a real cluster; RBAC decides for
  # everyone else. The endpoint reconciler is off because Endpoints may not
  # hold a loopback address, which is all this API server has.
  # TaintNodesByCondition is off because it taints new Nodes not-ready and only
  # the node-lifecycle controller, which this cluster does not run, lifts it.
  start kube-apiserver "$bin_dir/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --cert-dir="$state/pki" \
    --tls-cert-file="$state/pki/apiserver.crt" --tls-private-key-file="$state/pki/apiserver.key" \
    --client-ca-file="$state/pki/ca.crt" \
    --requestheader-client-ca-file="$state/pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$state/pki/front-proxy-client.crt" \
    --proxy-client-key-file="$state/pki/front-proxy-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$state/pki/sa.pub" \
    --service-account-signing-key-file="$state/pki/sa.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,ValidatingAdmissionPolicy,MutatingAdmissionPolicy \
    --disable-admission-plugins=TaintNodesByCondition \
    --service-cluster-ip-range="$service_cidr" \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false
  wait_until "kube-apiserver /readyz" kube-apiserver apiserver_ready

  # node-lifecycle-controller is left out: kwok's Nodes send no heartbeats,
  # and a Node marked NotReady would get its pods evicted mid-test.
  start kube-controller-manager "$bin_dir/kube-controller-manager" \
    --kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --root-ca-file="$state/pki/ca.crt" \
    --service-account-private-key-file="$state/pki/sa.key" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$state/pki/ca.crt" --cluster-signing-key-file="$state/pki/ca.key" \
    --service-cluster-ip-range="$service_cidr" \
    --controllers='*,-node-lifecycle-controller' \
    --leader-elect=false
  start kube-scheduler "$bin_dir/kube-scheduler" \
    --kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$scheduler_port" \
    --leader-elect=false
  start kwok "$bin_dir/kwok" \
    --kubeconfig="$state/kwok.kubeconfig" \
    --config="$cluster_dir/kwok/kwok.yaml" \
    --config="$cluster_dir/kwok/node-stages.yaml" \
    --config="$cluster_dir/kwok/pod-stages.yaml"

  kc create -f "$cluster_dir/nodes.yaml" >/dev/null
  wait_until "$node_count Ready Nodes" kwok nodes_ready
  t_ready=$(since "$t0")
  wait_until "the default ServiceAccount in namespace default" kube-controller-manager default_service_account
  wait_until "Prometheus /-/ready" prometheus prometheus_ready
  write_env "$state/kubeconfig"
  log "control plane ready in ${t_ready}s (apiserver /readyz ok, Nodes Ready); everything ready in $(since "$t0")s"
  printf '%s\n' "$t_ready" >"$state/start-seconds"
}

write_env() { # KUBECONFIG
  cat >"$state/env.tmp" <<EOF
# Written by e2e/cluster/up.sh; source it to use this cluster.
export KUBECONFIG='$1'
export LOCKKEEPER_CLUSTER_STATE='$state'
export LOCKKEEPER_EXTERNAL_CLUSTER='$external'
export LOCKKEEPER_PROMETHEUS_URL='http://127.0.0.1:$prometheus_port'
export LOCKKEEPER_PROMETHEUS_TARGETS_DIR='$state/prometheus/targets'
export LOCKKEEPER_BIN_DIR='${bin_dir:-}'
EOF
  mv "$state/env.tmp" "$state/env"
}

summary() {
  # shellcheck disable=SC1091
  . "$state/env"
  local ready
  ready=$(cat "$state/start-seconds" 2>/dev/null || echo "?")
  if [ "$external" = 1 ]; then
    echo "# Prometheus at $LOCKKEEPER_PROMETHEUS_URL; Kubernetes: the external cluster in KUBECONFIG"
  else
    echo "# local control plane ready in ${ready}s (apiserver ready, Nodes Ready); state in $state"
    echo "# kubectl and helm for it are in $LOCKKEEPER_BIN_DIR"
  fi
  echo "# KUBECONFIG: $KUBECONFIG"
  echo "export KUBECONFIG=$KUBECONFIG"
}

kubectl=
bin_dir=
if [ "$external" = 1 ]; then
  [ -n "${KUBECONFIG:-}" ] || die "LOCKKEEPER_EXTERNAL_CLUSTER=1 needs KUBECONFIG to name the cluster"
  case $KUBECONFIG in *"'"* | *:*) die "KUBECONFIG must be one file path without quotes: $KUBECONFIG" ;; esac
  KUBECONFIG=$(readlink -f "$KUBECONFIG")
  # kubectl and helm from the cache serve any cluster; they are not built here.
  bin_dir=$("$cluster_dir/build.sh" --print)
  [ -x "$bin_dir/kubectl" ] || bin_dir=
else
  bin_dir=$("$cluster_dir/build.sh")
  kubectl=$bin_dir/kubectl
fi
ensure_prometheus

if [ "$fresh" = 0 ] && healthy; then
  log "reusing the healthy cluster recorded in $state"
  summary
  exit 0
fi

# Whatever an earlier, killed run left behind goes first.
stop_recorded "$state" 10

# Components run in sessions of their own, so an interrupted start has to
# stop them itself.
trap 'stop_recorded "$state" 5; exit 130' INT
trap 'stop_recorded "$state" 5; exit 143' TERM
for attempt in 1 2 3; do
  set +e
  (
    set -e
    start_all
  )
  status=$?
  set -e
  # Whatever failed, nothing half-started is left running.
  [ "$status" = 0 ] || stop_recorded "$state" 5
  [ "$status" = 75 ] || break
  log "a port was taken between picking and binding it; starting again with new ports (attempt $((attempt + 1)))"
done
[ "$status" = 0 ] || exit "$status"
summary
