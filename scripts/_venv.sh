# Sourced by scripts/test.sh and scripts/demo.sh: make ./.venv with agentbus and its dependencies.
# Idempotent: reinstalls only when pyproject.toml changed (a stamp holds its hash).
# shellcheck shell=bash

agentbus_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
agentbus_venv="$agentbus_root/.venv"

_as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

_pick_python() {
  local candidate
  for candidate in "${AGENTBUS_PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

ensure_venv() {
  local python extras="${1:-dev}"
  if ! python=$(_pick_python); then
    echo "agentbus: installing python3 (3.11 or newer is needed)" >&2
    _as_root apt-get update -qq && _as_root apt-get install -y -qq python3 python3-venv >&2
    python=$(_pick_python) || { echo "agentbus: no Python >= 3.11 available" >&2; return 1; }
  fi
  if [ ! -x "$agentbus_venv/bin/python" ]; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    if ! "$python" -c 'import ensurepip' 2>/dev/null; then
      echo "agentbus: installing python3-venv" >&2
      _as_root apt-get update -qq && _as_root apt-get install -y -qq python3-venv >&2
    fi
    echo "agentbus: creating $agentbus_venv" >&2
    "$python" -m venv "$agentbus_venv"
  fi
  local stamp="$agentbus_venv/.agentbus-installed" want
  want="$(sha256sum "$agentbus_root/pyproject.toml" | cut -d' ' -f1) $extras"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "agentbus: installing dependencies into .venv ($extras)" >&2
    "$agentbus_venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    "$agentbus_venv/bin/python" -m pip install -q --disable-pip-version-check \
      -e "$agentbus_root[$extras]" >&2
    echo "$want" >"$stamp"
  fi
}
