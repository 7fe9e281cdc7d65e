#!/usr/bin/env bash
# Build helm (the Kubernetes package manager, used by tests/test_helm_chart.py to lint and render
# deploy/helm/herald) from the Go module proxy at the version pinned below, into
# .cache/helm/<version>/helm, and print the binary's path on stdout.
#
# Everything Go writes stays in .cache/go (ignored by git, cached by CI), as for scripts/build-opa.sh;
# HERALD_CACHE_DIR moves .cache elsewhere. A cold build downloads ~150 MB of modules and takes
# minutes on two cores; it is skipped when the binary exists.
set -euo pipefail

HELM_MODULE="helm.sh/helm/v3"
HELM_VERSION="${HERALD_HELM_VERSION:-v3.22.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HERALD_CACHE_DIR:-$ROOT/.cache}"
OUT_DIR="$CACHE/helm/$HELM_VERSION"
BIN="$OUT_DIR/helm"

# bump when the build's flags change, so a cached binary built otherwise is rebuilt
BUILD_REV="2"
if [ -x "$BIN" ] && [ "$(cat "$OUT_DIR/build-rev" 2>/dev/null)" = "$BUILD_REV" ]; then
    echo "$BIN"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "build-helm: 'go' is not on PATH (needed to build helm $HELM_VERSION)" >&2
    exit 1
fi

export GOPATH="$CACHE/go"
export GOMODCACHE="$GOPATH/mod"
export GOCACHE="$GOPATH/build"
# never fetch another toolchain: the one on PATH builds it or the build fails clearly
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0

mkdir -p "$OUT_DIR"
start=$(date +%s)
echo "build-helm: building $HELM_MODULE $HELM_VERSION ($(go version))" >&2
# helm's Makefile sets the Kubernetes version of `helm template` and `helm lint` (without it: v1.20)
# from the client-go it builds with: v0.X.Y is Kubernetes 1.X
go mod download "$HELM_MODULE@$HELM_VERSION"
CLIENT_GO="$(awk '$1 == "k8s.io/client-go" {print $2}' "$GOMODCACHE/cache/download/$HELM_MODULE/@v/$HELM_VERSION.mod")"
K8S_MINOR="$(echo "$CLIENT_GO" | cut -d. -f2)"
if [ -z "$K8S_MINOR" ]; then
    echo "build-helm: cannot find k8s.io/client-go in $HELM_MODULE $HELM_VERSION's go.mod" >&2
    exit 1
fi
LDFLAGS="-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
    LDFLAGS="$LDFLAGS -X $HELM_MODULE/$pkg.k8sVersionMajor=1 -X $HELM_MODULE/$pkg.k8sVersionMinor=$K8S_MINOR"
done
# `go install module/cmd@version` builds with exactly the module's own go.mod/go.sum requirements
GOBIN="$OUT_DIR/bin.tmp" go install -trimpath -ldflags "$LDFLAGS" "$HELM_MODULE/cmd/helm@$HELM_VERSION"
mv "$OUT_DIR/bin.tmp/helm" "$BIN"
rmdir "$OUT_DIR/bin.tmp"
echo "$BUILD_REV" >"$OUT_DIR/build-rev"
echo "build-helm: built $BIN (Kubernetes 1.$K8S_MINOR) in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
