"""verl's FSDP engine with the two training settings of the authors' code that verl 0.9.1 lacks.

1. A frozen vision tower. verl 0.9.1 declares ``actor.freeze_vision_tower`` and no code reads it
   (upstream verl#2526); the reference sets ``requires_grad=False`` on every parameter whose name
   contains ``visual`` before training (``noisy_grpo_trainer.py`` 357-361). This engine does the
   same on the freshly built module, before FSDP wraps it and before the optimizer is built, so
   the frozen weights get no gradient and AdamW never touches them.
2. A linear learning-rate decay to 0 (Hugging Face's default scheduler, which the reference
   trainer uses): ``lr_scheduler_type: linear`` in :class:`NoisyGRPOOptimizerConfig`.

Nothing of verl is edited: :class:`NoisyGRPOFSDPEngine` subclasses verl's FSDP engine and is
registered in verl's ``EngineRegistry`` under its own model type :data:`MODEL_TYPE`, which the
recipe config selects with ``actor_rollout_ref.model.model_type``; the typed configs reach it
through the ``_target_`` of ``actor.fsdp_config`` and ``actor.optim``. Every other behaviour is
verl's (the engine then builds its model as verl's ``language_model`` engine does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import get_linear_schedule_with_warmup
from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig
from verl.workers.config.optimizer import OptimizerConfig
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

MODEL_TYPE = "noisygrpo_language_model"
UPSTREAM_MODEL_TYPE = "language_model"
ENGINE_CONFIG_TARGET = "verl_ext.engine.NoisyGRPOEngineConfig"
OPTIMIZER_CONFIG_TARGET = "verl_ext.engine.NoisyGRPOOptimizerConfig"
# The reference's vision-module keyword (qwen_module.py get_vision_modules_keywords).
VISION_KEYWORD = "visual"
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class NoisyGRPOEngineConfig(FSDPEngineConfig):
    """verl's FSDP engine config plus ``freeze_vision_tower`` (the recipe wires it to the actor's flag)."""

    freeze_vision_tower: bool = False


@dataclass
class NoisyGRPOOptimizerConfig(FSDPOptimizerConfig):
    """verl's FSDP optimizer config whose ``lr_scheduler_type`` may also be ``linear``.

    ``linear``: warm up over ``lr_warmup_steps`` (or ``lr_warmup_steps_ratio`` of the run), then
    ``lr * (total - step) / (total - warmup)``, reaching 0 after the last step (transformers'
    ``get_linear_schedule_with_warmup``, the Trainer default).
    """

    def __post_init__(self):
        if self.warmup_style is not None:
            raise ValueError("actor.optim.warmup_style is deprecated in verl; set actor.optim.lr_scheduler_type")
        if self.lr_scheduler_type not in LR_SCHEDULES:
            raise ValueError(
                f"actor.optim.lr_scheduler_type={self.lr_scheduler_type!r}; choose one of {', '.join(LR_SCHEDULES)}"
            )
        # verl's own FSDPOptimizerConfig check allows constant and cosine only; the base checks still run.
        OptimizerConfig.__post_init__(self)


def freeze_vision_tower(module: torch.nn.Module) -> list[str]:
    """Sets ``requires_grad=False`` on every parameter whose name contains ``visual``; returns their names.

    Raises:
        ValueError: the model has no such parameter (a text-only model, or another naming).
    """
    frozen = [name for name, parameter in module.named_parameters() if VISION_KEYWORD in name]
    if not frozen:
        raise ValueError(
            f"actor_rollout_ref.actor.freeze_vision_tower=true, but no parameter name of "
            f"{type(module).__name__} contains {VISION_KEYWORD!r}: there is no vision tower to freeze. "
            "Set actor_rollout_ref.actor.freeze_vision_tower=false."
        )
    for name, parameter in module.named_parameters():
        if VISION_KEYWORD in name:
            parameter.requires_grad_(False)
    return frozen


@EngineRegistry.register(model_type=MODEL_TYPE, backend=["fsdp", "fsdp2"], device=["cuda", "npu"])
class NoisyGRPOFSDPEngine(FSDPEngineWithLMHead):
    """verl's FSDP language-model engine; freezes the vision tower and schedules ``linear`` decay when asked."""

    def __init__(self, model_config, engine_config, optimizer_config, checkpoint_config):
        super().__init__(model_config, engine_config, optimizer_config, checkpoint_config)
        # The registry lookup is done; upstream's module builder branches on this name.
        self.model_config.model_type = UPSTREAM_MODEL_TYPE

    def _build_module(self):
        module = super()._build_module()
        if getattr(self.engine_config, "freeze_vision_tower", False):
            frozen = freeze_vision_tower(module)
            if self.rank == 0:
                print(f"[noisygrpo] froze the vision tower: {len(frozen)} parameter tensors named '*{VISION_KEYWORD}*'")
        return module

    def _build_lr_scheduler(self, optimizer):
        config = self.optimizer_config
        if config.lr_scheduler_type != "linear":
            return super()._build_lr_scheduler(optimizer)
        total_steps = config.total_training_steps
        warmup_steps = config.lr_warmup_steps
        if warmup_steps is None or warmup_steps <= 0:
            warmup_steps = int(config.lr_warmup_steps_ratio * total_steps)
        if self.rank == 0:
            print(f"[noisygrpo] linear LR decay to 0 over {total_steps} steps, {warmup_steps} warm-up steps")
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)


__all__ = [
    "ENGINE_CONFIG_TARGET",
    "LR_SCHEDULES",
    "MODEL_TYPE",
    "OPTIMIZER_CONFIG_TARGET",
    "NoisyGRPOEngineConfig",
    "NoisyGRPOFSDPEngine",
    "NoisyGRPOOptimizerConfig",
    "VISION_KEYWORD",
    "freeze_vision_tower",
]
