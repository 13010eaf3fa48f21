#!/usr/bin/env bash
# The demo on the embedded default: SQLite storage and the project-owned Redis on 127.0.0.1:6380,
# which this script installs and starts when needed. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/_venv.sh
source "$here/_venv.sh"
cd "$agentbus_root"

ensure_venv dev
bash "$here/setup-redis.sh" start >/dev/null
exec "$agentbus_venv/bin/agentbus" "$@" demo
