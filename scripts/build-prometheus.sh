#!/usr/bin/env bash
# Build the Prometheus server pinned in prometheus/go.mod (static scrape targets only: the
# remove_all_sd tag leaves out the cloud service discoveries) into
# .cache/prometheus/<version>/prometheus, and print the binary's path on stdout. The tests use it
# to scrape a real Herald (tests/test_prometheus_e2e.py); Herald itself does not need it.
#
# Like scripts/build-opa.sh: Go writes only to .cache/go (HERALD_CACHE_DIR moves .cache), a cold
# build downloads ~150 MB of modules and takes minutes, and it is skipped when the binary exists
# and prometheus/go.mod and go.sum hash as they did when it was built.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/prometheus"
VERSION="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3}' "$SRC/go.mod")"
if [ -z "$VERSION" ]; then
    echo "build-prometheus: cannot find the pinned Prometheus version in $SRC/go.mod" >&2
    exit 1
fi
CACHE="${HERALD_CACHE_DIR:-$ROOT/.cache}"
OUT_DIR="$CACHE/prometheus/$VERSION"
BIN="$OUT_DIR/prometheus"
STAMP="$OUT_DIR/source.sha256"

hash_sources() {
    (cd "$SRC" && cat go.mod go.sum) | sha256sum | cut -d' ' -f1
}

want="$(hash_sources)"
if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "$BIN"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "build-prometheus: 'go' is not on PATH (Go 1.26 or newer is needed to build Prometheus $VERSION)" >&2
    exit 1
fi

export GOPATH="$CACHE/go"
export GOMODCACHE="$GOPATH/mod"
export GOCACHE="$GOPATH/build"
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

# the module's v0.3XX.Y is Prometheus 3.XX.Y
RELEASE="${VERSION#v0.}"
RELEASE="${RELEASE:0:1}.${RELEASE:1}"

mkdir -p "$OUT_DIR"
start=$(date +%s)
echo "build-prometheus: building Prometheus $RELEASE ($VERSION, $(go version))" >&2
(cd "$SRC" && go build -trimpath -tags remove_all_sd -o "$BIN.tmp" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$RELEASE" \
    github.com/prometheus/prometheus/cmd/prometheus)
mv "$BIN.tmp" "$BIN"
echo "$want" >"$STAMP"
echo "build-prometheus: built $BIN in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
