"""The ``noisygrpo.noise`` config section as a typed, validated dataclass.

One source of truth for what the noise knobs mean and which values are legal: the agent
loop reads the section through :meth:`NoiseConfig.from_config`, and the recipe's start-up
validation calls the same method, so a bad value fails before Ray starts with a message
that names the key (``noisygrpo.noise.<key>``) and says what to do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Real
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The registry of noise types (docs/algorithm.md §2: gaussian, random_mask, random_patch_mask).
from verl_ext.noise import CONVERSIONS, NOISE_KINDS, check_conversion

SECTION = "noisygrpo.noise"

# fixed: rollout i gets levels[i]; uniform: rollout 0 clean, the others ~ U[0, 1].
SAMPLING_MODES = ("fixed", "uniform")
PAPER_LEVELS = (0.0, 0.3, 0.6, 0.9)


@dataclass(frozen=True)
class NoiseConfig:
    """How each rollout of a group sees its image.

    Attributes:
        kind: noise type, a key of ``verl_ext.noise.NOISE_KINDS``.
        levels: noise extents n in [0, 1], one per rollout of a group under ``fixed``
            sampling; ``levels[0]`` is 0.0 (the clean anchor).
        sampling: ``fixed`` (rollout i gets ``levels[i]``) or ``uniform``.
        decay: multiply every level by ``1 - 0.5 * min(step / total_steps, 1)``.
        decay_total_steps: the ``total_steps`` of the decay; None means
            ``trainer.total_training_steps``.
        conversion: how noisy values return to 8-bit: ``clamp`` (clip and round; level 0 is the
            clean image: the method as the paper describes it) or ``reference`` (truncate and wrap
            modulo 256 as the authors' code does; level 0 still adds t = 0 noise, and the actor's
            image is that t = 0 copy of the group).
    """

    kind: str = "gaussian"
    levels: tuple[float, ...] = PAPER_LEVELS
    sampling: str = "fixed"
    decay: bool = False
    decay_total_steps: int | None = None
    conversion: str = "clamp"

    def __post_init__(self) -> None:
        if isinstance(self.levels, list):
            object.__setattr__(self, "levels", tuple(self.levels))
        _validate(self)
        object.__setattr__(self, "levels", tuple(float(level) for level in self.levels))

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any] | None) -> NoiseConfig:
        """Builds the config from the ``noisygrpo.noise`` section.

        Args:
            cfg: the section as a DictConfig or a plain mapping; None (section absent) gives
                the paper's defaults. Keys left out take their defaults.

        Raises:
            ValueError: an unknown key or an illegal value, naming ``noisygrpo.noise.<key>``.
        """
        if cfg is None:
            return cls()
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{SECTION} must be a mapping of noise settings, got {type(cfg).__name__}: {cfg!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(f'{SECTION}.{key}' for key in unknown)}; "
                f"the known keys are {', '.join(sorted(known))}"
            )
        return cls(**cfg)

    def resolve_decay_total_steps(self, trainer_total_steps: int | None) -> int | None:
        """The step count the decay runs over, or None when decay is off.

        Raises:
            ValueError: decay is on but neither ``decay_total_steps`` nor
                ``trainer.total_training_steps`` is set.
        """
        if not self.decay:
            return None
        total = self.decay_total_steps if self.decay_total_steps is not None else trainer_total_steps
        if total is None:
            raise ValueError(
                f"{SECTION}.decay is true but neither {SECTION}.decay_total_steps nor trainer.total_training_steps "
                "is set: the agent-loop workers cannot see the step count the trainer derives from the dataset. "
                f"Set {SECTION}.decay_total_steps (or trainer.total_training_steps)."
            )
        if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
            raise ValueError(f"the decay step count must be a positive integer, got {total!r}")
        return total


def _validate(config: NoiseConfig) -> None:
    if config.kind not in NOISE_KINDS:
        raise ValueError(
            f"{SECTION}.kind={config.kind!r} is not a noise type; choose one of {', '.join(sorted(NOISE_KINDS))}"
        )
    if config.conversion not in CONVERSIONS:
        raise ValueError(f"{SECTION}.conversion={config.conversion!r}; choose one of {', '.join(CONVERSIONS)}")
    try:
        check_conversion(config.conversion, config.kind)
    except ValueError as error:
        raise ValueError(f"{SECTION}.conversion={config.conversion!r} with {SECTION}.kind={config.kind!r}: {error}") from error
    if config.sampling not in SAMPLING_MODES:
        raise ValueError(f"{SECTION}.sampling={config.sampling!r}; choose one of {', '.join(SAMPLING_MODES)}")
    levels = config.levels
    if isinstance(levels, str) or not isinstance(levels, tuple) or len(levels) == 0:
        raise ValueError(f"{SECTION}.levels must be a non-empty list of numbers in [0, 1], got {levels!r}")
    for position, level in enumerate(levels):
        if isinstance(level, bool) or not isinstance(level, Real) or not math.isfinite(level) or not 0 <= level <= 1:
            raise ValueError(
                f"{SECTION}.levels[{position}]={level!r} must be a number in [0, 1] (the noise extent n); "
                f"got levels={list(levels)}"
            )
    if levels[0] != 0:
        raise ValueError(
            f"{SECTION}.levels[0]={levels[0]!r} must be 0.0: the first rollout of every group sees the clean "
            f"image (the anchor of the noise prior); got levels={list(levels)}"
        )
    if not isinstance(config.decay, bool):
        raise ValueError(f"{SECTION}.decay must be true or false, got {config.decay!r}")
    total = config.decay_total_steps
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total <= 0):
        raise ValueError(f"{SECTION}.decay_total_steps must be a positive integer or null, got {total!r}")
