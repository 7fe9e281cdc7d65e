#!/usr/bin/env bash
# Build Herald's OPA (stock OPA + the jsonformat built-in, see opa/main.go) at the version pinned
# in opa/go.mod, into .cache/opa/<version>/opa, and print the binary's path on stdout.
#
# Everything Go writes stays in .cache/go (ignored by git, cached by CI); HERALD_CACHE_DIR
# moves .cache elsewhere (e.g. a folder that outlives CI's fresh clones: a cold build downloads
# ~120 MB of modules and takes minutes). The build is skipped when the binary exists and
# opa/go.mod, opa/go.sum and opa/main.go hash as they did when it was built.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/opa"
VERSION="$(awk '$1 == "require" && $2 == "github.com/open-policy-agent/opa" {print $3}' "$SRC/go.mod")"
if [ -z "$VERSION" ]; then
    echo "build-opa: cannot find the pinned OPA version in $SRC/go.mod" >&2
    exit 1
fi
CACHE="${HERALD_CACHE_DIR:-$ROOT/.cache}"
OUT_DIR="$CACHE/opa/$VERSION"
BIN="$OUT_DIR/opa"
STAMP="$OUT_DIR/source.sha256"

hash_sources() {
    (cd "$SRC" && cat go.mod go.sum main.go) | sha256sum | cut -d' ' -f1
}

want="$(hash_sources)"
if [ -x "$BIN" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    echo "$BIN"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "build-opa: 'go' is not on PATH (Go 1.26 or newer is needed to build OPA $VERSION)" >&2
    exit 1
fi

export GOPATH="$CACHE/go"
export GOMODCACHE="$GOPATH/mod"
export GOCACHE="$GOPATH/build"
# never fetch another toolchain: the one on PATH builds it or the build fails clearly
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

mkdir -p "$OUT_DIR"
start=$(date +%s)
echo "build-opa: building OPA $VERSION with jsonformat ($(go version))" >&2
(cd "$SRC" && go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
echo "$want" >"$STAMP"
echo "build-opa: built $BIN in $(( $(date +%s) - start ))s" >&2
echo "$BIN"
