#!/usr/bin/env bash
# The main job, CPU-only: sets up .venv/ (first run), builds a tiny Qwen2.5-VL and the
# synthetic shapes task, runs a few NoisyGRPO steps through verl's real trainer on the CPU
# backend and prints a per-step summary. Arguments: demo options (--steps N, --workdir DIR,
# --force-cpu) and/or Hydra overrides, e.g.
#   bash scripts/run_demo.sh --steps 5 noisygrpo.noise.levels=[0.0,0.5,0.7,1.0]
# On a machine with GPUs it points to scripts/run_qwen25vl_3b.sh instead.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
exec "$VENV_PYTHON" -m recipe.noisygrpo.demo.run_demo "$@"
