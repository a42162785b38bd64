# Sourced by scripts/demo and scripts/test: make ./.venv with candlewax installed.
# Bytewax 0.21.1 ships wheels for CPython 3.8-3.12; pick the newest such python here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pick_python() {
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))'; then
      echo "$candidate"; return 0
    fi
  done
  echo "candlewax needs Python 3.10, 3.11 or 3.12 (Bytewax 0.21.1 wheels)" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
stamp=.venv/.candlewax-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # constraints.txt pins the runtime dependencies to the versions tested here.
  .venv/bin/python -m pip install --quiet -e '.[dev]' --constraint constraints.txt
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
