"""Step time of NoisyGRPO against vanilla GRPO on the CPU end-to-end path, steps alternating within one run.

The target: NoisyGRPO's mean training step is at most 5 % slower than GRPO's. Both variants run
the recipe's path (verl's v1 sync trainer, TransferQueue, FSDP2 actor, HF rollout on the CPU
backend, agent loop, reward loop) on the README demo's tiny random-weight Qwen2.5-VL and synthetic
shapes task. On a shared VM the speed of the whole machine drifts by 20-35 % over minutes, more than
the 5 % to resolve between two separate runs, so the variants take turns step by step inside one
run (:mod:`benchmarks._alternating`: the recipe's agent loop and trainer with noise and the Bayesian
estimator on the steps of one parity only; GRPO steps use verl's estimator and unnoised images).
Each round is two runs, NoisyGRPO on odd steps in one and on even steps in the other; pair k of the
two runs covers the same two batches with the variants swapped, so the mean of their two log ratios
cancels the batch difference while adjacent steps see the same machine. The report gives the ratio
over those balanced pairs with its 95 % t interval, and per-part means (verl's ``timing_s/*``).

Settings shared by both variants: the same data, seed, batch (2 prompts x 4 rollouts) and model;
``ignore_eos`` (every response is ``max_response_length`` tokens; lengths are checked); the debug
reward (a random-weight model never answers right); the train rows in an order with no batch of one
prompt length (verl 0.9.1 mishandles those, see ``BENCH_TRAIN_FILE``); a replay buffer polling every
``--poll-interval`` s (the CPU backend's replay buffer) instead of verl's 2 s. The first ``--warmup`` steps of a run are dropped.
Before the first run the script waits for a quiet machine (1-minute load below ``--max-load``).
The noise's own cost is ``benchmarks.bench_noise``'s subject.

    python -m benchmarks.bench_step [--quick] [--alternating-pairs P] [--alternating-rounds A] [--warmup W]

``--quick`` runs no training (one CPU run needs minutes just to start): it re-prints the figures of
the last full report (``results/bench_step.json``), saying so.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REPO_ROOT,
    RESULTS_DIR,
    add_common_arguments,
    configure_malloc,
    configure_threads,
    default_output_path,
    finish_report,
    format_table,
    load_average,
    positive_int,
    report_header,
    thread_env,
    write_json,
)

BENCHMARK = "bench_step"
NOISY = "noisygrpo"
GRPO = "grpo"
VARIANTS = (GRPO, NOISY)
ALTERNATING = "alternating"
# Logged by the alternating trainer on every step (= benchmarks._alternating.VARIANT_METRIC).
ALTERNATING_VARIANT_METRIC = "bench/noisygrpo_step"
REWARD_BY_LEVEL_PREFIX = "noisygrpo/reward@noise_"
TARGET_RATIO = 1.05
STEP_KEY = "timing_s/step"
TIMING_PREFIX = "timing_s/"
KNOWN_PARTS = ("gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights")
OTHER_PART = "other"  # step - sum of its timed parts: prepare_step (dataloader, submit), balance_batch, ...
LENGTH_KEYS = (
    "response_length/mean",
    "response_length/min",
    "response_length/max",
    "prompt_length/mean",
    "prompt_length/min",
    "prompt_length/max",
    "perf/total_num_tokens",
)
DEFAULT_WORKDIR = REPO_ROOT / "demo_runs" / BENCHMARK
DEFAULT_FULL_REPORT = RESULTS_DIR / f"{BENCHMARK}.json"
# verl_cpu.replay_buffer (the CPU backend's replay buffer, polling every 0.1 s by default).
POLL_INTERVAL_ENV = "NOISYGRPO_CPU_POLL_INTERVAL_S"
DEFAULT_POLL_INTERVAL_S = 0.1
NOISY_LEVELS = (0.3, 0.6, 0.9)
LOAD_POLL_S = 30.0
Z_95 = 1.96


# ---------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class StepBenchConfig:
    """One benchmark run.

    Attributes:
        warmup: training steps dropped at the start of every run (step 1 pays one-time costs).
        alternating_pairs: pairs of adjacent (NoisyGRPO, GRPO) steps measured per run.
        alternating_rounds: rounds; each is two runs, NoisyGRPO on odd steps in one, on even in the other.
        prompts_per_step: prompts per training step (each gets ``rollout.n = 4`` rollouts).
        max_response_length: tokens generated per rollout (all of them: ``ignore_eos``).
        poll_interval_s: seconds between the replay buffer's checks for finished rollouts.
        max_load: wait before the first run until the 1-minute load average is below this.
        load_wait_s: give up waiting for a quiet machine after this many seconds (then run anyway).
        run_timeout_s: a training run is stopped after this many seconds.
        threads: ``OMP_NUM_THREADS``-style thread pools of the training processes (Ray's default is 1).
        malloc: glibc allocator thresholds of the training processes (``default``: glibc's own).
        workdir: tiny model, data and per-run logs.
        quick: re-summarise the last full report instead of training.
        source_report: the full report ``--quick`` re-summarises.
    """

    warmup: int = 2
    alternating_pairs: int = 40
    alternating_rounds: int = 2
    prompts_per_step: int = 2
    max_response_length: int = 24
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    max_load: float = 0.8
    load_wait_s: float = 900.0
    run_timeout_s: float = 1200.0
    threads: int = 1
    malloc: str = "default"
    workdir: str = str(DEFAULT_WORKDIR)
    quick: bool = False
    source_report: str = str(DEFAULT_FULL_REPORT)

    @property
    def steps(self) -> int:
        return self.warmup + 2 * self.alternating_pairs


def demo_settings(config: StepBenchConfig):
    """The README demo's settings at this run's length, batch and response length."""
    from recipe.noisygrpo.demo.run_demo import DemoSettings

    return DemoSettings(
        steps=config.steps,
        prompts_per_step=config.prompts_per_step,
        max_response_length=config.max_response_length,
    )


def shared_overrides(config: StepBenchConfig) -> list[str]:
    """Hydra overrides of the runs on top of the CPU backend's and the demo's (they win)."""
    settings = demo_settings(config)
    epochs = math.ceil(settings.steps * settings.prompts_per_step / settings.num_train)
    return [
        f"trainer.total_epochs={epochs}",  # the demo's 1 epoch is 64 rows: 32 steps of 2 prompts
        "actor_rollout_ref.rollout.ignore_eos=true",
        "data.shuffle=false",  # rows in the order of the benchmark train file (no batch of equal lengths)
        "reward.custom_reward_function.path=pkg://verl_cpu.debug_reward",
        "noisygrpo.advantage_log_dir=null",
        "trainer.logger=[console,file]",
        "trainer.save_freq=-1",
        "trainer.test_freq=-1",
        "trainer.val_before_train=false",
    ]


def run_env(config: StepBenchConfig) -> dict[str, str]:
    """Environment of a training run: this checkout importable (the replay buffer), poll interval, threads."""
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": python_path, POLL_INTERVAL_ENV: str(config.poll_interval_s), **thread_env(config.threads)}


# ---------------------------------------------------------------------------------------------------
# Inputs: the demo's model and data, rows ordered so that no batch has sequences of one length

# verl 0.9.1 mishandles the 3-D (mrope) position ids of a batch whose sequences all have the same
# length (``maybe_fix_3d_position_ids``: update_actor fails in ``split_with_sizes``). With
# ``ignore_eos`` every response has the same length, so a batch whose prompts all have the same
# token count hits it; the benchmark's train file orders the rows so that no batch does.
BENCH_TRAIN_FILE = "bench_train.parquet"
ROW_ORDER_SEED = 0


@dataclass(frozen=True)
class BenchInputs:
    """The tiny model, the data files (``train`` = the reordered benchmark file) and its prompt lengths.

    ``prompt_lengths``: prompt tokens of each row of the benchmark train file, in file order, as the
    agent loop builds the prompt (chat template, image pads expanded).
    """

    model_dir: Path
    data_files: dict[str, Path]
    prompt_lengths: list[int]


def prompt_lengths(model_dir: Path, train_file: Path) -> list[int]:
    """Prompt token count of every row: the chat template with each ``<image>`` as an image part, as verl's
    dataset builds the messages, tokenised with the images by the model's processor (image pads expanded)."""
    import pyarrow.parquet as pq
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    lengths = []
    for row, images in zip(
        pq.read_table(train_file, columns=["prompt"]).column("prompt").to_pylist(),
        training_images(train_file),
        strict=True,
    ):
        messages = [
            {
                "role": message["role"],
                "content": [
                    {"type": "image"} if part == "<image>" else {"type": "text", "text": part}
                    for part in re.split("(<image>)", message["content"])
                    if part
                ],
            }
            for message in row
        ]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lengths.append(len(processor(text=[text], images=images or None)["input_ids"][0]))
    return lengths


def batch_row_order(lengths: Sequence[int], batch_size: int, seed: int = ROW_ORDER_SEED) -> list[int]:
    """Row indices in an order whose consecutive batches of ``batch_size`` rows never share one length.

    Rows sorted by length are dealt into batches as cards (batch j gets sorted rows j, j + B, j + 2B,
    ... for B batches), so a batch has one length only where a length fills more than B sorted slots;
    the batches are then shuffled (seeded) so that lengths do not trend over a run. Leftover rows
    (fewer than a batch) go last. Raises ValueError when some batch still has a single length.
    """
    if batch_size < 2:
        raise ValueError("batches of one prompt always have sequences of one length with ignore_eos")
    by_length = sorted(range(len(lengths)), key=lambda row: (lengths[row], row))
    num_batches = len(lengths) // batch_size
    batches = [[by_length[j + k * num_batches] for k in range(batch_size)] for j in range(num_batches)]
    uniform = [batch for batch in batches if len({lengths[row] for row in batch}) == 1]
    if uniform:
        raise ValueError(f"cannot order the rows without a batch of one prompt length: {uniform}")
    random.Random(seed).shuffle(batches)
    return [row for batch in batches for row in batch] + by_length[num_batches * batch_size :]


def prepare_bench_inputs(config: StepBenchConfig) -> BenchInputs:
    """The demo's tiny model and data under the workdir (built once), plus the reordered train file."""
    import pyarrow.parquet as pq

    from recipe.noisygrpo.demo.run_demo import prepare_inputs

    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir, data_files = prepare_inputs(workdir, demo_settings(config))
    lengths = prompt_lengths(model_dir, data_files["train"])
    order = batch_row_order(lengths, config.prompts_per_step)
    bench_train = data_files["train"].parent / BENCH_TRAIN_FILE
    pq.write_table(pq.read_table(data_files["train"]).take(order), bench_train)
    return BenchInputs(model_dir, {**data_files, "train": bench_train}, [lengths[row] for row in order])


def training_images(train_file: Path) -> list[list[Any]]:
    """The decoded PIL images of every row of a verl parquet file (``images`` column), one list per row."""
    import pyarrow.parquet as pq
    from PIL import Image

    rows = []
    for entries in pq.read_table(train_file, columns=["images"]).column("images").to_pylist():
        images = []
        for entry in entries or []:
            with Image.open(io.BytesIO(entry["bytes"])) as image:
                images.append(image.convert("RGB"))
        rows.append(images)
    return rows


# ---------------------------------------------------------------------------------------------------
# Load average


def wait_for_quiet_machine(max_load: float, max_wait_s: float, poll_s: float = LOAD_POLL_S) -> dict[str, Any]:
    """Poll the 1-minute load average every ``poll_s`` s until two polls in a row are below ``max_load``.

    Gives up after ``max_wait_s`` seconds (the run then goes ahead on a busy machine, and the report
    says so). Returns ``reached``, ``waited_s`` and the (seconds, 1-min load) samples.
    """
    started = time.monotonic()
    samples: list[tuple[float, float]] = []
    quiet_polls = 0
    while True:
        load = os.getloadavg()[0]
        samples.append((round(time.monotonic() - started, 1), round(load, 2)))
        quiet_polls = quiet_polls + 1 if load < max_load else 0
        waited = time.monotonic() - started
        if quiet_polls >= 2 or waited >= max_wait_s:
            break
        print(f"[bench_step] 1-min load {load:.2f} (want < {max_load:g} twice, {poll_s:.0f} s apart)", flush=True)
        time.sleep(poll_s)
    return {"max_load": max_load, "reached": quiet_polls >= 2, "waited_s": round(waited, 1), "samples": samples}


# ---------------------------------------------------------------------------------------------------
# Training runs


@dataclass
class RunRecord:
    """One alternating run: its round, parity, outcome, the logged steps and the load during it."""

    variant: str
    round_index: int
    returncode: int
    elapsed_s: float
    leftovers: list[int]
    log_path: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    parity: int | None = None  # the step parity on which NoisyGRPO ran

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["steps"] = [{key: step[key] for key in sorted(step) if _is_step_field(key)} for step in self.steps]
        return record


def _is_step_field(key: str) -> bool:
    return (
        key in ("step", ALTERNATING_VARIANT_METRIC)
        or key.startswith((TIMING_PREFIX, REWARD_BY_LEVEL_PREFIX))
        or key in LENGTH_KEYS
    )


def train_alternating(parity: int, round_index: int, config: StepBenchConfig, inputs: BenchInputs) -> RunRecord:
    """One run whose steps alternate the variants (:mod:`benchmarks._alternating`), NoisyGRPO on steps of ``parity``."""
    from benchmarks import _alternating

    label = f"{ALTERNATING}{parity}"
    agent_loops = Path(config.workdir) / "runs" / f"round{round_index}_{label}" / "agent_loops.yaml"
    agent_loops.parent.mkdir(parents=True, exist_ok=True)
    agent_loops.write_text(_alternating.agent_loop_config_yaml(), encoding="utf-8")
    return _train(
        label,
        round_index,
        config,
        inputs,
        entry_module=_alternating.__name__,
        variant_overrides=_alternating.run_overrides(str(agent_loops)),
        extra_env={_alternating.PARITY_ENV: str(parity)},
        parity=parity,
    )


def _train(
    label: str,
    round_index: int,
    config: StepBenchConfig,
    inputs: BenchInputs,
    entry_module: str,
    variant_overrides: Sequence[str],
    extra_env: Mapping[str, str] | None = None,
    parity: int | None = None,
) -> RunRecord:
    from recipe.noisygrpo.demo.run_demo import demo_overrides, read_step_metrics
    from recipe.noisygrpo.metrics_log import launch_files
    from verl_cpu.launch import run_on_cpu
    from verl_cpu.overrides import cpu_overrides

    model_dir, data_files = inputs.model_dir, inputs.data_files
    run_dir = Path(config.workdir) / "runs" / f"round{round_index}_{label}"
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    for stale in launch_files(metrics_path):  # a fresh measurement, not the continuation of an earlier one
        stale.unlink()
    overrides = [
        *cpu_overrides(),
        *demo_overrides(model_dir, data_files, run_dir, demo_settings(config)),
        *shared_overrides(config),
        *variant_overrides,
        f"trainer.experiment_name=bench_step_{label}",
    ]
    print(f"[bench_step] round {round_index}, {label}: training ({run_dir / 'train.log'})", flush=True)
    load_before = load_average()
    result = run_on_cpu(
        entry_module,
        overrides,
        workdir=run_dir,
        log_path=run_dir / "train.log",
        extra_env={**run_env(config), **(extra_env or {}), "VERL_FILE_LOGGER_PATH": str(metrics_path)},
        timeout_s=config.run_timeout_s,
    )
    steps = read_step_metrics(metrics_path) if metrics_path.exists() else []
    record = RunRecord(
        variant=label,
        round_index=round_index,
        returncode=result.returncode,
        elapsed_s=round(result.elapsed_s, 1),
        leftovers=result.leftovers,
        log_path=str(result.log_path),
        steps=steps,
        load={"before": load_before, "after": load_average()},
        parity=parity,
    )
    print(
        f"[bench_step] round {round_index}, {label}: exit {result.returncode} after {result.elapsed_s:.0f} s, "
        f"{len(steps)} steps logged, 1-min load {record.load['before']} -> {record.load['after']}",
        flush=True,
    )
    if result.returncode != 0 or len(steps) < config.steps:
        raise RuntimeError(f"{label} run {round_index} failed (exit {result.returncode}); see {result.log_path}")
    return record


# ---------------------------------------------------------------------------------------------------
# Summaries


def step_parts(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The timed parts present in ``steps``: verl's known ones in pipeline order, then any others, then other."""
    present = {key.removeprefix(TIMING_PREFIX) for step in steps for key in step if key.startswith(TIMING_PREFIX)}
    present.discard("step")
    ordered = [part for part in KNOWN_PARTS if part in present]
    return ordered + sorted(present - set(ordered)) + [OTHER_PART]


def part_seconds(step: Mapping[str, Any], part: str, parts: Sequence[str]) -> float:
    """Seconds of ``part`` in one logged step (0 where the step did not run it); ``other`` is the remainder."""
    if part == OTHER_PART:
        timed = sum(float(step.get(TIMING_PREFIX + name, 0.0)) for name in parts if name != OTHER_PART)
        return float(step[STEP_KEY]) - timed
    return float(step.get(TIMING_PREFIX + part, 0.0))


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean_s": statistics.fmean(values),
        "median_s": statistics.median(values),
        "min_s": min(values),
        "max_s": max(values),
        "stdev_s": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def summarise_variant(steps: Sequence[Mapping[str, Any]], parts: Sequence[str]) -> dict[str, Any]:
    """Per-part statistics (seconds) over ``steps``, plus the mean lengths and token counts."""
    summary: dict[str, Any] = {"steps": len(steps), "step": _stats([float(step[STEP_KEY]) for step in steps])}
    summary["parts"] = {part: _stats([part_seconds(step, part, parts) for step in steps]) for part in parts}
    summary["means"] = {
        key: statistics.fmean(float(step[key]) for step in steps) for key in LENGTH_KEYS if all(key in s for s in steps)
    }
    return summary


def compare(summaries: Mapping[str, Mapping[str, Any]], parts: Sequence[str]) -> list[dict[str, Any]]:
    """One row per quantity (step, then each part): both variants' mean and median, their ratios and the difference."""
    rows = []
    for name in ["step", *parts]:
        grpo = summaries[GRPO]["step"] if name == "step" else summaries[GRPO]["parts"][name]
        noisy = summaries[NOISY]["step"] if name == "step" else summaries[NOISY]["parts"][name]
        rows.append(
            {
                "quantity": name,
                "grpo_mean_s": grpo["mean_s"],
                "noisygrpo_mean_s": noisy["mean_s"],
                "ratio_mean": _ratio(noisy["mean_s"], grpo["mean_s"]),
                "grpo_median_s": grpo["median_s"],
                "noisygrpo_median_s": noisy["median_s"],
                "ratio_median": _ratio(noisy["median_s"], grpo["median_s"]),
                "difference_mean_s": noisy["mean_s"] - grpo["mean_s"],
                "ratio_mean_ci95": _ratio_interval(grpo, noisy, summaries[GRPO]["steps"], summaries[NOISY]["steps"]),
            }
        )
    return rows


def _ratio_interval(
    grpo: Mapping[str, float], noisy: Mapping[str, float], grpo_steps: int, noisy_steps: int
) -> list[float] | None:
    """Approximate 95 % interval of the ratio of means: 1 + (difference +- 1.96 Welch standard errors) / GRPO mean.

    Treats the steps as independent samples and the GRPO mean as exact, so it is a guide to the
    resolution of the figures, not a rigorous interval.
    """
    if grpo["mean_s"] <= 0 or grpo_steps < 2 or noisy_steps < 2:
        return None
    standard_error = math.sqrt(grpo["stdev_s"] ** 2 / grpo_steps + noisy["stdev_s"] ** 2 / noisy_steps)
    difference = noisy["mean_s"] - grpo["mean_s"]
    return [1 + (difference + sign * Z_95 * standard_error) / grpo["mean_s"] for sign in (-1, 1)]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


# Two-sided 95 % quantiles of Student's t by degrees of freedom (1-20); 1.96 beyond (within 5 %).
T_95 = {
    **{1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23},
    **{11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11, 18: 2.10, 19: 2.09, 20: 2.09},
}


def _t_summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean, range and 95 % t interval of ``values`` (interval None for fewer than two)."""
    if not values:
        return {"n": 0, "mean": None, "min": None, "max": None, "ci95": None}
    mean = statistics.fmean(values)
    interval = None
    if len(values) > 1:
        half = T_95.get(len(values) - 1, Z_95) * statistics.stdev(values) / math.sqrt(len(values))
        interval = [mean - half, mean + half]
    return {"n": len(values), "mean": mean, "min": min(values), "max": max(values), "ci95": interval}


# ---------------------------------------------------------------------------------------------------
# The step-alternating design


def alternating_order(rounds: int) -> list[tuple[int, int]]:
    """(round, parity) of the alternating runs in run order; the parity that goes first swaps every round."""
    order = []
    for round_index in range(rounds):
        parities = (0, 1) if round_index % 2 == 0 else (1, 0)
        order += [(round_index, parity) for parity in parities]
    return order


def alternating_step_variant(step: Mapping[str, Any], parity: int) -> str:
    """The variant that ran logged step ``step`` of an alternating run with NoisyGRPO on steps of ``parity``."""
    return NOISY if int(step["step"]) % 2 == parity else GRPO


def expected_noise_levels() -> list[str]:
    """The ``reward@noise_<level>`` suffixes a NoisyGRPO step logs: the recipe's four default levels."""
    return [f"{level:.2f}" for level in (0.0, *NOISY_LEVELS)]


def alternating_problems(runs: Sequence[RunRecord]) -> list[str]:
    """Steps of alternating runs whose logs contradict their parity (empty when all is as designed).

    Every step must log :data:`ALTERNATING_VARIANT_METRIC` as its variant (the trainer's estimator);
    a NoisyGRPO step must log the reward at each of the four noise levels (the extents the agent
    loop wrote), and a GRPO step must log none (verl's estimator ran).
    """
    problems = []
    for run in runs:
        for step in run.steps:
            variant = alternating_step_variant(step, run.parity)
            where = f"round {run.round_index}, parity {run.parity}, step {step['step']} ({variant})"
            logged = step.get(ALTERNATING_VARIANT_METRIC)
            if logged != float(variant == NOISY):
                problems.append(f"{where}: logged {ALTERNATING_VARIANT_METRIC}={logged}")
            levels = sorted(
                key.removeprefix(REWARD_BY_LEVEL_PREFIX) for key in step if key.startswith(REWARD_BY_LEVEL_PREFIX)
            )
            expected = expected_noise_levels() if variant == NOISY else []
            if levels != expected:
                problems.append(f"{where}: rewards logged at noise levels {levels}, expected {expected}")
    return problems


def alternating_pairs(run: RunRecord, warmup: int) -> list[dict[str, Any]]:
    """Adjacent measured steps (warmup + 1, warmup + 2), (warmup + 3, warmup + 4), ... of one alternating run.

    Each pair has one step of each variant; ``log_ratio`` = ln(NoisyGRPO step s / GRPO step s).
    """
    by_step = {int(step["step"]): step for step in run.steps}
    pairs = []
    first = warmup + 1
    while first in by_step and first + 1 in by_step:
        one, other = by_step[first], by_step[first + 1]
        noisy, grpo = (one, other) if alternating_step_variant(one, run.parity) == NOISY else (other, one)
        pairs.append(
            {
                "steps": [first, first + 1],
                "noisygrpo_s": float(noisy[STEP_KEY]),
                "grpo_s": float(grpo[STEP_KEY]),
                "log_ratio": math.log(float(noisy[STEP_KEY]) / float(grpo[STEP_KEY])),
            }
        )
        first += 2
    return pairs


def balanced_pair_ratios(runs: Sequence[RunRecord], warmup: int) -> dict[str, Any]:
    """NoisyGRPO / GRPO step-time ratio from the pairs of both parities of each round.

    Pair k of the parity-0 run and pair k of the parity-1 run cover the same two steps, hence the
    same two batches, with the variants swapped; the mean of their log ratios cancels the
    difference between the batches (and any first-or-second-of-the-pair effect). Those means are
    the samples: ``ratio`` is exp of their mean, ``ci95`` exp of its 95 % t interval.
    """
    samples = []
    for round_index in sorted({run.round_index for run in runs}):
        by_parity = {run.parity: alternating_pairs(run, warmup) for run in runs if run.round_index == round_index}
        if set(by_parity) != {0, 1}:
            continue
        for even, odd in zip(by_parity[0], by_parity[1], strict=False):
            samples.append((even["log_ratio"] + odd["log_ratio"]) / 2)
    stats = _t_summary(samples)
    return {
        "n": stats["n"],
        "log_ratios": samples,
        "ratio": _exp_or_none(stats["mean"]),
        "min": _exp_or_none(stats["min"]),
        "max": _exp_or_none(stats["max"]),
        "ci95": None if stats["ci95"] is None else [math.exp(bound) for bound in stats["ci95"]],
    }


def _exp_or_none(value: float | None) -> float | None:
    return None if value is None else math.exp(value)


def summarise_alternating(runs: Sequence[RunRecord], warmup: int) -> dict[str, Any]:
    """Per-variant statistics over the measured steps of the alternating runs, the pairs and their ratio."""
    parts = step_parts([step for run in runs for step in run.steps])
    summaries = {
        variant: summarise_variant(
            [
                step
                for run in runs
                for step in run.steps
                if step["step"] > warmup and alternating_step_variant(step, run.parity) == variant
            ],
            parts,
        )
        for variant in VARIANTS
    }
    balanced = balanced_pair_ratios(runs, warmup)
    return {
        "parts": parts,
        "summaries": summaries,
        "comparison": compare(summaries, parts),
        "pairs": [
            {"round": run.round_index, "parity": run.parity, "pairs": alternating_pairs(run, warmup)} for run in runs
        ],
        "balanced_pairs": balanced,
        "problems": alternating_problems(runs),
        "target": alternating_target(balanced),
    }


def alternating_target(balanced: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's target on the balanced pair ratio; ``resolved``: its interval lies wholly on one side."""
    value, interval = balanced["ratio"], balanced["ci95"]
    return {
        "name": f"{step_target_name()}, steps alternating within one run",
        "threshold": TARGET_RATIO,
        "value": value,
        "met": None if value is None else bool(value <= TARGET_RATIO),
        "ci95": interval,
        "interval_over": f"{balanced['n']} balanced step pairs",
        "resolved": None if interval is None else bool(interval[1] <= TARGET_RATIO or interval[0] > TARGET_RATIO),
    }


def batch_length_check(runs: Sequence[RunRecord], predicted_prompt_means: Sequence[float] | None) -> dict[str, Any]:
    """Logged steps whose prompts all had one length, and steps whose mean prompt length was not predicted."""
    uniform = [
        [run.variant, run.round_index, step["step"]]
        for run in runs
        for step in run.steps
        if step.get("prompt_length/min") is not None and step.get("prompt_length/min") == step.get("prompt_length/max")
    ]
    check: dict[str, Any] = {"steps_with_one_prompt_length": uniform}
    if predicted_prompt_means is not None:
        check["prompt_length_prediction_mismatches"] = [
            [run.variant, run.round_index, step["step"], step.get("prompt_length/mean")]
            for run in runs
            for step in run.steps
            if step["step"] <= len(predicted_prompt_means)
            and not math.isclose(float(step.get("prompt_length/mean", -1)), predicted_prompt_means[step["step"] - 1])
        ]
    return check


def step_target_name() -> str:
    return f"NoisyGRPO / GRPO mean step time <= {TARGET_RATIO:g} (CPU end-to-end path), steps alternating within one run"


# ---------------------------------------------------------------------------------------------------
# Report


def comparison_table(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    headers = (
        "quantity",
        "GRPO mean s",
        "Noisy mean s",
        "ratio",
        "GRPO median s",
        "Noisy median s",
        "ratio med",
        "diff s",
        "95% CI (steps)",
    )
    return format_table(
        headers,
        [
            [
                row["quantity"],
                row["grpo_mean_s"],
                row["noisygrpo_mean_s"],
                row["ratio_mean"],
                row["grpo_median_s"],
                row["noisygrpo_median_s"],
                row["ratio_median"],
                row["difference_mean_s"],
                _interval_cell(row.get("ratio_mean_ci95")),
            ]
            for row in rows
        ],
        title=title,
    )


def _interval_cell(interval: Sequence[float] | None) -> str:
    return "-" if interval is None else f"{interval[0]:.3f}-{interval[1]:.3f}"


def _interval_cell(interval: Sequence[float] | None) -> str:
    return "-" if interval is None else f"{interval[0]:.3f}-{interval[1]:.3f}"


def print_target(target: Mapping[str, Any]) -> None:
    value = "not evaluated" if target["value"] is None else f"{target['value']:.3f}"
    verdict = {True: "MET", False: "MISSED", None: "-"}[target["met"]]
    interval = target.get("ci95_rounds") or target.get("ci95")
    over = target.get("interval_over", "rounds")
    spread = "" if interval is None else f"; 95% interval over {over} {interval[0]:.3f}-{interval[1]:.3f}"
    if target.get("resolved") is False:
        spread += " (wider than the threshold: not resolved on this machine)"
    print(f"target: {target['name']}: {value} [{verdict}]{spread}")
    if target.get("drift_adjusted_value") is not None:
        adjusted_verdict = {True: "MET", False: "MISSED"}[target["drift_adjusted_met"]]
        interval = target.get("drift_adjusted_ci95")
        ci = "" if interval is None else f"; 95% interval over rounds {interval[0]:.3f}-{interval[1]:.3f}"
        print(
            f"        drift-adjusted (step / control parts): {target['drift_adjusted_value']:.3f} [{adjusted_verdict}]{ci}"
        )


def print_report(report: Mapping[str, Any]) -> None:
    """The tables of a full report (also what ``--quick`` re-prints)."""
    config, alternating = report["config"], report["alternating"]
    steps = alternating["summaries"][GRPO]["steps"]
    rounds = config.get("alternating_rounds", 1)
    title = (
        f"NoisyGRPO vs GRPO, seconds per training step, mean/median of {steps} steps per variant ({2 * rounds} "
        f"run(s), NoisyGRPO on odd steps in half of them, on even steps in the others; {config['warmup']} "
        "warm-up steps dropped per run)"
    )
    print(comparison_table(alternating["comparison"], title))
    balanced = alternating["balanced_pairs"]
    if balanced["n"]:
        print(
            f"balanced step pairs: NoisyGRPO / GRPO {balanced['ratio']:.3f} (geometric mean of {balanced['n']}, "
            f"range {balanced['min']:.3f}-{balanced['max']:.3f}, 95% t interval {_interval_cell(balanced['ci95'])})"
        )
    means = {variant: alternating["summaries"][variant]["means"] for variant in VARIANTS}
    print(
        "response length mean: "
        + ", ".join(f"{variant} {means[variant].get('response_length/mean')}" for variant in VARIANTS)
        + "; prompt length mean: "
        + ", ".join(f"{variant} {means[variant].get('prompt_length/mean')}" for variant in VARIANTS)
    )
    if alternating.get("problems"):
        print("PROBLEMS:\n  " + "\n  ".join(alternating["problems"][:20]))
    print()
    print_target(alternating["target"])


def run_full(config: StepBenchConfig) -> dict[str, Any]:
    """Wait for a quiet machine, train the alternating runs, summarise; returns the report."""
    started = time.perf_counter()
    configure_threads(config.threads)
    report = report_header(BENCHMARK, asdict(config))
    report["malloc"] = configure_malloc(config.malloc)
    report["mode"] = "full"
    inputs = prepare_bench_inputs(config)
    report["overrides"] = {"shared": shared_overrides(config)}
    report["quiet_wait"] = wait_for_quiet_machine(config.max_load, config.load_wait_s)
    report["load_average_before_runs"] = load_average()
    runs = [
        train_alternating(parity, round_index, config, inputs)
        for round_index, parity in alternating_order(config.alternating_rounds)
    ]
    report["alternating"] = summarise_alternating(runs, config.warmup)
    report["lengths"] = batch_length_check(runs, None)
    report["targets"] = [report["alternating"]["target"]]
    report["load_average_after_runs"] = load_average()
    report["runs"] = [run.as_dict() for run in runs]
    print_report(report)
    problems = report["alternating"]["problems"]
    if problems:
        finish_report(report, started)
        raise RuntimeError("alternating runs did not alternate as designed:\n  " + "\n  ".join(problems[:20]))
    return finish_report(report, started)


def run_quick(config: StepBenchConfig) -> dict[str, Any]:
    """No training: re-print the last full report's figures."""
    started = time.perf_counter()
    report = report_header(BENCHMARK, asdict(config))
    report["mode"] = "quick: re-summary of the last full report, no training run"
    source = Path(config.source_report)
    if not source.exists():
        print(f"[bench_step] --quick runs no training, and there is no full report at {source} to re-summarise.")
        report["source_report"] = None
        report["targets"] = [{"name": step_target_name(), "threshold": TARGET_RATIO, "value": None, "met": None}]
        return finish_report(report, started)
    full = json.loads(source.read_text(encoding="utf-8"))
    print(
        f"[bench_step] --quick runs no training (one CPU run takes minutes); re-summarising {source}, "
        f"measured {full['created_utc']} on {full['machine']['cpu_model']}:\n"
    )
    print_report(full)
    report["source_report"] = {"path": str(source), "created_utc": full["created_utc"]}
    report["alternating"] = full["alternating"]
    report["targets"] = [full["alternating"]["target"]]
    return finish_report(report, started)


# ---------------------------------------------------------------------------------------------------
# Command line


def parse_config(argv: Sequence[str] | None = None) -> tuple[StepBenchConfig, Path]:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{BENCHMARK}", description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.set_defaults(malloc="default")
    defaults = StepBenchConfig()
    parser.add_argument("--alternating-pairs", type=positive_int, default=defaults.alternating_pairs)
    parser.add_argument("--alternating-rounds", type=positive_int, default=defaults.alternating_rounds)
    parser.add_argument("--prompts-per-step", type=positive_int, default=defaults.prompts_per_step)
    parser.add_argument("--max-response-length", type=positive_int, default=defaults.max_response_length)
    parser.add_argument("--poll-interval", type=float, default=defaults.poll_interval_s, help="replay-buffer poll (s)")
    parser.add_argument("--max-load", type=float, default=defaults.max_load, help="wait for a 1-min load below this")
    parser.add_argument("--load-wait", type=float, default=defaults.load_wait_s, help="longest wait for it (s)")
    parser.add_argument("--workdir", type=Path, default=Path(defaults.workdir), help="model, data, run logs")
    parser.add_argument("--source-report", type=Path, default=Path(defaults.source_report), help="what --quick reprints")
    args = parser.parse_args(argv)
    config = StepBenchConfig(
        warmup=args.warmup if args.warmup is not None else defaults.warmup,
        alternating_pairs=args.alternating_pairs,
        alternating_rounds=args.alternating_rounds,
        prompts_per_step=args.prompts_per_step,
        max_response_length=args.max_response_length,
        poll_interval_s=args.poll_interval,
        max_load=args.max_load,
        load_wait_s=args.load_wait,
        threads=args.threads,
        malloc=args.malloc,
        workdir=str(args.workdir.resolve()),
        quick=args.quick,
        source_report=str(args.source_report.resolve()),
    )
    return config, args.output or default_output_path(BENCHMARK, args.quick)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark from command-line arguments; prints tables, writes the JSON report, returns its path."""
    config, output = parse_config(argv)
    report = run_quick(config) if config.quick else run_full(config)
    path = write_json(output, report)
    print(f"\nwrote {path}")
    return path


if __name__ == "__main__":
    main()
