#!/usr/bin/env bash
# Evaluate one checkpoint on the paper's benchmarks with lmms-eval 0.7.3 (the `eval` extra).
#   bash scripts/eval_checkpoint.sh CKPT OUT [--dry-run] [--backend auto|vllm|hf] [--tasks a,b] ...
# CKPT: a Hugging Face model folder, or a verl FSDP checkpoint <run>/global_step_N/actor (merged
# into OUT/hf_model with `python -m verl.model_merger`). Writes OUT/lmms_eval/ and OUT/manifest.json.
# Options: `--help`; details in recipe/noisygrpo/eval/README.md. PYTHON picks the interpreter.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
# No cd: CKPT and OUT stay relative to the caller's directory.
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m recipe.noisygrpo.eval.evaluate_checkpoint "$@"
