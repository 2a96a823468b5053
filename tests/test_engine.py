"""verl_ext.engine: the frozen vision tower and the linear schedule that verl 0.9.1 lacks.

The CPU end-to-end tests (test_e2e_noisygrpo.py) check the same through a real training run:
frozen visual weights bit-identical in the merged checkpoint, the logged learning rate decaying.
"""

from __future__ import annotations

import pytest
import torch
from verl.workers.config import FSDPOptimizerConfig
from verl.workers.engine.base import EngineRegistry

from verl_ext.engine import (
    MODEL_TYPE,
    NoisyGRPOFSDPEngine,
    NoisyGRPOOptimizerConfig,
    freeze_vision_tower,
)


def test_engine_is_registered_for_fsdp_and_fsdp2():
    for backend in ("fsdp", "fsdp2"):
        assert EngineRegistry.get_engine_cls(MODEL_TYPE, backend) is NoisyGRPOFSDPEngine


def test_verl_rejects_a_linear_schedule_and_our_config_accepts_it():
    with pytest.raises(AssertionError):
        FSDPOptimizerConfig(lr=1e-6, lr_scheduler_type="linear")
    assert NoisyGRPOOptimizerConfig(lr=1e-6, lr_scheduler_type="linear").lr_scheduler_type == "linear"
    assert NoisyGRPOOptimizerConfig(lr=1e-6).lr_scheduler_type == "constant"
    with pytest.raises(ValueError, match="lr_scheduler_type='step'"):
        NoisyGRPOOptimizerConfig(lr=1e-6, lr_scheduler_type="step")


def scheduled_lrs(optimizer_config, steps: int) -> list[float]:
    """Learning rate of each of ``steps`` updates under the engine's scheduler."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=optimizer_config.lr)
    engine = NoisyGRPOFSDPEngine.__new__(NoisyGRPOFSDPEngine)  # only the scheduler builder runs
    engine.optimizer_config, engine.rank = optimizer_config, 1
    scheduler = engine._build_lr_scheduler(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_schedule_decays_to_zero_like_the_hugging_face_trainer():
    config = NoisyGRPOOptimizerConfig(lr=1e-6, lr_scheduler_type="linear", total_training_steps=4)
    # the Trainer's default: full lr on the first update, lr * (T - k) / T on update k
    assert scheduled_lrs(config, 4) == pytest.approx([1e-6, 0.75e-6, 0.5e-6, 0.25e-6])
    warm = NoisyGRPOOptimizerConfig(lr=1e-6, lr_scheduler_type="linear", total_training_steps=4, lr_warmup_steps=2)
    assert scheduled_lrs(warm, 4) == pytest.approx([0.0, 0.5e-6, 1e-6, 0.5e-6])


def test_other_schedules_stay_verls():
    config = NoisyGRPOOptimizerConfig(lr=1e-6, total_training_steps=4)
    assert scheduled_lrs(config, 3) == pytest.approx([1e-6] * 3)


def test_freeze_vision_tower_freezes_exactly_the_visual_parameters(tiny_qwen25vl_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen25vl_dir)
    frozen = freeze_vision_tower(model)
    names = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    assert frozen and set(frozen) == {name for name in names if "visual" in name}
    assert not any(names[name] for name in frozen)
    assert all(trainable for name, trainable in names.items() if "visual" not in name)
    assert any("language_model" in name or "lm_head" in name for name, trainable in names.items() if trainable)


def test_freezing_a_model_without_a_vision_tower_is_an_error():
    with pytest.raises(ValueError, match="freeze_vision_tower=false"):
        freeze_vision_tower(torch.nn.Linear(2, 2))
