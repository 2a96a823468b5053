"""The ``"noisygrpo"`` advantage estimator for verl, and what it logs (docs/algorithm.md §4).

The math is :mod:`verl_ext.kalman`. This module is the thin hook around it: verl calls a registered
estimator with token-level rewards, the response mask, the uid index and the ``algorithm`` config
only, so the per-row noise extents (and the ``noisygrpo.estimator`` settings) reach it through
``noisygrpo_inputs(...)``, a context manager the NoisyGRPO trainer opens around verl's
``compute_advantage``; ``advantage_metrics`` is what the trainer logs per step under ``noisygrpo/``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from verl.trainer.ppo.core_algos import register_adv_est

from verl_ext.config import EstimatorConfig
from verl_ext.kalman import BayesianGroupStats, as_row_vector, bayesian_advantage, segment_sum

ESTIMATOR_NAME = "noisygrpo"
METRIC_PREFIX = "noisygrpo/"

# Reward-by-noise-level logging: one key per distinct level up to this many levels; beyond that
# (uniform sampling) the extents are bucketed into equal-width bins over [0, 1].
MAX_DISTINCT_NOISE_LEVELS = 8
NOISE_LEVEL_BINS = 4


# ---------------------------------------------------------------------------------------------
# Logging


def _noise_level_names(extents: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Row -> level-bucket index (B,) and the bucket names ("0.30").

    Distinct levels (at 2-decimal precision) each get a bucket; with more than
    MAX_DISTINCT_NOISE_LEVELS of them, NOISE_LEVEL_BINS equal-width bins over [0, 1] named by centre.
    """
    rounded = torch.round(extents * 100) / 100
    levels, level_index = torch.unique(rounded, return_inverse=True)
    if levels.numel() <= MAX_DISTINCT_NOISE_LEVELS:
        return level_index, [f"{level:.2f}" for level in levels.tolist()]
    bin_index = (extents * NOISE_LEVEL_BINS).floor().long().clamp(0, NOISE_LEVEL_BINS - 1)
    centres = [(b + 0.5) / NOISE_LEVEL_BINS for b in range(NOISE_LEVEL_BINS)]
    return bin_index, [f"{centre:.2f}" for centre in centres]


def advantage_metrics(
    scores: torch.Tensor,
    noise_extents: torch.Tensor,
    advantages: torch.Tensor,
    stats: BayesianGroupStats,
) -> dict[str, float]:
    """Per-step logging values of the Bayesian advantage, keys under ``noisygrpo/``.

    Group means (K, P, sigma_s, zero-variance fraction) and row statistics (reward std, advantage
    mean/std/min/max, reward by noise level) cover the real groups, those with two or more rows,
    so verl's padding rows (own uid, group of one) do not skew them; a batch with no such group
    falls back to all groups/rows.

    Args:
        scores: (B,) rewards as passed to ``bayesian_advantage``.
        noise_extents: (B,) noise extents as passed to ``bayesian_advantage``.
        advantages: (B,) per-row advantages it returned.
        stats: the stats it returned.

    Returns:
        ``noisygrpo/kalman_gain_mean``, ``prior_weight_mean``, ``sigma_s_mean``,
        ``zero_variance_group_frac``, ``reward_std`` (over rows), ``advantage_mean|std|min|max``
        and ``reward@noise_<level>`` (mean reward of the rows at that level, 2 decimals).
    """
    num_rows = scores.shape[0]
    if noise_extents.shape[0] != num_rows or advantages.shape[0] != num_rows:
        raise ValueError(
            f"scores ({num_rows}), noise_extents ({noise_extents.shape[0]}) and advantages "
            f"({advantages.shape[0]}) must have one entry per row"
        )
    if num_rows == 0:
        return {}

    device = stats.group_index.device
    real_groups = stats.group_size >= 2
    if not bool(real_groups.any()):
        real_groups = torch.ones_like(real_groups)
    real_rows = real_groups[stats.group_index]

    rewards = scores.detach().to(device=device, dtype=torch.float64)[real_rows]
    extents = noise_extents.detach().to(device=device, dtype=torch.float64)[real_rows]
    row_advantages = advantages.detach().to(device=device, dtype=torch.float64)[real_rows]
    sigma_s = stats.sigma_s.to(torch.float64)[real_groups]

    level_index, level_names = _noise_level_names(extents)
    level_count = torch.bincount(level_index, minlength=len(level_names)).to(torch.float64)
    level_sum = segment_sum(rewards, level_index, len(level_names))
    level_mean = level_sum / level_count.clamp(min=1)

    def spread(values: torch.Tensor) -> torch.Tensor:
        return values.std() if values.numel() > 1 else values.new_zeros(())

    summary = torch.stack(
        [
            stats.kalman_gain.to(torch.float64)[real_groups].mean(),
            stats.prior_weight.to(torch.float64)[real_groups].mean(),
            sigma_s.mean(),
            (sigma_s == 0).to(torch.float64).mean(),
            spread(rewards),
            row_advantages.mean(),
            spread(row_advantages),
            row_advantages.min(),
            row_advantages.max(),
        ]
    ).tolist()
    names = [
        "kalman_gain_mean",
        "prior_weight_mean",
        "sigma_s_mean",
        "zero_variance_group_frac",
        "reward_std",
        "advantage_mean",
        "advantage_std",
        "advantage_min",
        "advantage_max",
    ]
    metrics = {METRIC_PREFIX + name: value for name, value in zip(names, summary, strict=True)}
    for name, count, mean in zip(level_names, level_count.tolist(), level_mean.tolist(), strict=True):
        if count > 0:  # empty uniform-sampling bins get no key rather than a made-up 0
            metrics[f"{METRIC_PREFIX}reward@noise_{name}"] = mean
    return metrics


# ---------------------------------------------------------------------------------------------
# verl glue: per-row inputs through a context variable, and the registered estimator


@dataclass
class NoisyGRPOInputs:
    """What the NoisyGRPO trainer hands the estimator for one ``compute_advantage`` call.

    ``noise_extents`` is (B,), in the row order of the batch verl passes to the estimator;
    ``estimator`` holds the ``noisygrpo.estimator`` settings. The estimator fills ``stats`` and
    ``metrics`` after it runs.
    """

    noise_extents: torch.Tensor
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    stats: BayesianGroupStats | None = None
    metrics: dict[str, float] = field(default_factory=dict)


_ACTIVE_INPUTS: contextvars.ContextVar[NoisyGRPOInputs | None] = contextvars.ContextVar(
    "noisygrpo_inputs", default=None
)


@contextlib.contextmanager
def noisygrpo_inputs(noise_extents: Any, estimator: EstimatorConfig | None = None) -> Iterator[NoisyGRPOInputs]:
    """Make per-row noise extents (B,) and the estimator settings available to ``"noisygrpo"`` inside the block.

    Usage (in the trainer)::

        with noisygrpo_inputs(noise_extents, config.estimator) as inputs:
            data = compute_advantage(data, adv_estimator="noisygrpo", config=config.algorithm)
        metrics.update(inputs.metrics)
    """
    inputs = NoisyGRPOInputs(
        noise_extents=as_row_vector("noise_extents", noise_extents), estimator=estimator or EstimatorConfig()
    )
    token = _ACTIVE_INPUTS.set(inputs)
    try:
        yield inputs
    finally:
        _ACTIVE_INPUTS.reset(token)


def active_noisygrpo_inputs() -> NoisyGRPOInputs | None:
    """The inputs of the innermost open ``noisygrpo_inputs`` block, or None."""
    return _ACTIVE_INPUTS.get()


MISSING_EXTENTS_MESSAGE = (
    'The "noisygrpo" advantage estimator needs per-row noise extents, which verl does not pass to '
    "estimators. recipe.noisygrpo.trainer.NoisyGRPOTrainer provides them (run training through "
    "`python -m recipe.noisygrpo.main_noisygrpo`, not verl.trainer.main_ppo); when calling the "
    "estimator yourself, pass noise_extents= or open verl_ext.advantage.noisygrpo_inputs(noise_extents)."
)


@register_adv_est(ESTIMATOR_NAME)
def compute_noisygrpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    noise_extents: torch.Tensor | None = None,
    *,
    p_alpha: float | None = None,
    r_value: float | None = None,
    eps: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl advantage estimator ``"noisygrpo"`` (outcome reward, one advantage per rollout).

    Args:
        token_level_rewards: (B, T) rewards; the score of a rollout is their sum, as in verl's GRPO.
        response_mask: (B, T) 1 on response tokens.
        index: (B,) group id (verl's uid array); rollouts of one prompt share it.
        config: verl's ``algorithm`` config (unused: the settings are ``noisygrpo.estimator``).
        noise_extents: (B,) noise extents; default: those of the open ``noisygrpo_inputs`` block.
        p_alpha, r_value, eps: override the block's settings (default: ``EstimatorConfig``'s).
        **kwargs: other fields verl passes (e.g. ``reward_baselines``), unused.

    Returns:
        (advantages, returns), both (B, T): the per-rollout advantage times the response mask.
    """
    inputs = active_noisygrpo_inputs()
    if noise_extents is None:
        if inputs is None:
            raise ValueError(MISSING_EXTENTS_MESSAGE)
        noise_extents = inputs.noise_extents
    if index is None:
        raise ValueError(
            'The "noisygrpo" advantage estimator needs the group ids (index=, verl\'s non_tensor_batch["uid"])'
        )
    if token_level_rewards.dim() != 2 or token_level_rewards.shape != response_mask.shape:
        raise ValueError(
            f"token_level_rewards {tuple(token_level_rewards.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must both be (batch, response_length)"
        )
    noise_extents = as_row_vector("noise_extents", noise_extents)
    num_rows = token_level_rewards.shape[0]
    if noise_extents.shape[0] != num_rows:
        raise ValueError(
            f"noise_extents has {noise_extents.shape[0]} rows but the batch has {num_rows}: the trainer must "
            "give one noise extent per row, in the batch's row order (after padding and balancing)"
        )

    estimator = inputs.estimator if inputs is not None else EstimatorConfig()
    settings = {
        name: getattr(estimator, name) if explicit is None else explicit
        for name, explicit in (("p_alpha", p_alpha), ("r_value", r_value), ("eps", eps))
    }
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        advantage, stats = bayesian_advantage(scores, noise_extents, index, **settings)
        advantages = advantage.unsqueeze(-1) * response_mask
    if inputs is not None:
        inputs.stats = stats
        inputs.metrics = advantage_metrics(scores, noise_extents, advantage, stats)
    return advantages, advantages
