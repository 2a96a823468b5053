"""One training run whose steps alternate NoisyGRPO and GRPO: the pieces ``bench_step`` loads into verl.

On a shared VM the speed of the whole machine drifts by 20-35 % over minutes, more than the
5 % that ``bench_step`` has to resolve between two separate runs. Here the two variants take
turns step by step inside one run (one Ray cluster, one model, one data order), so each pair of
adjacent steps sees the same machine. The variant of a step is a pure function of the trainer
step and ``$NOISYGRPO_BENCH_NOISY_PARITY`` (0 or 1: NoisyGRPO on even or odd steps):

* :class:`AlternatingNoiseAgentLoop` is the recipe's ``noisygrpo_agent`` except that on GRPO steps
  every rollout's noise extent is 0 (images pass through untouched, as in ``bench_step``'s
  separate GRPO runs with ``noisygrpo.noise.levels=[0,0,0,0]``);
* :class:`AlternatingTrainer` is :class:`~recipe.noisygrpo.trainer.NoisyGRPOTrainer` with
  ``algorithm.adv_estimator`` set to ``noisygrpo`` or ``grpo`` before each advantage step;
* :class:`AlternatingDataset` routes training rows to the agent loop above, which
  ``bench_step`` registers with verl's ``rollout.agent.agent_loop_config_path``.

Everything else is the recipe's code path. Entry point (``bench_step`` starts it through
``verl_cpu.launch.run_on_cpu``): ``python -m benchmarks._alternating [hydra overrides]``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from recipe.noisygrpo.trainer import NOISYGRPO_ESTIMATOR, NoisyGRPOTrainer, make_task_runner
from verl_ext.agent_loop import NoisyGRPOAgentLoop, RolloutNoise
from verl_ext.dataset import NoisyRLHFDataset

PARITY_ENV = "NOISYGRPO_BENCH_NOISY_PARITY"
# Logged by each step: 1.0 on NoisyGRPO steps, 0.0 on GRPO steps.
VARIANT_METRIC = "bench/noisygrpo_step"
AGENT_NAME = "bench_alternating_agent"
AGENT_TARGET = f"{__name__}.AlternatingNoiseAgentLoop"
GRPO_ESTIMATOR = "grpo"


def noisy_parity() -> int:
    """The step parity (0 or 1) on which NoisyGRPO runs, from ``$NOISYGRPO_BENCH_NOISY_PARITY``."""
    value = os.environ.get(PARITY_ENV)
    if value not in ("0", "1"):
        raise RuntimeError(
            f"${PARITY_ENV} must be 0 or 1 (NoisyGRPO on even or odd steps), got {value!r}; "
            "this entry point is started by `python -m benchmarks.bench_step`."
        )
    return int(value)


def is_noisy_step(step: int, parity: int) -> bool:
    """Whether trainer step ``step`` (1, 2, ...) runs NoisyGRPO when NoisyGRPO owns steps of ``parity``."""
    return int(step) % 2 == parity


class AlternatingNoiseAgentLoop(NoisyGRPOAgentLoop):
    """``noisygrpo_agent`` whose rollouts on GRPO steps get noise extent 0 (same seeds, no noise)."""

    def rollout_noise(self, kwargs: dict[str, Any]) -> RolloutNoise:
        noise = super().rollout_noise(kwargs)
        if is_noisy_step(int(kwargs["global_steps"]), noisy_parity()):
            return noise
        return dataclasses.replace(noise, extent=0.0)


class AlternatingDataset(NoisyRLHFDataset):
    """The recipe's dataset with training rows routed to :data:`AGENT_NAME`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.is_train:
            self.agent_name = AGENT_NAME


class AlternatingTrainer(NoisyGRPOTrainer):
    """The recipe's trainer with the advantage estimator of each step's variant."""

    def _compute_advantage(self, batch, metrics: dict):
        noisy = is_noisy_step(self.global_steps, noisy_parity())
        with open_dict(self.config):
            self.config.algorithm.adv_estimator = NOISYGRPO_ESTIMATOR if noisy else GRPO_ESTIMATOR
        metrics[VARIANT_METRIC] = float(noisy)
        return super()._compute_advantage(batch, metrics)


AlternatingTaskRunner = make_task_runner(AlternatingTrainer)


def agent_loop_config_yaml() -> str:
    """The ``rollout.agent.agent_loop_config_path`` file that registers :class:`AlternatingNoiseAgentLoop`."""
    return f"- name: {AGENT_NAME}\n  _target_: {AGENT_TARGET}\n"


def run_overrides(agent_loop_config_path: str) -> list[str]:
    """Hydra overrides (on top of a NoisyGRPO run's) that make the run alternate."""
    return [
        f"data.custom_cls.path=pkg://{__name__}",
        f"data.custom_cls.name={AlternatingDataset.__name__}",
        f"actor_rollout_ref.rollout.agent.agent_loop_config_path={agent_loop_config_path}",
        f"algorithm.adv_estimator={NOISYGRPO_ESTIMATOR}",
    ]


@hydra.main(config_path="../recipe/noisygrpo/config", config_name="noisygrpo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    from recipe.noisygrpo.main_noisygrpo import run_noisygrpo

    noisy_parity()  # fail before Ray starts
    run_noisygrpo(config, task_runner_class=AlternatingTaskRunner)


if __name__ == "__main__":
    main()
