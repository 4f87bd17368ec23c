#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment in .venv with every pinned dependency.
# Called by scripts/demo.sh and scripts/test.sh; safe to run again (it skips what is done).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.joulebench-installed
want=$(cat pyproject.toml setup.py constraints.txt constraints-nodeps.txt 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,perun]"
  if [ -f constraints-nodeps.txt ]; then
    # packages whose declared requirements conflict with our pins (see README, "Propulate")
    .venv/bin/python -m pip install -q --no-deps -r constraints-nodeps.txt
  fi
  echo "$want" > "$stamp"
fi
