"""Entry point: ``python -m recipe.noisygrpo.main_noisygrpo [hydra overrides]``.

Composes ``config/noisygrpo_trainer.yaml`` (verl's ``ppo_trainer`` plus the ``noisygrpo:``
section), fails early on a misconfiguration (see :mod:`recipe.noisygrpo.validation`), runs
verl's own config validation, checks the model, data and output folders
(:mod:`recipe.noisygrpo.preflight`), and starts verl's ``run_ppo`` with the NoisyGRPO task runner.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig
from verl.trainer.main_ppo import run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

from recipe.noisygrpo.metrics_log import file_logger_path, launch_path
from recipe.noisygrpo.preflight import check_preflight
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
    check_preflight(config)  # the files the run needs, in seconds
    validate(config)
    keep_earlier_metrics(config)
    run_ppo(config, task_runner_class=task_runner_class)


def keep_earlier_metrics(config: DictConfig) -> None:
    """Point verl's ``file`` logger at a file of this launch's own when an earlier launch wrote the log.

    verl's logger truncates its file; a resumed run would lose the metrics of every earlier step.
    Set before ``run_ppo`` starts Ray, so the trainer process inherits it.
    """
    loggers = config.trainer.logger
    if "file" not in ([loggers] if isinstance(loggers, str) else list(loggers)):
        return
    base = file_logger_path(config.trainer.project_name, config.trainer.experiment_name)
    target = launch_path(base)
    if target != base:
        print(f"[noisygrpo] {base} holds an earlier launch's metrics: this launch writes {target}", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.environ["VERL_FILE_LOGGER_PATH"] = str(target)


@hydra.main(config_path="config", config_name="noisygrpo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    run_noisygrpo(config)


if __name__ == "__main__":
    main()
