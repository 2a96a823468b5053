"""Metrics survive a resumed run: one file per launch of verl's file logger, read back as one log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipe.noisygrpo import metrics_log
from recipe.noisygrpo.eval.plots import read_jsonl
from recipe.noisygrpo.main_noisygrpo import keep_earlier_metrics


def write_launch(path: Path, steps: range, tag: float, broken_tail: bool = False) -> Path:
    with path.open("w") as handle:
        for step in steps:
            handle.write(json.dumps({"step": step, "data": {"critic/score/mean": tag + step}}) + "\n")
        if broken_tail:  # killed while writing
            handle.write('{"step": 99, "da')
    return path


def test_each_launch_gets_its_own_file_in_order(tmp_path):
    base = tmp_path / "metrics.jsonl"
    assert metrics_log.launch_path(base) == base
    base.write_text("")
    assert metrics_log.launch_path(base) == tmp_path / "metrics.launch2.jsonl"
    (tmp_path / "metrics.launch2.jsonl").write_text("")
    (tmp_path / "metrics.launch10.jsonl").write_text("")
    (tmp_path / "metrics.launchX.jsonl").write_text("")  # not a launch file
    (tmp_path / "other.launch3.jsonl").write_text("")  # another log
    assert metrics_log.launch_path(base) == tmp_path / "metrics.launch11.jsonl"
    assert [file.name for file in metrics_log.launch_files(base)] == [
        "metrics.jsonl",
        "metrics.launch2.jsonl",
        "metrics.launch10.jsonl",
    ]


def test_steps_rerun_after_a_crash_keep_the_later_launch(tmp_path):
    base = write_launch(tmp_path / "metrics.jsonl", range(1, 6), tag=0.0, broken_tail=True)  # crashed in step 6
    write_launch(tmp_path / "metrics.launch2.jsonl", range(4, 9), tag=100.0)  # resumed from the step-3 checkpoint
    with pytest.warns(UserWarning, match="unreadable last line"):
        records = metrics_log.read_records(base)
    assert [record["step"] for record in records] == list(range(1, 9))
    assert [record["data"]["critic/score/mean"] for record in records] == [1, 2, 3, 104, 105, 106, 107, 108]
    with pytest.warns(UserWarning):
        series = read_jsonl(base)["critic/score/mean"]  # the plots read every launch too
    assert series.steps.tolist() == list(range(1, 9)) and series.values[-1] == 108


def test_missing_log_and_bad_lines_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        metrics_log.read_records(tmp_path / "metrics.jsonl")
    base = tmp_path / "metrics.jsonl"
    base.write_text('{"step": 1, "data": {}}\n')
    (tmp_path / "metrics.launch2.jsonl").write_text('not json\n{"step": 2, "data": {}}\n')
    with pytest.raises(ValueError, match=r"metrics.launch2.jsonl:1: not JSON"):
        metrics_log.read_records(base)


def test_entry_point_points_verls_file_logger_at_a_new_file_when_the_log_exists(tmp_path, monkeypatch, capsys):
    config = OmegaConf.create({"trainer": {"logger": ["console", "file"], "project_name": "p", "experiment_name": "e"}})
    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path))
    keep_earlier_metrics(config)
    first = Path(metrics_log.file_logger_path("p", "e"))
    assert first == tmp_path / "p" / "e.jsonl" and first.parent.is_dir()
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(first))
    first.write_text('{"step": 1, "data": {}}\n')
    keep_earlier_metrics(config)
    assert metrics_log.file_logger_path("p", "e") == tmp_path / "p" / "e.launch2.jsonl"
    assert "holds an earlier launch's metrics" in capsys.readouterr().out
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(first))
    keep_earlier_metrics(
        OmegaConf.create({"trainer": {"logger": "console", "project_name": "p", "experiment_name": "e"}})
    )
    assert metrics_log.file_logger_path("p", "e") == first  # no file logger: nothing to do


def advantage_rows(path: Path, steps: range, tag: float, rows_per_step: int = 4, cut_after: int | None = None) -> Path:
    """The trainer's advantage log for ``steps``; ``cut_after`` rows of the last step, then a half-written line."""
    lines = [
        json.dumps({"step": step, "uid": f"u{step}", "score": tag + row, "advantage": 0.0})
        for step in steps
        for row in range(rows_per_step)
    ]
    if cut_after is not None:
        lines = lines[: len(lines) - rows_per_step + cut_after] + ['{"step": 9, "uid": "u9", "sco']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_advantage_rows_of_a_step_rerun_after_kill_9_appear_once_from_the_later_launch(tmp_path):
    # Launch 1 logged steps 1-3 and was killed while writing step 3's rows (checkpoint at step 2).
    first = metrics_log.advantage_log_path(tmp_path)
    assert first == tmp_path / "advantages.jsonl"
    advantage_rows(first, range(1, 4), tag=0.0, cut_after=2)
    second = metrics_log.advantage_log_path(tmp_path)
    assert second == tmp_path / "advantages.launch2.jsonl"
    advantage_rows(second, range(3, 5), tag=100.0)
    with pytest.warns(UserWarning, match="advantages.jsonl:11: unreadable last line"):
        rows = metrics_log.read_advantage_rows(tmp_path)
    assert [row["step"] for row in rows] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert [row["score"] for row in rows if row["step"] == 3] == [100.0, 101.0, 102.0, 103.0]
    with pytest.raises(FileNotFoundError, match="no such advantage log"):
        metrics_log.read_advantage_rows(tmp_path / "elsewhere")
    second.write_text('{"uid": "no step"}\n')
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"advantages.launch2.jsonl:1: expected \{\"step\""):
        metrics_log.read_advantage_rows(tmp_path)
