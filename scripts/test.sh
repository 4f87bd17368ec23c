#!/usr/bin/env bash
# The test command: set up (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/install-browser.sh ]; then bash scripts/install-browser.sh; fi
# A real single-node SLURM for tests/test_slurm.py, stopped when the suite ends. Where it cannot
# start (not root, no apt-get) the script says why and the SLURM tests skip with that reason.
if ! bash scripts/slurm-local.sh status >/dev/null 2>&1; then
  bash scripts/slurm-local.sh start && trap 'bash scripts/slurm-local.sh stop' EXIT
fi
.venv/bin/python -m pytest "$@"
