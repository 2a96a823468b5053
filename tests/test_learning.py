"""The method learns: a short seeded NoisyGRPO run raises held-out accuracy, its sign-flipped control does not.

From the toy task's warm start (``recipe.noisygrpo.toy``; built in about two minutes, or reused
from ``$NOISYGRPO_TOY_CACHE``), two runs of ``STEPS`` NoisyGRPO steps on the CPU backend with the
toy reproduction's settings and seed, differing only in the reward: the real one, and the same
reward negated (``tests/fixtures/negated_reward.py``), which reverses the reward term of every
advantage. verl's own validation scores the held-out splits before and after training (greedy).
The test fails if the estimator, the reward, the rollouts' images or the weight updates stop
reaching the model: then the real run no longer beats its control.

Margins, from these two runs at seeds 0, 1 and 2 (docs/toy_reproduction.md, "The learning test"):
gains +0.117 / +0.062 / +0.039 on the clean + noisy rows, the control's -0.125 / -0.031 / -0.211.
The real run must gain MIN_GAIN or more (below every seed), the control must not gain, and the
control must end at least MIN_GAP below the real run (about half the smallest gap measured, 0.094).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recipe.noisygrpo.toy import reproduce
from recipe.noisygrpo.toy.reproduce import ReproductionSettings
from recipe.noisygrpo.toy.warm_start import warm_start

pytestmark = pytest.mark.e2e

STEPS = 10
SEED = 0
SETTINGS = ReproductionSettings(steps=STEPS, val_every=STEPS)
SCORED_SPLITS = ("clean", "noisy")
MIN_GAIN = 0.03  # accuracy in [0, 1], mean of the two 64-row splits: about 4 of 128 answers
MIN_GAP = 0.05
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
    from verl_cpu.launch import run_on_cpu
    from verl_cpu.overrides import cpu_overrides

    model_dir, data = toy_setup
    overrides = reproduce.rl_overrides("noisygrpo", model_dir, data, tmp_path, SEED, SETTINGS, SCORED_SPLITS)
    overrides += ["trainer.save_freq=-1", *extra]  # no checkpoint: the test reads verl's validation
    result = run_on_cpu(
        "recipe.noisygrpo.main_noisygrpo",
        [*cpu_overrides(), *overrides],
        workdir=tmp_path,
        log_path=tmp_path / "train.log",
        extra_env={"VERL_FILE_LOGGER_PATH": str(tmp_path / "metrics.jsonl")},
        timeout_s=900,
    )
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
