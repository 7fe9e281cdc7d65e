#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml: the runtime dependencies and the test and dev
# extras, every package (transitive ones too) pinned to one version with the sha256 of each of its
# files on PyPI. `make venv` installs from it with `pip install --require-hashes`;
# tests/test_supply_chain.py fails while pyproject's == pins and the lock disagree.
#
#   scripts/lock.sh            # after changing a dependency in pyproject.toml; commit both files
#
# Needs uv (the dev extra: `.venv/bin/python -m pip install -e '.[dev]'`) and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
if ! [ -x "$UV" ]; then
    echo "lock.sh: $UV not found; install the dev extra: .venv/bin/python -m pip install -e '.[dev]'" >&2
    exit 1
fi
# --universal: one lock for every platform and Python >= 3.11 (environment markers where they
# differ); --python-version: the oldest Python pyproject allows
"$UV" pip compile pyproject.toml --extra test --extra dev \
    --generate-hashes --universal --python-version 3.11 \
    --no-cache --quiet \
    --custom-compile-command "scripts/lock.sh" \
    --output-file requirements.lock
echo "requirements.lock: $(grep -c '^[A-Za-z0-9]' requirements.lock) packages"
