"""Entry point: ``python -m recipe.noisygrpo.main_noisygrpo [hydra overrides]``.

Composes ``config/noisygrpo_trainer.yaml`` (verl's ``ppo_trainer`` plus the ``noisygrpo:``
section), refuses in seconds, before Ray, with one report of every problem of the settings
(:mod:`recipe.noisygrpo.validation`) and of the model, data and output folders
(:mod:`recipe.noisygrpo.preflight`), runs verl's own config validation, and starts verl's
``run_ppo`` with the NoisyGRPO task runner. Ctrl-C (or SIGTERM) stops the run, shuts Ray down and
says which checkpoint the next launch resumes from; the exit status is then 130 (143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys

import hydra
import ray
from omegaconf import DictConfig
from verl.trainer.main_ppo import run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

from recipe.noisygrpo.checkpoints import resume_hint
from recipe.noisygrpo.metrics_log import file_logger_path, launch_path
from recipe.noisygrpo.preflight import preflight_problems
from recipe.noisygrpo.validation import NoisyGRPOConfigError, config_problems, config_warnings

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


def validate(config: DictConfig, check_files: bool = False) -> None:
    """NoisyGRPO's checks first (cheap, precise messages), then verl's own; warnings are printed once.

    Raises :class:`NoisyGRPOConfigError` listing every problem once: the settings' and, with
    ``check_files``, those of the files the run needs (the entry point checks both).
    """
    problems = list(config_problems(config).values())
    if check_files:
        problems += preflight_problems(config)
    problems = list(dict.fromkeys(problems))  # two checks may reach the same conclusion: say it once
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise NoisyGRPOConfigError(f"NoisyGRPO found {len(problems)} problem(s); nothing was started:\n{lines}")
    for warning in config_warnings(config):
        print(f"[noisygrpo] WARNING: {warning}", flush=True)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def run_noisygrpo(config: DictConfig, task_runner_class=None) -> None:
    """Validate ``config`` and train; ``task_runner_class``: a Ray actor class (default: the recipe's)."""
    if task_runner_class is None:
        from recipe.noisygrpo.trainer import NoisyGRPOTaskRunner as task_runner_class

    auto_set_device(config)
    validate(config, check_files=True)
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
    # Ray's driver turns SIGTERM into exit(SIGTERM) once it is up; before that, treat it as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_noisygrpo(config)
    except NoisyGRPOConfigError as error:
        print(f"[noisygrpo] {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(stopped(config, "interrupted (Ctrl-C)", EXIT_INTERRUPTED))
    except SystemExit as exit_:
        if exit_.code != signal.SIGTERM:
            raise
        sys.exit(stopped(config, "terminated (SIGTERM)", EXIT_TERMINATED))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stopped(config: DictConfig, how: str, exit_code: int) -> int:
    """Shut Ray down (every worker of this run), say where to resume from; returns ``exit_code``."""
    ray.shutdown()
    print(f"\n[noisygrpo] {how}: training stopped; {resume_hint(config.trainer.default_local_dir)}", flush=True)
    return exit_code


if __name__ == "__main__":
    main()
