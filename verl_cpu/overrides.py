"""Hydra overrides and environment variables a verl run needs on the CPU backend.

Usage (:func:`verl_cpu.launch.run_on_cpu` sets the environment for you)::

    env = {**os.environ, **cpu_env()}
    subprocess.run([sys.executable, "-m", "verl.trainer.main_ppo", *cpu_overrides(), *my_overrides], env=env)

Each item says which blocker of docs/design.md "verl on a CPU" it passes. Put the list
before the caller's own overrides: Hydra keeps the last value of a key, so a caller can still
change any of them. Keys missing from verl's yaml use ``++`` (add or override), so the list also
composes with recipe configs that already set them.
"""

from __future__ import annotations

from verl_cpu import CPU_BACKEND_ENV
from verl_cpu.registry import HF_ROLLOUT_NAME

# Ray imports and calls it at the start of every worker process of the run.
GLOO_SETUP_HOOK = "verl_cpu.worker_setup.init_gloo_process_group"

# fp32 end to end: the actor's FSDP mixed precision (bf16 by default) and the rollout model
# must compute in the same dtype, or rollout and actor log-probs differ by ~1e-2.
_FP32_MIXED_PRECISION = "{param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}"

_IDLE_REF_OPTIMIZER = "{_target_:verl.workers.config.FSDPOptimizerConfig,lr:0.0}"


def cpu_env() -> dict[str, str]:
    """Environment variables for the driver process; Ray workers inherit them from the local raylet."""
    return {
        # verl_ext.plugin imports verl_cpu (platform + hf rollout) in every process.
        CPU_BACKEND_ENV: "1",
        # Blocker 3: pick the "cpu" platform explicitly instead of auto-detection.
        "VERL_PLATFORM": "cpu",
        # Blocker 4: no FSDP engine is registered for device "cpu"; the CUDA one runs on CPU tensors.
        "VERL_ENGINE_DEVICE": "cuda",
        # Two cores shared by everything: no tokenizer thread pools fighting the trainer.
        "TOKENIZERS_PARALLELISM": "false",
    }


def cpu_overrides(num_cpus: int = 32, n_gpus: int = 1, num_workers: int = 1) -> list[str]:
    """Hydra overrides for ``verl.trainer.main_ppo`` (or a recipe entry point built on its config).

    Args:
        num_cpus: logical CPUs Ray advertises (not cores): TransferQueue and verl's actors each
            reserve one, and Ray waits forever when they do not fit.
        n_gpus: logical Ray "GPU"s = FSDP ranks (one process each). Keep 1 on a small host.
        num_workers: agent-loop workers and reward workers (processes each).
    """
    return [
        # Blocker 1: TransferQueue places its storage units + controller at 1 CPU each.
        f"ray_kwargs.ray_init.num_cpus={num_cpus}",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        # Blocker 3: verl would init torch.distributed with "cpu:gloo,cpu:gloo" (rejected by torch);
        # this Ray hook inits each worker-group rank with plain "gloo" first, and verl then skips its own.
        f"++ray_kwargs.ray_init.runtime_env.worker_process_setup_hook={GLOO_SETUP_HOOK}",
        # Blocker 2: the resource pool counts Ray "GPU"s; the cpu platform reports "GPU" as its resource.
        f"++ray_kwargs.ray_init.num_gpus={n_gpus}",
        f"trainer.n_gpus_per_node={n_gpus}",
        "trainer.nnodes=1",
        "trainer.device=cpu",
        # Blocker 4: FSDP1 insists on an accelerator; flash-attn (the default) does not exist on CPU;
        # torch.compile of the log-prob kernels would need a C++ toolchain and only costs time here.
        "actor_rollout_ref.actor.strategy=fsdp2",
        "++actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.actor.use_torch_compile=false",
        # verl's remove-padding path patches Qwen2-VL attention with a flash-attn-only varlen kernel.
        "actor_rollout_ref.model.use_remove_padding=false",
        f"++actor_rollout_ref.actor.fsdp_config.mixed_precision={_FP32_MIXED_PRECISION}",
        f"++actor_rollout_ref.ref.fsdp_config.mixed_precision={_FP32_MIXED_PRECISION}",
        # FSDP2 wraps forward-only engines (the reference policy) in CPUOffloadPolicy(pin_memory=True),
        # and pinning host memory needs a CUDA driver. Built as a trainable engine instead, the ref
        # model stays in host memory; it then needs an optimizer config, which it never steps (lr 0,
        # and AdamW allocates no state before a step).
        "actor_rollout_ref.ref.fsdp_config.forward_only=false",
        f"++actor_rollout_ref.ref.optim={_IDLE_REF_OPTIMIZER}",
        # Blocker 5: the HF-generate rollout registered by verl_cpu, one server per FSDP rank.
        f"actor_rollout_ref.rollout.name={HF_ROLLOUT_NAME}",
        "actor_rollout_ref.rollout.dtype=float32",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.data_parallel_size=1",
        "actor_rollout_ref.rollout.pipeline_model_parallel_size=1",
        # verl defaults to 8 agent-loop + 8 reward worker processes (+8 dataloader workers); each
        # imports torch/transformers/verl, which alone takes minutes on a couple of cores.
        f"actor_rollout_ref.rollout.agent.num_workers={num_workers}",
        f"reward.num_workers={num_workers}",
        "data.dataloader_num_workers=0",
        # verl's replay buffer checks for finished rollouts every 2 s, most of a CPU step.
        "trainer.v1.sampler.custom_sampler.path=pkg://verl_cpu.replay_buffer",
        "trainer.v1.sampler.custom_sampler.name=FinePollReplayBuffer",
    ]
