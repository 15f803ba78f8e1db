#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl from the Go modules pinned in go.mod, into a cache
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

if [[ -x $out/kube-apiserver && -x $out/etcd && -x $out/kubectl ]]; then
  say "kube-apiserver $kubernetes, etcd $etcd and kubectl already built in $out"
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
say "building kube-apiserver $kubernetes (a cold build takes 5 to 15 minutes on 2 cores)"
go build -trimpath -ldflags "-s -w $version_flags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
say "kube-apiserver built after $(( $(date +%s) - started )) s; building etcd $etcd"
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
say "etcd built after $(( $(date +%s) - started )) s; building kubectl $kubernetes"
go build -trimpath -ldflags "-s -w $version_flags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
mv "$tmp/kube-apiserver" "$tmp/etcd" "$tmp/kubectl" "$out/"
say "built $("$out/kube-apiserver" --version) in $(( $(date +%s) - started )) s"
echo "$out"
