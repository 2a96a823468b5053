"""The run scripts' overrides compose into a config that verl and NoisyGRPO both accept,
and each start-up misconfiguration produces its own message."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from recipe.noisygrpo.main_noisygrpo import validate
from recipe.noisygrpo.validation import CONFIG_CHECKS, NoisyGRPOConfigError, config_problems

REPO = Path(__file__).resolve().parents[1]
RUN_SCRIPTS = ["run_qwen25vl_3b.sh", "run_qwen25vl_7b.sh", "run_grpo_baseline_3b.sh"]


def script_overrides(script: str, *extra: str, tmp_path: Path) -> list[str]:
    """The overrides a run script would launch with, read by running it in print mode
    (so shell variables, defaults and "$@" pass-through are exercised, not copied)."""
    env = {
        **os.environ,
        "NOISYGRPO_PRINT_OVERRIDES": "1",
        "MODEL_PATH": str(tmp_path / "model"),
        "DATA_DIR": str(tmp_path / "data"),
        "OUTPUT_DIR": str(tmp_path / "out"),
    }
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *extra], env=env, capture_output=True, text=True, check=True
    )
    return [line for line in result.stdout.splitlines() if line]


def compose_config(overrides: list[str]):
    with initialize_config_module(config_module="recipe.noisygrpo.config", version_base=None):
        return compose(config_name="noisygrpo_trainer", overrides=overrides)


@pytest.mark.parametrize("script", RUN_SCRIPTS)
def test_run_script_composes_and_validates(script, tmp_path):
    overrides = script_overrides(script, tmp_path=tmp_path)
    config = compose_config(overrides)
    validate(config)  # NoisyGRPO's checks and verl's validate_config

    # The paper's settings (ALGORITHM.md §5) arrive in the composed config.
    assert config.actor_rollout_ref.rollout.n == 4
    assert config.data.train_batch_size == 16
    assert config.actor_rollout_ref.actor.optim.lr == pytest.approx(1e-6)
    assert config.actor_rollout_ref.actor.kl_loss_coef == pytest.approx(0.04)
    assert config.actor_rollout_ref.actor.kl_loss_type == "low_var_kl"
    assert config.actor_rollout_ref.actor.use_kl_loss is True
    assert config.actor_rollout_ref.actor.clip_ratio == pytest.approx(0.2)
    assert config.actor_rollout_ref.actor.freeze_vision_tower is True
    assert config.actor_rollout_ref.rollout.temperature == pytest.approx(0.9)
    assert config.data.max_response_length == 256
    assert config.data.max_prompt_length == 1024
    assert config.trainer.n_gpus_per_node == 8
    assert config.trainer.total_epochs == 1
    assert "file" in config.trainer.logger
    assert config.actor_rollout_ref.model.path == str(tmp_path / "model")
    assert config.data.train_files == str(tmp_path / "data" / "train.parquet")
    assert config.reward.custom_reward_function.path == "pkg://verl_ext.reward"
    assert config.data.custom_cls.path == "pkg://verl_ext.dataset"
    resolved = OmegaConf.to_container(config.reward.custom_reward_function.reward_kwargs, resolve=True)
    assert resolved["mode"] == "reference"
    if "baseline" in script:
        assert config.algorithm.adv_estimator == "grpo"
        assert list(config.noisygrpo.noise.levels) == [0.0, 0.0, 0.0, 0.0]
    else:
        assert config.algorithm.adv_estimator == "noisygrpo"
        assert list(config.noisygrpo.noise.levels) == [0.0, 0.3, 0.6, 0.9]


def test_user_arguments_pass_through_and_win(tmp_path):
    overrides = script_overrides("run_qwen25vl_3b.sh", "trainer.save_freq=7", tmp_path=tmp_path)
    assert overrides[-1] == "trainer.save_freq=7"
    assert compose_config(overrides).trainer.save_freq == 7


def test_misspelled_key_in_a_script_fails(tmp_path):
    overrides = script_overrides("run_qwen25vl_3b.sh", tmp_path=tmp_path)
    misspelled = [o.replace("kl_loss_coef=", "kl_loss_coeff=") for o in overrides]
    assert misspelled != overrides
    with pytest.raises(ConfigCompositionException):
        compose_config(misspelled)


def test_every_script_override_is_a_known_key(tmp_path):
    # Hydra rejects unknown keys unless prefixed with "+"; the scripts may only use "+" for
    # keys that exist in verl's dataclasses but not in its yaml (ARCHITECTURE.md).
    for script in RUN_SCRIPTS:
        plus_keys = [o.split("=")[0] for o in script_overrides(script, tmp_path=tmp_path) if o.startswith("+")]
        assert plus_keys == ["+actor_rollout_ref.rollout.engine_kwargs.vllm.mm_processor_cache_gb"], script


# Each start-up misconfiguration: the overrides that cause it, the check that must report
# it, and words its message must contain.
MISCONFIGURATIONS = {
    "n_differs_from_levels": (
        ["actor_rollout_ref.rollout.n=3"],
        "group_size_matches_levels",
        "actor_rollout_ref.rollout.n=4",
    ),
    "first_level_not_clean": (["noisygrpo.noise.levels=[0.3,0.3,0.6,0.9]"], "noise_section", "0"),
    "legacy_trainer": (["trainer.use_v1=false"], "v1_sync_trainer", "trainer.use_v1"),
    "async_trainer": (["trainer.v1.trainer_mode=colocate_async"], "v1_sync_trainer", "sync"),
    "rollout_correction_bypass": (
        ["algorithm.rollout_correction.bypass_mode=true"],
        "no_rollout_correction",
        "bypass_mode",
    ),
    "rollout_is": (["algorithm.rollout_correction.rollout_is=token"], "no_rollout_correction", "rollout_is"),
    "rollout_rs": (["algorithm.rollout_correction.rollout_rs=token_k1"], "no_rollout_correction", "rollout_rs"),
    "legacy_reward_function": (
        ["custom_reward_function.path=/tmp/my_reward.py"],
        "no_legacy_reward_function",
        "reward.custom_reward_function",
    ),
    "bad_estimator_setting": (["noisygrpo.estimator.r_value=0"], "estimator_settings", "r_value"),
    "decay_without_horizon": (["noisygrpo.noise.decay=true"], "decay_horizon", "decay_total_steps"),
}


@pytest.mark.parametrize("case", sorted(MISCONFIGURATIONS))
def test_startup_validation_names_each_misconfiguration(case, tmp_path):
    extra, check_name, words = MISCONFIGURATIONS[case]
    assert check_name in CONFIG_CHECKS
    base = script_overrides("run_qwen25vl_3b.sh", tmp_path=tmp_path)
    assert config_problems(compose_config(base)) == {}
    config = compose_config(base + extra)
    problems = config_problems(config)
    assert check_name in problems, problems
    assert words in problems[check_name]
    with pytest.raises(NoisyGRPOConfigError, match=words.replace("+", r"\+").replace(".", r"\.")):
        validate(config)


def test_uniform_sampling_allows_any_group_size(tmp_path):
    base = script_overrides("run_qwen25vl_3b.sh", tmp_path=tmp_path)
    config = compose_config(base + ["noisygrpo.noise.sampling=uniform", "actor_rollout_ref.rollout.n=8"])
    assert "group_size_matches_levels" not in config_problems(config)


def test_decay_with_a_horizon_is_accepted(tmp_path):
    base = script_overrides("run_qwen25vl_3b.sh", tmp_path=tmp_path)
    config = compose_config(base + ["noisygrpo.noise.decay=true", "noisygrpo.noise.decay_total_steps=800"])
    assert config_problems(config) == {}
