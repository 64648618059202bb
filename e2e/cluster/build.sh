#!/usr/bin/env bash
# Builds (or reuses) the local control plane's binaries from Go modules:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok
# and helm. Each component is cached under $LOCKKEEPER_CACHE/bin/<name>-<version>
# and only trusted when its ".complete" marker exists: a build writes into a
# temporary directory and is renamed into place as its very last step, so an
# interrupted build never leaves an entry a later run would use.
#
# Usage: e2e/cluster/build.sh            build what is missing, print the bin dir
#        e2e/cluster/build.sh --print    only print where the binaries live
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${LOCKKEEPER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lockkeeper}

log() { printf '[build] %s\n' "$*" >&2; }
die() { printf '[build] ERROR: %s\n' "$*" >&2; exit 1; }

entry() { echo "$cache/bin/$1-$2"; }

# run_step NAME CMD...: runs a build step and, when it fails, says which step
# failed and the exact command to retry.
run_step() {
  local name=$1; shift
  local start=$SECONDS
  if ! "$@"; then
    die "step '$name' failed. Retry with: (cd $PWD && $*)   or rerun: $here/build.sh"
  fi
  log "$name took $((SECONDS - start))s"
}

need_go() {
  command -v go >/dev/null 2>&1 || die "Go is not installed: the control plane is built from Go modules. Install Go >= 1.26 (the Debian package golang-go or a Go toolchain) and rerun $here/build.sh"
}

# Creates a throwaway module that requires MODULE@VERSION and replaces each
# of its local-path replaces ("X => ./staging/..." or "X => ../api") with the
# published version that MAP_VERSION gives, then builds PACKAGES into OUT.
build_from_replacing_module() {
  local module=$1 version=$2 replace_version=$3 out=$4 ldflags=$5; shift 5
  local work; work=$(mktemp -d "${TMPDIR:-/tmp}/lockkeeper-build.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  (
    cd "$work"
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
    run_step "go mod init ($module)" go mod init lockkeeper.local/build >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [ -f "$gomod" ] || die "step 'download $module@$version' failed. Retry with: go mod download -json $module@$version"
    go mod edit -require "$module@$version"
    local replaced=0
    while read -r dep; do
      go mod edit -replace "$dep=$dep@$replace_version"
      replaced=$((replaced + 1))
    done < <(sed -n 's/^[[:space:]]*\([^[:space:]]*\) => \.\.\{0,1\}\/.*$/\1/p' "$gomod" | sort -u)
    log "$module@$version: $replaced local replaces pinned to $replace_version"
    run_step "go build $* ($version)" go build -mod=mod -trimpath -ldflags "$ldflags" -o "$out/" "$@"
  )
}

build_kubernetes() {
  local v=$K8S_VERSION dst; dst=$(entry kubernetes "$v")
  [ -f "$dst/.complete" ] && return 0
  need_go
  local minor=${v#v1.}; minor=${minor%%.*}
  local major=1 staging="v0.${v#v1.}"
  local tmp="$dst.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  log "building Kubernetes $v (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); a cold build takes several minutes"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  build_from_replacing_module k8s.io/kubernetes "$v" "$staging" "$tmp" "$ld" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
  touch "$tmp/.complete"; rm -rf "$dst"; mv "$tmp" "$dst"
}

build_etcd() {
  local v=$ETCD_VERSION dst; dst=$(entry etcd "$v")
  [ -f "$dst/.complete" ] && return 0
  need_go
  local tmp="$dst.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  log "building etcd $v"
  build_from_replacing_module go.etcd.io/etcd/server/v3 "$v" "$v" "$tmp" \
    "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$v" go.etcd.io/etcd/server/v3
  for b in server v3; do [ -x "$tmp/$b" ] && mv "$tmp/$b" "$tmp/etcd"; done
  [ -x "$tmp/etcd" ] || die "etcd build produced no binary in $tmp"
  touch "$tmp/.complete"; rm -rf "$dst"; mv "$tmp" "$dst"
}

# go install for modules without local replaces (kwok, helm).
build_plain() {
  local name=$1 pkg=$2 v=$3 dst; dst=$(entry "$name" "$v")
  [ -f "$dst/.complete" ] && return 0
  need_go
  local tmp="$dst.tmp.$$"; rm -rf "$tmp"; mkdir -p "$tmp"
  log "building $name $v"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOBIN="$tmp" \
    run_step "go install $pkg@$v" go install -trimpath -ldflags "-s -w" "$pkg@$v"
  touch "$tmp/.complete"; rm -rf "$dst"; mv "$tmp" "$dst"
}

# Where each binary lives; KUBEBUILDER_ASSETS (envtest) supplies etcd and
# kube-apiserver when set.
bin_dirs() {
  if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then echo "$KUBEBUILDER_ASSETS"; fi
  entry kubernetes "$K8S_VERSION"; entry etcd "$ETCD_VERSION"
  entry kwok "$KWOK_VERSION"; entry helm "$HELM_VERSION"
}

# Links every binary into one directory so callers need one PATH entry.
link_bin() {
  local dir="$cache/bin/current-$K8S_VERSION"
  mkdir -p "$dir"
  local d f
  for d in $(bin_dirs | tac); do
    for f in "$d"/*; do [ -x "$f" ] && [ -f "$f" ] && ln -sf "$f" "$dir/$(basename "$f")"; done
  done
  echo "$dir"
}

if [ "${1:-}" = "--print" ]; then echo "$cache/bin/current-$K8S_VERSION"; exit 0; fi

total=$SECONDS
mkdir -p "$cache/bin"
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  log "using etcd and kube-apiserver from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
fi
# envtest's etcd makes building one pointless; Kubernetes is still built for
# the controller manager and scheduler, which envtest does not ship.
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then :; else build_etcd; fi
build_kubernetes
build_plain kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
build_plain helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION"
bindir=$(link_bin)
log "binaries ready in $bindir ($((SECONDS - total))s; cache $(du -sh "$cache/bin" | cut -f1))"
echo "$bindir"
