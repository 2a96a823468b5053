#!/usr/bin/env bash
# NoisyGRPO on Qwen3-VL-4B-Instruct with the paper's settings, 8 GPUs (docs/algorithm.md §5; the paper
# trained Qwen2.5-VL-3B/7B: run_qwen25vl_3b.sh is this script's closest counterpart).
#   MODEL_PATH=/models/Qwen3-VL-4B-Instruct DATA_DIR=/data/mm_rlhf bash scripts/run_qwen3vl_4b.sh [overrides]
# Environment and defaults: see scripts/paper_settings.sh. Data: the same parquet as for Qwen2.5-VL.
#
# Every setting of paper_settings.sh is kept (method, noise, data, optimiser, KL, sampling, frozen
# vision tower). What is different for Qwen3-VL, and why:
# - Image tokens: 16-px patches merged 2x2, one token per 32x32 px (Qwen2.5-VL: 28x28). The images'
#   recorded max_pixels (1536^2) is kept, so the largest image is (1536/32)^2 = 2,304 tokens instead of
#   3,009; data.max_prompt_length stays 4096 (the paper scripts' vLLM context, room for the text).
#   Qwen3-VL's processor enlarges images below 65,536 px (64 tokens); Qwen2.5-VL's minimum was 3,136 px.
# - The frozen tower is every `model.visual.*` weight, Qwen3-VL's DeepStack mergers included.
# - Sizes: 4.4e9 parameters (4.0e9 language model with tied embeddings, 0.4e9 vision). fp32 weights,
#   grads and Adam states = 16 B x 4.4e9 = 70 GB, / 8 GPUs = 8.8 GB per GPU; vLLM's bf16 copy 8.8 GB on
#   one GPU (Qwen2.5-VL-3B: 3.8e9, 7.5 GB). Sequences are shorter than the 3B script's (2,304 image
#   tokens instead of 3,009) and the logits, the largest activation at these lengths, have the same
#   vocabulary (151,936), so the 3B script's micro-batches and tensor parallel size 1 are kept; halve
#   the micro-batches (ppo_micro_batch_size_per_gpu=2, log_prob_*=4) if a GPU runs out of memory.
set -euo pipefail
MODEL_PATH=${MODEL_PATH:-$HOME/models/Qwen3-VL-4B-Instruct}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen3vl_4b_noisygrpo}
source "$(dirname "${BASH_SOURCE[0]}")/paper_settings.sh"
MODEL_OVERRIDES=(
  "algorithm.adv_estimator=noisygrpo"
  "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"
  "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8"
  "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8"
  "actor_rollout_ref.rollout.tensor_model_parallel_size=1"
)
launch_noisygrpo "$@"
