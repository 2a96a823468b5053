#!/usr/bin/env bash
# The paper's experiment in miniature on a CPU: toy data -> warm start -> GRPO and NoisyGRPO from
# the same warm start, identical settings -> held-out evaluation -> table and plots.
#   bash scripts/reproduce_toy.sh [--seeds N] [--steps N] [--out DIR]
# Writes DIR/results.md, DIR/results.csv, DIR/results.json and DIR/plots/ (default DIR:
# demo_runs/toy_reproduction). The warm start and data are cached in demo_runs/toy_cache.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
exec "$VENV_PYTHON" -m recipe.noisygrpo.toy.reproduce "$@"
