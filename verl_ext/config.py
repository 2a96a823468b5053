"""The ``noisygrpo:`` config section as typed, frozen dataclasses, built once and validated on construction.

In verl's typed-config style: every knob, its default and its legal values are stated here once;
``NoisyGRPOConfig.from_config(config.noisygrpo)`` builds the whole section and raises a
``ValueError`` naming the key (``noisygrpo.<section>.<key>``) for an unknown key or a bad value.
The start-up checks (``recipe/noisygrpo/validation.py``), the agent loop, the trainer and the
reward function all read the section through these classes.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from numbers import Real
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verl_ext.noise import CONVERSIONS, NOISE_KINDS, check_conversion

SECTION = "noisygrpo"
PAPER_LEVELS = (0.0, 0.3, 0.6, 0.9)
# fixed: rollout i gets levels[i]; uniform: rollout 0 clean, the others ~ U[0, 1].
SAMPLING_MODES = ("fixed", "uniform")
CORRECTNESS_KINDS = ("similarity", "exact", "math")
# correctness kind -> the module it grades with, checked when the section is built so that a missing
# package is a start-up error rather than a failure at the first rollout's reward.
CORRECTNESS_MODULES = {"math": "mathruler"}
REWARD_MODES = ("reference", "strict")
REWARD_CONFIG_HINT = f"set it under {SECTION}.reward (passed as reward.custom_reward_function.reward_kwargs)"


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)


@dataclass(frozen=True)
class NoiseConfig:
    """``noisygrpo.noise``: how each rollout of a group sees its image (docs/algorithm.md §2).

    Attributes:
        kind: a key of ``verl_ext.noise.NOISE_KINDS``.
        levels: noise extents in [0, 1], one per rollout under ``fixed`` sampling; ``levels[0]`` is
            0.0 (the clean anchor).
        sampling: ``fixed`` (rollout i gets ``levels[i]``) or ``uniform``.
        decay: multiply every level by ``1 - 0.5 * min(step / total_steps, 1)``.
        decay_total_steps: the decay's ``total_steps``; None means ``trainer.total_training_steps``.
        conversion: ``clamp`` (clip and round; level 0 is the clean image) or ``reference`` (the
            authors' truncate-and-wrap, t = 0 noise at level 0, the actor sees the group's level-0 copy).
    """

    kind: str = "gaussian"
    levels: tuple[float, ...] = PAPER_LEVELS
    sampling: str = "fixed"
    decay: bool = False
    decay_total_steps: int | None = None
    conversion: str = "clamp"

    def __post_init__(self) -> None:
        key = f"{SECTION}.noise"
        if self.kind not in NOISE_KINDS:
            raise ValueError(
                f"{key}.kind={self.kind!r} is not a noise type; choose one of {', '.join(sorted(NOISE_KINDS))}"
            )
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"{key}.sampling={self.sampling!r}; choose one of {', '.join(SAMPLING_MODES)}")
        if self.conversion not in CONVERSIONS:
            raise ValueError(f"{key}.conversion={self.conversion!r}; choose one of {', '.join(CONVERSIONS)}")
        try:
            check_conversion(self.conversion, self.kind)
        except ValueError as error:
            raise ValueError(f"{key}.conversion={self.conversion!r} with {key}.kind={self.kind!r}: {error}") from error
        levels = self.levels
        if isinstance(levels, str) or not isinstance(levels, list | tuple) or len(levels) == 0:
            raise ValueError(f"{key}.levels must be a non-empty list of numbers in [0, 1], got {levels!r}")
        for position, level in enumerate(levels):
            if not (_is_number(level) and 0 <= level <= 1):
                raise ValueError(
                    f"{key}.levels[{position}]={level!r} must be a number in [0, 1] (the noise extent n); "
                    f"got levels={list(levels)}"
                )
        if levels[0] != 0:
            raise ValueError(
                f"{key}.levels[0]={levels[0]!r} must be 0.0: the first rollout of every group sees the clean "
                f"image (the anchor of the noise prior); got levels={list(levels)}"
            )
        object.__setattr__(self, "levels", tuple(float(level) for level in levels))
        if not isinstance(self.decay, bool):
            raise ValueError(f"{key}.decay must be true or false, got {self.decay!r}")
        total = self.decay_total_steps
        if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total <= 0):
            raise ValueError(f"{key}.decay_total_steps must be a positive integer or null, got {total!r}")

    def resolve_decay_total_steps(self, trainer_total_steps: int | None) -> int | None:
        """The step count the decay runs over, or None when decay is off.

        Raises:
            ValueError: decay is on but neither ``decay_total_steps`` nor ``trainer.total_training_steps`` is set.
        """
        if not self.decay:
            return None
        total = self.decay_total_steps if self.decay_total_steps is not None else trainer_total_steps
        if total is None:
            raise ValueError(
                f"{SECTION}.noise.decay is true but neither {SECTION}.noise.decay_total_steps nor "
                "trainer.total_training_steps is set: the agent-loop workers cannot see the step count the trainer "
                f"derives from the dataset. Set {SECTION}.noise.decay_total_steps (or trainer.total_training_steps)."
            )
        return int(total)


@dataclass(frozen=True)
class EstimatorConfig:
    """``noisygrpo.estimator``: the Bayesian fusion (docs/algorithm.md §4).

    Attributes:
        p_alpha: prior strength, > 0: P = p_alpha / (sigma_s^2 + p_alpha).
        r_value: observation noise, >= 0: K = P / (P + r_value); 0 gives K = 1 (the prior alone).
        eps: added to each group std, > 0.
    """

    p_alpha: float = 0.01
    r_value: float = 0.1
    eps: float = 1e-4

    def __post_init__(self) -> None:
        for name, lowest, strict in (("p_alpha", 0.0, True), ("r_value", 0.0, False), ("eps", 0.0, True)):
            value = getattr(self, name)
            if not _is_number(value) or value < lowest or (strict and value == lowest):
                bound = "> 0" if strict else ">= 0"
                raise ValueError(f"{SECTION}.estimator.{name}={value!r} must be a finite number {bound}")
            object.__setattr__(self, name, float(value))


@dataclass(frozen=True)
class RewardConfig:
    """``noisygrpo.reward``: the keyword arguments of ``verl_ext.reward.compute_score`` (docs/algorithm.md §3).

    Attributes:
        correctness: ``similarity`` (sentence-embedding cosine, the paper), ``exact`` (string match) or
            ``math`` (symbolic equivalence with mathruler, for geo3k-style numeric / LaTeX answers).
        mode: ``reference`` (the authors' rules exactly) or ``strict``; ``math`` grades alike in both.
        embedding_model: local sentence-transformers folder; None = the bundled all-MiniLM-L6-v2.
        similarity_threshold: similarities below it score 0.
        embedding_device: torch device of the embedding model in the reward workers.
    """

    correctness: str = "similarity"
    mode: str = "reference"
    embedding_model: str | None = None
    similarity_threshold: float = 0.6
    embedding_device: str = "cpu"

    def __post_init__(self) -> None:
        if self.correctness not in CORRECTNESS_KINDS:
            raise ValueError(
                f"reward kwarg 'correctness'={self.correctness!r} is unknown; choose one of "
                f"{sorted(CORRECTNESS_KINDS)} and {REWARD_CONFIG_HINT}."
            )
        module = CORRECTNESS_MODULES.get(self.correctness)
        if module is not None and importlib.util.find_spec(module) is None:
            raise ValueError(
                f"reward kwarg 'correctness'={self.correctness!r} grades with the {module} package, which is not "
                f"installed: `pip install {module}` (verl[verl-core] installs it), or choose another of "
                f"{sorted(CORRECTNESS_KINDS)}; {REWARD_CONFIG_HINT}."
            )
        if self.mode not in REWARD_MODES:
            raise ValueError(
                f"reward kwarg 'mode'={self.mode!r} is unknown; choose one of {sorted(REWARD_MODES)} and "
                f"{REWARD_CONFIG_HINT}."
            )
        if not _is_number(self.similarity_threshold):
            raise ValueError(
                f"reward kwarg 'similarity_threshold'={self.similarity_threshold!r} must be a finite number "
                f"(the paper uses 0.6); {REWARD_CONFIG_HINT}."
            )


@dataclass(frozen=True)
class NoisyGRPOConfig:
    """The whole ``noisygrpo:`` section.

    Attributes:
        noise, estimator, reward: the three subsections.
        advantage_log_dir: when set, each step appends one JSON line per rollout to
            ``<dir>/advantages.jsonl`` (a resumed launch to ``advantages.launchN.jsonl``; read them
            together with ``recipe.noisygrpo.metrics_log.read_advantage_rows``).
        seeded_sampling: give every rollout a sampling seed, a function of (row seed, rollout
            index, step) like its noise, so a run (and a resumed one) reproduces its responses
            (vLLM and the CPU backend's rollout honour ``sampling_params["seed"]``).
        allow_filter_groups: run with verl's DAPO group filter (``algorithm.filter_groups``) although
            it drops the equal-reward groups in which the noise prior acts (an ablation); refused otherwise.
    """

    noise: NoiseConfig = field(default_factory=NoiseConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantage_log_dir: str | None = None
    seeded_sampling: bool = False
    allow_filter_groups: bool = False

    def __post_init__(self) -> None:
        for name in ("seeded_sampling", "allow_filter_groups"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{SECTION}.{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, section: DictConfig | Mapping[str, Any] | None) -> NoisyGRPOConfig:
        """Builds the config from the ``noisygrpo`` section (None or missing keys take the defaults).

        Raises:
            ValueError: an unknown key or an illegal value, naming ``noisygrpo.<...>``.
        """
        values = _plain(section, SECTION)
        _reject_unknown(values, cls, SECTION)
        parts = {}
        for name, part_cls in (("noise", NoiseConfig), ("estimator", EstimatorConfig), ("reward", RewardConfig)):
            part = _plain(values.get(name), f"{SECTION}.{name}")
            _reject_unknown(part, part_cls, f"{SECTION}.{name}")
            parts[name] = part_cls(**part)
        return cls(
            **parts,
            advantage_log_dir=values.get("advantage_log_dir"),
            seeded_sampling=values.get("seeded_sampling", False),
            allow_filter_groups=values.get("allow_filter_groups", False),
        )


def _plain(section: Any, key: str) -> dict[str, Any]:
    if section is None:
        return {}
    if isinstance(section, DictConfig):
        section = OmegaConf.to_container(section, resolve=True)
    if not isinstance(section, Mapping):
        raise ValueError(f"{key} must be a mapping, got {type(section).__name__}: {section!r}")
    return dict(section)


def _reject_unknown(values: Mapping[str, Any], config_cls: type, key: str) -> None:
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(f'{key}.{name}' for name in unknown)}; the known keys are "
            f"{', '.join(sorted(known))}"
        )
