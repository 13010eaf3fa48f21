#!/usr/bin/env bash
# Everything CI runs: set-up (venv, redis-server, PostgreSQL + pgvector), ruff, mypy --strict, pytest.
# Idempotent; extra arguments go to pytest (e.g. scripts/test.sh -k config -x).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/_venv.sh
source "$here/_venv.sh"
cd "$agentbus_root"

ensure_venv dev
# The tests start private servers; these only make sure the software is installed.
bash "$here/setup-redis.sh" install
bash "$here/setup-postgres.sh" install

bin="$agentbus_venv/bin"
echo "== ruff" >&2
"$bin/ruff" check agentbus tests bench examples
"$bin/ruff" format --check agentbus tests bench examples
echo "== mypy --strict agentbus" >&2
"$bin/mypy" --strict agentbus
echo "== pytest" >&2
"$bin/python" -m pytest "$@"
