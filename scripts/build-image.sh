#!/usr/bin/env bash
# Build Herald's container image with Podman (the repository's Dockerfile), with no registry:
# the Python base image is a Debian bookworm root file system made by mmdebstrap from Debian's
# packages and imported into Podman, then passed to the Dockerfile BY DIGEST (PYTHON_IMAGE).
#
#   scripts/build-image.sh build [TAG]   build the image (default tag localhost/herald:dev); prints TAG
#   scripts/build-image.sh base          build/import the base only; prints its name@sha256:digest
#   scripts/build-image.sh podman ARGS   run podman on this script's storage (e.g. `images`, `rm -f X`)
#
# HERALD_PYTHON_IMAGE=name@sha256:... builds on that base instead (e.g. python:3.11-slim-bookworm
# by digest where a registry is reachable). Everything lives under .cache/image (HERALD_CACHE_DIR
# moves .cache): Podman's storage (overlay, vfs where overlay does not work) with its layer cache,
# the dependencies' wheels (made by this machine's pip, mounted into the build), and the .deb
# files of the base. A cold run takes minutes (the base's ~40 MB of packages, ~50 MB of wheels);
# a rebuild after a code change well under a minute.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HERALD_CACHE_DIR:-$ROOT/.cache}"
BASE_DIR="$CACHE/image"
CONF="$BASE_DIR/containers.conf"
SUITE="bookworm"
MIRROR="http://deb.debian.org/debian"
PACKAGES="python3,python3-venv,ca-certificates"
# the base is rebuilt when what makes it changes; merged /usr by mmdebstrap's hook (the usrmerge
# package would bring perl, ~50 MB)
BASE_KEY="$(printf '%s %s %s v2' "$SUITE" "$MIRROR" "$PACKAGES" | sha256sum | cut -c1-12)"
BASE_NAME="localhost/herald-base"
BASE_TAG="$BASE_NAME:$SUITE-$BASE_KEY"
BUILD_CACHE_TAG="localhost/herald-build-stage:cache"

log() { echo "build-image: $*" >&2; }

setup() {
    mkdir -p "$BASE_DIR/run" "$BASE_DIR/tmp" "$BASE_DIR/debs"
    if ! command -v podman >/dev/null 2>&1; then
        log "installing podman runc"
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc >&2
    fi
    # Podman's default rlimits make container init fail here ("setrlimit ... operation not
    # permitted"); containers get no network unless they ask (--network host).
    cat >"$CONF" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$BASE_DIR/tmp"
EOF
    if [ ! -f "$BASE_DIR/driver" ]; then
        # overlay shares the layers; vfs (full copies) where the kernel or file system refuses it
        if CONTAINERS_CONF="$CONF" podman --root "$BASE_DIR/storage-overlay" --runroot "$BASE_DIR/run" \
            --storage-driver=overlay info >/dev/null 2>&1; then
            echo overlay >"$BASE_DIR/driver"
        else
            echo vfs >"$BASE_DIR/driver"
        fi
    fi
}

podman_() {
    local driver
    driver="$(cat "$BASE_DIR/driver")"
    # TMPDIR: where the build's cache mounts (the pip cache) live
    TMPDIR="$BASE_DIR/tmp" CONTAINERS_CONF="$CONF" podman --root "$BASE_DIR/storage-$driver" \
        --runroot "$BASE_DIR/run" --storage-driver="$driver" "$@"
}

base() {
    if ! podman_ image exists "$BASE_TAG"; then
        if ! command -v mmdebstrap >/dev/null 2>&1; then
            log "installing mmdebstrap"
            apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >&2
        fi
        local tar="$BASE_DIR/base-$BASE_KEY.tar" start
        start=$(date +%s)
        log "making the $SUITE base ($PACKAGES) with mmdebstrap"
        # the .deb files are kept in $BASE_DIR/debs between runs (sync-in / sync-out)
        SOURCE_DATE_EPOCH=1767225600 mmdebstrap --quiet --format=tar --variant=essential --include="$PACKAGES" \
            --skip=essential/unlink --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
            --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
            --setup-hook="sync-in $BASE_DIR/debs /var/cache/apt/archives/" \
            --customize-hook="sync-out /var/cache/apt/archives $BASE_DIR/debs" \
            "$SUITE" "$tar.partial" \
            "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
            "deb http://deb.debian.org/debian-security $SUITE-security main" >"$BASE_DIR/mmdebstrap.log" 2>&1 || {
            log "mmdebstrap failed; the end of $BASE_DIR/mmdebstrap.log:"
            tail -n 40 "$BASE_DIR/mmdebstrap.log" >&2
            exit 1
        }
        mv "$tar.partial" "$tar"
        podman_ import --quiet --change 'CMD ["python3"]' "$tar" "$BASE_TAG" >/dev/null
        rm -f "$tar"
        log "base $BASE_TAG made in $(( $(date +%s) - start ))s"
        # earlier bases: removed unless an image still uses them
        podman_ images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$BASE_NAME" | while read -r old; do
            [ "$old" = "$BASE_TAG" ] || podman_ rmi "$old" >/dev/null 2>&1 || true
        done
    fi
    local digest
    digest="$(podman_ image inspect --format '{{.Digest}}' "$BASE_TAG")"
    case "$digest" in
    sha256:*) echo "$BASE_NAME@$digest" ;;
    *) log "no digest for $BASE_TAG: '$digest'"; exit 1 ;;
    esac
}

# The dependencies as wheels in $BASE_DIR/wheels, made by this machine's pip for the base's
# Python (same version needed): kept between builds, so a changed pyproject.toml downloads only
# what is new (pip's HTTP cache cannot help where the index's answers carry no caching headers).
wheelhouse() {
    local base="$1" wheels="$BASE_DIR/wheels" req="$BASE_DIR/requirements.txt" want have
    want="$(podman_ run --rm --network none --entrypoint python3 "$base" -c \
        'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null | tail -n 1)"
    have="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
    if [ -z "$want" ] || [ "$want" != "$have" ]; then
        log "no wheel directory: the base has Python ${want:-?}, this machine ${have:-none}; pip uses the index"
        return 1
    fi
    mkdir -p "$wheels"
    python3 - "$ROOT" >"$req" <<'PY'
import pathlib, re, sys, tomllib
root = pathlib.Path(sys.argv[1])
print("\n".join(tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]))
print("\n".join(re.findall(r'"((?:setuptools|wheel)==[^"]+)"', (root / "Dockerfile").read_text())))
PY
    # offline first (everything already there), else fetch what is missing
    python3 -m pip wheel --quiet --disable-pip-version-check --no-index --find-links "$wheels" \
        --wheel-dir "$wheels" -r "$req" >/dev/null 2>&1 \
        || python3 -m pip wheel --quiet --disable-pip-version-check --find-links "$wheels" \
            --wheel-dir "$wheels" -r "$req" >&2 \
        || { log "could not make the wheel directory; pip uses the index"; return 1; }
}

build() {
    local tag="${1:-localhost/herald:dev}" python_image start
    python_image="${HERALD_PYTHON_IMAGE:-$(base)}"
    start=$(date +%s)
    log "building $tag on $python_image"
    # --format docker keeps HEALTHCHECK (the OCI image format has no field for it);
    # --network host: pip reaches the package index during the build. The build's RUN steps see
    # this machine's CA bundle (HERALD_BUILD_CA_BUNDLE), so a TLS-intercepting proxy that the
    # machine trusts works; it is a build-time mount only, not part of the image.
    local ca="${HERALD_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" mounts=()
    [ -f "$ca" ] && mounts=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
    if wheelhouse "$python_image"; then
        mounts+=(--volume "$BASE_DIR/wheels:/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_NO_INDEX=1)
    fi
    local build=(build --quiet --format docker --layers --network host "${mounts[@]}"
        --build-arg "PYTHON_IMAGE=$python_image" -f "$ROOT/Dockerfile")
    # the build stage gets a tag of its own, so that pruning the images earlier builds left
    # behind keeps its layers (the pip install of the dependencies) as the cache of the next one
    podman_ "${build[@]}" --target build -t "$BUILD_CACHE_TAG" "$ROOT" >/dev/null
    podman_ "${build[@]}" -t "$tag" "$ROOT" >/dev/null
    podman_ image prune --force >/dev/null
    log "built $tag in $(( $(date +%s) - start ))s"
    echo "$tag"
}

case "${1:-}" in
build) setup; shift; build "$@" ;;
base) setup; base ;;
podman) setup; shift; podman_ "$@" ;;
*)
    echo "usage: $0 build [TAG] | base | podman ARGS..." >&2
    exit 2
    ;;
esac
