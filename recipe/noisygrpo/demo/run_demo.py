"""The README's main job on a CPU: a few real NoisyGRPO steps through verl's trainer.

    python -m recipe.noisygrpo.demo.run_demo [--workdir DIR] [--steps N] [hydra overrides ...]

Builds (once) a tiny random-weight Qwen2.5-VL and the synthetic shapes task, then runs
``python -m recipe.noisygrpo.main_noisygrpo`` with the CPU debug backend (``verl_cpu``:
cpu platform, HF-generate rollout) — the same trainer, agent loop, reward loop and estimator as
a GPU run — and prints a per-step summary from verl's ``file`` log: reward by noise level,
Kalman gain, sigma_s, advantage statistics and timings. With a GPU present it points to the
real run scripts instead (``--force-cpu`` runs the demo anyway). Ctrl-C stops the whole run (every
process it started), says which checkpoint the next launch resumes from, and exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipe.noisygrpo.checkpoints import resume_hint
from recipe.noisygrpo.demo.tiny_model import build_tiny_qwen25vl

DEFAULT_WORKDIR = Path("demo_runs/latest")
ENTRY_MODULE = "recipe.noisygrpo.main_noisygrpo"
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo run: small enough for a 2-core laptop, large enough to show the method."""

    steps: int = 3
    prompts_per_step: int = 2
    num_train: int = 64
    num_val: int = 8
    max_prompt_length: int = 320
    max_response_length: int = 24
    learning_rate: float = 1e-4
    seed: int = 0


def demo_overrides(model_dir: Path, data_files: dict[str, Path], workdir: Path, settings: DemoSettings) -> list[str]:
    """Hydra overrides of the demo (on top of the CPU backend's), paper settings where they fit a CPU."""
    batch = settings.prompts_per_step
    return [
        f"actor_rollout_ref.model.path={model_dir}",
        f"data.train_files={data_files['train']}",
        f"data.val_files={data_files['val']}",
        f"data.train_batch_size={batch}",
        f"data.max_prompt_length={settings.max_prompt_length}",
        f"data.max_response_length={settings.max_response_length}",
        "data.filter_overlong_prompts=false",
        f"data.seed={settings.seed}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={batch * 4}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch * 4}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={batch * 4}",
        f"actor_rollout_ref.actor.optim.lr={settings.learning_rate}",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.04",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.rollout.temperature=0.9",
        # Short synthetic answers ("3", "red", "Yes", "B"): exact match is the meaningful score,
        # and it keeps the embedding model out of the 2-core budget.
        "noisygrpo.reward.correctness=exact",
        f"noisygrpo.advantage_log_dir={workdir / 'advantages'}",
        f"trainer.total_training_steps={settings.steps}",
        "trainer.total_epochs=1",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.logger=[console,file]",
        "trainer.project_name=noisygrpo_demo",
        "trainer.experiment_name=cpu_demo",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
    ]


def train_on_cpu(workdir: Path, overrides: Sequence[str], **launch: Any):
    """``python -m recipe.noisygrpo.main_noisygrpo`` on the CPU backend, in ``workdir``.

    The backend's overrides come first, then ``overrides`` (they win); the output goes to
    ``workdir/train.log`` (appended), verl's metrics to ``workdir/metrics.jsonl`` (or its next
    ``.launchN``). ``launch``: further :func:`verl_cpu.launch.run_on_cpu` arguments (``extra_env`` is
    added to the metrics path). Returns its :class:`~verl_cpu.launch.CPURunResult`.
    """
    from verl_cpu.launch import run_on_cpu
    from verl_cpu.overrides import cpu_overrides

    extra_env = {"VERL_FILE_LOGGER_PATH": str(workdir / "metrics.jsonl"), **launch.pop("extra_env", {})}
    return run_on_cpu(
        ENTRY_MODULE,
        [*cpu_overrides(), *overrides],
        workdir=workdir,
        log_path=workdir / "train.log",
        extra_env=extra_env,
        **launch,
    )


def prepare_inputs(workdir: Path, settings: DemoSettings) -> tuple[Path, dict[str, Path]]:
    """The tiny model and the synthetic data under ``workdir``, built on first use."""
    from data_prep.synthetic import write_synthetic_dataset

    model_dir = workdir / "tiny_qwen25vl"
    if not (model_dir / "config.json").exists():
        print(f"[demo] building a tiny random-weight Qwen2.5-VL in {model_dir}", flush=True)
        build_tiny_qwen25vl(model_dir, seed=settings.seed, overwrite=model_dir.exists())
    data_dir = workdir / "data"
    data_files = {"train": data_dir / "train.parquet", "val": data_dir / "val.parquet"}
    if not all(path.exists() for path in data_files.values()):
        print(f"[demo] writing the synthetic shapes task to {data_dir}", flush=True)
        data_files = write_synthetic_dataset(
            data_dir, num_train=settings.num_train, num_val=settings.num_val, seed=settings.seed
        )
    return model_dir, data_files


# (column title, metric key) of the per-step summary; reward-by-level columns are added per run.
SUMMARY_COLUMNS = [
    ("reward", "critic/score/mean"),
    ("reward std", "noisygrpo/reward_std"),
    ("K mean", "noisygrpo/kalman_gain_mean"),
    ("P mean", "noisygrpo/prior_weight_mean"),
    ("sigma_s", "noisygrpo/sigma_s_mean"),
    ("zero-var grp", "noisygrpo/zero_variance_group_frac"),
    ("adv std", "noisygrpo/advantage_std"),
    ("adv min", "noisygrpo/advantage_min"),
    ("adv max", "noisygrpo/advantage_max"),
    ("step s", "timing_s/step"),
    ("gen s", "timing_s/gen"),
    ("update s", "timing_s/update_actor"),
]
REWARD_BY_LEVEL_PREFIX = "noisygrpo/reward@noise_"


def read_step_metrics(metrics_path: Path) -> list[dict]:
    """verl's ``file`` logger lines (``{"step": N, "data": {...}}``) of every launch, training steps only."""
    from recipe.noisygrpo.metrics_log import read_records

    steps = []
    for record in read_records(metrics_path):
        if any(key.startswith("noisygrpo/") or key.startswith("timing_s/step") for key in record["data"]):
            steps.append({"step": record["step"], **record["data"]})
    return steps


def format_summary(steps: list[dict]) -> str:
    """A fixed-width table, one row per step."""
    level_keys = sorted({key for step in steps for key in step if key.startswith(REWARD_BY_LEVEL_PREFIX)})
    columns = [(f"r@{key.removeprefix(REWARD_BY_LEVEL_PREFIX)}", key) for key in level_keys] + SUMMARY_COLUMNS
    header = ["step"] + [title for title, _ in columns]
    rows = [[str(step["step"])] + [_cell(step.get(key)) for _, key in columns] for step in steps]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(lines)


def _cell(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:  # before training started (model or data being built)
        print("\n[demo] interrupted before training started.", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="model, data, logs (default %(default)s)")
    parser.add_argument("--steps", type=int, default=DemoSettings.steps, help="training steps (default %(default)s)")
    parser.add_argument("--force-cpu", action="store_true", help="run the CPU demo even when a GPU is present")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before the run is stopped")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides appended to the demo's (they win)")
    args = parser.parse_args(argv)

    import torch

    if torch.cuda.is_available() and not args.force_cpu:
        print(
            "A GPU is available: this demo is the CPU path. Train the paper's models with\n"
            "  MODEL_PATH=... DATA_DIR=... bash scripts/run_qwen25vl_3b.sh\n"
            "(or pass --force-cpu to run the CPU demo anyway)."
        )
        return 0

    settings = DemoSettings(steps=args.steps)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, data_files = prepare_inputs(workdir, settings)
    metrics_path = workdir / "metrics.jsonl"
    overrides = [*demo_overrides(model_dir, data_files, workdir, settings), *args.overrides]
    print(f"[demo] {settings.steps} NoisyGRPO steps on the CPU backend; log: {workdir / 'train.log'}", flush=True)
    result = train_on_cpu(workdir, overrides, timeout_s=args.timeout, echo=True)
    if result.interrupted_by is not None:
        print(
            f"\n[demo] interrupted: the run and every process it started are stopped; "
            f"{resume_hint(workdir / 'checkpoints')}\nLog: {result.log_path}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if result.returncode != 0:
        print(f"[demo] training failed (exit {result.returncode}); see {result.log_path}", file=sys.stderr)
        return result.returncode
    steps = read_step_metrics(metrics_path)
    print(f"\n[demo] finished in {result.elapsed_s:.0f} s. Per step (r@x = mean reward at noise extent x):")
    print(format_summary(steps))
    print(
        f"\nMetrics: {metrics_path} (plot: python -m recipe.noisygrpo.eval.plots --log {metrics_path} "
        f"--out {workdir / 'plots'})\nPer-rollout advantages: {workdir / 'advantages' / 'advantages.jsonl'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
