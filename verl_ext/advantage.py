"""Bayesian (Kalman-style) advantage of NoisyGRPO (docs/algorithm.md section 4).

Three layers, each usable alone:

- ``bayesian_advantage``: the math. Per-row scores and noise extents in, per-row advantage and
  per-group statistics out; vectorised over groups with segment sums (no Python loop over rows
  or groups).
- ``advantage_metrics``: what the trainer logs per step under ``noisygrpo/``.
- ``compute_noisygrpo_advantage``: the verl estimator, registered as ``"noisygrpo"``. verl calls a
  registered estimator with token-level rewards, response mask, uid index and the ``algorithm``
  config only, so the per-row noise extents reach it through ``noisygrpo_inputs(...)``, a context
  manager the NoisyGRPO trainer opens around verl's ``compute_advantage``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from verl.trainer.ppo.core_algos import register_adv_est

ESTIMATOR_NAME = "noisygrpo"
METRIC_PREFIX = "noisygrpo/"

DEFAULT_P_ALPHA = 0.01
DEFAULT_R_VALUE = 0.1
DEFAULT_EPS = 1e-4

# Reward-by-noise-level logging: one key per distinct level up to this many levels; beyond that
# (uniform sampling) the extents are bucketed into equal-width bins over [0, 1].
MAX_DISTINCT_NOISE_LEVELS = 8
NOISE_LEVEL_BINS = 4


@dataclass(frozen=True)
class BayesianGroupStats:
    """Per-group quantities of one call of ``bayesian_advantage``.

    Groups are numbered 0..G-1 in order of first appearance in the batch (in sorted id order when
    the ids are a tensor on an accelerator).

    Attributes:
        sigma_s: (G,) unbiased std of the scores in the group (0 for a group of one row).
        prior_weight: (G,) P = p_alpha / (sigma_s^2 + p_alpha), in (0, 1].
        kalman_gain: (G,) K = clamp(P / (P + r_value), 0, 1): weight of the noise prior in the fusion.
        group_size: (G,) int64, rows per group.
        group_index: (B,) int64, the group of each row.
    """

    sigma_s: torch.Tensor
    prior_weight: torch.Tensor
    kalman_gain: torch.Tensor
    group_size: torch.Tensor
    group_index: torch.Tensor

    @property
    def num_groups(self) -> int:
        return int(self.group_size.shape[0])


# ---------------------------------------------------------------------------------------------
# Group ids -> dense codes


def _codes_from_torch(group_ids: torch.Tensor) -> tuple[np.ndarray | torch.Tensor, int]:
    if group_ids.device.type == "cpu":
        # pandas' hash-based factorize beats torch.unique's sort on CPU.
        codes, uniques = pd.factorize(group_ids.numpy(), use_na_sentinel=False)
        return codes, len(uniques)
    # On an accelerator stay there; torch.unique numbers groups in sorted order, which is fine.
    uniques, codes = torch.unique(group_ids, return_inverse=True)
    return codes, int(uniques.shape[0])


def _codes_from_sequence(group_ids: Any) -> tuple[np.ndarray, int]:
    ids = group_ids if isinstance(group_ids, np.ndarray) else _object_array(group_ids)
    # Hash-based, O(B): numbers groups in order of first appearance.
    codes, uniques = pd.factorize(ids, use_na_sentinel=False)
    return codes, len(uniques)


def _object_array(values: Any) -> np.ndarray:
    # np.asarray would turn a list of tuples into a 2-D array; keep one hashable per row.
    values = list(values)
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def group_codes(group_ids: Any, num_rows: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Dense group codes for per-row group ids: (B,) int64 on ``device`` in 0..G-1, and G.

    ``group_ids`` is any per-row hashable: a numpy array (verl passes an object array of uid
    strings), a list/tuple, or an int tensor. Rows with equal ids share a code.
    """
    if isinstance(group_ids, torch.Tensor):
        if group_ids.dim() != 1:
            raise ValueError(f"group_ids must be 1-D (one id per row), got shape {tuple(group_ids.shape)}")
        codes, num_groups = _codes_from_torch(group_ids)
    else:
        if isinstance(group_ids, np.ndarray) and group_ids.ndim != 1:
            raise ValueError(f"group_ids must be 1-D (one id per row), got shape {group_ids.shape}")
        codes, num_groups = _codes_from_sequence(group_ids)
    if len(codes) != num_rows:
        raise ValueError(f"group_ids has {len(codes)} entries but scores has {num_rows} rows: pass one id per row")
    return torch.as_tensor(codes, dtype=torch.long).to(device, non_blocking=True), num_groups


# ---------------------------------------------------------------------------------------------
# The math


def _compute_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps near-constant groups (std ~ eps) exact enough; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _segment_sum(values: torch.Tensor, group_index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum of ``values`` (B,) per group: (G,)."""
    return values.new_zeros(num_groups).index_add_(0, group_index, values)


def _group_normalize(
    values: torch.Tensor,
    group_index: torch.Tensor,
    group_size: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """gn(x) = (x - mean) / (std_unbiased + eps) within each group.

    Args:
        values: (B,) one quantity per row.
        group_index: (B,) group of each row.
        group_size: (G,) rows per group, floating.

    Returns the normalised values (B,) and the per-group unbiased std (G,). A group of one row
    has std 0 (torch.std would give NaN) and normalises to 0.
    """
    num_groups = group_size.shape[0]
    mean = _segment_sum(values, group_index, num_groups) / group_size
    # index_select, not mean[group_index]: the advanced-indexing kernel goes multi-threaded at a
    # few thousand rows and stalls on a busy CPU; index_select stays cheap.
    centered = values - mean.index_select(0, group_index)
    # Two-pass variance (sum of squared deviations): no cancellation for large offsets.
    sum_sq = _segment_sum(centered * centered, group_index, num_groups)
    std = (sum_sq / (group_size - 1).clamp(min=1)).sqrt()
    return centered / (std.index_select(0, group_index) + eps), std


def _check_settings(p_alpha: float, r_value: float, eps: float) -> None:
    if not (math.isfinite(p_alpha) and p_alpha > 0):
        raise ValueError(f"p_alpha must be a finite number > 0 (reference 0.01), got {p_alpha}")
    if not (math.isfinite(r_value) and r_value >= 0):
        raise ValueError(f"r_value must be a finite number >= 0 (reference 0.1), got {r_value}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (reference 1e-4), got {eps}")


def _as_row_vector(name: str, values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be numbers, one per row ({error})") from error
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor with one value per row, got shape {tuple(tensor.shape)}")
    return tensor


def bayesian_advantage(
    scores: torch.Tensor,
    noise_extents: torch.Tensor,
    group_ids: Any,
    *,
    p_alpha: float = DEFAULT_P_ALPHA,
    r_value: float = DEFAULT_R_VALUE,
    eps: float = DEFAULT_EPS,
) -> tuple[torch.Tensor, BayesianGroupStats]:
    """NoisyGRPO's advantage: Kalman fusion of the group-normalised reward and noise prior.

    Per group (rows sharing a group id), with gn(x) = (x - mean) / (std_unbiased + eps):
    S = gn(scores), sigma_s = std(scores), N = gn(1 - noise_extents),
    P = p_alpha / (sigma_s^2 + p_alpha), K = clamp(P / (P + r_value), 0, 1),
    A = gn(S + K * (N - S)).

    Args:
        scores: (B,) outcome reward r_sem of each rollout.
        noise_extents: (B,) noise level n of the image each rollout saw, in [0, 1].
        group_ids: (B,) any hashable per row (uid strings, ints); rows with equal ids form a group.
        p_alpha: prior strength; the prior weight P falls as the reward variance grows past it.
        r_value: observation noise R; K <= 1 / (1 + R).
        eps: added to every group std before dividing.

    Returns:
        advantages: (B,) on the device and (floating) dtype of ``scores``; mean 0 in each group of
        two or more rows, 0 for a group of one row, always finite.
        stats: per-group sigma_s, prior_weight, kalman_gain, group_size and the row->group index.
    """
    scores = _as_row_vector("scores", scores)
    noise_extents = _as_row_vector("noise_extents", noise_extents)
    if noise_extents.shape[0] != scores.shape[0]:
        raise ValueError(
            f"noise_extents has {noise_extents.shape[0]} rows but scores has {scores.shape[0]}: "
            "pass one noise extent per rollout, in the same row order"
        )
    _check_settings(p_alpha, r_value, eps)

    device = scores.device
    out_dtype = scores.dtype if scores.is_floating_point() else torch.float32
    work_dtype = _compute_dtype(device)
    rewards = scores.to(work_dtype)
    extents = noise_extents.to(device=device, dtype=work_dtype)
    group_index, num_groups = group_codes(group_ids, scores.shape[0], device)
    group_size = torch.bincount(group_index, minlength=num_groups)
    group_size_f = group_size.to(work_dtype)

    observation, sigma_s = _group_normalize(rewards, group_index, group_size_f, eps)
    prior, prior_std = _group_normalize(1.0 - extents, group_index, group_size_f, eps)
    # A NaN/inf input makes its group's std NaN/inf: checking the (G,) stds is cheaper than the (B,) rows.
    if not bool(torch.isfinite(sigma_s + prior_std).all()):
        raise ValueError(
            "scores and noise_extents must be finite numbers (found NaN, inf or None): check the reward "
            "function's score and each row's noise_extent"
        )
    prior_weight = p_alpha / (sigma_s * sigma_s + p_alpha)
    kalman_gain = (prior_weight / (prior_weight + r_value)).clamp(0.0, 1.0)
    fused = observation + kalman_gain.index_select(0, group_index) * (prior - observation)
    advantages, _ = _group_normalize(fused, group_index, group_size_f, eps)

    stats = BayesianGroupStats(
        sigma_s=sigma_s.to(out_dtype),
        prior_weight=prior_weight.to(out_dtype),
        kalman_gain=kalman_gain.to(out_dtype),
        group_size=group_size,
        group_index=group_index,
    )
    return advantages.to(out_dtype), stats


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
    level_sum = _segment_sum(rewards, level_index, len(level_names))
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

    ``noise_extents`` is (B,), in the row order of the batch verl passes to the estimator.
    Settings left None fall back to the ``algorithm`` config, then to the reference defaults.
    The estimator fills ``stats`` and ``metrics`` after it runs.
    """

    noise_extents: torch.Tensor
    p_alpha: float | None = None
    r_value: float | None = None
    eps: float | None = None
    stats: BayesianGroupStats | None = None
    metrics: dict[str, float] = field(default_factory=dict)


_ACTIVE_INPUTS: contextvars.ContextVar[NoisyGRPOInputs | None] = contextvars.ContextVar(
    "noisygrpo_inputs", default=None
)


@contextlib.contextmanager
def noisygrpo_inputs(
    noise_extents: Any,
    *,
    p_alpha: float | None = None,
    r_value: float | None = None,
    eps: float | None = None,
) -> Iterator[NoisyGRPOInputs]:
    """Make per-row noise extents (B,) available to the ``"noisygrpo"`` estimator inside the block.

    Usage (in the trainer)::

        with noisygrpo_inputs(noise_extents) as inputs:
            data = compute_advantage(data, adv_estimator="noisygrpo", config=config.algorithm)
        metrics.update(inputs.metrics)
    """
    inputs = NoisyGRPOInputs(
        noise_extents=_as_row_vector("noise_extents", noise_extents),
        p_alpha=p_alpha,
        r_value=r_value,
        eps=eps,
    )
    token = _ACTIVE_INPUTS.set(inputs)
    try:
        yield inputs
    finally:
        _ACTIVE_INPUTS.reset(token)


def active_noisygrpo_inputs() -> NoisyGRPOInputs | None:
    """The inputs of the innermost open ``noisygrpo_inputs`` block, or None."""
    return _ACTIVE_INPUTS.get()


_SETTING_DEFAULTS = {"p_alpha": DEFAULT_P_ALPHA, "r_value": DEFAULT_R_VALUE, "eps": DEFAULT_EPS}


def _resolve_setting(name: str, explicit: float | None, inputs: NoisyGRPOInputs | None, config: Any) -> float:
    """Explicit kwarg, then the open context, then ``config.get(name)``, then the reference default."""
    candidates = [explicit, getattr(inputs, name, None)]
    if config is not None and (isinstance(config, Mapping) or hasattr(config, "get")):
        candidates.append(config.get(name, None))
    for value in candidates:
        if value is not None:
            return float(value)
    return _SETTING_DEFAULTS[name]


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
        config: verl's ``algorithm`` config (DictConfig or AlgoConfig); read for ``p_alpha``,
            ``r_value``, ``eps`` when present.
        noise_extents: (B,) noise extents; default: those of the open ``noisygrpo_inputs`` block.
        p_alpha, r_value, eps: override the context and config settings.
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
    noise_extents = _as_row_vector("noise_extents", noise_extents)
    num_rows = token_level_rewards.shape[0]
    if noise_extents.shape[0] != num_rows:
        raise ValueError(
            f"noise_extents has {noise_extents.shape[0]} rows but the batch has {num_rows}: the trainer must "
            "give one noise extent per row, in the batch's row order (after padding and balancing)"
        )

    settings = {
        name: _resolve_setting(name, explicit, inputs, config)
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
