"""The run scripts' overrides compose into a config that verl and NoisyGRPO both accept,
and each start-up misconfiguration produces its own message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from recipe.noisygrpo.main_noisygrpo import validate
from recipe.noisygrpo.validation import CONFIG_CHECKS, NoisyGRPOConfigError, config_problems
from verl_ext.config import NoisyGRPOConfig

REPO = Path(__file__).resolve().parents[1]
RUN_SCRIPTS = [
    "run_qwen25vl_3b.sh",
    "run_qwen25vl_7b.sh",
    "run_grpo_baseline_3b.sh",
    "run_qwen3vl_2b.sh",
    "run_qwen3vl_4b.sh",
    "run_qwen3vl_8b.sh",
]
# Scripts that change some of the paper's settings on purpose (each tested for what it changes).
ADAPTED_SCRIPTS = ["run_qwen25vl_7b_lora.sh"]


def fake_sentence_transformer(folder: Path, model_type: str) -> Path:
    """The two files by which a folder is told to be a sentence-transformers model of a family."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    (folder / "modules.json").write_text("[]")
    return folder


def script_env(tmp_path: Path, **changes: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "NOISYGRPO_PRINT_OVERRIDES": "1",
        "MODEL_PATH": str(tmp_path / "model"),
        "DATA_DIR": str(tmp_path / "data"),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "EMBEDDING_MODEL": str(fake_sentence_transformer(tmp_path / "mpnet", "mpnet")),
        "PYTHON": sys.executable,
    }
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def script_overrides(script: str, *extra: str, tmp_path: Path) -> list[str]:
    """The overrides a run script would launch with, read by running it in print mode
    (so shell variables, defaults and "$@" pass-through are exercised, not copied)."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / script), *extra],
        env=script_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
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
    assert config.actor_rollout_ref.model.path == str(tmp_path / "model")
    assert config.data.train_files == str(tmp_path / "data" / "train.parquet")
    assert config.reward.custom_reward_function.path == "pkg://verl_ext.reward"
    assert config.data.custom_cls.path == "pkg://verl_ext.dataset"
    assert "file" in config.trainer.logger


@pytest.mark.parametrize("script", RUN_SCRIPTS)
def test_run_scripts_carry_every_training_setting_of_the_authors_code(script, tmp_path):
    """docs/algorithm.md §5, setting by setting, as verl will read it (typed configs built as verl builds them)."""
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.engine.base import EngineRegistry

    from verl_ext.engine import NoisyGRPOEngineConfig, NoisyGRPOFSDPEngine, NoisyGRPOOptimizerConfig

    config = compose_config(script_overrides(script, tmp_path=tmp_path))
    actor_section, rollout = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
    actor = omega_conf_to_dataclass(actor_section)
    # 8 GPUs, 1 epoch, every row trains, no validation split and no validation run
    assert (config.trainer.n_gpus_per_node, config.trainer.nnodes, config.trainer.total_epochs) == (8, 1, 1)
    assert config.data.val_files is None
    assert config.trainer.test_freq == -1 and config.trainer.val_before_train is False
    # 16 prompts per step x 4 rollouts, one on-policy update per rollout batch
    assert config.data.train_batch_size == 16 and rollout.n == 4
    assert actor.ppo_mini_batch_size == 16 and actor.ppo_epochs == 1
    # AdamW lr 1e-6, linear decay to 0 without warm-up, weight decay 0, gradient clipping 1.0
    assert isinstance(actor.optim, NoisyGRPOOptimizerConfig)
    assert actor.optim.lr == pytest.approx(1e-6) and actor.optim.lr_scheduler_type == "linear"
    assert actor.optim.lr_warmup_steps_ratio == 0.0 and actor.optim.lr_warmup_steps in (-1, 0, None)
    assert actor.optim.weight_decay == 0.0 and actor.optim.clip_grad == 1.0
    assert actor.optim.optimizer == "AdamW" and tuple(actor.optim.betas) == (0.9, 0.999)
    # KL 0.04 as a k3 loss term, clip 0.2, no entropy bonus, no KL in the reward
    assert actor.use_kl_loss and actor.kl_loss_coef == pytest.approx(0.04) and actor.kl_loss_type == "low_var_kl"
    assert actor.clip_ratio == pytest.approx(0.2) and actor.entropy_coeff == 0
    assert config.algorithm.use_kl_in_reward is False
    # loss averaged over each sequence's tokens, then over sequences
    assert actor.loss_agg_mode == "seq-mean-token-mean"
    # 256 new tokens; temperature 1.0, top-p 1.0, top-k 50
    assert config.data.max_response_length == 256
    assert (rollout.temperature, rollout.top_p, rollout.top_k) == (1.0, 1.0, 50)
    # no prompt-length cut that drops images: 4096 tokens hold a 1536^2 image's 3,009 tokens plus text
    assert config.data.max_prompt_length >= (1536 // 28) ** 2 + 2 + 512
    # vision tower frozen, really: the engine verl will build reads the flag
    assert isinstance(actor.fsdp_config, NoisyGRPOEngineConfig) and actor.fsdp_config.freeze_vision_tower is True
    engine = EngineRegistry.get_engine_cls(config.actor_rollout_ref.model.model_type, actor.strategy)
    assert engine is NoisyGRPOFSDPEngine and actor.strategy == "fsdp2"
    # bf16 compute, gradient checkpointing
    assert actor.fsdp_config.mixed_precision is None or actor.fsdp_config.mixed_precision.get("param_dtype") == "bf16"
    assert config.actor_rollout_ref.model.enable_gradient_checkpointing is True
    # reward: all-mpnet-base-v2 similarity (kept >= 0.6) + format, the reference's rules
    reward_kwargs = OmegaConf.to_container(config.reward.custom_reward_function.reward_kwargs, resolve=True)
    assert reward_kwargs["embedding_model"] == str(tmp_path / "mpnet")
    assert (reward_kwargs["correctness"], reward_kwargs["mode"], reward_kwargs["similarity_threshold"]) == (
        "similarity",
        "reference",
        0.6,
    )
    if "baseline" in script:  # vanilla GRPO, 4 rollouts, clean images
        assert config.algorithm.adv_estimator == "grpo"
        assert list(config.noisygrpo.noise.levels) == [0.0, 0.0, 0.0, 0.0]
        assert config.noisygrpo.noise.conversion == "clamp"
    else:  # one rollout per level, noise as the released code makes it, p_alpha 0.01, R 0.1
        assert config.algorithm.adv_estimator == "noisygrpo"
        assert list(config.noisygrpo.noise.levels) == [0.0, 0.3, 0.6, 0.9]
        assert config.noisygrpo.noise.conversion == "reference" and config.noisygrpo.noise.kind == "gaussian_iid"
        assert config.noisygrpo.noise.sampling == "fixed" and config.noisygrpo.noise.decay is False
        assert (config.noisygrpo.estimator.p_alpha, config.noisygrpo.estimator.r_value) == (0.01, 0.1)


@pytest.mark.parametrize(
    ("embedding_model", "words"),
    [
        (None, "EMBEDDING_MODEL is not set"),
        ("minilm", "holds a 'bert' model, not 'mpnet'"),
        ("missing", "is not a folder"),
    ],
)
def test_paper_scripts_refuse_to_start_without_an_mpnet_reward_model(embedding_model, words, tmp_path):
    folders = {"minilm": str(fake_sentence_transformer(tmp_path / "minilm", "bert")), "missing": str(tmp_path / "no")}
    env = script_env(tmp_path, EMBEDDING_MODEL=folders.get(embedding_model), NOISYGRPO_PRINT_OVERRIDES="0")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "run_qwen25vl_3b.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert words in result.stderr and "embedding_model assemble" in result.stderr
    assert time.monotonic() - started < 30  # refused before anything heavy starts


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
    # keys that exist in verl's dataclasses but not in its yaml (docs/design.md).
    for script in RUN_SCRIPTS + ADAPTED_SCRIPTS:
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
    "first_level_not_clean": (["noisygrpo.noise.levels=[0.3,0.3,0.6,0.9]"], "noisygrpo_section", "must be 0.0"),
    "dapo_group_filter": (
        ["algorithm.filter_groups.enable=true"],
        "no_group_filtering",
        "noisygrpo.allow_filter_groups=true",
    ),
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
    "bad_estimator_setting": (["noisygrpo.estimator.r_value=-0.1"], "noisygrpo_section", "r_value"),
    "reward_typo": (["noisygrpo.reward.mode=strcit"], "noisygrpo_section", "'mode'='strcit'"),
    "freeze_without_the_engine": (
        ["actor_rollout_ref.model.model_type=language_model"],
        "engine_settings",
        "freeze_vision_tower=true",
    ),
    "freeze_with_fsdp1_flat_parameters": (
        ["actor_rollout_ref.actor.strategy=fsdp", "actor_rollout_ref.ref.strategy=fsdp"],
        "engine_settings",
        "use_orig_params",
    ),
    "freeze_flag_not_handed_to_the_engine": (
        ["actor_rollout_ref.actor.fsdp_config._target_=verl.workers.config.FSDPEngineConfig"],
        "engine_settings",
        "NoisyGRPOEngineConfig",
    ),
    "linear_schedule_without_its_config": (
        ["actor_rollout_ref.actor.optim._target_=verl.workers.config.FSDPOptimizerConfig"],
        "engine_settings",
        "lr_scheduler_type=linear",
    ),
    "validation_without_data": (["trainer.test_freq=5"], "no_validation_without_val_files", "data.val_files"),
    "missing_embedding_model_folder": (
        ["noisygrpo.reward.embedding_model=/nonexistent/all-mpnet-base-v2"],
        "embedding_model_folder",
        "/nonexistent/all-mpnet-base-v2",
    ),
    "decay_without_horizon": (["noisygrpo.noise.decay=true"], "decay_horizon", "decay_total_steps"),
    "group_filter_with_the_cpu_replay_buffer": (
        [
            "trainer.v1.sampler.custom_sampler.path=pkg://verl_cpu.replay_buffer",
            "trainer.v1.sampler.custom_sampler.name=FinePollReplayBuffer",
            "algorithm.filter_groups.enable=true",
        ],
        "custom_sampler_drops_group_filtering",
        "algorithm.filter_groups.enable",
    ),
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


def test_r_value_zero_is_a_legitimate_ablation(tmp_path):
    base = script_overrides("run_qwen25vl_3b.sh", tmp_path=tmp_path)
    assert config_problems(compose_config(base + ["noisygrpo.estimator.r_value=0"])) == {}


def test_decay_with_a_horizon_is_accepted(tmp_path):
    base = script_overrides("run_qwen25vl_3b.sh", tmp_path=tmp_path)
    config = compose_config(base + ["noisygrpo.noise.decay=true", "noisygrpo.noise.decay_total_steps=800"])
    assert config_problems(config) == {}


def test_a_reward_model_other_than_mpnet_is_warned_about(tmp_path):
    from recipe.noisygrpo.validation import config_warnings

    base = script_overrides("run_qwen25vl_3b.sh", tmp_path=tmp_path)
    assert config_warnings(compose_config(base)) == []
    bundled = compose_config(base + ["noisygrpo.reward.embedding_model=null"])
    assert config_problems(bundled) == {}
    (warning,) = config_warnings(bundled)
    assert "'bert'" in warning and "all-mpnet-base-v2" in warning
    assert config_warnings(compose_config(base + ["noisygrpo.reward.correctness=exact"])) == []


def test_dapo_group_filter_runs_only_with_the_explicit_override_or_another_estimator(tmp_path):
    base = script_overrides("run_qwen25vl_3b.sh", tmp_path=tmp_path) + ["algorithm.filter_groups.enable=true"]
    assert "no_group_filtering" in config_problems(compose_config(base))
    assert "no_group_filtering" not in config_problems(compose_config(base + ["noisygrpo.allow_filter_groups=true"]))
    baseline = script_overrides("run_grpo_baseline_3b.sh", "algorithm.filter_groups.enable=true", tmp_path=tmp_path)
    assert "no_group_filtering" not in config_problems(compose_config(baseline))  # GRPO has no prior to lose
    with pytest.raises(ValueError, match="allow_filter_groups must be true or false"):
        compose_and_parse = compose_config(base + ["noisygrpo.allow_filter_groups=maybe"])
        NoisyGRPOConfig.from_config(compose_and_parse.noisygrpo)


def test_lora_script_trains_adapters_outside_the_vision_tower_on_4_gpus_with_the_papers_other_settings(
    tmp_path, monkeypatch
):
    import types

    from verl.utils.config import omega_conf_to_dataclass

    config = compose_config(script_overrides("run_qwen25vl_7b_lora.sh", tmp_path=tmp_path))
    # verl's validate_config asks vLLM (GPU extra, absent here) which LoRA ranks it serves.
    asked = []
    vllm_utils = types.ModuleType("verl.workers.rollout.vllm_rollout.utils")
    vllm_utils.get_vllm_max_lora_rank = asked.append
    monkeypatch.setitem(sys.modules, vllm_utils.__name__, vllm_utils)
    validate(config)
    assert asked == [64]
    model = config.actor_rollout_ref.model
    assert (model.lora_rank, model.lora_alpha, model.target_modules) == (64, 128, "all-linear")
    assert model.exclude_modules == ".*visual.*"
    assert config.trainer.n_gpus_per_node == 4 and config.actor_rollout_ref.actor.optim.lr == 1e-5
    # 16 prompts x 4 rollouts split over 4 data-parallel ranks; vLLM loads the base weights itself.
    assert config.data.train_batch_size * config.actor_rollout_ref.rollout.n % 4 == 0
    assert config.actor_rollout_ref.rollout.load_format == "safetensors"
    # What does not change: the method and the paper's sampling, KL and noise.
    paper = compose_config(script_overrides("run_qwen25vl_7b.sh", tmp_path=tmp_path))
    for key in ("algorithm", "noisygrpo", "data"):
        assert config[key] == paper[key], key
    for key in ("temperature", "top_k", "top_p", "n"):
        assert config.actor_rollout_ref.rollout[key] == paper.actor_rollout_ref.rollout[key], key
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert (actor.kl_loss_coef, actor.clip_ratio, actor.loss_agg_mode) == (0.04, 0.2, "seq-mean-token-mean")


def test_the_3b_script_with_a_missing_model_and_data_fails_in_seconds_before_ray(tmp_path):
    env = script_env(tmp_path, NOISYGRPO_PRINT_OVERRIDES=None, MODEL_PATH="/nonexistent")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "run_qwen25vl_3b.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "NoisyGRPO found 2 problem(s); nothing was started" in output
    assert output.count("actor_rollout_ref.model.path=/nonexistent: no such folder") == 1
    assert output.count(f"{tmp_path / 'data' / 'train.parquet'} does not exist") == 1
    assert "All configuration checks passed" not in output and "Ray runtime started" not in output
    assert time.monotonic() - started < 60  # about 10 s here
