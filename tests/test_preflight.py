"""Pre-flight: missing model, data or columns, and unwritable outputs refused in seconds, before Ray,
in one report with the settings' problems, each problem once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from recipe.noisygrpo.preflight import preflight_problems

REPO = Path(__file__).resolve().parents[1]
COLUMNS = {
    "data_source": ["s"],
    "prompt": [[{"role": "user", "content": "q"}]],
    "images": [[]],
    "reward_model": [{"ground_truth": "a"}],
}


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "preprocessor_config.json").write_text("{}")
    return folder


def parquet(path: Path, drop: str | None = None) -> Path:
    pq.write_table(pa.table({key: value for key, value in COLUMNS.items() if key != drop}), path)
    return path


def config(model, train, val, out):
    return OmegaConf.create(
        {
            "actor_rollout_ref": {"model": {"path": str(model)}},
            "data": {"train_files": str(train), "val_files": val, "prompt_key": "prompt", "image_key": "images"},
            "trainer": {"default_local_dir": str(out)},
        }
    )


def test_a_complete_setup_has_no_problem(tmp_path):
    good = config(model_folder(tmp_path), parquet(tmp_path / "t.parquet"), None, tmp_path / "new" / "ckpt")
    assert preflight_problems(good) == []
    hub_id = config("Qwen/Qwen2.5-VL-3B-Instruct", parquet(tmp_path / "t.parquet"), None, tmp_path)
    assert preflight_problems(hub_id) == []  # verl resolves hub ids; nothing to check locally


def test_every_problem_is_named_once_with_its_key_and_file(tmp_path):
    model = tmp_path / "model"
    model.mkdir()  # neither config.json nor processor files
    no_reward = parquet(tmp_path / "train.parquet", drop="reward_model")
    not_parquet = tmp_path / "val.parquet"
    not_parquet.write_text("text")
    out = not_parquet / "ckpt"  # below a file: cannot be created, whoever runs the test
    val = [str(not_parquet), str(tmp_path / "gone.parquet")]
    problems = preflight_problems(config(model, no_reward, val, out))
    assert len(problems) == 6, problems
    assert "no config.json" in problems[0] and "no processor or tokenizer files" in problems[1]
    assert "train.parquet has no column(s) ['reward_model']" in problems[2]
    assert "val.parquet is not a readable parquet file" in problems[3]
    assert problems[4].startswith("data.val_files: ") and "gone.parquet does not exist" in problems[4]
    assert problems[5].startswith(f"trainer.default_local_dir={out}: cannot write there")


def test_a_file_listed_for_training_and_validation_is_reported_once_naming_both_keys(tmp_path):
    missing = str(tmp_path / "missing.parquet")
    problems = preflight_problems(config(model_folder(tmp_path), missing, [missing, missing], tmp_path / "ckpt"))
    assert problems == [
        f"data.train_files, data.val_files: {missing} does not exist; prepare it with python -m data_prep.<source> "
        "or fix the path."
    ]


def test_the_entry_point_reports_settings_and_files_together_in_seconds_without_starting_ray(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recipe.noisygrpo.main_noisygrpo",
            "actor_rollout_ref.model.path=/nonexistent",
            f"data.train_files={tmp_path / 'missing.parquet'}",
            "data.val_files=null",
            "trainer.val_before_train=false",
            "trainer.test_freq=-1",
            "noisygrpo.reward.correctness=exact",
            "actor_rollout_ref.rollout.n=3",  # a settings problem: 4 noise levels
            f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "NoisyGRPO found 3 problem(s); nothing was started" in output
    for problem in (
        "rollout.n=3 but noisygrpo.noise.levels has 4 levels",
        "/nonexistent: no such folder",
        "missing.parquet does not exist",
    ):
        assert output.count(problem) == 1, (problem, output[-3000:])
    assert "Traceback" not in output  # a report, not a crash
    assert "Started a local Ray instance" not in output and "Ray runtime started" not in output
    assert elapsed < 60, elapsed  # generous for a loaded CI machine; about 10 s here
