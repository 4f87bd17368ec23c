#!/usr/bin/env bash
# The main job: set up (idempotent), run a small real campaign on built-in data, open the leaderboard.
#   bash scripts/demo.sh            # results in ./results, leaderboard on http://127.0.0.1:8501
#   RESULTS=/tmp/r PORT=8600 bash scripts/demo.sh
#   NO_LEADERBOARD=1 bash scripts/demo.sh   # the campaign only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RESULTS=${RESULTS:-results}
.venv/bin/joulebench campaign run examples/campaigns/demo.toml --results "$RESULTS" -j "${JOBS:-2}"
.venv/bin/joulebench results --results "$RESULTS" --table leaderboard --columns \
  task,preset,method,model,seeds,primary_metric,primary_median,train_energy_j,energy_source,train_s
# the cost forecast, validated on what just ran (leave-one-cell-out; README "Planning a campaign's cost")
.venv/bin/joulebench campaign plan examples/campaigns/demo.toml --results "$RESULTS" --validate \
  | sed -n '/^median absolute error/,/^coverage/p'
if [ -z "${NO_LEADERBOARD:-}" ]; then
  exec .venv/bin/joulebench leaderboard --results "$RESULTS" --port "${PORT:-8501}"
fi
