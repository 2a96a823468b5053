"""Tests of the Bayesian (Kalman-style) advantage, docs/algorithm.md section 4 (verl_ext/kalman.py, the math;
verl_ext/advantage.py, the registered estimator and its metrics)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage

from verl_ext.advantage import advantage_metrics, compute_noisygrpo_advantage, noisygrpo_inputs
from verl_ext.config import EstimatorConfig
from verl_ext.kalman import BayesianGroupStats, bayesian_advantage

LEVELS = [0.0, 0.3, 0.6, 0.9]
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# Independent reference: a plain per-group loop of the paper's formula with torch.std (unbiased)


def reference_advantage(scores, extents, group_ids, p_alpha=0.01, r_value=0.1, eps=1e-4):
    """Per-row advantage and per-group K by looping over groups (float64)."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    extents = torch.as_tensor(extents, dtype=torch.float64)
    advantages = torch.zeros_like(scores)
    gains = {}

    def gn(x):
        return (x - x.mean()) / (x.std() + eps)

    for group in dict.fromkeys(group_ids):
        rows = [i for i, g in enumerate(group_ids) if g == group]
        s, n = scores[rows], extents[rows]
        if len(rows) == 1:  # torch.std of one value is NaN; the spec sets such rows to 0
            gains[group] = 1.0 / (1.0 + r_value)
            continue
        sigma_s = s.std()
        prior_weight = p_alpha / (sigma_s**2 + p_alpha)
        gain = torch.clamp(prior_weight / (prior_weight + r_value), 0, 1)
        fused = gn(s) + gain * (gn(1 - n) - gn(s))
        advantages[rows] = gn(fused)
        gains[group] = float(gain)
    return advantages, gains


# ---------------------------------------------------------------------------------------------
# Random batches: groups of 1..8 rows, shuffled, with ties and constant groups


@st.composite
def batches(draw, max_groups=6):
    sizes = draw(st.lists(st.integers(1, 8), min_size=1, max_size=max_groups))
    scores, extents, ids = [], [], []
    for group, size in enumerate(sizes):
        kind = draw(st.sampled_from(["constant", "ties", "float"]))
        if kind == "constant":
            scores += [draw(st.sampled_from([0.0, 1.0, 1.7, -2.25]))] * size
        elif kind == "ties":
            scores += draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=size, max_size=size))
        else:  # 3 decimals: distinct scores differ by >= 1e-3, so no ill-conditioned near-ties
            values = st.floats(-5, 5, allow_nan=False).map(lambda x: round(x, 3))
            scores += draw(st.lists(values, min_size=size, max_size=size))
        extent_values = st.sampled_from(LEVELS) | st.floats(0, 1, allow_nan=False)
        extents += draw(st.lists(extent_values, min_size=size, max_size=size))
        ids += [f"uid-{group}"] * size
    order = draw(st.permutations(range(len(ids))))
    return (
        torch.tensor([scores[i] for i in order], dtype=torch.float64),
        torch.tensor([extents[i] for i in order], dtype=torch.float64),
        np.array([ids[i] for i in order], dtype=object),
    )


def group_rows(group_ids):
    groups = {}
    for row, group in enumerate(group_ids):
        groups.setdefault(group, []).append(row)
    return groups


settings_strategy = st.fixed_dictionaries(
    {"p_alpha": st.floats(1e-3, 1.0), "r_value": st.floats(0.0, 2.0), "eps": st.sampled_from([1e-4, 1e-3])}
)


@HYPOTHESIS
@given(batch=batches(), config=settings_strategy)
def test_matches_per_group_loop(batch, config):
    scores, extents, ids = batch
    advantages, stats = bayesian_advantage(scores, extents, ids, **config)
    expected, gains = reference_advantage(scores, extents, list(ids), **config)
    torch.testing.assert_close(advantages, expected, atol=1e-6, rtol=1e-6)
    for group, rows in group_rows(ids).items():
        code = int(stats.group_index[rows[0]])
        assert (stats.group_index[rows] == code).all()
        assert int(stats.group_size[code]) == len(rows)
        assert float(stats.kalman_gain[code]) == pytest.approx(gains[group], abs=1e-9)


@HYPOTHESIS
@given(batch=batches(), config=settings_strategy)
def test_group_mean_zero_finite_and_singletons_zero(batch, config):
    scores, extents, ids = batch
    advantages, stats = bayesian_advantage(scores, extents, ids, **config)
    assert torch.isfinite(advantages).all()
    for field in ("sigma_s", "prior_weight", "kalman_gain"):
        assert torch.isfinite(getattr(stats, field)).all(), field
    for rows in group_rows(ids).values():
        if len(rows) == 1:
            assert advantages[rows[0]] == 0
            assert stats.sigma_s[stats.group_index[rows[0]]] == 0
        else:
            assert abs(float(advantages[rows].mean())) < 1e-9


@HYPOTHESIS
@given(batch=batches(), shift=st.integers(-400, 400).map(lambda k: k / 8))
def test_invariant_to_constant_reward_shift(batch, shift):
    scores, extents, ids = batch
    base, base_stats = bayesian_advantage(scores, extents, ids)
    shifted, shifted_stats = bayesian_advantage(scores + shift, extents, ids)
    torch.testing.assert_close(shifted, base, atol=1e-6, rtol=0)
    torch.testing.assert_close(shifted_stats.kalman_gain, base_stats.kalman_gain, atol=1e-9, rtol=0)


@HYPOTHESIS
@given(batch=batches(), config=settings_strategy)
def test_kalman_gain_bounds_and_maximum_for_equal_rewards(batch, config):
    scores, extents, ids = batch
    _, stats = bayesian_advantage(scores, extents, ids, **config)
    ceiling = 1.0 / (1.0 + config["r_value"])
    assert (stats.kalman_gain >= 0).all()
    assert (stats.kalman_gain <= ceiling + 1e-12).all()
    assert ((stats.prior_weight > 0) & (stats.prior_weight <= 1)).all()
    for rows in group_rows(ids).values():
        if len(set(scores[rows].tolist())) == 1:
            code = stats.group_index[rows[0]]
            assert float(stats.kalman_gain[code]) == pytest.approx(ceiling, rel=1e-12)
            assert float(stats.prior_weight[code]) == pytest.approx(1.0, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Facts about the reference formula


def reference_prior_zscale(prior, target_mean=0.55, target_variance=0.15):
    """The reference's scaling of the noise prior: population z-score, then mean/variance target."""
    prior = prior.to(torch.float32)
    return (prior - prior.mean()) / prior.std(unbiased=False) * math.sqrt(target_variance) + target_mean


@pytest.mark.parametrize("cot_reward_var", [0.11, 0.15, 1.0])
def test_reference_prior_zscaling_has_no_effect(cot_reward_var):
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.7, 0.7, 0.7, 0.7, 2.0, 1.0, 0.0, 1.5])
    extents = torch.tensor(LEVELS * 3)
    ids = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    # Feed the scaled prior through the extents (the estimator uses 1 - extent as the prior).
    scaled_extents = torch.cat(
        [1 - reference_prior_zscale(1 - extents[i : i + 4], 0.55, cot_reward_var) for i in (0, 4, 8)]
    )
    assert not torch.allclose(scaled_extents, extents)  # the scaling really changes the prior

    for eps in (1e-4, 1e-12):
        plain, _ = bayesian_advantage(scores.double(), extents.double(), ids, eps=eps)
        scaled, _ = bayesian_advantage(scores.double(), scaled_extents.double(), ids, eps=eps)
        # gn removes any affine map up to the eps term in its denominator (and float32 rounding).
        torch.testing.assert_close(scaled, plain, atol=10 * eps + 1e-5, rtol=0)


def test_constant_reward_group_ranks_rollouts_by_noise():
    extents = torch.tensor([0.6, 0.0, 0.9, 0.3])
    scores = torch.full((4,), 1.0)
    advantages, stats = bayesian_advantage(scores, extents, ["q"] * 4)
    assert float(stats.kalman_gain[0]) == pytest.approx(1 / 1.1)
    order_by_advantage = torch.argsort(advantages, descending=True)
    order_by_cleanliness = torch.argsort(extents)
    assert order_by_advantage.tolist() == order_by_cleanliness.tolist()
    assert abs(float(advantages.sum())) < 1e-5


def test_disagreeing_rewards_stay_close_to_grpo():
    scores = torch.tensor([0.0, 2.0, 0.0, 2.0], dtype=torch.float64)
    extents = torch.tensor(LEVELS, dtype=torch.float64)
    advantages, stats = bayesian_advantage(scores, extents, [7, 7, 7, 7])
    grpo = (scores - scores.mean()) / (scores.std() + 1e-4)
    assert float(stats.kalman_gain[0]) < 0.1
    assert torch.sign(advantages).tolist() == torch.sign(grpo).tolist()
    assert (advantages - grpo).abs().max() < 0.1
    # the prior still breaks ties among equal rewards in favour of the cleaner image
    assert advantages[1] > advantages[3] and advantages[0] > advantages[2]


def test_group_id_kinds_agree():
    scores = torch.tensor([1.0, 0.0, 2.0, 1.0, 1.0, 0.5])
    extents = torch.tensor([0.0, 0.3, 0.0, 0.6, 0.3, 0.9])
    strings = np.array(["b", "a", "b", "a", "b", "a"], dtype=object)
    expected, _ = bayesian_advantage(scores, extents, strings)
    for ids in (
        list(strings),
        [("b", 1), ("a", 2), ("b", 1), ("a", 2), ("b", 1), ("a", 2)],
        torch.tensor([5, 3, 5, 3, 5, 3]),
        np.array([5, 3, 5, 3, 5, 3]),
    ):
        advantages, stats = bayesian_advantage(scores, extents, ids)
        torch.testing.assert_close(advantages, expected)
        assert stats.group_size.tolist() in ([3, 3],)


def test_output_follows_scores_dtype_and_empty_batch():
    scores = torch.tensor([1.0, 0.0], dtype=torch.bfloat16)
    advantages, stats = bayesian_advantage(scores, torch.tensor([0.0, 0.5]), ["a", "a"])
    assert advantages.dtype == torch.bfloat16 and stats.kalman_gain.dtype == torch.bfloat16
    empty, empty_stats = bayesian_advantage(torch.zeros(0), torch.zeros(0), [])
    assert empty.shape == (0,) and empty_stats.num_groups == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_extents": torch.zeros(3)}, "noise_extents has 3 rows but scores has 4"),
        ({"group_ids": ["a"] * 3}, "group_ids has 3 entries but scores has 4"),
        ({"group_ids": np.zeros((2, 2))}, "group_ids must be 1-D"),
        ({"scores": torch.tensor([1.0, float("nan"), 0.0, 1.0])}, "must be finite"),
        ({"scores": torch.tensor([1.0, float("inf"), 0.0, 1.0])}, "must be finite"),
        ({"noise_extents": np.array([0.0, None, 0.6, 0.9], dtype=object)}, "must be finite"),
        ({"noise_extents": ["0.0", "clean", "0.6", "0.9"]}, "noise_extents must be numbers"),
        ({"p_alpha": 0.0}, "p_alpha=0.0 must be"),
        ({"r_value": -1.0}, "r_value=-1.0 must be"),
        ({"eps": 0.0}, "eps=0.0 must be"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, match):
    call = {"scores": torch.ones(4), "noise_extents": torch.zeros(4), "group_ids": ["a"] * 4} | kwargs
    scores, extents, ids = call.pop("scores"), call.pop("noise_extents"), call.pop("group_ids")
    with pytest.raises(ValueError, match=match):
        bayesian_advantage(scores, extents, ids, **call)


# ---------------------------------------------------------------------------------------------
# Logging


def hand_made_batch():
    # group "x": all correct (sigma_s 0); group "y": rewards disagree; "pad": a padding row (size 1)
    scores = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0, 2.0, 1.0, 1.0, 0.0])
    extents = torch.tensor(LEVELS + LEVELS + [0.0])
    ids = np.array(["x"] * 4 + ["y"] * 4 + ["pad"], dtype=object)
    return scores, extents, ids


def test_advantage_metrics_on_hand_made_batch():
    scores, extents, ids = hand_made_batch()
    advantages, stats = bayesian_advantage(scores, extents, ids)
    metrics = advantage_metrics(scores, extents, advantages, stats)

    level_keys = [f"noisygrpo/reward@noise_{level:.2f}" for level in LEVELS]
    expected_keys = {
        "noisygrpo/kalman_gain_mean",
        "noisygrpo/prior_weight_mean",
        "noisygrpo/sigma_s_mean",
        "noisygrpo/zero_variance_group_frac",
        "noisygrpo/reward_std",
        "noisygrpo/advantage_mean",
        "noisygrpo/advantage_std",
        "noisygrpo/advantage_min",
        "noisygrpo/advantage_max",
        *level_keys,
    }
    assert set(metrics) == expected_keys
    assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())

    # Padding rows (group of one) are left out; computed here independently from the formula.
    sigma_y = float(torch.std(scores[4:8]))
    prior_weight_y = 0.01 / (sigma_y**2 + 0.01)
    gain_y = prior_weight_y / (prior_weight_y + 0.1)
    assert metrics["noisygrpo/sigma_s_mean"] == pytest.approx(sigma_y / 2, rel=1e-6)
    assert metrics["noisygrpo/prior_weight_mean"] == pytest.approx((1 + prior_weight_y) / 2, rel=1e-6)
    assert metrics["noisygrpo/kalman_gain_mean"] == pytest.approx((1 / 1.1 + gain_y) / 2, rel=1e-6)
    assert metrics["noisygrpo/zero_variance_group_frac"] == 0.5
    assert metrics["noisygrpo/reward_std"] == pytest.approx(float(torch.std(scores[:8])), rel=1e-6)
    real = advantages[:8].double()
    assert metrics["noisygrpo/advantage_mean"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["noisygrpo/advantage_std"] == pytest.approx(float(real.std()), rel=1e-6)
    assert metrics["noisygrpo/advantage_min"] == pytest.approx(float(real.min()))
    assert metrics["noisygrpo/advantage_max"] == pytest.approx(float(real.max()))
    for key, level in zip(level_keys, LEVELS, strict=True):
        expected = float(scores[:8][extents[:8] == level].mean())
        assert metrics[key] == pytest.approx(expected), key


def test_advantage_metrics_buckets_many_noise_levels():
    generator = torch.Generator().manual_seed(0)
    num_rows = 40
    extents = torch.rand(num_rows, generator=generator)
    extents[::4] = 0.0  # uniform sampling keeps rollout 0 clean
    scores = torch.randint(0, 3, (num_rows,), generator=generator).float()
    ids = np.repeat(np.arange(num_rows // 4), 4)
    advantages, stats = bayesian_advantage(scores, extents, ids)
    metrics = advantage_metrics(scores, extents, advantages, stats)

    level_keys = sorted(key for key in metrics if key.startswith("noisygrpo/reward@noise_"))
    bins = (extents * 4).floor().clamp(max=3)
    occupied = sorted(set(bins.long().tolist()))
    assert level_keys == sorted(f"noisygrpo/reward@noise_{(b + 0.5) / 4:.2f}" for b in occupied)
    for b in occupied:
        key = f"noisygrpo/reward@noise_{(b + 0.5) / 4:.2f}"
        assert metrics[key] == pytest.approx(float(scores[bins == b].mean()))


# ---------------------------------------------------------------------------------------------
# verl estimator


def token_level_batch(num_prompts=3, response_length=6, seed=0):
    """Outcome rewards on the last response token of a ragged mask, 4 rollouts per prompt, shuffled."""
    generator = torch.Generator().manual_seed(seed)
    num_rows = 4 * num_prompts
    lengths = torch.randint(1, response_length + 1, (num_rows,), generator=generator)
    mask = (torch.arange(response_length) < lengths.unsqueeze(1)).long()
    scores = torch.randint(0, 3, (num_rows,), generator=generator).float()
    scores[:4] = 1.0  # one group where every rollout earns the same reward
    rewards = torch.zeros(num_rows, response_length)
    rewards[torch.arange(num_rows), lengths - 1] = scores
    extents = torch.tensor(LEVELS * num_prompts)
    uids = np.repeat(np.array([f"prompt-{i}" for i in range(num_prompts)], dtype=object), 4)
    order = torch.randperm(num_rows, generator=generator)
    return rewards[order], mask[order], extents[order], uids[order.numpy()], scores[order]


def test_registered_estimator_with_context():
    rewards, mask, extents, uids, scores = token_level_batch()
    estimator = get_adv_estimator_fn("noisygrpo")
    assert estimator is compute_noisygrpo_advantage
    with noisygrpo_inputs(extents) as inputs:
        advantages, returns = estimator(token_level_rewards=rewards, response_mask=mask, index=uids, config=None)
    expected, _ = bayesian_advantage(scores, extents, uids)
    torch.testing.assert_close(advantages, expected.unsqueeze(-1) * mask)
    assert advantages.dtype == rewards.dtype
    assert (advantages[mask == 0] == 0).all()
    assert torch.equal(returns, advantages)
    assert isinstance(inputs.stats, BayesianGroupStats) and inputs.stats.num_groups == 3
    assert inputs.metrics["noisygrpo/zero_variance_group_frac"] >= 1 / 3
    assert set(inputs.metrics) >= {"noisygrpo/kalman_gain_mean", "noisygrpo/reward@noise_0.90"}


def test_estimator_without_noise_extents_raises_clear_error():
    rewards, mask, _, uids, _ = token_level_batch()
    with pytest.raises(ValueError, match="noisygrpo") as error:
        get_adv_estimator_fn("noisygrpo")(token_level_rewards=rewards, response_mask=mask, index=uids)
    message = str(error.value)
    assert "recipe.noisygrpo.trainer.NoisyGRPOTrainer" in message
    assert "python -m recipe.noisygrpo.main_noisygrpo" in message
    assert "noise_extents=" in message


def test_estimator_length_mismatch_raises():
    rewards, mask, extents, uids, _ = token_level_batch()
    with noisygrpo_inputs(extents[:-1]), pytest.raises(ValueError, match="noise_extents has 11 rows but the batch"):
        compute_noisygrpo_advantage(rewards, mask, index=uids)
    with pytest.raises(ValueError, match="response_mask"):
        compute_noisygrpo_advantage(rewards, mask[:, :-1], index=uids, noise_extents=extents)


def test_estimator_settings_precedence():
    """kwarg > the trainer's noisygrpo.estimator > default, observed through K of the constant-reward group."""
    rewards, mask, extents, uids, scores = token_level_batch()
    constant_group = int(np.flatnonzero(uids == "prompt-0")[0])

    def gain_of_constant_group(inputs):
        return float(inputs.stats.kalman_gain[inputs.stats.group_index[constant_group]])

    cases = [
        ({}, None, 1 / 1.1),
        ({}, EstimatorConfig(r_value=0.25), 1 / 1.25),
        ({"r_value": 1.0}, EstimatorConfig(r_value=0.25), 1 / 2.0),
        ({}, EstimatorConfig(r_value=0.0), 1.0),  # R = 0: the prior alone, a legitimate ablation
    ]
    for kwargs, estimator, expected in cases:
        with noisygrpo_inputs(extents, estimator) as inputs:
            compute_noisygrpo_advantage(rewards, mask, index=uids, config=None, **kwargs)
        assert gain_of_constant_group(inputs) == pytest.approx(expected), (kwargs, estimator)


@pytest.mark.parametrize("config_kind", ["dictconfig", "algoconfig"])
def test_verl_compute_advantage_wiring(config_kind):
    rewards, mask, extents, uids, scores = token_level_batch(num_prompts=4, seed=1)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask}, non_tensors={"uid": uids}
    )
    if config_kind == "dictconfig":
        config = OmegaConf.create({"adv_estimator": "noisygrpo", "gamma": 1.0, "lam": 1.0})
    else:
        config = AlgoConfig(adv_estimator="noisygrpo")
    with noisygrpo_inputs(extents) as inputs:
        data = compute_advantage(data, adv_estimator="noisygrpo", num_repeat=4, config=config)
    expected, _ = bayesian_advantage(scores, extents, uids)
    torch.testing.assert_close(data.batch["advantages"], expected.unsqueeze(-1) * mask)
    torch.testing.assert_close(data.batch["returns"], data.batch["advantages"])
    assert inputs.metrics["noisygrpo/advantage_max"] > 0


@pytest.mark.gpu
def test_on_cuda_matches_cpu():
    rewards, mask, extents, uids, scores = token_level_batch(num_prompts=64, seed=2)
    device = torch.device("cuda")
    cpu_advantages, cpu_stats = bayesian_advantage(scores, extents, uids)
    cuda_advantages, cuda_stats = bayesian_advantage(scores.to(device), extents.to(device), uids)
    assert cuda_advantages.device.type == "cuda" and cuda_stats.kalman_gain.device.type == "cuda"
    torch.testing.assert_close(cuda_advantages.cpu(), cpu_advantages)
    # int group ids already on the device stay there (torch.unique numbering may differ from CPU)
    int_ids = torch.as_tensor(np.unique(uids, return_inverse=True)[1], device=device)
    on_device, _ = bayesian_advantage(scores.to(device), extents.to(device), int_ids)
    torch.testing.assert_close(on_device.cpu(), cpu_advantages)

    with noisygrpo_inputs(extents.to(device)) as inputs:
        advantages, _ = compute_noisygrpo_advantage(rewards.to(device), mask.to(device), index=uids)
    assert advantages.device.type == "cuda"
    torch.testing.assert_close(advantages.cpu(), cpu_advantages.unsqueeze(-1) * mask)
    assert inputs.metrics.keys() == advantage_metrics(scores, extents, cpu_advantages, cpu_stats).keys()
