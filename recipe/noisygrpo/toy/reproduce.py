"""The paper's experiment in miniature, on a CPU: GRPO vs NoisyGRPO from one warm start, to a table.

    bash scripts/reproduce_toy.sh [--seeds N] [--steps N] [--out DIR] [--methods grpo,noisygrpo,grpo_noisy]
    (python -m recipe.noisygrpo.toy.reproduce ...)

``--methods`` adds the ablation ``grpo_noisy`` (NoisyGRPO's noisy rollouts, GRPO's advantage), which
splits NoisyGRPO - GRPO into the part of the noise and the part of the Bayesian advantage. A call
on a folder reuses the runs finished there, so a method can be added to an earlier call's results.

1. data: the toy task (``recipe.noisygrpo.toy.scenes``): RL prompts and the held-out splits
   clean / noisy / shifted / blind (``OUT/data``, one seed for every run);
2. warm start: the tiny Qwen2.5-VL fine-tuned until it sees (``warm_start``, cached);
3. per seed, GRPO and NoisyGRPO from that warm start with identical settings and budgets, each
   through ``python -m recipe.noisygrpo.main_noisygrpo`` on the CPU backend (verl's v1 trainer,
   agent loop, reward loop, the estimators, seeded sampling), validating on the four held-out
   splits every ``--val-every`` steps through verl's own validation (one data source per split,
   so ``metrics.jsonl`` carries the held-out curves) and saving the final checkpoint;
4. the final checkpoints merged with verl's model merger, evaluated (greedy) on the held-out
   splits with the same code as the warm start; the table ``OUT/results.md`` / ``.csv`` (base /
   GRPO / NoisyGRPO x splits, mean ± std over seeds) through the project's tables module, and the
   plots (held-out accuracy per split over steps, per run and as the mean over seeds in
   ``heldout_by_split``; reward std, reward by noise level, Kalman gain) through its plots module,
   in ``OUT/plots/``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recipe.noisygrpo.toy import scenes as toy_scenes
from recipe.noisygrpo.toy.warm_start import accuracy, warm_start

# The Hydra overrides that make each method (on top of the shared ones of ``rl_overrides``).
# ``grpo_noisy`` is the ablation between the two: NoisyGRPO's noisy rollouts with GRPO's advantage.
METHOD_OVERRIDES: dict[str, tuple[str, ...]] = {
    "grpo": ("algorithm.adv_estimator=grpo", "noisygrpo.noise.levels=[0.0,0.0,0.0,0.0]"),
    "noisygrpo": (),
    "grpo_noisy": ("algorithm.adv_estimator=grpo",),
}
METHODS = ("grpo", "noisygrpo")  # the default comparison
SPLITS = toy_scenes.HELD_OUT
DEFAULT_OUT = Path("demo_runs/toy_reproduction")
DEFAULT_CACHE = Path("demo_runs/toy_cache")


@dataclass(frozen=True)
class ReproductionSettings:
    """Sizes of the experiment (defaults: about 15 minutes per seed on 2 cores)."""

    seeds: int = 1
    steps: int = 40
    prompts_per_step: int = 8
    # 1e-4 lost held-out accuracy within 10 steps once rollouts matched the actor (docs/toy_reproduction.md).
    learning_rate: float = 3e-5
    val_every: int = 10
    train_rows: int = 512
    held_out_rows: int = 64
    max_response_length: int = 48
    data_seed: int = 1234


def write_data(cache: Path, settings: ReproductionSettings) -> dict[str, Path]:
    """The RL prompts and the held-out splits (written once per data seed and sizes, under ``cache``)."""
    folder = cache / f"data_seed{settings.data_seed}_train{settings.train_rows}_heldout{settings.held_out_rows}"
    files = {"train": folder / "train.parquet", **{split: folder / f"{split}.parquet" for split in SPLITS}}
    if all(path.exists() for path in files.values()):
        return files
    toy_scenes.write_split(folder, settings.data_seed, "train", settings.train_rows)
    for split in SPLITS:
        toy_scenes.write_split(folder, settings.data_seed, split, settings.held_out_rows)
    return files


def rl_overrides(
    method: str,
    model_dir: Path,
    data: dict[str, Path],
    run_dir: Path,
    seed: int,
    settings: ReproductionSettings,
    val_splits: Sequence[str] = SPLITS,
) -> list[str]:
    """Hydra overrides of one RL run (on top of the CPU backend's); methods differ only by estimator and noise."""
    batch = settings.prompts_per_step
    val_files = "[" + ",".join(str(data[split]) for split in val_splits) + "]"
    overrides = [
        f"actor_rollout_ref.model.path={model_dir}",
        f"data.train_files={data['train']}",
        f"data.val_files={val_files}",
        f"data.train_batch_size={batch}",
        "data.max_prompt_length=256",
        f"data.max_response_length={settings.max_response_length}",
        "data.filter_overlong_prompts=false",
        f"data.seed={seed}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={batch * 4}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch * 4}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={batch * 4}",
        f"actor_rollout_ref.actor.optim.lr={settings.learning_rate}",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.04",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
        "actor_rollout_ref.rollout.temperature=1.0",
        "actor_rollout_ref.rollout.val_kwargs.temperature=0",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=false",
        f"actor_rollout_ref.rollout.seed={seed}",
        "noisygrpo.reward.correctness=exact",
        "noisygrpo.seeded_sampling=true",
        f"noisygrpo.advantage_log_dir={run_dir / 'advantages'}",
        f"trainer.total_training_steps={settings.steps}",
        "trainer.total_epochs=100",
        "trainer.val_before_train=true",
        f"trainer.test_freq={settings.val_every}",
        f"trainer.save_freq={settings.steps}",
        "trainer.logger=[console,file]",
        "trainer.project_name=noisygrpo_toy",
        f"trainer.experiment_name={method}_seed{seed}",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
    ]
    return overrides + list(METHOD_OVERRIDES[method])


def train(
    method: str, model_dir: Path, data: dict[str, Path], run_dir: Path, seed: int, settings: ReproductionSettings
) -> Path:
    """One RL run on the CPU backend; returns its final actor checkpoint folder."""
    from recipe.noisygrpo.demo.run_demo import train_on_cpu

    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"[toy] {method}, seed {seed}: {settings.steps} steps (log {run_dir / 'train.log'})", flush=True)
    result = train_on_cpu(run_dir, rl_overrides(method, model_dir, data, run_dir, seed, settings), timeout_s=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {result.returncode}); see {result.log_path}")
    print(f"[toy] {method}, seed {seed}: done in {result.elapsed_s:.0f} s", flush=True)
    return run_dir / "checkpoints" / f"global_step_{settings.steps}" / "actor"


def evaluate_model(model_dir: Path, settings: ReproductionSettings) -> dict[str, float]:
    """Greedy held-out accuracy of a Hugging Face model folder on every split."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    return {
        split: accuracy(model, processor, toy_scenes.split_scenes(settings.data_seed, split, settings.held_out_rows))
        for split in SPLITS
    }


HELDOUT_METRIC = "val-aux/toy_{split}/correctness/mean@1"
HELDOUT_BY_SPLIT = "heldout_by_split"  # plot: one panel per split, methods averaged over seeds


def heldout_curves(metrics_path: Path) -> dict[int, dict[str, float]]:
    """Held-out accuracy per validation step and split, from verl's ``file`` logger output (every launch)."""
    from recipe.noisygrpo.metrics_log import read_records

    metrics = {split: HELDOUT_METRIC.format(split=split) for split in SPLITS}
    curves: dict[int, dict[str, float]] = {}
    for record in read_records(metrics_path):
        found = {split: record["data"][key] for split, key in metrics.items() if key in record["data"]}
        if found:
            curves.setdefault(record["step"], {}).update(found)
    return curves


METHOD_LABELS = {
    "base": "base (warm start)",
    "grpo": "GRPO",
    "noisygrpo": "NoisyGRPO",
    "grpo_noisy": "GRPO, noisy rollouts",
}
# Paired comparisons beyond "each method - base": (method, against). With the ablation, NoisyGRPO
# against it isolates the Bayesian advantage, and it against GRPO isolates the noisy rollouts.
PAIRED = (("noisygrpo", "grpo"), ("noisygrpo", "grpo_noisy"), ("grpo_noisy", "grpo"))


def summarise(accuracies: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """CSV rows ``method, split, mean, std, seeds`` (std over seeds; None for one seed)."""
    rows = []
    for method, per_seed in accuracies.items():
        for split in SPLITS:
            values = [seed_result[split] for seed_result in per_seed]
            std = statistics.stdev(values) if len(values) > 1 else None
            rows.append(
                {"method": method, "split": split, "mean": statistics.fmean(values), "std": std, "seeds": len(values)}
            )
    return rows


def comparisons(accuracies: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """Per split: each method against the warm start, and the pairs of ``PAIRED`` present (paired by seed).

    ``se``: standard error of the mean difference over seeds (the sampling error of one held-out set
    adds to it; with one seed it is unknown); ``beyond_2se``: |difference| > 2 se.
    """
    base = accuracies["base"][0]
    pairs = [(method, None) for method in METHOD_OVERRIDES] + list(PAIRED)
    rows = []
    for split in SPLITS:
        for method, against in pairs:
            if method not in accuracies or (against and against not in accuracies):
                continue
            reference = accuracies[against] if against else [base] * len(accuracies[method])
            differences = [a[split] - b[split] for a, b in zip(accuracies[method], reference, strict=True)]
            mean = statistics.fmean(differences)
            se = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else None
            rows.append(
                {
                    "split": split,
                    "comparison": f"{method} - {against or 'base'}",
                    "difference": mean,
                    "se": se,
                    "beyond_2se": None if se is None else bool(abs(mean) > 2 * se),
                }
            )
    return rows


def results_markdown(summary: list[dict[str, Any]], tests: list[dict[str, Any]], settings: ReproductionSettings) -> str:
    """The table (means, deltas) and the stds through the project's tables module, plus the comparisons."""
    from recipe.noisygrpo.eval.tables import BuiltTable, Column, Row, RowKind, TableSpec, render_markdown

    columns = tuple(Column(key=f"toy/{split}", header=split, metric=None, scale=100.0) for split in SPLITS)
    means = {(row["method"], row["split"]): 100 * row["mean"] for row in summary}
    stds = {(row["method"], row["split"]): None if row["std"] is None else 100 * row["std"] for row in summary}
    methods = [method for method in ("base", *METHOD_OVERRIDES) if (method, SPLITS[0]) in means]
    seeds = max(row["seeds"] for row in summary)

    def values(table: dict, method: str, minus: str | None = None) -> tuple[float | None, ...]:
        if minus:
            return tuple(table[method, split] - table[minus, split] for split in SPLITS)
        return tuple(table[method, split] for split in SPLITS)

    rows = [Row(METHOD_LABELS[method], RowKind.RUN, values(means, method)) for method in methods]
    rows += [Row(f"{METHOD_LABELS[m]} − base", RowKind.DELTA_VS_BASE, values(means, m, "base")) for m in methods[1:]]
    # DELTA_VS_GRPO for every paired row: the kind only sets the signed format and table grouping.
    rows += [
        Row(f"{METHOD_LABELS[m]} − {METHOD_LABELS[against]}", RowKind.DELTA_VS_GRPO, values(means, m, against))
        for m, against in PAIRED
        if {m, against} <= set(methods)
    ]
    notes = (
        f"held-out accuracy in % (greedy, exact match), {settings.held_out_rows} rows per split, mean over {seeds} seed(s)",
        "noisy: Gaussian noise 0.3 / 0.6 / 0.9 by row; shifted: unseen sizes and backgrounds; blind: another row's image",
    )
    spec = TableSpec(key="toy", title="Toy reproduction: held-out accuracy", task="toy", columns=columns)
    text = render_markdown(BuiltTable(spec, tuple(rows), notes), decimals=1)
    std_spec = TableSpec(key="toy_std", title="Standard deviation over seeds (points)", task="toy", columns=columns)
    std_rows = tuple(Row(METHOD_LABELS[method], RowKind.RUN, values(stds, method)) for method in methods)
    std_notes = ("—: one seed (the warm start is shared by all seeds, so it has one value)",)
    text += "\n" + render_markdown(BuiltTable(std_spec, std_rows, std_notes), decimals=1)
    lines = [
        "",
        "### Differences (points) and 2-standard-error checks over seeds",
        "",
        "| split | comparison | difference | se | beyond 2 se |",
        "|---|---|---:|---:|---|",
    ]
    for test in tests:
        se = "—" if test["se"] is None else f"{100 * test['se']:.1f}"
        verdict = {True: "yes", False: "no", None: "— (one seed)"}[test["beyond_2se"]]
        lines.append(f"| {test['split']} | {test['comparison']} | {100 * test['difference']:+.1f} | {se} | {verdict} |")
    return text + "\n".join(lines) + "\n"


def write_results(
    out: Path,
    accuracies: dict[str, list[dict[str, float]]],
    settings: ReproductionSettings,
    logs: dict[str, list[Path]],
) -> None:
    """``OUT/results.md``, ``OUT/results.csv``, ``OUT/results.json`` and ``OUT/plots/``.

    ``logs[method]``: the ``metrics.jsonl`` of each seed's run, in seed order.
    """
    import csv

    summary, tests = summarise(accuracies), comparisons(accuracies)
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["method", "split", "mean", "std", "seeds"])
        writer.writeheader()
        writer.writerows(
            {**row, "mean": f"{row['mean']:.4f}", "std": "" if row["std"] is None else f"{row['std']:.4f}"}
            for row in summary
        )
    (out / "results.md").write_text(results_markdown(summary, tests, settings))
    (out / "results.json").write_text(
        json.dumps({"settings": asdict(settings), "accuracy": accuracies, "summary": summary, "tests": tests}, indent=2)
    )
    from recipe.noisygrpo.eval.plots import PANELS_BY_KEY, plot_logs, plot_seed_bands, read_log

    panels = [
        PANELS_BY_KEY[key] for key in ("heldout_accuracy", "reward_std", "reward_by_noise", "kalman_gain", "reward")
    ]
    runs = [read_log(f"{method}_seed{seed}", path) for method, paths in logs.items() for seed, path in enumerate(paths)]
    plot_logs(runs, out / "plots", panels=panels)
    curves = {method: [heldout_curves(path) for path in paths] for method, paths in logs.items()}
    plot_seed_bands(
        curves,
        list(SPLITS),
        out / "plots",
        HELDOUT_BY_SPLIT,
        "Held-out accuracy (verl validation, greedy): mean over seeds, band = min to max",
        "accuracy",
    )


def check_out_folder(out: Path, settings: ReproductionSettings) -> None:
    """Runs finished in ``out`` are reused by a later call only with the same settings (seeds may grow)."""
    record = out / "settings.json"
    wanted = {key: value for key, value in asdict(settings).items() if key != "seeds"}
    if record.exists():
        earlier = {key: value for key, value in json.loads(record.read_text()).items() if key != "seeds"}
        if earlier != wanted:
            changed = ", ".join(
                f"{key} {earlier.get(key)} -> {value}" for key, value in wanted.items() if earlier.get(key) != value
            )
            raise SystemExit(
                f"{out} holds runs made with other settings ({changed}); pass another --out or delete that folder."
            )
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(asdict(settings), indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash scripts/reproduce_toy.sh", description=__doc__.split("\n")[0])
    defaults = ReproductionSettings()
    parser.add_argument("--seeds", type=int, default=defaults.seeds)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, from: {', '.join(METHOD_OVERRIDES)} (grpo_noisy: noisy rollouts, GRPO's advantage)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="warm start and data (reused)")
    args = parser.parse_args(argv)
    settings = ReproductionSettings(seeds=args.seeds, steps=args.steps, learning_rate=args.lr)
    methods = [method.strip() for method in args.methods.split(",") if method.strip()]
    unknown = sorted(set(methods) - set(METHOD_OVERRIDES))
    if unknown or not methods:
        parser.error(f"--methods {args.methods!r}: choose from {', '.join(METHOD_OVERRIDES)} (comma-separated)")
    if settings.seeds < 1 or settings.steps < 1 or settings.learning_rate <= 0:
        parser.error("--seeds and --steps must be at least 1 and --lr positive")
    out, cache = args.out.resolve(), args.cache.resolve()
    started = time.perf_counter()
    from recipe.noisygrpo.eval.evaluate_checkpoint import merge_fsdp_checkpoint

    base = warm_start(cache)
    data = write_data(cache, settings)
    accuracies: dict[str, list[dict[str, float]]] = {"base": [evaluate_model(base, settings)]}
    logs: dict[str, list[Path]] = {}
    check_out_folder(out, settings)
    for seed in range(settings.seeds):
        for method in methods:
            run_dir = out / f"{method}_seed{seed}"
            merged = run_dir / "merged"
            if (merged / "config.json").exists():
                print(f"[toy] {method}, seed {seed}: finished in an earlier call, reusing {merged}", flush=True)
            else:
                if run_dir.exists():
                    print(f"[toy] {method}, seed {seed}: removing the unfinished run {run_dir}", flush=True)
                    shutil.rmtree(run_dir)
                actor = train(method, base, data, run_dir, seed, settings)
                merge_fsdp_checkpoint(actor, merged)
            accuracies.setdefault(method, []).append(evaluate_model(merged, settings))
            logs.setdefault(method, []).append(run_dir / "metrics.jsonl")
            print(f"[toy] {method}, seed {seed}: held-out accuracy {accuracies[method][-1]}", flush=True)
    write_results(out, accuracies, settings, logs)
    print((out / "results.md").read_text())
    print(f"[toy] {time.perf_counter() - started:.0f} s in all; results in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
