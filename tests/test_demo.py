"""The CPU demo's pieces that need no training run (the run itself is in test_e2e_noisygrpo)."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from recipe.noisygrpo.demo import run_demo
from recipe.noisygrpo.demo.run_demo import DemoSettings, demo_overrides, format_summary, read_step_metrics
from recipe.noisygrpo.main_noisygrpo import validate
from verl_cpu.overrides import cpu_overrides


def test_with_a_gpu_the_demo_points_to_the_real_run_script(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run_demo.main(["--workdir", str(tmp_path / "demo")]) == 0
    assert "scripts/run_qwen25vl_3b.sh" in capsys.readouterr().out
    assert not (tmp_path / "demo").exists()  # nothing built, nothing run


def test_demo_overrides_compose_and_validate(tmp_path):
    files = {"train": tmp_path / "train.parquet", "val": tmp_path / "val.parquet"}
    overrides = [*cpu_overrides(), *demo_overrides(tmp_path / "model", files, tmp_path, DemoSettings())]
    with initialize_config_module(config_module="recipe.noisygrpo.config", version_base=None):
        config = compose(config_name="noisygrpo_trainer", overrides=overrides)
    validate(config)
    assert config.algorithm.adv_estimator == "noisygrpo"
    assert config.actor_rollout_ref.rollout.n == 4
    assert config.trainer.total_training_steps == DemoSettings().steps
    assert config.data.train_files != config.data.val_files


def test_summary_table_has_a_row_per_step_and_reward_by_level_columns(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        '{"step": 1, "data": {"timing_s/step": 3.5, "noisygrpo/kalman_gain_mean": 0.9, '
        '"noisygrpo/reward@noise_0.00": 1.0, "noisygrpo/reward@noise_0.90": 0.25}}\n'
        '{"step": 1, "data": {"val-core/acc": 0.5}}\n'
        '{"step": 2, "data": {"timing_s/step": 2.0, "noisygrpo/kalman_gain_mean": 0.5}}\n'
    )
    steps = read_step_metrics(log)
    assert [s["step"] for s in steps] == [1, 2]
    lines = format_summary(steps).splitlines()
    assert len(lines) == 3
    header = lines[0].split()
    assert header[:3] == ["step", "r@0.00", "r@0.90"]
    assert "0.250" in lines[1] and "0.900" in lines[1] and "3.500" in lines[1]
    assert "—" in lines[2]  # step 2 logged no reward-by-level value


def test_demo_inputs_are_built_once(tmp_path):
    settings = DemoSettings(num_train=4, num_val=2)
    model_dir, files = run_demo.prepare_inputs(tmp_path, settings)
    assert (model_dir / "config.json").exists() and Path(files["train"]).exists() and Path(files["val"]).exists()
    stamp = (model_dir / "config.json").stat().st_mtime_ns
    run_demo.prepare_inputs(tmp_path, settings)
    assert (model_dir / "config.json").stat().st_mtime_ns == stamp
