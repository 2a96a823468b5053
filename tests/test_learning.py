"""The method learns: a short seeded NoisyGRPO run raises held-out accuracy, its sign-flipped control does not.

From the toy task's warm start (``recipe.noisygrpo.toy``; built in about two minutes, or reused
from ``$NOISYGRPO_TOY_CACHE``), two runs of ``STEPS`` NoisyGRPO steps on the CPU backend with the
toy reproduction's settings and seed, differing only in the reward: the real one, and the same
reward negated (``tests/fixtures/negated_reward.py``), which reverses the reward term of every
advantage. verl's own validation scores the held-out splits before and after training (greedy).
The test fails if the estimator, the reward, the rollouts' images or the weight updates stop
reaching the model: then the real run no longer beats its control.

Margins, from these two runs at seeds 0, 1 and 2 (docs/toy_reproduction.md, "The learning test"),
measured on 2026-12-03 after the CPU rollout got the actor's image positions: gains +0.016 /
+0.016 / +0.031 on the clean + noisy rows, the control's -0.023 / -0.023 / -0.031. The real run
must gain (MIN_GAIN: one answer of 128), the control must not, and the control must end at least
MIN_GAP below the real run (about half the smallest gap measured, 0.039). The learning rate is the
toy reproduction's, 3e-5: at its earlier 1e-4 both runs lost accuracy in 10 steps (gains -0.055 /
-0.047 / -0.031, controls -0.102 / -0.008 / -0.266).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recipe.noisygrpo.demo.run_demo import train_on_cpu
from recipe.noisygrpo.toy import reproduce
from recipe.noisygrpo.toy.reproduce import ReproductionSettings
from recipe.noisygrpo.toy.warm_start import warm_start

pytestmark = pytest.mark.e2e

STEPS = 10
SEED = 0
SETTINGS = ReproductionSettings(steps=STEPS, val_every=STEPS)
SCORED_SPLITS = ("clean", "noisy")
MIN_GAIN = 1 / 128  # accuracy in [0, 1], mean of the two 64-row splits: one answer of 128
MIN_GAP = 0.02
NEGATED_REWARD = Path(__file__).parent / "fixtures" / "negated_reward.py"


@pytest.fixture(scope="module")
def toy_setup(tmp_path_factory):
    cache = Path(os.environ.get("NOISYGRPO_TOY_CACHE") or tmp_path_factory.mktemp("toy_cache"))
    return warm_start(cache), reproduce.write_data(cache, SETTINGS)


def scored_accuracy(run_dir: Path) -> tuple[float, float]:
    """Mean held-out accuracy over SCORED_SPLITS before training and after the last step."""
    curves = reproduce.heldout_curves(run_dir / "metrics.jsonl")
    assert sorted(curves) == [0, STEPS], curves

    def mean(step: int) -> float:
        return sum(curves[step][split] for split in SCORED_SPLITS) / len(SCORED_SPLITS)

    return mean(0), mean(STEPS)


def run(tmp_path: Path, toy_setup, *extra: str) -> tuple[float, float]:
    model_dir, data = toy_setup
    overrides = reproduce.rl_overrides("noisygrpo", model_dir, data, tmp_path, SEED, SETTINGS, SCORED_SPLITS)
    overrides += ["trainer.save_freq=-1", *extra]  # no checkpoint: the test reads verl's validation
    result = train_on_cpu(tmp_path, overrides, timeout_s=900)
    assert result.returncode == 0, result.log_path.read_text(errors="replace")[-6000:]
    return scored_accuracy(tmp_path)


def test_noisygrpo_raises_heldout_accuracy_and_its_negated_reward_control_does_not(tmp_path, toy_setup):
    before, after = run(tmp_path / "noisygrpo", toy_setup)
    control_before, control_after = run(
        tmp_path / "negated",
        toy_setup,
        f"reward.custom_reward_function.path={NEGATED_REWARD}",
        "reward.custom_reward_function.name=negated_score",
    )
    gain, control_gain = after - before, control_after - control_before
    print(
        f"held-out clean+noisy: NoisyGRPO {before:.3f} -> {after:.3f}, negated {control_before:.3f} -> {control_after:.3f}"
    )
    assert control_before == pytest.approx(before)  # same warm start, greedy validation
    assert gain >= MIN_GAIN, f"NoisyGRPO gained {gain:+.3f} in {STEPS} steps (needs >= {MIN_GAIN})"
    assert control_gain <= 0, f"the negated-reward control gained {control_gain:+.3f}"
    assert gain - control_gain >= MIN_GAP, f"gain {gain:+.3f} vs negated-reward control {control_gain:+.3f}"
