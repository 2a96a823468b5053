"""NoisyGRPO's Bayesian (Kalman-style) advantage (docs/algorithm.md §4): tensors in, tensors out, no verl.

For each group of rollouts (the rows sharing a group id), with rewards r and noise levels n:

    gn(x)   = (x - mean(x)) / (std(x) + eps)      std with n - 1, as torch.std
    S       = gn(r)                               the observation
    sigma_s = std(r)
    N       = gn(1 - n)                           the prior: a cleaner image, a higher prior
    P       = p_alpha / (sigma_s^2 + p_alpha)
    K       = clamp(P / (P + r_value), 0, 1)      the Kalman gain
    A       = gn(S + K (N - S))                   one advantage per rollout

``kalman_fusion`` below is exactly that, vectorised over groups with segment sums;
``bayesian_advantage`` wraps it for any per-row group ids, checks its inputs and returns
per-group statistics for logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from verl_ext.config import EstimatorConfig


def kalman_fusion(
    scores: torch.Tensor,
    noise_extents: torch.Tensor,
    group_index: torch.Tensor,
    group_size: torch.Tensor,
    *,
    p_alpha: float,
    r_value: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scores, noise_extents (B,); group_index (B,) int64 in 0..G-1; group_size (G,) floating ->
    advantages (B,), and per group (G,) sigma_s, P, K and the prior's std (non-finite only for bad inputs)."""
    observation, sigma_s = group_normalize(scores, group_index, group_size, eps)
    prior, prior_std = group_normalize(1.0 - noise_extents, group_index, group_size, eps)
    prior_weight = p_alpha / (sigma_s * sigma_s + p_alpha)
    kalman_gain = (prior_weight / (prior_weight + r_value)).clamp(0.0, 1.0)
    fused = observation + kalman_gain.index_select(0, group_index) * (prior - observation)
    advantages, _ = group_normalize(fused, group_index, group_size, eps)
    return advantages, sigma_s, prior_weight, kalman_gain, prior_std


def _compute_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps near-constant groups (std ~ eps) exact enough; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def segment_sum(values: torch.Tensor, group_index: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Sum of ``values`` (B,) per group: (G,)."""
    return values.new_zeros(num_groups).index_add_(0, group_index, values)


def group_normalize(
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
    mean = segment_sum(values, group_index, num_groups) / group_size
    # index_select, not mean[group_index]: the advanced-indexing kernel goes multi-threaded at a
    # few thousand rows and stalls on a busy CPU; index_select stays cheap.
    centered = values - mean.index_select(0, group_index)
    # Two-pass variance (sum of squared deviations): no cancellation for large offsets.
    sum_sq = segment_sum(centered * centered, group_index, num_groups)
    std = (sum_sq / (group_size - 1).clamp(min=1)).sqrt()
    return centered / (std.index_select(0, group_index) + eps), std


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


def as_row_vector(name: str, values: Any) -> torch.Tensor:
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
    p_alpha: float = 0.01,
    r_value: float = 0.1,
    eps: float = 1e-4,
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
    scores = as_row_vector("scores", scores)
    noise_extents = as_row_vector("noise_extents", noise_extents)
    if noise_extents.shape[0] != scores.shape[0]:
        raise ValueError(
            f"noise_extents has {noise_extents.shape[0]} rows but scores has {scores.shape[0]}: "
            "pass one noise extent per rollout, in the same row order"
        )
    EstimatorConfig(p_alpha=p_alpha, r_value=r_value, eps=eps)  # the settings' rules, stated there

    device = scores.device
    out_dtype = scores.dtype if scores.is_floating_point() else torch.float32
    work_dtype = _compute_dtype(device)
    rewards = scores.to(work_dtype)
    extents = noise_extents.to(device=device, dtype=work_dtype)
    group_index, num_groups = group_codes(group_ids, scores.shape[0], device)
    group_size = torch.bincount(group_index, minlength=num_groups)
    group_size_f = group_size.to(work_dtype)

    advantages, sigma_s, prior_weight, kalman_gain, prior_std = kalman_fusion(
        rewards, extents, group_index, group_size_f, p_alpha=p_alpha, r_value=r_value, eps=eps
    )
    # A NaN/inf input makes its group's std NaN/inf: checking the (G,) stds is cheaper than the (B,) rows.
    if not bool(torch.isfinite(sigma_s + prior_std).all()):
        raise ValueError(
            "scores and noise_extents must be finite numbers (found NaN, inf or None): check the reward "
            "function's score and each row's noise_extent"
        )

    stats = BayesianGroupStats(
        sigma_s=sigma_s.to(out_dtype),
        prior_weight=prior_weight.to(out_dtype),
        kalman_gain=kalman_gain.to(out_dtype),
        group_size=group_size,
        group_index=group_index,
    )
    return advantages.to(out_dtype), stats
