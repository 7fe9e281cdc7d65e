#!/usr/bin/env bash
# What the HTML report tests need, installed once and cached: Debian's Chromium (/usr/bin/chromium)
# and playwright-core (pinned in tests/browser/package-lock.json) in tests/browser/node_modules.
# Idempotent; safe to run from several test processes at once (flock).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHROMIUM="${HERALD_CHROMIUM:-/usr/bin/chromium}"
mkdir -p "$ROOT/.cache"
exec 9>"$ROOT/.cache/browser-setup.lock"
flock 9

if ! [ -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium (once)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  else
    echo "Chromium is missing at $CHROMIUM: install Debian's package 'chromium' (apt-get install -y chromium)" >&2
    exit 1
  fi
fi

command -v node >/dev/null || { echo "node is missing: the browser tests need Node.js 20+" >&2; exit 1; }
cd "$ROOT/tests/browser"
if ! [ -f node_modules/playwright-core/package.json ] || ! cmp -s package-lock.json node_modules/.herald-lock; then
  npm ci --no-audit --no-fund --silent --cache "$ROOT/.cache/npm" >&2
  cp package-lock.json node_modules/.herald-lock
fi
echo "$CHROMIUM"
