#!/usr/bin/env bash
# Local PostgreSQL + pgvector for agentbus development.
#
#   setup-postgres.sh install   make the server and pgvector >= 0.8 available (apt, or a build)
#   setup-postgres.sh [start]   install + a project-owned cluster + database `agentbus` + roles
#   setup-postgres.sh stop      stop that cluster (no error when it is not running)
#   setup-postgres.sh status    exit 0 when it runs, 3 when it does not
#   setup-postgres.sh urls      print the owner and app connection strings
#
# Environment: AGENTBUS_PG_PORT (default 5433), AGENTBUS_PG_DATA (data directory, see below).
# Every step is idempotent; a second run that has nothing to do prints only the URLs.
# Progress goes to stderr, the URLs to stdout.
set -euo pipefail

readonly MIN_VECTOR=0.8
readonly PORT="${AGENTBUS_PG_PORT:-5433}"
# The postgres user cannot traverse /root (mode 0700), so root's cluster lives under /var/lib;
# a normal user runs the server as themself, under their own home.
if [[ $EUID -eq 0 ]]; then
    PGDATA_DIR="${AGENTBUS_PG_DATA:-/var/lib/agentbus/postgres}"
else
    PGDATA_DIR="${AGENTBUS_PG_DATA:-$HOME/.agentbus/postgres}"
fi
# Absolute, because the server tools run from another directory (see as_pg).
PGDATA_DIR="$(realpath -m -- "$PGDATA_DIR")"
readonly PGDATA_DIR
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly ROLES_SQL="$SCRIPT_DIR/../agentbus/testing/postgres_roles.sql"
readonly SRC_LIST=/etc/apt/sources.list.d/agentbus-pgvector-src.sources

log() { echo "setup-postgres: $*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=()
[[ $EUID -eq 0 ]] || SUDO=(sudo)

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
}

apt_install() {
    apt_update_once
    log "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >&2
}

is_installed() { # package -> 0 when dpkg has it installed
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

pg_major() { # the highest installed server major version, or nothing
    local d best=""
    for d in /usr/lib/postgresql/*/bin/postgres; do
        [[ -x $d ]] || continue
        d="${d#/usr/lib/postgresql/}"
        d="${d%%/*}"
        if [[ -z $best ]] || ((d > best)); then best="$d"; fi
    done
    echo "$best"
}

vector_version() { # N -> default_version of the installed vector.control, or nothing
    local control="/usr/share/postgresql/$1/extension/vector.control"
    [[ -f $control ]] || return 0
    sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" "$control"
}

version_ge() { [[ -n $1 ]] && dpkg --compare-versions "$1" ge "$2"; }

# The main Debian mirror: URIs + Signed-By of the first `deb` entry whose suites include this
# release's codename (not -security/-updates, not third-party repositories). Printed as
# "URI<TAB>KEYRING". The host is read from the machine's sources at run time on purpose:
# no mirror name is written into the repository.
main_mirror() {
    local codename
    # shellcheck disable=SC1091
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        # deb822: stanzas separated by blank lines; take the first matching one.
        awk -v want="$codename" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uri != "") {
                    print uri "\t" key; found = 1; exit
                }
                types = suites = uri = key = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:"     { $1 = ""; types = substr($0, 2) }
            tolower($1) == "suites:"    { $1 = ""; suites = substr($0, 2) }
            tolower($1) == "uris:"      { uri = $2 }
            tolower($1) == "signed-by:" { key = $2 }
            END { if (!found) flush() }
        ' "$f" | head -n1 | grep . && return 0
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        # One-line format: deb [opts] URI SUITE COMPONENTS...
        awk -v want="$codename" '
            $1 != "deb" { next }
            {
                key = ""; i = 2
                if ($2 ~ /^\[/) {
                    for (; i <= NF; i++) {
                        if ($i ~ /^\[?signed-by=/) { key = $i; sub(/^\[?signed-by=/, "", key); sub(/\]$/, "", key) }
                        if ($i ~ /\]$/) { i++; break }
                    }
                }
                if ($(i + 1) == want) { print $i "\t" key; exit }
            }
        ' "$f" | head -n1 | grep . && return 0
    done
    return 1
}

install_server() {
    if [[ -z "$(pg_major)" ]]; then
        apt_install postgresql
    fi
    [[ -n "$(pg_major)" ]] || die "no PostgreSQL server under /usr/lib/postgresql after installing"
}

# Debian 12 ships no pgvector >= 0.8, so unless apt offers one we build Debian's own source
# package from the next release (trixie) against the installed server.
build_pgvector_from_trixie() {
    local n="$1" mirror uri key build pg_config
    pg_config="/usr/lib/postgresql/$n/bin/pg_config"
    mirror="$(main_mirror)" || die "no Debian mirror for this release found in the apt sources"
    uri="${mirror%%$'\t'*}"
    key="${mirror#*$'\t'}"

    local deps=() p
    for p in "postgresql-server-dev-$n" dpkg-dev make gcc; do
        is_installed "$p" || deps+=("$p")
    done
    ((${#deps[@]} == 0)) || apt_install "${deps[@]}"

    log "adding deb-src entry for trixie ($SRC_LIST)"
    {
        echo "# Added by agentbus scripts/setup-postgres.sh to build pgvector; removed right after."
        echo "Types: deb-src"
        echo "URIs: $uri"
        echo "Suites: trixie"
        echo "Components: main"
        [[ -z $key ]] || echo "Signed-By: $key"
    } | "${SUDO[@]}" tee "$SRC_LIST" >/dev/null
    # The entry is removed once the source is fetched, so that every later `apt-get update`
    # does not download trixie's Sources index. Its list files stay until the next
    # `apt-get update` cleans them up; apt ignores lists that no entry names.
    trap '"${SUDO[@]}" rm -f "$SRC_LIST"' EXIT
    # Only this one entry is read and updated: quicker, and the machine's other lists are
    # left exactly as they were.
    local only_src=(-o "Dir::Etc::SourceList=$SRC_LIST" -o Dir::Etc::SourceParts=-
                    -o APT::Get::List-Cleanup=0)
    log "apt-get update (trixie sources only)"
    "${SUDO[@]}" apt-get update -qq "${only_src[@]}"

    build="$(mktemp -d /tmp/agentbus-pgvector.XXXXXX)"
    # apt downloads as the unprivileged _apt user; a directory it can write avoids the
    # "download is performed unsandboxed as root" fallback.
    chmod 0755 "$build"
    if id _apt >/dev/null 2>&1; then "${SUDO[@]}" chown _apt "$build"; fi
    log "apt-get source pgvector (trixie) into $build"
    (cd "$build" && "${SUDO[@]}" apt-get source -qq "${only_src[@]}" pgvector >&2)
    "${SUDO[@]}" rm -f "$SRC_LIST"
    trap - EXIT

    local src
    src="$(find "$build" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n1)"
    [[ -n $src ]] || die "apt-get source pgvector produced no source tree in $build"
    log "building $(basename "$src") for PostgreSQL $n"
    # OPTFLAGS="" as Debian's packaging does: the default -march=native would tie the
    # binary to this CPU, and machines get moved.
    "${SUDO[@]}" make -C "$src" -s -j"$(nproc)" PG_CONFIG="$pg_config" OPTFLAGS="" >&2
    "${SUDO[@]}" make -C "$src" -s install PG_CONFIG="$pg_config" OPTFLAGS="" >&2
    "${SUDO[@]}" rm -rf "$build"
}

install_pgvector() {
    local n="$1" have candidate
    have="$(vector_version "$n")"
    version_ge "$have" "$MIN_VECTOR" && return 0
    apt_update_once
    candidate="$(apt-cache policy "postgresql-$n-pgvector" 2>/dev/null |
        awk '/Candidate:/ { print $2 }')"
    if [[ -n $candidate && $candidate != "(none)" ]] && version_ge "$candidate" "$MIN_VECTOR"; then
        apt_install "postgresql-$n-pgvector"
    else
        build_pgvector_from_trixie "$n"
    fi
    have="$(vector_version "$n")"
    version_ge "$have" "$MIN_VECTOR" ||
        die "pgvector ${have:-none} installed for PostgreSQL $n, need >= $MIN_VECTOR"
    log "pgvector $have installed for PostgreSQL $n"
}

cmd_install() {
    install_server
    install_pgvector "$(pg_major)"
}

# PostgreSQL refuses to run as root: as root, run the server tools as `postgres`, from /
# because the caller's directory (e.g. /root) may be closed to that user.
as_pg() {
    if [[ $EUID -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

bindir() {
    local n
    n="$(pg_major)"
    [[ -n $n ]] || die "PostgreSQL is not installed; run: $0 install"
    echo "/usr/lib/postgresql/$n/bin"
}

is_running() {
    [[ -f $PGDATA_DIR/PG_VERSION ]] || return 1
    as_pg "$(bindir)/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

psql_super() {
    "$(bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres "$@"
}

cmd_start() {
    cmd_install
    local bin sock
    bin="$(bindir)"
    # The socket dir sits inside the 0700 data dir: only the server's user can use it; clients
    # connect over TCP on loopback.
    sock="$PGDATA_DIR/socket"

    if [[ ! -f $PGDATA_DIR/PG_VERSION ]]; then
        log "creating cluster in $PGDATA_DIR"
        mkdir -p "$PGDATA_DIR"
        if [[ $EUID -eq 0 ]]; then
            chown postgres:postgres "$PGDATA_DIR"
            runuser -u postgres -- test -w "$PGDATA_DIR" ||
                die "user postgres cannot write $PGDATA_DIR (a parent directory is not traversable)"
        fi
        chmod 0700 "$PGDATA_DIR"
        # Trust on loopback only: this is a local development cluster listening on 127.0.0.1,
        # never on a shared network. Anything stronger belongs to deployment, not here.
        as_pg "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust --encoding=UTF8 \
            --locale=C.UTF-8 >/dev/null
        # shellcheck disable=SC2016  # $1 is expanded by the inner sh
        as_pg sh -c 'echo "include_if_exists = '\''agentbus.conf'\''" >> "$1/postgresql.conf"' \
            sh "$PGDATA_DIR"
    fi

    if ! is_running; then
        as_pg mkdir -p -m 0700 "$sock"
        # Rewritten on each start so that AGENTBUS_PG_PORT takes effect.
        as_pg tee "$PGDATA_DIR/agentbus.conf" >/dev/null <<EOF
# Written by scripts/setup-postgres.sh on every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$sock'
EOF
        log "starting PostgreSQL on 127.0.0.1:$PORT (log: $PGDATA_DIR/server.log)"
        if ! as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 60 start \
            >/dev/null; then
            tail -n 20 "$PGDATA_DIR/server.log" >&2 || true
            die "PostgreSQL did not start"
        fi
    else
        local running_port
        running_port="$(sed -n 4p "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)"
        [[ $running_port == "$PORT" ]] ||
            die "the cluster in $PGDATA_DIR already runs on port $running_port, not $PORT"
    fi

    [[ -f $ROLES_SQL ]] || die "missing $ROLES_SQL"
    psql_super -d postgres -f "$ROLES_SQL"
    cmd_urls
}

cmd_stop() {
    if is_running; then
        log "stopping PostgreSQL in $PGDATA_DIR"
        as_pg "$(bindir)/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null
    fi
}

cmd_status() {
    if is_running; then
        echo "running: $PGDATA_DIR, pid $(head -n1 "$PGDATA_DIR/postmaster.pid")," \
            "127.0.0.1:$(sed -n 4p "$PGDATA_DIR/postmaster.pid")"
    else
        echo "not running: $PGDATA_DIR"
        return 3
    fi
}

cmd_urls() {
    echo "postgres://agentbus_owner@127.0.0.1:$PORT/agentbus"
    echo "postgres://agentbus_app@127.0.0.1:$PORT/agentbus"
}

case "${1:-start}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    urls) cmd_urls ;;
    *) echo "usage: $0 [install|start|stop|status|urls]" >&2; exit 2 ;;
esac
