"""``scripts/eval_checkpoint.sh`` / ``evaluate_checkpoint``: checkpoint detection, verl's merger, commands, manifest.

lmms-eval is not installed here: the full run path is exercised with a stand-in interpreter that
answers ``-m lmms_eval ...`` by recording its argv/environment and writing a results JSON in
lmms-eval's layout; everything else (probe, verl's model merger) runs for real.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recipe.noisygrpo.eval import evaluate_checkpoint, tables
from recipe.noisygrpo.eval.evaluate_checkpoint import (
    Backend,
    CheckpointKind,
    JudgeMode,
    ModelSettings,
    RunSettings,
    build_commands,
    choose_backend,
    judge_status,
    merge_command,
    resolve_checkpoint,
)
from recipe.noisygrpo.eval.lmms_tasks import EVAL_TASKS

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "eval_checkpoint.sh"
ANSWER_TASKS = "noisygrpo_mmstar,noisygrpo_amber_g,noisygrpo_mmerealworld_lite"
CHAIN_TASKS = "noisygrpo_mme_cot_reason,noisygrpo_mme_cot_direct"


def fake_fsdp_actor(root: Path, world_size: int = 2) -> Path:
    """verl's FSDP checkpoint layout, files only (for detection; not loadable)."""
    actor = root / "global_step_3" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": world_size}))
    for rank in range(world_size):
        (actor / f"model_world_size_{world_size}_rank_{rank}.pt").write_bytes(b"")
    (actor / "huggingface" / "config.json").write_text("{}")
    return actor


# --- detection and command construction ---------------------------------------------------------


def test_checkpoint_detection(tiny_qwen25vl_dir: Path, tmp_path: Path) -> None:
    assert resolve_checkpoint(tiny_qwen25vl_dir).kind is CheckpointKind.HF
    actor = fake_fsdp_actor(tmp_path / "run")
    assert resolve_checkpoint(actor) == resolve_checkpoint(actor.parent)  # global_step_N -> its actor
    assert resolve_checkpoint(actor).kind is CheckpointKind.FSDP and resolve_checkpoint(actor).path == actor
    (tmp_path / "run" / "latest_checkpointed_iteration.txt").write_text("3")  # a run folder: its latest step
    assert resolve_checkpoint(tmp_path / "run").path == actor

    (actor / "model_world_size_2_rank_0.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model_world_size_2_rank_0.pt missing"):
        resolve_checkpoint(actor)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weights"):
        resolve_checkpoint(no_weights)
    with pytest.raises(ValueError, match="neither a Hugging Face model folder"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")


def test_merge_command_is_verls_model_merger(tmp_path: Path) -> None:
    assert merge_command(tmp_path / "actor", tmp_path / "hf", python="py") == [
        "py", "-m", "verl.model_merger", "merge", "--backend", "fsdp",
        "--local_dir", str(tmp_path / "actor"), "--target_dir", str(tmp_path / "hf"),
    ]  # fmt: skip


def test_lmms_eval_commands_per_backend(tmp_path: Path) -> None:
    tasks = list(EVAL_TASKS.values())
    run = RunSettings(python="py", include_path=tmp_path / "inc", output_path=tmp_path / "res", limit=8)
    vllm = ModelSettings(model_dir=tmp_path / "m", backend=Backend.VLLM, max_new_tokens=900, tensor_parallel_size=2)
    answer, chain = build_commands(tasks, vllm, run)
    assert answer.argv[:6] == ("py", "-m", "lmms_eval", "--model", "vllm", "--model_args")
    assert answer.argv[6] == (
        f"model={tmp_path / 'm'},tensor_parallel_size=2,gpu_memory_utilization=0.8,max_new_tokens=900,"
        'max_pixels=2359296,mm_processor_kwargs={"max_pixels": 2359296}'
    )

    def value(flag: str) -> str:
        return answer.argv[answer.argv.index(flag) + 1]

    assert value("--tasks") == ANSWER_TASKS and value("--batch_size") == "128" and value("--limit") == "8"
    assert "--log_samples" in answer.argv
    assert answer.argv[answer.argv.index("--reasoning_tags") + 1] == '[["<think>", "</think>"]]'
    assert chain.argv[chain.argv.index("--tasks") + 1] == CHAIN_TASKS
    assert chain.argv[chain.argv.index("--reasoning_tags") + 1] == "none"

    hf = ModelSettings(model_dir=tmp_path / "m", backend=Backend.HF, max_new_tokens=900, extra_model_args=("a=b",))
    (only,) = build_commands([EVAL_TASKS["mmstar"]], hf, run)
    assert only.argv[4:7] == ("qwen2_5_vl", "--model_args", f"pretrained={tmp_path / 'm'},max_pixels=2359296,a=b")
    assert only.argv[only.argv.index("--batch_size") + 1] == "1"
    assert choose_backend("auto", vllm_importable=True) is Backend.VLLM
    assert choose_backend("auto", vllm_importable=False) is Backend.HF


def test_judge_detection_never_needs_the_key_value() -> None:
    assert not judge_status(JudgeMode.AUTO, {}).available
    assert judge_status(JudgeMode.AUTO, {}).missing_env == ("OPENAI_API_KEY",)
    assert judge_status(JudgeMode.AUTO, {"OPENAI_API_KEY": "k"}).available
    assert not judge_status(JudgeMode.AUTO, {"API_TYPE": "azure", "AZURE_API_KEY": "k"}).available
    assert (
        judge_status(JudgeMode.ON, {}).available and not judge_status(JudgeMode.OFF, {"OPENAI_API_KEY": "k"}).available
    )
    status = judge_status(JudgeMode.AUTO, {"OPENAI_API_KEY": "secret-value"})
    assert "secret-value" not in repr(status)


# --- dry run through the shell wrapper ----------------------------------------------------------


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    environ.pop("OPENAI_API_KEY", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environ, check=False)


def command_lines(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


def test_dry_run_prints_the_exact_lmms_eval_commands(tiny_qwen25vl_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = run_script(str(tiny_qwen25vl_dir), str(out), "--dry-run", "--max-new-tokens", "512")
    assert completed.returncode == 0, completed.stderr
    answer, chain = command_lines(completed.stdout)
    for words, tasks, tags in ((answer, ANSWER_TASKS, '[["<think>", "</think>"]]'), (chain, CHAIN_TASKS, "none")):
        env = dict(word.split("=", 1) for word in words[: words.index(sys.executable)])
        assert env["HF_HUB_OFFLINE"] == "1" and env["API_TYPE"] == "dummy"  # no key in the environment
        argv = words[words.index(sys.executable) :]
        assert argv[1:5] == ["-m", "lmms_eval", "--model", "qwen2_5_vl"]  # no vLLM here: transformers
        assert argv[argv.index("--model_args") + 1] == f"pretrained={tiny_qwen25vl_dir.resolve()},max_pixels=2359296"
        assert argv[argv.index("--tasks") + 1] == tasks
        assert argv[argv.index("--reasoning_tags") + 1] == tags
        assert argv[argv.index("--include_path") + 1] == str(out.resolve() / "lmms_tasks")
        assert argv[argv.index("--output_path") + 1] == str(out.resolve() / "lmms_eval")
    assert "MME-CoT WITHOUT a GPT judge" in completed.stdout
    assert "would stop a real run: lmms-eval is not installed" in completed.stdout
    assert not out.exists()  # a dry run writes nothing


def test_dry_run_of_an_fsdp_checkpoint_merges_first(tmp_path: Path) -> None:
    actor = fake_fsdp_actor(tmp_path / "run")
    out = tmp_path / "out"
    completed = run_script(str(actor.parent), str(out), "--dry-run", "--backend", "vllm", "--tasks", "mmstar")
    assert completed.returncode == 0, completed.stderr
    merge, answer = command_lines(completed.stdout)
    assert merge == merge_command(actor.resolve(), out.resolve() / "hf_model", python=sys.executable)
    assert answer[answer.index("--model") + 1] == "vllm"
    assert answer[answer.index("--model_args") + 1].startswith(f"model={out.resolve() / 'hf_model'},")
    assert "would stop a real run: --backend vllm but vllm is not importable" in completed.stdout


def test_bad_arguments_fail_clearly(tmp_path: Path) -> None:
    completed = run_script(str(tmp_path / "nope"), str(tmp_path / "out"), "--dry-run")
    assert completed.returncode == 2 and "does not exist" in completed.stderr
    completed = run_script(str(tmp_path), str(tmp_path / "out"), "--dry-run", "--model-arg", "oops")
    assert completed.returncode == 2 and "must look like KEY=VALUE" in completed.stderr


# --- the real run path, with verl's merger on a real FSDP checkpoint ----------------------------

# Saves the tiny model through verl's own FSDPCheckpointManager (FSDP2, gloo, world size 1), i.e.
# exactly the global_step_N/actor layout a training run leaves behind.
SAVE_FSDP_CHECKPOINT = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    model_dir, actor_dir, store = sys.argv[1:4]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    fully_shard(model, mesh=init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",)))
    manager = FSDPCheckpointManager(
        model=model, optimizer=None, lr_scheduler=None, processing_class=AutoProcessor.from_pretrained(model_dir),
        checkpoint_config={"save_contents": ["model"], "load_contents": ["model"]},
    )
    manager.save_checkpoint(local_path=actor_dir, global_step=1)
    dist.destroy_process_group()
    """
)

# Stands in for `python -m lmms_eval`: records what it was given, writes a results JSON like lmms-eval's.
FAKE_LMMS_EVAL = textwrap.dedent(
    """
    import json, os, sys
    argv = sys.argv[1:]
    value = lambda flag: argv[argv.index(flag) + 1]
    tasks = value("--tasks").split(",")
    with open(os.environ["FAKE_LMMS_LOG"], "a") as log:
        log.write(json.dumps({"argv": argv, "API_TYPE": os.environ.get("API_TYPE"),
                              "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE"),
                              "yamls": sorted(os.listdir(value("--include_path")))}) + "\\n")
    results = {task: {"alias": task, "average,none": 0.5, "llm_as_judge_eval,none": 0.0} for task in tasks}
    folder = os.path.join(value("--output_path"), "model")
    os.makedirs(folder, exist_ok=True)
    stamp = "20250101_00000" + str(len(os.listdir(folder)))
    with open(os.path.join(folder, stamp + "_results.json"), "w") as handle:
        json.dump({"results": results, "config": {"model_args": value("--model_args")}}, handle)
    """
)


def fake_lmms_python(tmp_path: Path, exit_code: int = 0) -> Path:
    """An interpreter that runs ``-m lmms_eval`` as FAKE_LMMS_EVAL (then exits ``exit_code``), anything else for real."""
    (tmp_path / "fake_lmms_eval.py").write_text(FAKE_LMMS_EVAL + f"\nsys.exit({exit_code})\n")
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = "-m" ] && [ "$2" = "lmms_eval" ]; then shift 2; exec {sys.executable} {tmp_path}/fake_lmms_eval.py "$@"; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    fake_python.chmod(0o755)
    return fake_python


def fake_lmms_tasks_dir(tmp_path: Path) -> Path:
    tasks_dir = tmp_path / "lmms_eval_tasks"
    for task in EVAL_TASKS.values():
        (tasks_dir / task.upstream_yaml).parent.mkdir(parents=True, exist_ok=True)
        (tasks_dir / task.upstream_yaml).write_text(f"task: {task.name}\n")
    return tasks_dir


def test_failed_lmms_eval_run_is_recorded(
    tiny_qwen25vl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LMMS_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("OPENAI_API_KEY", "secret-value")
    out = tmp_path / "eval"
    argv = [
        str(tiny_qwen25vl_dir),
        str(out),
        "--tasks",
        "mme_cot_reason",
        "--lmms-python",
        str(fake_lmms_python(tmp_path, 3)),
    ]
    assert evaluate_checkpoint.main([*argv, "--lmms-eval-tasks-dir", str(fake_lmms_tasks_dir(tmp_path))]) == 1
    manifest_text = (out / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert manifest["status"] == "failed" and [c["returncode"] for c in manifest["commands"]] == [3]
    assert manifest["checkpoint"] == {
        "input": str(tiny_qwen25vl_dir.resolve()),
        "kind": "hf",
        "model_dir": str(tiny_qwen25vl_dir.resolve()),
        "merge_command": None,
    }
    assert manifest["judge"]["available"] is True and "API_TYPE" not in manifest["environment"]
    assert "secret-value" not in manifest_text  # keys are checked, never recorded
    assert not (out / "hf_model").exists()  # a Hugging Face folder is evaluated in place


@pytest.mark.e2e
def test_fsdp_checkpoint_is_merged_by_verl_and_evaluated(
    tiny_qwen25vl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    actor = tmp_path / "run" / "global_step_1" / "actor"
    saved = subprocess.run(
        [sys.executable, "-c", SAVE_FSDP_CHECKPOINT, str(tiny_qwen25vl_dir), str(actor), str(tmp_path / "pg_store")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert saved.returncode == 0, saved.stderr[-3000:]

    fake_python, tasks_dir = fake_lmms_python(tmp_path), fake_lmms_tasks_dir(tmp_path)
    monkeypatch.setenv("FAKE_LMMS_LOG", str(tmp_path / "lmms_calls.jsonl"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("API_TYPE", raising=False)

    out = tmp_path / "eval"
    argv = [str(actor.parent), str(out), "--lmms-python", str(fake_python), "--lmms-eval-tasks-dir", str(tasks_dir)]
    assert evaluate_checkpoint.main([*argv, "--tasks", "mmstar,mme_cot_reason,mme_cot_direct"]) == 0

    # verl's merger produced a Hugging Face folder with the trained weights (the merger stores bf16).
    merged = AutoModelForImageTextToText.from_pretrained(out / "hf_model", dtype=torch.bfloat16).state_dict()
    original = AutoModelForImageTextToText.from_pretrained(tiny_qwen25vl_dir, dtype=torch.bfloat16).state_dict()
    assert merged.keys() == original.keys()
    assert all(torch.equal(merged[key], original[key]) for key in original)

    calls = [json.loads(line) for line in (tmp_path / "lmms_calls.jsonl").read_text().splitlines()]
    assert [call["argv"][call["argv"].index("--tasks") + 1] for call in calls] == [
        "noisygrpo_mmstar",
        "noisygrpo_mme_cot_reason,noisygrpo_mme_cot_direct",
    ]
    assert all(call["API_TYPE"] == "dummy" and call["HF_HUB_OFFLINE"] == "1" for call in calls)
    assert calls[0]["yamls"] == [
        "noisygrpo_mme_cot_direct.yaml",
        "noisygrpo_mme_cot_reason.yaml",
        "noisygrpo_mmstar.yaml",
    ]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["finished_at"] >= manifest["started_at"]
    assert manifest["checkpoint"]["kind"] == "fsdp"
    assert manifest["checkpoint"]["merge_command"][1:4] == ["-m", "verl.model_merger", "merge"]
    assert [command["argv"][3:] for command in manifest["commands"]] == [call["argv"] for call in calls]
    assert all(command["returncode"] == 0 for command in manifest["commands"])
    assert manifest["packages"]["ours"]["verl"] == "0.9.1" and manifest["judge"]["available"] is False
    assert "First output the thinking process" in manifest["prompt"]["cot_instruction"]

    # A second run reuses the merge; tables read the results and drop the keyless judge score.
    assert evaluate_checkpoint.main([*argv, "--tasks", "mmstar"]) == 0
    assert tables.main(["--run", f"noisygrpo={out}", "--out", str(tmp_path / "tables"), "--no-paper"]) == 0
    mme_cot = (tmp_path / "tables" / "mme_cot.md").read_text()
    assert "| noisygrpo | — | — | — | — |" in mme_cot and "without an LLM judge key" in mme_cot
    assert "| noisygrpo | — | — | — | — | — | — | 50.0 |" in (tmp_path / "tables" / "mmstar.md").read_text()


def test_amber_without_metadata_stops_before_running(tiny_qwen25vl_dir: Path, tmp_path: Path) -> None:
    tasks_dir = tmp_path / "tasks"
    (tasks_dir / "amber_g").mkdir(parents=True)
    (tasks_dir / "amber_g" / "amber_g.yaml").write_text("task: amber_g\n")
    argv = [
        str(tiny_qwen25vl_dir),
        str(tmp_path / "out"),
        "--tasks",
        "amber_g",
        "--lmms-eval-tasks-dir",
        str(tasks_dir),
    ]
    assert evaluate_checkpoint.main([*argv, "--amber-dir", str(tmp_path / "no_amber")]) == 2
    assert not (tmp_path / "out").exists()
