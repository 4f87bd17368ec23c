#!/usr/bin/env bash
# The test command: set up (idempotent), then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/install-browser.sh ]; then bash scripts/install-browser.sh; fi
exec .venv/bin/python -m pytest "$@"
