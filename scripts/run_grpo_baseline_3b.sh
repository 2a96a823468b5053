#!/usr/bin/env bash
# The paper's baseline: vanilla GRPO, 4 rollouts per prompt on CLEAN images, otherwise the
# same settings as run_qwen25vl_3b.sh (the authors' scripts/grpo_3b.sh and grpo_cot_vqa.py).
# Same recipe path (dataset, agent loop, reward); the noise levels are all 0 with the clamped
# conversion (the agent loop then hands the unchanged image to the rollout and the actor) and
# the advantage is verl's own `grpo` estimator.
#   MODEL_PATH=/models/Qwen2.5-VL-3B-Instruct DATA_DIR=/data/mm_rlhf bash scripts/run_grpo_baseline_3b.sh
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$HOME/models/Qwen2.5-VL-3B-Instruct}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen25vl_3b_grpo}
source "$(dirname "${BASH_SOURCE[0]}")/paper_settings.sh"
MODEL_OVERRIDES=(
  "algorithm.adv_estimator=grpo"
  "noisygrpo.noise.levels=[0.0,0.0,0.0,0.0]"
  "noisygrpo.noise.conversion=clamp"
  "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"
  "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8"
  "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8"
  "actor_rollout_ref.rollout.tensor_model_parallel_size=1"
)
launch_noisygrpo "$@"
