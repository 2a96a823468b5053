"""Start-up checks of a NoisyGRPO config, run before Ray starts.

The ``noisygrpo:`` section validates itself when it is built (:class:`verl_ext.config.NoisyGRPOConfig`);
the checks here are the rules that span sections: our section against verl's (rollout.n and the
levels, the trainer mode, rollout correction, the engine that honours the vision freeze, the
validation data) and against the file system (the embedding model). Each check is a small function
registered with :func:`config_check`; it receives the whole config and the parsed section (None when
the section itself is invalid, which ``noisygrpo_section`` reports) and returns a message saying what
is wrong and how to fix it, or ``None``. :func:`config_problems` runs all of them; the entry point
(``main_noisygrpo.validate``) raises one :class:`NoisyGRPOConfigError` listing every problem, so a user
fixes a script in one go.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from recipe.noisygrpo.embedding_model import EmbeddingModelError, embedding_model_family
from verl_ext.config import NoisyGRPOConfig
from verl_ext.engine import ENGINE_CONFIG_TARGET, MODEL_TYPE, OPTIMIZER_CONFIG_TARGET
from verl_ext.reward import resolve_embedding_model_path

ConfigCheck = Callable[[DictConfig, "NoisyGRPOConfig | None"], "str | None"]
CONFIG_CHECKS: dict[str, ConfigCheck] = {}


class NoisyGRPOConfigError(ValueError):
    """A NoisyGRPO config that would train the wrong thing (or crash late) if launched."""


def config_check(name: str) -> Callable[[ConfigCheck], ConfigCheck]:
    """Registers a start-up check under ``name`` (tests refer to checks by name)."""

    def decorator(check: ConfigCheck) -> ConfigCheck:
        CONFIG_CHECKS[name] = check
        return check

    return decorator


@config_check("v1_sync_trainer")
def check_v1_sync_trainer(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # The noisy agent loop needs the `session_id` that only the v1 trainer passes, and the
    # NoisyGRPO trainer subclasses the v1 sync trainer.
    if not config.trainer.get("use_v1", False):
        return "trainer.use_v1 must be true: NoisyGRPO runs on verl's v1 trainer (set trainer.use_v1=true)."
    mode = config.trainer.v1.get("trainer_mode")
    if mode != "sync":
        return (
            f"trainer.v1.trainer_mode is {mode!r}; NoisyGRPO supports only 'sync' (set trainer.v1.trainer_mode=sync)."
        )
    return None


@config_check("custom_sampler_drops_group_filtering")
def check_custom_sampler_drops_group_filtering(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # verl 0.9.1 hands a custom replay buffer (trainer.v1.sampler.custom_sampler, which the CPU
    # backend sets) neither DAPO's group filter nor the refill switch: both would be ignored silently.
    sampler = config.trainer.v1.get("sampler", {})
    custom = sampler.get("custom_sampler") or {}
    if not (custom.get("path") and custom.get("name")):
        return None
    filter_groups = config.algorithm.get("filter_groups") or {}
    enabled = [
        key
        for key, on in (
            ("algorithm.filter_groups.enable", filter_groups.get("enable", False)),
            ("trainer.v1.sampler.sync_refill_failed_groups", sampler.get("sync_refill_failed_groups", False)),
        )
        if on
    ]
    if not enabled:
        return None
    return (
        f"{' and '.join(enabled)} set together with trainer.v1.sampler.custom_sampler ({custom.name}): verl passes "
        "neither to a custom replay buffer, so they would be ignored; turn them off or drop the custom sampler."
    )


@config_check("no_group_filtering")
def check_no_group_filtering(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # DAPO keeps only groups whose rewards differ. NoisyGRPO's prior does its work in the others:
    # with equal rewards sigma_s = 0, the Kalman gain is at its largest and the advantage ranks the
    # rollouts by the noise they saw. Filtering them leaves a plain GRPO update on fewer groups.
    filter_groups = config.algorithm.get("filter_groups") or {}
    if not filter_groups.get("enable", False) or config.algorithm.adv_estimator != "noisygrpo":
        return None
    if section is None or section.allow_filter_groups:
        return None
    return (
        "algorithm.filter_groups.enable=true (DAPO dynamic sampling) drops every group whose rollouts earn "
        "equal rewards, which are exactly the groups where NoisyGRPO's noise prior sets the advantage "
        "(docs/algorithm.md section 4): the run would train plain GRPO on the remaining groups. Set "
        "algorithm.filter_groups.enable=false, or noisygrpo.allow_filter_groups=true to run it anyway as an ablation."
    )


@config_check("noisygrpo_section")
def check_noisygrpo_section(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    if section is not None:
        return None
    try:  # build it again only to read its message
        NoisyGRPOConfig.from_config(config.get("noisygrpo"))
    except ValueError as error:
        return str(error)
    return None


@config_check("group_size_matches_levels")
def check_group_size_matches_levels(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    if section is None:
        return None
    noise, group_size = section.noise, config.actor_rollout_ref.rollout.n
    if noise.sampling == "fixed" and group_size != len(noise.levels):
        return (
            f"actor_rollout_ref.rollout.n={group_size} but noisygrpo.noise.levels has {len(noise.levels)} levels "
            f"{list(noise.levels)}: with fixed sampling every rollout of a group gets one level, so set "
            f"actor_rollout_ref.rollout.n={len(noise.levels)} or change the levels."
        )
    if group_size < 2 and config.algorithm.adv_estimator == "noisygrpo":
        return f"actor_rollout_ref.rollout.n={group_size}: a group-relative advantage needs at least 2 rollouts."
    return None


@config_check("decay_horizon")
def check_decay_horizon(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # The agent-loop workers cannot see the step count the trainer derives from the dataset.
    if section is None:
        return None
    try:
        section.noise.resolve_decay_total_steps(config.trainer.get("total_training_steps"))
    except ValueError as error:
        return str(error)
    return None


@config_check("no_rollout_correction")
def check_no_rollout_correction(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # Rollouts are generated from noisy images on purpose, so rollout-vs-actor probability
    # gaps are expected; "correcting" them would undo the method.
    correction = config.algorithm.get("rollout_correction") or {}
    problems = []
    if correction.get("bypass_mode", False):
        problems.append("algorithm.rollout_correction.bypass_mode=false")
    if correction.get("rollout_is") is not None:
        problems.append("algorithm.rollout_correction.rollout_is=null")
    if correction.get("rollout_rs") is not None:
        problems.append("algorithm.rollout_correction.rollout_rs=null")
    if problems:
        return (
            "rollout correction must stay off for NoisyGRPO: rollouts see noisy images on purpose, so their "
            f"log-probs differ from the actor's (computed on the clean image). Set {', '.join(problems)}."
        )
    return None


@config_check("no_legacy_reward_function")
def check_no_legacy_reward_function(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # verl 0.9.1 still composes the old top-level keys but silently ignores them.
    legacy = config.get("custom_reward_function") or {}
    if legacy.get("path"):
        return (
            f"custom_reward_function.path={legacy.get('path')!r} is the legacy top-level key, which verl 0.9.1 "
            "ignores. Use reward.custom_reward_function.path / .name instead."
        )
    return None


@config_check("engine_settings")
def check_engine_settings(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # verl 0.9.1 reads neither actor.freeze_vision_tower nor a linear schedule; verl_ext.engine does,
    # but only when the recipe's wiring is intact. Refuse rather than train the vision tower silently.
    actor = config.actor_rollout_ref.actor
    wants_freeze = bool(actor.get("freeze_vision_tower", False))
    wants_linear = actor.optim.get("lr_scheduler_type") == "linear"
    if not (wants_freeze or wants_linear):
        return None
    asked = " and ".join(
        setting
        for setting, wanted in (
            ("actor_rollout_ref.actor.freeze_vision_tower=true", wants_freeze),
            ("actor_rollout_ref.actor.optim.lr_scheduler_type=linear", wants_linear),
        )
        if wanted
    )
    problems = []
    model_type = config.actor_rollout_ref.model.get("model_type", "language_model")
    if model_type != MODEL_TYPE:
        problems.append(f"actor_rollout_ref.model.model_type is {model_type!r}, not {MODEL_TYPE!r} (the recipe's)")
    if actor.strategy not in ("fsdp", "fsdp2"):
        problems.append(f"actor_rollout_ref.actor.strategy is {actor.strategy!r}; the NoisyGRPO engine is FSDP only")
    if wants_freeze:
        fsdp_config = actor.get("fsdp_config") or {}
        if fsdp_config.get("_target_") != ENGINE_CONFIG_TARGET or not fsdp_config.get("freeze_vision_tower", False):
            problems.append(
                f"actor_rollout_ref.actor.fsdp_config must be {ENGINE_CONFIG_TARGET} with freeze_vision_tower "
                "following the actor's flag (the recipe yaml wires both)"
            )
        if actor.strategy == "fsdp" and not fsdp_config.get("use_orig_params", False):
            problems.append(
                "FSDP1 flat parameters cannot mix frozen and trained weights: set actor_rollout_ref.actor.strategy="
                "fsdp2 (or actor_rollout_ref.actor.fsdp_config.use_orig_params=true)"
            )
    if wants_linear and actor.optim.get("_target_") != OPTIMIZER_CONFIG_TARGET:
        problems.append(f"actor_rollout_ref.actor.optim._target_ must be {OPTIMIZER_CONFIG_TARGET} (the recipe's)")
    if problems:
        return f"{asked} cannot take effect: " + "; ".join(problems) + "."
    return None


@config_check("no_validation_without_val_files")
def check_validation_has_data(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # data.val_files=null means "no validation" (the paper trains on every row and never validates).
    if config.data.get("val_files") is not None:
        return None
    runs = []
    if config.trainer.get("val_before_train", False):
        runs.append("trainer.val_before_train=false")
    test_freq = config.trainer.get("test_freq", -1)
    if test_freq is not None and test_freq > 0:
        runs.append("trainer.test_freq=-1")
    if runs:
        return (
            "data.val_files is null (no validation data) but validation would run: set "
            f"{' and '.join(runs)}, or point data.val_files at a held-out parquet."
        )
    return None


@config_check("embedding_model_folder")
def check_embedding_model_folder(config: DictConfig, section: NoisyGRPOConfig | None) -> str | None:
    # The reward workers load it at the first rollout; a wrong path would fail minutes into the run.
    if section is None or section.reward.correctness != "similarity":
        return None
    try:
        resolve_embedding_model_path(section.reward.embedding_model)
    except (FileNotFoundError, ImportError) as error:
        return f"noisygrpo.reward.embedding_model: {error}"
    return None


def parsed_section(config: DictConfig) -> NoisyGRPOConfig | None:
    """The ``noisygrpo:`` section, or None when it is invalid."""
    try:
        return NoisyGRPOConfig.from_config(config.get("noisygrpo"))
    except ValueError:
        return None


def config_problems(config: DictConfig) -> dict[str, str]:
    """Runs every registered check; returns ``{check name: message}`` for the failing ones."""
    section = parsed_section(config)
    problems = {}
    for name, check in CONFIG_CHECKS.items():
        message = check(config, section)
        if message:
            problems[name] = message
    return problems


def config_warnings(config: DictConfig) -> list[str]:
    """Settings that run but differ from the paper's, said once at start-up."""
    warnings = []
    section = parsed_section(config)
    if section is not None and section.reward.correctness == "similarity":
        try:
            family = embedding_model_family(resolve_embedding_model_path(section.reward.embedding_model))
        except (EmbeddingModelError, FileNotFoundError, ImportError):
            family = None  # reported by the embedding_model_folder check
        if family is not None and family != "mpnet":
            warnings.append(
                f"the similarity reward uses a {family!r} sentence-transformers model, not the paper's "
                "all-mpnet-base-v2 (scores, and so rewards, differ); set noisygrpo.reward.embedding_model to an "
                "all-mpnet-base-v2 folder (python -m recipe.noisygrpo.embedding_model assemble --output DIR)."
            )
    return warnings
