# Shared by run_qwen25vl_3b.sh, run_qwen25vl_7b.sh and run_grpo_baseline_3b.sh (sourced, not run).
# The paper's training settings (ALGORITHM.md §5) as Hydra overrides of
# recipe/noisygrpo/config/noisygrpo_trainer.yaml, for one node of 8 GPUs.
#
# Environment (defaults in brackets):
#   MODEL_PATH   local Hugging Face folder of the model            [per script]
#   DATA_DIR     folder with train.parquet and val.parquet          [$HOME/data/noisygrpo/mm_rlhf]
#                (python -m data_prep.mmrlhf ... --val-size N writes both)
#   OUTPUT_DIR   checkpoints, metrics.jsonl, rollout dumps          [$PWD/outputs/$EXPERIMENT_NAME]
#   N_GPUS       GPUs per node                                      [8]
#   NNODES       nodes                                              [1]
#   PYTHON       interpreter                                        [python3]
# Any argument given to the calling script is appended as one more override.

set -euo pipefail

DATA_DIR=${DATA_DIR:-$HOME/data/noisygrpo/mm_rlhf}
OUTPUT_DIR=${OUTPUT_DIR:-$PWD/outputs/$EXPERIMENT_NAME}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
PYTHON=${PYTHON:-python3}

# verl's `file` logger writes one JSON line per step here (plot it with
# `python -m recipe.noisygrpo.eval.plots --log $OUTPUT_DIR/metrics.jsonl`).
export VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-$OUTPUT_DIR/metrics.jsonl}

PAPER_OVERRIDES=(
  "data.train_files=$DATA_DIR/train.parquet"
  "data.val_files=$DATA_DIR/val.parquet"
  "data.train_batch_size=16"
  "data.max_prompt_length=1024"
  "data.max_response_length=256"
  "data.filter_overlong_prompts=true"
  "data.truncation=error"
  "data.image_key=images"
  "data.seed=42"
  "actor_rollout_ref.model.path=$MODEL_PATH"
  "actor_rollout_ref.model.enable_gradient_checkpointing=true"
  "actor_rollout_ref.model.use_remove_padding=true"
  "actor_rollout_ref.actor.strategy=fsdp"
  "actor_rollout_ref.actor.optim.lr=1e-6"
  "actor_rollout_ref.actor.ppo_mini_batch_size=16"
  "actor_rollout_ref.actor.ppo_epochs=1"
  "actor_rollout_ref.actor.clip_ratio=0.2"
  "actor_rollout_ref.actor.use_kl_loss=true"
  "actor_rollout_ref.actor.kl_loss_coef=0.04"
  "actor_rollout_ref.actor.kl_loss_type=low_var_kl"
  "actor_rollout_ref.actor.entropy_coeff=0"
  "actor_rollout_ref.actor.freeze_vision_tower=true"
  "actor_rollout_ref.rollout.name=vllm"
  "actor_rollout_ref.rollout.n=4"
  "actor_rollout_ref.rollout.temperature=0.9"
  "actor_rollout_ref.rollout.top_p=1.0"
  "actor_rollout_ref.rollout.gpu_memory_utilization=0.6"
  # Noisy copies differ per rollout, so vLLM's multimodal cache would only hold misses.
  "+actor_rollout_ref.rollout.engine_kwargs.vllm.mm_processor_cache_gb=0"
  "algorithm.use_kl_in_reward=false"
  "trainer.n_gpus_per_node=$N_GPUS"
  "trainer.nnodes=$NNODES"
  "trainer.total_epochs=1"
  "trainer.logger=[console,file]"
  "trainer.project_name=noisygrpo"
  "trainer.experiment_name=$EXPERIMENT_NAME"
  "trainer.default_local_dir=$OUTPUT_DIR/checkpoints"
  "trainer.rollout_data_dir=$OUTPUT_DIR/rollouts"
  "trainer.save_freq=100"
  "trainer.test_freq=-1"
  "trainer.val_before_train=false"
  "noisygrpo.advantage_log_dir=$OUTPUT_DIR/advantages"
)

# Runs the recipe with the paper's overrides, the calling script's MODEL_OVERRIDES, then
# the user's arguments (later overrides win). NOISYGRPO_PRINT_OVERRIDES=1 prints the
# overrides, one per line, instead of training (the config tests use it).
launch_noisygrpo() {
  local overrides=("${PAPER_OVERRIDES[@]}" "${MODEL_OVERRIDES[@]}" "$@")
  if [ "${NOISYGRPO_PRINT_OVERRIDES:-0}" = "1" ]; then
    printf '%s\n' "${overrides[@]}"
    return 0
  fi
  mkdir -p "$OUTPUT_DIR"
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  exec "$PYTHON" -m recipe.noisygrpo.main_noisygrpo "${overrides[@]}"
}
