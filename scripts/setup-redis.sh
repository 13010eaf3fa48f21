#!/usr/bin/env bash
# Local Redis for agentbus development, separate from any system Redis on 6379.
#
#   setup-redis.sh [start]   install redis-server if missing, start it, print its URL
#   setup-redis.sh stop      shut it down (no error when it is not running)
#   setup-redis.sh status    exit 0 when it answers, 3 when it does not
#
# Environment: AGENTBUS_REDIS_PORT (default 6380), AGENTBUS_REDIS_DIR (default
# $HOME/.agentbus/redis: data, AOF, pid file and log). Idempotent: a Redis that already answers
# PONG on the port is left alone. Progress goes to stderr, the URL to stdout.
set -euo pipefail

readonly PORT="${AGENTBUS_REDIS_PORT:-6380}"
readonly DATA_DIR="${AGENTBUS_REDIS_DIR:-$HOME/.agentbus/redis}"

log() { echo "setup-redis: $*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=()
[[ $EUID -eq 0 ]] || SUDO=(sudo)

ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" == PONG ]]; }

# Waits until `ping` gives the wanted answer (0 = answers, 1 = does not) or the deadline passes.
wait_for() {
    local want="$1" deadline=$((SECONDS + 30)) got
    while ((SECONDS < deadline)); do
        if ping; then got=0; else got=1; fi
        [[ $got == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

cmd_install() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        log "apt-get install redis-server"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dpkg::Use-Pty=0 --no-install-recommends redis-server redis-tools >&2
    fi
}

cmd_start() {
    cmd_install
    if ! ping; then
        mkdir -p "$DATA_DIR"
        chmod 0700 "$DATA_DIR"
        log "starting Redis on 127.0.0.1:$PORT (dir: $DATA_DIR)"
        # No config file: everything is on the command line so that the system's
        # /etc/redis/redis.conf (port 6379) plays no part. noeviction because streams hold
        # messages that must not silently disappear; AOF every second for durability.
        redis-server \
            --bind 127.0.0.1 --port "$PORT" --protected-mode yes \
            --dir "$DATA_DIR" \
            --appendonly yes --appendfsync everysec \
            --maxmemory-policy noeviction \
            --daemonize yes \
            --pidfile "$DATA_DIR/redis.pid" \
            --logfile "$DATA_DIR/redis.log"
        if ! wait_for 0; then
            tail -n 20 "$DATA_DIR/redis.log" >&2 || true
            die "Redis did not answer on 127.0.0.1:$PORT"
        fi
    fi
    echo "redis://127.0.0.1:$PORT/0"
}

cmd_stop() {
    if ping; then
        log "stopping Redis on 127.0.0.1:$PORT"
        redis-cli -h 127.0.0.1 -p "$PORT" shutdown >/dev/null 2>&1 || true
        wait_for 1 || die "Redis on 127.0.0.1:$PORT still answers after shutdown"
    fi
}

cmd_status() {
    if ping; then
        echo "running: 127.0.0.1:$PORT, dir $DATA_DIR"
    else
        echo "not running: 127.0.0.1:$PORT"
        return 3
    fi
}

case "${1:-start}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 [install|start|stop|status]" >&2; exit 2 ;;
esac
