"""Real NoisyGRPO training on the CPU backend: 2 steps of NoisyGRPO and 1 of vanilla GRPO
through the same path as the README's demo (verl's v1 sync trainer, TransferQueue, FSDP2
actor, agent loop, reward loop, our estimator). Minutes on 2 cores; marked ``e2e``.

The NoisyGRPO run uses the paper scripts' fidelity settings (frozen vision tower, linear LR
decay, the reference's noise conversion); the GRPO run leaves the vision tower trainable."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipe.noisygrpo.demo.run_demo import DemoSettings, demo_overrides, read_step_metrics, train_on_cpu
from recipe.noisygrpo.eval.evaluate_checkpoint import merge_fsdp_checkpoint
from recipe.noisygrpo.metrics_log import read_advantage_rows
from verl_ext.advantage import bayesian_advantage

LEVELS = (0.0, 0.3, 0.6, 0.9)
pytestmark = pytest.mark.e2e


def train(workdir: Path, model_dir: Path, data_files: dict, settings: DemoSettings, *extra: str):
    workdir.mkdir(parents=True, exist_ok=True)
    result = train_on_cpu(workdir, [*demo_overrides(model_dir, data_files, workdir, settings), *extra], timeout_s=1200)
    log = result.log_path.read_text(errors="replace")
    assert result.returncode == 0, log[-8000:]
    assert result.leftovers == [], f"Ray processes outlived the run: {result.leftovers}"
    return read_step_metrics(workdir / "metrics.jsonl"), workdir / "advantages"


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    from data_prep.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), num_train=16, num_val=4, seed=0)


FIDELITY_OVERRIDES = (
    "actor_rollout_ref.actor.freeze_vision_tower=true",
    "actor_rollout_ref.actor.optim.lr_scheduler_type=linear",
    "noisygrpo.noise.conversion=reference",
)


@pytest.fixture(scope="module")
def noisygrpo_run(tmp_path_factory, tiny_qwen25vl_dir, data_files):
    workdir = tmp_path_factory.mktemp("noisygrpo")
    steps, advantage_dir = train(
        workdir, tiny_qwen25vl_dir, data_files, DemoSettings(steps=2), "trainer.save_freq=2", *FIDELITY_OVERRIDES
    )
    return workdir, steps, advantage_dir


def _canonical(name: str) -> str:
    """A weight name without the wrappers that differ between checkpoint layouts ("model.", "language_model.")."""
    return ".".join(part for part in name.split(".") if part not in ("model", "language_model"))


def changed_weights(actor_checkpoint: Path, model_dir: Path, merged: Path) -> tuple[list[str], list[str]]:
    """(names of the tensors that changed, names of all tensors), by two readings of the checkpoint.

    verl's model merger writes bf16 whatever the training dtype, so the merged model is compared with
    the initial weights rounded to bf16; the FSDP shard itself (fp32 on the CPU backend) is compared
    with the initial fp32 weights. A tensor counts as changed when either reading differs.
    """
    merge_fsdp_checkpoint(actor_checkpoint, merged)
    before = load_file(model_dir / "model.safetensors")
    after = {}
    for shard in merged.glob("*.safetensors"):
        after.update(load_file(shard))
    common = sorted(set(before) & set(after))
    assert len(common) > 0.9 * len(before), "merged checkpoint does not hold the model's tensors"
    changed = {name for name in common if not torch.equal(before[name].to(after[name].dtype), after[name])}
    shard = torch.load(actor_checkpoint / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    trained = {_canonical(name): tensor.full_tensor() for name, tensor in shard.items()}
    initial = {_canonical(name): name for name in before}
    assert set(initial) <= set(trained), sorted(set(initial) - set(trained))[:5]
    assert all(trained[key].dtype == torch.float32 for key in initial)
    changed |= {name for key, name in initial.items() if not torch.equal(before[name], trained[key])}
    return sorted(changed), common


def test_noisygrpo_steps_log_our_metrics_and_finite_losses(noisygrpo_run):
    _, steps, _ = noisygrpo_run
    assert [step["step"] for step in steps] == [1, 2]
    for step in steps:
        for key in (
            "noisygrpo/kalman_gain_mean",
            "noisygrpo/prior_weight_mean",
            "noisygrpo/sigma_s_mean",
            "noisygrpo/zero_variance_group_frac",
            "noisygrpo/reward_std",
            "actor/pg_loss",
            "actor/grad_norm",
        ):
            assert key in step, f"{key} missing at step {step['step']}"
            assert math.isfinite(step[key]), (key, step[key])
        assert step["actor/grad_norm"] > 0
        assert 0.0 <= step["noisygrpo/kalman_gain_mean"] <= 1 / 1.1 + 1e-6
        assert {f"noisygrpo/reward@noise_{level:.2f}" for level in LEVELS} <= set(step)


def test_logged_advantages_are_the_bayesian_estimate_of_the_logged_rewards(noisygrpo_run):
    _, steps, advantage_dir = noisygrpo_run
    records = read_advantage_rows(advantage_dir)
    by_step = defaultdict(list)
    for record in records:
        by_step[record["step"]].append(record)
    assert sorted(by_step) == [1, 2]
    for step, rows in by_step.items():
        groups = defaultdict(list)
        for row in rows:
            groups[row["uid"]].append(row["noise_extent"])
        # every prompt's group saw each level once (fixed sampling), whatever the row order
        assert all(sorted(levels) == pytest.approx(sorted(LEVELS)) for levels in groups.values()), groups
        expected, _ = bayesian_advantage(
            torch.tensor([r["score"] for r in rows], dtype=torch.float64),
            torch.tensor([r["noise_extent"] for r in rows], dtype=torch.float64),
            [r["uid"] for r in rows],
        )
        logged = torch.tensor([r["advantage"] for r in rows], dtype=torch.float64)
        torch.testing.assert_close(logged, expected, atol=1e-4, rtol=0)
        # the logged reward-by-level metric is the mean of the logged rewards at that level
        metrics = next(s for s in steps if s["step"] == step)
        for level in LEVELS:
            scores = [r["score"] for r in rows if abs(r["noise_extent"] - level) < 1e-9]
            assert metrics[f"noisygrpo/reward@noise_{level:.2f}"] == pytest.approx(sum(scores) / len(scores))


def test_frozen_vision_tower_is_bit_identical_and_the_language_model_trained(
    noisygrpo_run, tiny_qwen25vl_dir, tmp_path
):
    workdir, _, _ = noisygrpo_run
    actor = workdir / "checkpoints" / "global_step_2" / "actor"
    assert actor.is_dir(), sorted(p.name for p in (workdir / "checkpoints").iterdir())
    changed, names = changed_weights(actor, tiny_qwen25vl_dir, tmp_path / "merged")
    visual = [name for name in names if "visual" in name]
    assert visual, "the tiny model has a vision tower"
    assert not [name for name in changed if "visual" in name], "a frozen visual.* weight changed"
    assert any("visual" not in name for name in changed), "no language-model weight changed after 2 steps"


def test_linear_schedule_decays_the_logged_learning_rate_to_zero(noisygrpo_run):
    _, steps, _ = noisygrpo_run
    # verl logs the rate after each step's scheduler update: lr * (2 - k) / 2 after update k of 2
    logged = [next(value for key, value in step.items() if key.endswith("/lr")) for step in steps]
    assert logged == pytest.approx([DemoSettings().learning_rate / 2, 0.0])


def test_vanilla_grpo_runs_through_the_same_path_and_resumes_keeping_every_log(tmp_path, tiny_qwen25vl_dir, data_files):
    steps, advantage_dir = train(
        tmp_path / "grpo",
        tiny_qwen25vl_dir,
        data_files,
        DemoSettings(steps=1),
        "algorithm.adv_estimator=grpo",
        "noisygrpo.noise.levels=[0.0,0.0,0.0,0.0]",
        # A random-weight model never answers right, so every exact-match score would be 0 and
        # every GRPO advantage 0; this reward gives the rollouts of a group different scores.
        "reward.custom_reward_function.path=pkg://verl_cpu.debug_reward",
        "trainer.save_freq=1",
        "actor_rollout_ref.actor.freeze_vision_tower=false",
    )
    # The vision tower is not frozen here: visual and language-model weights both change.
    changed, _ = changed_weights(
        tmp_path / "grpo" / "checkpoints" / "global_step_1" / "actor", tiny_qwen25vl_dir, tmp_path / "merged"
    )
    assert any("visual" in name for name in changed) and any("visual" not in name for name in changed)
    assert [step["step"] for step in steps] == [1]
    (step,) = steps
    assert math.isfinite(step["actor/pg_loss"])
    assert math.isfinite(step["actor/grad_norm"]) and step["actor/grad_norm"] > 0
    assert not any(key.startswith("noisygrpo/kalman") for key in step)
    # Clean images for rollout and actor: the HF rollout's log-probs match the FSDP actor's.
    assert step["training/rollout_probs_diff_max"] < 1e-3
    records = read_advantage_rows(advantage_dir)
    assert records and all(r["noise_extent"] == 0.0 for r in records)
    # verl's GRPO advantage: (score - group mean) / (unbiased group std + 1e-6)
    groups = defaultdict(list)
    for record in records:
        groups[record["uid"]].append(record)
    for rows in groups.values():
        scores = torch.tensor([r["score"] for r in rows], dtype=torch.float64)
        expected = (scores - scores.mean()) / (scores.std() + 1e-6)
        logged = torch.tensor([r["advantage"] for r in rows], dtype=torch.float64)
        torch.testing.assert_close(logged, expected, atol=1e-4, rtol=0)

    # Resume: a second launch with a 2-step budget continues from the step-1 checkpoint. verl's file
    # logger truncates its file, so this launch writes metrics.launch2.jsonl; every reader joins both.
    resumed_steps, _ = train(
        tmp_path / "grpo",
        tiny_qwen25vl_dir,
        data_files,
        DemoSettings(steps=2),
        "algorithm.adv_estimator=grpo",
        "noisygrpo.noise.levels=[0.0,0.0,0.0,0.0]",
        "reward.custom_reward_function.path=pkg://verl_cpu.debug_reward",
        "trainer.save_freq=1",
        "actor_rollout_ref.actor.freeze_vision_tower=false",
    )
    second_launch = (tmp_path / "grpo" / "metrics.launch2.jsonl").read_text().splitlines()
    trained = [json.loads(line)["step"] for line in second_launch if "timing_s/step" in json.loads(line)["data"]]
    assert trained == [2]  # resumed from the checkpoint, not retrained
    assert [step["step"] for step in resumed_steps] == [1, 2]
    assert resumed_steps[0]["actor/pg_loss"] == step["actor/pg_loss"]  # the first launch's step 1, kept
    train_log = (tmp_path / "grpo" / "train.log").read_text(errors="replace")
    assert train_log.count("[run_on_cpu] launch at ") == 2
    assert "holds an earlier launch's metrics" in train_log
    # The advantage log too: one file per launch, read back as one log with each step once.
    steps_logged = [row["step"] for row in read_advantage_rows(advantage_dir)]
    assert sorted(set(steps_logged)) == [1, 2] and steps_logged.count(1) == steps_logged.count(2)
    second_launch_rows = (advantage_dir / "advantages.launch2.jsonl").read_text().splitlines()
    assert {json.loads(line)["step"] for line in second_launch_rows} == {2}
