"""Entry point: ``python -m recipe.noisygrpo.main_noisygrpo [hydra overrides]``.

Composes ``config/noisygrpo_trainer.yaml`` (verl's ``ppo_trainer`` plus the ``noisygrpo:``
section), fails early on a misconfiguration (see :mod:`recipe.noisygrpo.validation`), runs
verl's own config validation, and starts verl's ``run_ppo`` with the NoisyGRPO task runner.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig
from verl.trainer.main_ppo import run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

from recipe.noisygrpo.validation import config_warnings, validate_noisygrpo_config


def validate(config: DictConfig) -> None:
    """NoisyGRPO's checks first (cheap, precise messages), then verl's own; warnings are printed once."""
    validate_noisygrpo_config(config)
    for warning in config_warnings(config):
        print(f"[noisygrpo] WARNING: {warning}", flush=True)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def run_noisygrpo(config: DictConfig, task_runner_class=None) -> None:
    """Validate ``config`` and train; ``task_runner_class``: a Ray actor class (default: the recipe's)."""
    if task_runner_class is None:
        from recipe.noisygrpo.trainer import NoisyGRPOTaskRunner as task_runner_class

    auto_set_device(config)
    validate(config)
    run_ppo(config, task_runner_class=task_runner_class)


@hydra.main(config_path="config", config_name="noisygrpo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    run_noisygrpo(config)


if __name__ == "__main__":
    main()
