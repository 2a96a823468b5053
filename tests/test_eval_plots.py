"""Training-dynamics plots from verl's ``file`` logger JSONL and from tensorboard events."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from recipe.noisygrpo.eval import plots
from recipe.noisygrpo.eval.plots import read_jsonl, read_log

NOISE_LEVELS = ("0.00", "0.30", "0.60", "0.90")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_file_logger(path: Path, steps: int, noisygrpo: bool) -> Path:
    """A log in verl 0.9.1 FileLogger's format: one {"step": N, "data": {...}} JSON line per log call."""
    with open(path, "w", encoding="utf-8") as handle:
        for step in range(1, steps + 1):
            data = {
                "critic/score/mean": 1.0 + 0.05 * step,
                "critic/rewards/mean": 1.0 + 0.05 * step,
                "response_length/mean": 120.0 - step,
                "actor/pg_loss": 0.01,
                "timing_s/step": 3.0,
            }
            if noisygrpo:
                data["noisygrpo/kalman_gain_mean"] = 0.5 + 0.01 * step
                data["noisygrpo/reward_std"] = 0.3
                data["noisygrpo/zero_variance_group_frac"] = 0.25
                for index, level in enumerate(NOISE_LEVELS):
                    data[f"noisygrpo/reward@noise_{level}"] = 1.5 - 0.2 * index + 0.01 * step
            handle.write(json.dumps({"step": step, "data": data}) + "\n")
        # verl logs NaN for empty statistics; a second call for the same step overrides the first.
        handle.write(
            json.dumps({"step": steps, "data": {"critic/score/mean": 9.0, "response_length/mean": None}}) + "\n"
        )
    return path


def test_file_logger_series_and_plots(tmp_path: Path) -> None:
    noisy = read_log("noisygrpo", write_file_logger(tmp_path / "noisy.jsonl", steps=6, noisygrpo=True))
    grpo = read_log("grpo", write_file_logger(tmp_path / "grpo.jsonl", steps=4, noisygrpo=False))
    score = noisy.series["critic/score/mean"]
    assert score.steps.tolist() == [1, 2, 3, 4, 5, 6]
    assert score.values[-1] == 9.0  # the later record of step 6 wins
    assert noisy.series["response_length/mean"].values.tolist() == [119.0, 118.0, 117.0, 116.0, 115.0, 114.0]

    outputs = {output.key: output for output in plots.plot_logs([noisy, grpo], tmp_path / "plots")}
    expected_series = {"reward": 2, "reward_std": 1, "kalman_gain": 1, "reward_by_noise": 4, "response_length": 2}
    assert {key: outputs[key].n_series for key in expected_series} == expected_series
    assert plots.OVERVIEW_NAME in outputs
    for output in outputs.values():
        png, svg = output.files
        assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 1000
        assert "<svg" in svg.read_text(encoding="utf-8")


def test_noise_panel_matches_keys_by_pattern(tmp_path: Path) -> None:
    log = read_log("run", write_file_logger(tmp_path / "run.jsonl", steps=3, noisygrpo=True))
    log.series["noisygrpo/reward@noise_1"] = log.series.pop("noisygrpo/reward@noise_0.90")  # formatting drift
    figure, n_series = plots.panel_figure(plots.PANELS_BY_KEY["reward_by_noise"], [log])
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert n_series == len(labels) == 4
    assert labels == ["run, noise 0.00", "run, noise 0.30", "run, noise 0.60", "run, noise 1"]  # numeric order


def test_tensorboard_events_are_read(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter  # the writer verl's tensorboard logger uses

    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(1, 4):
        writer.add_scalar("critic/score/mean", 0.5 * step, step)
        writer.add_scalar("noisygrpo/reward@noise_0.30", 0.1 * step, step)
    writer.close()
    log = read_log("tb", tmp_path / "tb")
    assert log.series["critic/score/mean"].steps.tolist() == [1, 2, 3]
    assert log.series["critic/score/mean"].values.tolist() == pytest.approx([0.5, 1.0, 1.5])
    outputs = {output.key: output for output in plots.plot_logs([log], tmp_path / "plots")}
    assert outputs["reward"].n_series == 1 and outputs["reward_by_noise"].n_series == 1
    assert "kalman_gain" not in outputs  # no data: skipped, not an empty figure


def test_cli_and_bad_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_file_logger(tmp_path / "metrics.jsonl", steps=3, noisygrpo=True)
    assert plots.main(["--log", str(log), "--out", str(tmp_path / "out"), "--smooth", "2"]) == 0
    assert (tmp_path / "out" / "reward_by_noise.png").stat().st_size > 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "data": {}}\nnot json\n{"step": 2, "data": {}}\n')
    assert plots.main(["--log", f"x={bad}", "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err

    truncated = tmp_path / "killed.jsonl"
    truncated.write_text('{"step": 1, "data": {"critic/score/mean": 1.0}}\n{"step": 2, "da')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_jsonl(truncated)["critic/score/mean"].steps.tolist() == [1]
    assert any("unreadable last line" in str(item.message) for item in caught)


def test_moving_average() -> None:
    import numpy as np

    assert plots.moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert plots.moving_average(np.array([1.0, 3.0]), 1).tolist() == [1.0, 3.0]


def test_heldout_panel_has_one_series_per_validation_data_source(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with path.open("w") as handle:
        for step in (0, 10):
            data = {f"val-aux/toy_{split}/correctness/mean@1": 0.5 + step / 100 for split in ("clean", "blind")}
            data["val-aux/toy_clean/reward/mean@1"] = 1.0  # another metric: not in the panel
            handle.write(json.dumps({"step": step, "data": data}) + "\n")
    figure, n_series = plots.panel_figure(plots.PANELS_BY_KEY["heldout_accuracy"], [read_log("run", path)])
    labels = sorted(line.get_label() for line in figure.axes[0].get_lines())
    assert n_series == 2 and labels == ["run, toy_blind", "run, toy_clean"]


def test_seed_band_figure_draws_the_mean_over_seeds_and_the_min_to_max_band(tmp_path: Path) -> None:
    curves = {
        "grpo": [{0: {"clean": 0.5, "noisy": 0.2}, 10: {"clean": 0.6}}, {0: {"clean": 0.7}, 10: {"clean": 0.8}}],
        "noisygrpo": [{0: {"clean": 0.4, "noisy": 0.3}, 10: {"clean": 0.9, "noisy": 0.5}}],
    }
    figure = plots.seed_band_figure(curves, ["clean", "noisy"], "title", "accuracy")
    clean, noisy = figure.axes
    lines = {line.get_label(): line for line in clean.get_lines()}
    assert list(lines) == ["grpo (n=2)", "noisygrpo (n=1)"]
    assert lines["grpo (n=2)"].get_xydata().ravel().tolist() == pytest.approx([0, 0.6, 10, 0.7])
    band = clean.collections[0].get_paths()[0].vertices  # fill_between's polygon: lower then upper edge
    assert band[:, 1].min() == pytest.approx(0.5) and band[:, 1].max() == pytest.approx(0.8)
    # a split a seed did not log is averaged over the seeds that did
    noisy_lines = {line.get_label(): line.get_xydata().ravel().tolist() for line in noisy.get_lines()}
    assert noisy_lines["grpo (n=2)"] == pytest.approx([0, 0.2])
    files = plots.plot_seed_bands(curves, ["clean", "noisy"], tmp_path / "p", "bands", "t", "accuracy")
    assert [file.name for file in files] == ["bands.png", "bands.svg"]
    assert files[0].read_bytes().startswith(PNG_MAGIC)


def test_many_series_put_the_legend_beside_the_axes(tmp_path: Path) -> None:
    logs = [read_log(f"run{i}", write_file_logger(tmp_path / f"r{i}.jsonl", 3, noisygrpo=True)) for i in range(2)]
    figure, n_series = plots.panel_figure(plots.PANELS_BY_KEY["reward_by_noise"], logs)
    anchor = figure.axes[0].get_legend().get_bbox_to_anchor().transformed(figure.axes[0].transAxes.inverted())
    assert n_series == 8 > plots.LEGEND_INSIDE_MAX and anchor.x0 > 1.0
    figure, n_series = plots.panel_figure(plots.PANELS_BY_KEY["kalman_gain"], logs)
    anchor = figure.axes[0].get_legend().get_bbox_to_anchor().transformed(figure.axes[0].transAxes.inverted())
    assert n_series == 2 and anchor.x0 == pytest.approx(0.0)
