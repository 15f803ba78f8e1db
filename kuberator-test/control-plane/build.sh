#!/usr/bin/env bash
# Builds kube-apiserver and etcd from the Go modules pinned in go.mod, into a cache directory
# outside the clone, and prints that directory on the last line of its output.
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

if [[ -x $out/kube-apiserver && -x $out/etcd ]]; then
  echo "control plane: kube-apiserver $kubernetes and etcd $etcd already built"
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "control plane: Go is not installed; it is needed to build kube-apiserver and etcd" >&2; exit 1; }
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
echo "control plane: downloading Go modules (first run only)"
go mod download -x 2>&1 | grep -c '^# get' | sed 's/^/control plane: fetched modules: /' || true

echo "control plane: building kube-apiserver $kubernetes (a cold build takes 10+ minutes on 2 cores)"
go build -trimpath -ldflags "-s -w $version_flags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
echo "control plane: kube-apiserver built after $(( $(date +%s) - started )) s; building etcd $etcd"
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
mv "$tmp/kube-apiserver" "$tmp/etcd" "$out/"
echo "control plane: built in $(( $(date +%s) - started )) s"
"$out/kube-apiserver" --version
echo "$out"
