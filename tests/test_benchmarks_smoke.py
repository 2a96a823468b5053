"""Smoke tests of benchmarks/: tiny configs run end to end and write valid JSON reports.

Each benchmark runs as its own process, as it is meant to (it pins thread pools and allocator
settings process-wide, which must not leak into the rest of the test session). No timing assertions: only that every figure is there, finite and of the right sign. The baseline
implementation inside bench_noise is also checked against docs/algorithm.md section 2, since every
speed ratio the benchmark prints is only as meaningful as that baseline.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # benchmarks/ is a folder of the checkout, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import _common, bench_advantage, bench_noise  # noqa: E402
from benchmarks._rss import measure_in_this_process  # noqa: E402


def _run_benchmark(name: str, argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    assert "wrote " in completed.stdout


def _strict_json(path: Path) -> dict[str, Any]:
    def reject(constant: str) -> None:
        raise ValueError(f"{path} contains {constant}, which is not valid JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=reject)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _assert_positive(row: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        assert _is_number(row[key]) and row[key] > 0, (key, row)


def _assert_header(report: dict[str, Any], name: str) -> None:
    assert report["benchmark"] == name
    machine = report["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1
    assert machine["packages"]["torch"] and machine["packages"]["numpy"]
    assert report["config"]["threads"] == 1 and report["machine"]["torch_num_threads"] == 1
    assert report["malloc"]["mode"] == "fixed"
    assert _is_number(report["wall_time_s"]) and report["wall_time_s"] > 0


def _assert_rss(entries: list[dict[str, Any]], labels: tuple[str, ...]) -> None:
    assert [entry["label"] for entry in entries] == list(labels)
    for entry in entries:
        assert _is_number(entry["import_rss_mib"]) and entry["import_rss_mib"] > 0
        for key in ("inputs_mib", "peak_over_import_mib", "first_call_mib"):
            assert _is_number(entry[key]), (key, entry)
        assert entry["first_call_mib"] >= 0 and entry["runs"] >= 2
        assert entry["peak_over_import_mib"] >= entry["inputs_mib"] + entry["first_call_mib"] - 1e-6
        if entry["method"] == "VmHWM after clear_refs":  # the peak mark can be reset: later calls measured too
            assert _is_number(entry["steady_call_mib"]) and entry["steady_call_mib"] >= 0


TIMING_KEYS = ("best_s", "median_s", "best_per_s", "median_per_s", "repeats", "calls_per_sample")


def test_bench_noise_writes_a_complete_report(tmp_path: Path) -> None:
    output = tmp_path / "noise.json"
    argv = ["--quick", "--sizes", "32", "48", "--levels", "0.3,0.9", "--repeats", "2", "--output", str(output)]
    _run_benchmark("bench_noise", argv)
    report = _strict_json(output)

    _assert_header(report, "bench_noise")
    assert {(row["size"], row["level"], row["impl"]) for row in report["results"]} == {
        (size, level, impl) for size in (32, 48) for level in (0.3, 0.9) for impl in bench_noise.IMPLEMENTATIONS
    }
    assert {row["level"] for row in report["copy_level_results"]} == {0.0}
    for row in report["results"] + report["copy_level_results"]:
        _assert_positive(row, TIMING_KEYS + ("images_per_s_best", "speedup_vs_reference_best"))
        _assert_positive(row, ("speedup_vs_reference_median",))
    stages = report["reference_profile"]["stages"]
    assert len(stages) == 5 and all(stage["best_s"] > 0 for stage in stages)
    assert math.isclose(sum(stage["share_of_best_sum"] for stage in stages), 1.0)
    _assert_rss(report["peak_rss"], bench_noise.IMPLEMENTATIONS)
    assert all(entry["kwargs"]["size"] == 48 for entry in report["peak_rss"])
    # 1536^2 was not run, so the speed target is reported as not evaluated rather than met or missed.
    assert [target["met"] for target in report["targets"]] == [None, None]


def test_bench_advantage_writes_a_complete_report(tmp_path: Path) -> None:
    output = tmp_path / "advantage.json"
    argv = ["--quick", "--sizes", "8", "64", "--repeats", "2", "--devices", "cpu", "--no-rss", "--output", str(output)]
    _run_benchmark("bench_advantage", argv)
    report = _strict_json(output)

    _assert_header(report, "bench_advantage")
    assert {(row["batch_size"], row["device"], row["impl"]) for row in report["results"]} == {
        (size, "cpu", impl) for size in (8, 64) for impl in bench_advantage.IMPLEMENTATIONS
    }
    for row in report["results"]:
        _assert_positive(row, TIMING_KEYS + ("rows_per_s_best", "speedup_vs_grpo_best", "speedup_vs_grpo_median"))
    assert report["peak_rss"] == [] and report["peak_cuda_memory"] == []
    assert {target["name"].split()[0] for target in report["targets"]} == set(bench_advantage.TARGET_PATHS)
    assert all(isinstance(target["met"], bool) and target["value"] > 0 for target in report["targets"])


@pytest.mark.parametrize("impl", bench_advantage.IMPLEMENTATIONS)
def test_advantage_memory_workloads_run_in_process(impl: str) -> None:
    fields = measure_in_this_process(
        bench_advantage.RSS_WORKLOADS["advantage"], {"impl": impl, "batch_size": 16}, runs=2, import_rss=1
    )
    assert fields["runs"] == 2 and fields["first_call_mib"] >= 0


def test_advantage_paths_agree_with_grpo_on_shapes() -> None:
    batch = bench_advantage.make_batch(16)
    assert batch.uids.dtype == object and len(set(batch.uids)) == 4
    assert np.allclose(batch.token_level_rewards.sum(-1).numpy(), batch.scores.numpy())
    outputs = {name: path() for name, path in bench_advantage.advantage_paths(batch).items()}
    grpo_advantages, _ = outputs["verl_grpo"]
    estimator_advantages, _ = outputs["noisygrpo_estimator"]
    assert estimator_advantages.shape == grpo_advantages.shape == batch.token_level_rewards.shape
    assert outputs["bayesian_advantage"][0].shape == batch.scores.shape


@pytest.mark.parametrize(
    ("extent", "signal_scale", "noise_scale"), [(0.3, 0.9810, 0.1941), (0.6, 0.7342, 0.6789), (0.9, 0.3649, 0.9311)]
)
def test_reference_baseline_uses_the_papers_schedule(extent: float, signal_scale: float, noise_scale: float) -> None:
    alphabar = float(bench_noise.reference_schedule()[bench_noise.reference_step(extent)])
    assert math.isclose(math.sqrt(alphabar), signal_scale, abs_tol=1e-4)
    assert math.isclose(math.sqrt(1.0 - alphabar), noise_scale, abs_tol=1e-4)


def test_reference_baseline_keeps_size_and_mode_and_adds_noise() -> None:
    image = bench_noise.synthetic_image(40)
    noisy = bench_noise.reference_add_noise(image, 0.6)
    assert noisy.size == image.size and noisy.mode == "RGB"
    assert not np.array_equal(np.asarray(noisy), np.asarray(image))


def test_time_cases_and_table_helpers() -> None:
    timings = _common.time_cases({"a": lambda: sum(range(100)), "b": lambda: None}, warmup=0, repeats=3)
    for timing in timings.values():
        assert timing.repeats == 3 and timing.calls_per_sample >= 1
        assert 0 < timing.best_s <= timing.median_s
    table = _common.format_table(("name", "value"), [["x", 1.5], ["long name", 1234.0]])
    assert table.splitlines()[0].split() == ["name", "value"] and "1,234" in table


def test_bench_step_alternating_pairs_cancel_batch_differences(tmp_path: Path) -> None:
    """Made-up alternating runs: every step's batch has its own cost, NoisyGRPO steps cost 6 % more; the balanced
    pair ratio recovers 1.06 exactly, and logs that contradict a run's parity are reported."""
    from benchmarks import bench_step

    batch_cost = {step: 1.5 + 0.1 * (step % 5) for step in range(1, 12)}  # differs from step to step
    levels = {f"noisygrpo/reward@noise_{level}": 0.0 for level in bench_step.expected_noise_levels()}

    def run(parity: int, round_index: int = 0) -> Any:
        steps = []
        for step in range(1, 12):
            noisy = step % 2 == parity
            seconds = batch_cost[step] * (1.06 if noisy else 1.0)
            steps.append(
                {
                    "step": step,
                    "timing_s/step": seconds,
                    "timing_s/gen": seconds / 2,
                    bench_step.ALTERNATING_VARIANT_METRIC: float(noisy),
                    **(levels if noisy else {}),
                }
            )
        return bench_step.RunRecord("alternating", round_index, 0, 60.0, [], "run.log", steps, parity=parity)

    runs = [run(0), run(1)]
    summary = bench_step.summarise_alternating(runs, warmup=1)
    assert summary["problems"] == []
    balanced = summary["balanced_pairs"]
    assert balanced["n"] == 5 and math.isclose(balanced["ratio"], 1.06) and math.isclose(balanced["min"], 1.06)
    assert all(math.isclose(bound, 1.06) for bound in balanced["ci95"])
    # Within one run the batches differ, so a single run's pairs do not give 1.06.
    assert not all(math.isclose(math.exp(pair["log_ratio"]), 1.06) for pair in summary["pairs"][0]["pairs"])
    assert summary["summaries"]["grpo"]["steps"] == summary["summaries"]["noisygrpo"]["steps"] == 10
    assert summary["target"]["met"] is False and summary["target"]["resolved"] is True
    assert bench_step.alternating_order(2) == [(0, 0), (0, 1), (1, 1), (1, 0)]

    broken = run(1)
    broken.steps[4][bench_step.ALTERNATING_VARIANT_METRIC] = 1.0  # step 5 is NoisyGRPO with parity 1: fine
    broken.steps[5][bench_step.ALTERNATING_VARIANT_METRIC] = 1.0  # step 6 should be GRPO
    del broken.steps[6]["noisygrpo/reward@noise_0.90"]  # step 7 lost a level
    problems = bench_step.alternating_problems([broken])
    assert len(problems) == 2 and "step 6" in problems[0] and "step 7" in problems[1]

    # --quick re-prints a full report without training
    source = tmp_path / "full.json"
    config = {"warmup": 1, "alternating_rounds": 1}
    full = {**_common.report_header("bench_step", config), "alternating": summary, "runs": [r.as_dict() for r in runs]}
    _common.write_json(source, full)
    output = tmp_path / "quick.json"
    _run_benchmark("bench_step", ["--quick", "--source-report", str(source), "--output", str(output)])
    report = _strict_json(output)
    assert report["benchmark"] == "bench_step" and report["mode"].startswith("quick")
    assert report["source_report"]["path"] == str(source) and report["alternating"] == summary
    assert report["targets"] == [summary["target"]]


def test_the_alternating_runs_log_the_metric_bench_step_reads() -> None:
    from benchmarks import _alternating, bench_step

    assert bench_step.ALTERNATING_VARIANT_METRIC == _alternating.VARIANT_METRIC


def test_bench_rollout_compares_batched_and_sequential_serving(tmp_path: Path) -> None:
    output = tmp_path / "rollout.json"
    _run_benchmark(
        "bench_rollout",
        [
            "--requests",
            "8",
            "--repeats",
            "1",
            "--max-tokens",
            "4",
            "--workdir",
            str(tmp_path / "w"),
            "--output",
            str(output),
        ],
    )
    report = _strict_json(output)
    assert set(report["results"]) == {"sequential", "batched"}
    assert all(len(case["seconds"]) == 1 and case["seconds"][0] > 0 for case in report["results"].values())
    assert report["speedup_median"] > 0
