#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, etcd and kubectl from the Go modules pinned in go.mod, into a cache
# directory outside the clone. Progress goes to stderr; stdout gets only that directory.
#
# A cold build compiles Kubernetes and etcd from source: expect 10 to 20 minutes on 2 cores,
# plus the module download. A warm run finds the binaries and returns at once.
#
#   KUBERATOR_CONTROL_PLANE_CACHE  where binaries go (default: $XDG_CACHE_HOME or
#                                  ~/.cache, then kuberator/control-plane)
#   GOMODCACHE, GOCACHE            Go's own caches, which Go keeps under ~/go and ~/.cache
#
# Usage: kuberator-test/control-plane/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

kubernetes=$(sed -n 's#^[[:space:]]*k8s\.io/kubernetes \(v[0-9.]*\).*#\1#p' go.mod)
etcd=$(sed -n 's#^[[:space:]]*go\.etcd\.io/etcd/server/v3 \(v[0-9.]*\).*#\1#p' go.mod)
[[ -n $kubernetes && -n $etcd ]] || { echo "go.mod pins no k8s.io/kubernetes or etcd server" >&2; exit 1; }
sum=$(cat go.mod go.sum | sha256sum | cut -c1-12)
cache_root=${KUBERATOR_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kuberator/control-plane}
out="$cache_root/kubernetes-$kubernetes-etcd-$etcd-$sum"

say() { echo "control plane: $*" >&2; }

binaries=(kube-apiserver kube-controller-manager etcd kubectl)
built=true
for binary in "${binaries[@]}"; do [[ -x $out/$binary ]] || built=false; done
if $built; then
  say "kube-apiserver, kube-controller-manager and kubectl $kubernetes and etcd $etcd already built in $out"
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { say "Go is not installed; it is needed to build kube-apiserver and etcd"; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

minor=${kubernetes#v1.}
minor=${minor%%.*}
version_flags="-X k8s.io/component-base/version.gitVersion=$kubernetes \
-X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

started=$(date +%s)
say "downloading Go modules (first run only)"
go mod download
# Each binary is built once and kept, so an interrupted build resumes where it stopped.
build() {
  local name=$1 package=$2 flags=$3
  if [[ -x $out/$name ]]; then return; fi
  say "building $name (after $(( $(date +%s) - started )) s)"
  go build -trimpath -ldflags "-s -w $flags" -o "$tmp/$name" "$package"
  mv "$tmp/$name" "$out/$name"
}
say "a cold build of Kubernetes takes 10 to 20 minutes on 2 cores"
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$version_flags"
build etcd go.etcd.io/etcd/server/v3 ""
build kubectl k8s.io/kubernetes/cmd/kubectl "$version_flags"
# The garbage collector and namespace controller: cascade deletion and namespace removal.
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$version_flags"
say "built $("$out/kube-apiserver" --version) in $(( $(date +%s) - started )) s"
echo "$out"
