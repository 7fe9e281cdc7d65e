#!/bin/sh
# A Docker-API-compatible container engine for the docker action's tests: Podman's API service
# on a project-local socket, with project-local storage and a busybox image built locally
# (no registry is reachable).
#
#   scripts/podman-service.sh start   install what is missing, import busybox, start the service
#   scripts/podman-service.sh stop    stop the service this script started (by its recorded PID)
#   scripts/podman-service.sh env     print DOCKER_HOST=... for clients
#
# Everything lives under .cache/podman: storage (vfs), run root, containers.conf, socket, PID.
set -eu

ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
BASE="$ROOT_DIR/.cache/podman"
SOCK="$BASE/podman.sock"
PIDFILE="$BASE/service.pid"
LOG="$BASE/service.log"
CONF="$BASE/containers.conf"
IMAGE="localhost/busybox:latest"

podman_() {
    CONTAINERS_CONF="$CONF" podman --root "$BASE/storage" --runroot "$BASE/run" \
        --storage-driver=vfs "$@"
}

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

answers() {
    curl -sf --max-time 5 --unix-socket "$SOCK" http://d/v1.41/version >/dev/null 2>&1
}

install() {
    if ! command -v podman >/dev/null 2>&1; then
        echo "podman-service: installing podman busybox-static runc" >&2
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman busybox-static runc >&2
    fi
    command -v curl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl >&2
}

write_conf() {
    mkdir -p "$BASE/storage" "$BASE/run" "$BASE/tmp"
    # Podman's default rlimits make container init fail here ("setrlimit ... operation not
    # permitted"); no network namespace is needed, nothing outside is reachable anyway.
    cat >"$CONF" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "none"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$BASE/tmp"
EOF
}

import_busybox() {
    podman_ image exists "$IMAGE" && return 0
    busybox=$(command -v busybox || true)
    for candidate in /usr/bin/busybox /bin/busybox; do
        [ -n "$busybox" ] || { [ -x "$candidate" ] && busybox=$candidate; }
    done
    [ -n "$busybox" ] || { echo "podman-service: no busybox binary found" >&2; exit 1; }
    rootfs="$BASE/busybox-root"
    rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/tmp"
    cp "$busybox" "$rootfs/bin/busybox"
    for applet in sh echo cat env ls sleep printf true false test head tr wc; do
        ln -s busybox "$rootfs/bin/$applet"
    done
    tar -C "$rootfs" -cf "$BASE/busybox.tar" .
    podman_ import --quiet "$BASE/busybox.tar" "$IMAGE" >/dev/null
    rm -rf "$rootfs" "$BASE/busybox.tar"
}

start() {
    if running && answers; then
        echo "podman-service: already running (pid $(cat "$PIDFILE"))" >&2
        return 0
    fi
    install
    write_conf
    import_busybox
    rm -f "$SOCK"
    # setsid: the service must not share the caller's process group (pytest's, a shell's).
    CONTAINERS_CONF="$CONF" setsid podman --root "$BASE/storage" --runroot "$BASE/run" \
        --storage-driver=vfs system service --time=0 "unix://$SOCK" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    i=0
    while ! answers; do
        i=$((i + 1))
        if [ $i -gt 100 ] || ! running; then
            echo "podman-service: the service did not come up; log:" >&2
            cat "$LOG" >&2 || true
            stop
            exit 1
        fi
        sleep 0.2
    done
    echo "podman-service: listening on unix://$SOCK (pid $(cat "$PIDFILE"))" >&2
}

stop() {
    if [ -f "$PIDFILE" ]; then
        pid=$(cat "$PIDFILE")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            i=0
            while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
                i=$((i + 1))
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$PIDFILE"
    fi
    rm -f "$SOCK"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
env) echo "DOCKER_HOST=unix://$SOCK" ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
