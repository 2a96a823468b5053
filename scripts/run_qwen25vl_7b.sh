#!/usr/bin/env bash
# NoisyGRPO on Qwen2.5-VL-7B-Instruct with the paper's settings, 8 GPUs (docs/algorithm.md §5).
#   MODEL_PATH=/models/Qwen2.5-VL-7B-Instruct DATA_DIR=/data/mm_rlhf bash scripts/run_qwen25vl_7b.sh [overrides]
# Environment and defaults: see scripts/paper_settings.sh.
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$HOME/models/Qwen2.5-VL-7B-Instruct}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen25vl_7b_noisygrpo}
source "$(dirname "${BASH_SOURCE[0]}")/paper_settings.sh"
MODEL_OVERRIDES=(
  "algorithm.adv_estimator=noisygrpo"
  "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"
  "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4"
  "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4"
  "actor_rollout_ref.ref.fsdp_config.param_offload=true"
  "actor_rollout_ref.rollout.tensor_model_parallel_size=2"
)
launch_noisygrpo "$@"
