"""NoisyGRPO's Bayesian advantage against verl's ``grpo`` estimator, over batch sizes and devices.

Timed, interleaved, on the same batch (B rows, groups of 4 rows sharing a uid string as verl builds
them, response length 256, noise levels 0 / 0.3 / 0.6 / 0.9 within each group):

* ``bayesian_advantage``     - ``verl_ext.advantage.bayesian_advantage(scores, noise_extents, uids)``,
  the math alone on the (B,) scores;
* ``noisygrpo_estimator``    - the registered estimator ``get_adv_estimator_fn("noisygrpo")`` on the
  (B, T) token-level rewards and response mask, noise extents passed as an argument;
* ``noisygrpo_trainer_path`` - the same estimator inside ``noisygrpo_inputs(...)``, as the NoisyGRPO
  trainer calls it: it also computes the per-step logging metrics;
* ``verl_grpo``              - ``verl.trainer.ppo.core_algos.compute_grpo_outcome_advantage``, the baseline.

CPU always; CUDA too when present. Figures are best-of-N and median per call; the speedup is grpo's
time / ours. Also reported: peak RSS of each path at the largest B on CPU (fresh subprocess each)
and, on CUDA, the peak extra GPU memory. Usage: ``python -m benchmarks.bench_advantage [--quick]``.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn

from benchmarks._common import (
    Timing,
    add_common_arguments,
    configure_malloc,
    configure_threads,
    default_output_path,
    finish_report,
    format_table,
    positive_int,
    report_header,
    speedup,
    time_cases,
    write_json,
)
from benchmarks._rss import RSS_TABLE_HEADERS, RssProbe, measure_peak_rss, rss_table_rows
from verl_ext.advantage import ESTIMATOR_NAME, bayesian_advantage, noisygrpo_inputs

BENCHMARK = "bench_advantage"
BASELINE = "verl_grpo"
OUR_PATHS = ("bayesian_advantage", "noisygrpo_estimator", "noisygrpo_trainer_path")
IMPLEMENTATIONS = (*OUR_PATHS, BASELINE)
TARGET_PATHS = ("bayesian_advantage", "noisygrpo_estimator")  # the target: no slower than grpo

DEFAULT_SIZES = (64, 256, 1024, 4096, 16384, 65536)
QUICK_SIZES = (64, 1024, 16384)
# Every memory probe imports verl afresh (~10 s of CPU here): --quick measures the registered
# estimator and its baseline only, to stay under a minute on a busy 2-core machine.
QUICK_RSS_PATHS = ("noisygrpo_estimator", BASELINE)
GROUP_SIZE = 4
RESPONSE_LENGTH = 256
NOISE_LEVELS = (0.0, 0.3, 0.6, 0.9)
_MIB = 2**20


# ---------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class AdvantageBatch:
    """One synthetic rollout batch, laid out as verl hands it to an advantage estimator.

    Attributes:
        token_level_rewards: (B, T) float32; each row's score r_sem on its last response token.
        response_mask: (B, T) int64; 1 on the response tokens (random lengths 1..T).
        scores: (B,) float32; the row sums of ``token_level_rewards``.
        noise_extents: (B,) float32; levels 0, 0.3, 0.6, 0.9 in every group (evenly spaced over
            [0, 0.9] for other group sizes).
        uids: (B,) numpy object array of uid strings; ``group_size`` adjacent rows share one.
    """

    token_level_rewards: torch.Tensor
    response_mask: torch.Tensor
    scores: torch.Tensor
    noise_extents: torch.Tensor
    uids: np.ndarray


def make_batch(
    batch_size: int,
    *,
    group_size: int = GROUP_SIZE,
    response_length: int = RESPONSE_LENGTH,
    device: str = "cpu",
    seed: int = 0,
) -> AdvantageBatch:
    """A batch of ``batch_size`` rows (a multiple of ``group_size``); r_sem = format + correctness."""
    if batch_size % group_size:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of group_size ({group_size})")
    rng = np.random.default_rng(seed)
    num_groups = batch_size // group_size
    group_uids = np.array([str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(num_groups)], dtype=object)
    uids = np.repeat(group_uids, group_size)
    correctness = np.where(rng.random(batch_size) < 0.5, 0.0, rng.uniform(0.6, 1.0, batch_size))
    scores = (correctness + rng.integers(0, 2, batch_size)).astype(np.float32)
    lengths = rng.integers(1, response_length + 1, batch_size)
    response_mask = torch.from_numpy(np.arange(response_length)[None, :] < lengths[:, None]).to(torch.int64)
    token_level_rewards = torch.zeros(batch_size, response_length, dtype=torch.float32)
    token_level_rewards[torch.arange(batch_size), torch.from_numpy(lengths - 1)] = torch.from_numpy(scores)
    group_levels = NOISE_LEVELS if group_size == len(NOISE_LEVELS) else np.linspace(0.0, 0.9, group_size)
    levels = np.tile(np.asarray(group_levels, dtype=np.float32), num_groups)
    return AdvantageBatch(
        token_level_rewards=token_level_rewards.to(device),
        response_mask=response_mask.to(device),
        scores=torch.from_numpy(scores).to(device),
        noise_extents=torch.from_numpy(levels).to(device),
        uids=uids,
    )


# ---------------------------------------------------------------------------------------------------
# The paths


def advantage_paths(batch: AdvantageBatch) -> dict[str, Callable[[], object]]:
    """Zero-argument callables of every path in ``IMPLEMENTATIONS``, bound to ``batch``."""
    noisygrpo = get_adv_estimator_fn(ESTIMATOR_NAME)

    def estimator() -> object:
        return noisygrpo(
            token_level_rewards=batch.token_level_rewards,
            response_mask=batch.response_mask,
            index=batch.uids,
            config=None,
            noise_extents=batch.noise_extents,
        )

    def trainer_path() -> object:
        with noisygrpo_inputs(batch.noise_extents) as inputs:
            advantages = noisygrpo(
                token_level_rewards=batch.token_level_rewards,
                response_mask=batch.response_mask,
                index=batch.uids,
                config=None,
            )
        return advantages, inputs.metrics

    return {
        "bayesian_advantage": lambda: bayesian_advantage(batch.scores, batch.noise_extents, batch.uids),
        "noisygrpo_estimator": estimator,
        "noisygrpo_trainer_path": trainer_path,
        BASELINE: lambda: compute_grpo_outcome_advantage(
            token_level_rewards=batch.token_level_rewards, response_mask=batch.response_mask, index=batch.uids
        ),
    }


def _rss_advantage(impl: str, batch_size: int) -> Callable[[], object]:
    return advantage_paths(make_batch(batch_size))[impl]


RSS_WORKLOADS = {"advantage": _rss_advantage}


def _cuda_sync() -> None:
    torch.cuda.synchronize()


def _no_sync() -> None:
    return None


def peak_cuda_extra_mib(path: Callable[[], object]) -> float:
    """Peak GPU memory allocated by one call of ``path`` beyond what was allocated before it (MiB)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = path()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del result
    return (peak - before) / _MIB


# ---------------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class AdvantageBenchConfig:
    """One run. sizes: batch sizes B (rows; multiples of group_size); devices: "cpu", "cuda"."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    devices: tuple[str, ...] = ("cpu",)
    group_size: int = GROUP_SIZE
    response_length: int = RESPONSE_LENGTH
    threads: int = 1
    warmup: int = 1
    repeats: int = 7
    rss: bool = True
    malloc: str = "fixed"
    rss_paths: tuple[str, ...] = IMPLEMENTATIONS
    rss_runs: int = 2
    quick: bool = False


def _timing_rows(batch_size: int, device: str, timings: dict[str, Timing]) -> list[dict[str, Any]]:
    baseline = timings[BASELINE]
    rows = []
    for impl in IMPLEMENTATIONS:
        timing = timings[impl]
        row: dict[str, Any] = {"batch_size": batch_size, "device": device, "impl": impl, **timing.as_dict()}
        row["rows_per_s_best"] = batch_size * timing.best_per_s
        row["speedup_vs_grpo_best"] = speedup(baseline.best_s, timing.best_s)
        row["speedup_vs_grpo_median"] = speedup(baseline.median_s, timing.median_s)
        rows.append(row)
    return rows


def _targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    targets = []
    for impl in TARGET_PATHS:
        mine = [row for row in rows if row["impl"] == impl]
        for device in sorted({row["device"] for row in mine}):
            on_device = [row for row in mine if row["device"] == device]
            worst = min(on_device, key=lambda row: row["speedup_vs_grpo_best"])
            targets.append(
                {
                    "name": f"{impl} no slower than verl grpo at every B on {device} (best of repeats)",
                    "threshold": 1.0,
                    "value": worst["speedup_vs_grpo_best"],
                    "worst_batch_size": worst["batch_size"],
                    "met": bool(worst["speedup_vs_grpo_best"] >= 1.0),
                }
            )
    return targets


def _rows_table(rows: Sequence[dict[str, Any]], title: str) -> str:
    headers = ("B", "device", "impl", "best ms", "median ms", "rows/s best", "x grpo best", "x grpo median")
    table_rows = [
        [
            row["batch_size"],
            row["device"],
            row["impl"],
            row["best_s"] * 1e3,
            row["median_s"] * 1e3,
            row["rows_per_s_best"],
            row["speedup_vs_grpo_best"],
            row["speedup_vs_grpo_median"],
        ]
        for row in rows
    ]
    return format_table(headers, table_rows, title=title)


def run(config: AdvantageBenchConfig) -> dict[str, Any]:
    """Time every (B, device, path), measure peak memory at the largest B; returns the report."""
    started = time.perf_counter()
    configure_threads(config.threads)
    malloc = configure_malloc(config.malloc)
    report = report_header(BENCHMARK, asdict(config))
    report["malloc"] = malloc
    results: list[dict[str, Any]] = []
    peak_cuda: list[dict[str, Any]] = []
    largest = max(config.sizes)
    for device in config.devices:
        sync = _cuda_sync if device.startswith("cuda") else _no_sync
        for batch_size in config.sizes:
            batch = make_batch(
                batch_size, group_size=config.group_size, response_length=config.response_length, device=device
            )
            paths = advantage_paths(batch)
            timings = time_cases(paths, warmup=config.warmup, repeats=config.repeats, sync=sync)
            results += _timing_rows(batch_size, device, timings)
            if device.startswith("cuda") and batch_size == largest:
                peak_cuda += [
                    {
                        "impl": impl,
                        "batch_size": batch_size,
                        "device": device,
                        "peak_extra_mib": peak_cuda_extra_mib(path),
                    }
                    for impl, path in paths.items()
                ]
            del batch, paths
    report["results"] = results
    report["peak_cuda_memory"] = peak_cuda
    title = (
        f"advantage paths vs verl grpo, groups of {config.group_size}, response length {config.response_length}, "
        f"{config.threads} CPU thread(s), ms per call"
    )
    print(_rows_table(results, title))
    if peak_cuda:
        print()
        print(
            format_table(
                ("path", "B", "device", "peak extra MiB"),
                [[row["impl"], row["batch_size"], row["device"], row["peak_extra_mib"]] for row in peak_cuda],
                title="peak GPU memory per call",
            )
        )

    report["peak_rss"] = []
    if config.rss:
        probes = [
            RssProbe(
                label=impl,
                module=f"benchmarks.{BENCHMARK}",
                workload="advantage",
                kwargs={"impl": impl, "batch_size": largest},
            )
            for impl in config.rss_paths
        ]
        rss_results = measure_peak_rss(probes, threads=config.threads, runs=config.rss_runs)
        report["peak_rss"] = [result.as_dict() for result in rss_results]
        print()
        print(
            format_table(
                RSS_TABLE_HEADERS,
                rss_table_rows(rss_results),
                title=f"peak RSS, fresh process per path, CPU, B={largest}, T={RESPONSE_LENGTH}",
            )
        )

    report["targets"] = _targets(results)
    print()
    for target in report["targets"]:
        verdict = "MET" if target["met"] else "MISSED"
        print(f"target: {target['name']}: worst {target['value']:.2f}x at B={target['worst_batch_size']} [{verdict}]")
    return finish_report(report, started)


def _devices(choice: str) -> tuple[str, ...]:
    if choice == "auto":
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    devices = tuple(part.strip() for part in choice.split(",") if part.strip())
    if any(device.startswith("cuda") for device in devices) and not torch.cuda.is_available():
        raise SystemExit("--devices asks for cuda but torch.cuda.is_available() is False")
    return devices


def parse_config(argv: Sequence[str] | None = None) -> tuple[AdvantageBenchConfig, Path]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_advantage", description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--sizes", type=positive_int, nargs="+", default=None, help="batch sizes B (rows), multiples of 4"
    )
    parser.add_argument("--devices", default="auto", help='"auto" (cpu, and cuda if present) or e.g. "cpu,cuda"')
    args = parser.parse_args(argv)
    defaults = AdvantageBenchConfig()
    if args.sizes and any(size % defaults.group_size for size in args.sizes):
        parser.error(f"--sizes must be multiples of the group size {defaults.group_size}, got {args.sizes}")
    config = AdvantageBenchConfig(
        sizes=tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else defaults.sizes),
        devices=_devices(args.devices),
        threads=args.threads,
        warmup=args.warmup if args.warmup is not None else defaults.warmup,
        repeats=args.repeats if args.repeats is not None else (3 if args.quick else defaults.repeats),
        rss=not args.no_rss,
        malloc=args.malloc,
        rss_paths=QUICK_RSS_PATHS if args.quick else defaults.rss_paths,
        quick=args.quick,
    )
    return config, args.output or default_output_path(BENCHMARK, args.quick)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark from command-line arguments; prints tables, writes the JSON report, returns its path."""
    config, output = parse_config(argv)
    path = write_json(output, run(config))
    print(f"\nwrote {path}")
    return path


if __name__ == "__main__":
    main()
