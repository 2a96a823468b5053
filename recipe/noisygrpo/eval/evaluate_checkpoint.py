"""Evaluate one checkpoint on the paper's benchmarks with lmms-eval 0.7.3 (``scripts/eval_checkpoint.sh``).

    python -m recipe.noisygrpo.eval.evaluate_checkpoint CKPT OUT [--dry-run] [options]

1. CKPT is a Hugging Face model folder (used as is) or a verl FSDP checkpoint
   (``global_step_N/actor``, or ``global_step_N``), merged into ``OUT/hf_model`` by verl's
   ``python -m verl.model_merger``;
2. our include-path tasks (``OUT/lmms_tasks``: upstream task + the training CoT prompt, greedy,
   ``--max-new-tokens``) run in lmms-eval, vLLM when importable else transformers; MME-CoT runs
   in its own command with ``--reasoning_tags none`` so the judge sees the whole chain;
3. ``OUT/manifest.json`` records checkpoint, tasks, exact commands, package versions, times.

Results: ``OUT/lmms_eval/<model>/<timestamp>_results.json`` (read by ``tables``). Datasets come
from the local Hugging Face cache (offline by default); AMBER needs its metadata folder; MME-CoT's
judge needs a GPT key (without one, the submission files are still written, see README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from recipe.noisygrpo.eval.benchmarks import EvalTask, select_tasks
from recipe.noisygrpo.eval.checkpoint import (
    CheckpointKind,
    ResolvedCheckpoint,
    merge_command,
    merge_fsdp_checkpoint,
    resolve_checkpoint,
)
from recipe.noisygrpo.eval.commands import (
    TRAINING_MAX_PIXELS,
    Backend,
    LmmsEvalCommand,
    ModelSettings,
    RunSettings,
    build_commands,
    choose_backend,
)
from recipe.noisygrpo.eval.environment import PythonProbe, probe_python
from recipe.noisygrpo.eval.judge import DUMMY_API_TYPE, JudgeMode, JudgeStatus, judge_status
from recipe.noisygrpo.eval.manifest import MANIFEST_NAME, shell_line, utc_now, write_manifest
from recipe.noisygrpo.eval.task_yaml import DatasetOverride, Decoding, write_task_yamls
from verl_ext.task import COT_INSTRUCTION

EXPECTED_LMMS_EVAL = "0.7.3"
REPO_ROOT = Path(__file__).resolve().parents[3]

# Output layout under OUT.
MERGED_MODEL_DIR = "hf_model"
TASKS_DIR = "lmms_tasks"
LMMS_OUTPUT_DIR = "lmms_eval"

# AMBER-G's scorer (lmms-eval 0.7.3 amber_g/utils.py) reads these from $AMBER_BASE_DIR/metadata.
AMBER_METADATA_FILES = ("relation.json", "safe_words.txt", "annotations.json", "metrics.txt")
AMBER_DEFAULT_DIR = "./data/amber"


class EvalSetupError(RuntimeError):
    """A problem found before anything runs; the message says what to do."""


def parse_key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"{what} {text!r} must look like KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/eval_checkpoint.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="HF model folder, or verl global_step_N/actor (or global_step_N, or the run folder)",
    )
    parser.add_argument("output_dir", type=Path, help="evaluation folder (created)")
    parser.add_argument("--dry-run", action="store_true", help="print the merge and lmms-eval commands; run nothing")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of the registry (default: all five)")
    parser.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"])
    parser.add_argument("--max-new-tokens", type=int, default=Decoding().max_new_tokens, help="per response, tokens")
    parser.add_argument("--batch-size", type=int, default=None, help="lmms-eval --batch_size (default per backend)")
    parser.add_argument("--limit", type=float, default=None, help="lmms-eval --limit (smoke tests only)")
    parser.add_argument("--max-pixels", type=int, default=TRAINING_MAX_PIXELS, help="image budget, pixels")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM only")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8, help="vLLM only")
    parser.add_argument("--attn-implementation", default=None, help="transformers only, e.g. flash_attention_2")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        type=lambda text: parse_key_value(text, "--model-arg"),
        metavar="KEY=VALUE",
        help="extra lmms-eval model arg (repeat)",
    )
    parser.add_argument("--lmms-python", default=sys.executable, help="Python with lmms-eval installed")
    parser.add_argument("--lmms-eval-tasks-dir", type=Path, default=None, help="lmms_eval/tasks (default: located)")
    parser.add_argument("--hf-home", type=Path, default=None, help="HF_HOME holding the cached datasets")
    parser.add_argument("--online", action="store_true", help="allow dataset downloads (default: HF offline mode)")
    parser.add_argument("--amber-dir", type=Path, default=None, help="AMBER_BASE_DIR (with metadata/)")
    parser.add_argument(
        "--dataset-path",
        action="append",
        default=[],
        type=lambda text: parse_key_value(text, "--dataset-path"),
        metavar="TASK=PATH",
        help="local dataset folder/file for a task (repeat)",
    )
    parser.add_argument("--judge", default="auto", choices=[mode.value for mode in JudgeMode])
    parser.add_argument("--force-merge", action="store_true", help="merge again even if OUT/hf_model is this merge")
    return parser


def child_environment(args: argparse.Namespace, tasks: list[EvalTask], judge: JudgeStatus) -> dict[str, str]:
    """Variables we set for lmms-eval on top of the inherited environment (all recorded; none secret)."""
    # lmms-eval imports our adapters (`!function recipe.noisygrpo...`) even from an interpreter
    # where this package is not installed.
    inherited = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys([str(REPO_ROOT), *inherited]))}
    if not args.online:
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if args.hf_home is not None:
        env["HF_HOME"] = str(args.hf_home.resolve())
    if args.amber_dir is not None:
        env["AMBER_BASE_DIR"] = str(args.amber_dir.resolve())
    if not judge.available and any(task.needs_judge for task in tasks):
        # lmms-eval's dummy provider answers without a network call; the judged metric is then
        # meaningless, which the manifest records and `tables` honours.
        env["API_TYPE"] = DUMMY_API_TYPE
    return env


def preflight(
    args: argparse.Namespace, tasks: list[EvalTask], probe: PythonProbe, env: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the setup; errors stop a real run, a dry run only reports them."""
    errors, warnings = [], []
    lmms_version = probe.versions.get("lmms-eval")
    if args.lmms_eval_tasks_dir is None and probe.lmms_eval_tasks_dir is None:
        errors.append(
            f"lmms-eval is not installed in {probe.python}: `pip install -e '.[eval]'` there, or pass --lmms-python"
        )
    elif lmms_version is not None and lmms_version != EXPECTED_LMMS_EVAL:
        warnings.append(f"lmms-eval {lmms_version} found; task files and metric names were checked for 0.7.3")
    if any(task.name == "amber_g" for task in tasks):
        amber = Path(env.get("AMBER_BASE_DIR") or os.environ.get("AMBER_BASE_DIR") or AMBER_DEFAULT_DIR)
        missing = [name for name in AMBER_METADATA_FILES if not (amber / "metadata" / name).is_file()]
        if missing:
            errors.append(
                f"amber_g scores need AMBER's metadata in {amber}/metadata ({', '.join(missing)} missing): "
                "pass --amber-dir or drop amber_g via --tasks"
            )
    selected = {task.name for task in tasks}
    for name, dataset in dataset_overrides(args).items():
        if name not in selected:
            errors.append(f"--dataset-path {name}=...: {name} is not among the selected tasks {sorted(selected)}")
        elif not Path(dataset.path).exists():
            errors.append(f"--dataset-path {name}={dataset.path}: no such file or folder")
    return errors, warnings


def dataset_overrides(args: argparse.Namespace) -> dict[str, DatasetOverride]:
    return {name: DatasetOverride(str(Path(path).resolve())) for name, path in args.dataset_path}


def task_record(task: EvalTask, dataset: DatasetOverride | None) -> dict:
    record = {**asdict(task), "prompt": task.prompt.value, "lmms_eval_task": task.alias}
    return {**record, "dataset_path": dataset.path if dataset else None}


def describe_judge(judge: JudgeStatus, tasks: list[EvalTask], output_path: Path) -> str | None:
    if not any(task.needs_judge for task in tasks):
        return None
    if judge.available:
        return f"MME-CoT judge: {judge.note}."
    return (
        f"MME-CoT WITHOUT a GPT judge ({judge.note}): lmms-eval runs its dummy judge, so "
        "`llm_as_judge_eval` is meaningless and `tables` omits it. The submission files for the official "
        f"MME-CoT toolkit are still written to {output_path / 'submissions'}/."
    )


@dataclass(frozen=True)
class EvalPlan:
    """Everything decided before anything runs; ``errors`` stop a real run."""

    tasks: list[EvalTask]
    checkpoint: ResolvedCheckpoint
    out: Path
    model_dir: Path
    merge_argv: list[str] | None
    backend: Backend
    decoding: Decoding
    run_settings: RunSettings
    commands: list[LmmsEvalCommand]
    env: dict[str, str]
    judge: JudgeStatus
    probe: PythonProbe
    datasets: dict[str, DatasetOverride]
    errors: list[str]
    notes: list[str]
    judge_note: str | None


def make_plan(args: argparse.Namespace) -> EvalPlan:
    tasks = select_tasks(args.tasks.split(",") if args.tasks else None)
    checkpoint = resolve_checkpoint(args.checkpoint)
    out = args.output_dir.resolve()
    is_fsdp = checkpoint.kind is CheckpointKind.FSDP
    model_dir = out / MERGED_MODEL_DIR if is_fsdp else checkpoint.path.resolve()
    probe = probe_python(args.lmms_python)
    backend = choose_backend(args.backend, probe.vllm_importable)
    judge = judge_status(JudgeMode(args.judge), os.environ)
    env = child_environment(args, tasks, judge)
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    model = ModelSettings(
        model_dir=model_dir,
        backend=backend,
        max_new_tokens=decoding.max_new_tokens,
        max_pixels=args.max_pixels,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        attn_implementation=args.attn_implementation,
        extra_model_args=tuple(f"{key}={value}" for key, value in args.model_arg),
    )
    run_settings = RunSettings(
        python=args.lmms_python,
        include_path=out / TASKS_DIR,
        output_path=out / LMMS_OUTPUT_DIR,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    errors, warnings = preflight(args, tasks, probe, env)
    if backend is Backend.VLLM and not probe.vllm_importable:
        errors.append(f"--backend vllm but vllm is not importable in {probe.python}")
    judge_note = describe_judge(judge, tasks, run_settings.output_path)
    return EvalPlan(
        tasks=tasks,
        checkpoint=checkpoint,
        out=out,
        model_dir=model_dir,
        merge_argv=merge_command(checkpoint.path.resolve(), model_dir) if is_fsdp else None,
        backend=backend,
        decoding=decoding,
        run_settings=run_settings,
        commands=build_commands(tasks, model, run_settings),
        env=env,
        judge=judge,
        probe=probe,
        datasets=dataset_overrides(args),
        errors=errors,
        notes=warnings + ([judge_note] if judge_note else []),
        judge_note=judge_note,
    )


def print_plan(plan: EvalPlan) -> None:
    print(f"# dry run: nothing is written; task YAMLs would go to {plan.run_settings.include_path}")
    if plan.merge_argv is not None:
        print("# 1. merge the FSDP checkpoint with verl's model merger")
        print(shell_line(plan.merge_argv))
    for index, command in enumerate(plan.commands, start=2 if plan.merge_argv is not None else 1):
        print(f"# {index}. lmms-eval: {command.label}")
        print(shell_line(command.argv, plan.env))
    for note in plan.notes + [f"would stop a real run: {error}" for error in plan.errors]:
        print(f"# note: {note}")


def initial_manifest(plan: EvalPlan, args: argparse.Namespace, started_at: str) -> dict:
    ours = probe_python(sys.executable) if args.lmms_python != sys.executable else plan.probe
    return {
        "status": "running",
        "started_at": started_at,
        "finished_at": None,
        "checkpoint": {
            "input": str(args.checkpoint.resolve()),
            "kind": plan.checkpoint.kind.value,
            "model_dir": str(plan.model_dir),
            "merge_command": plan.merge_argv,
        },
        "tasks": [task_record(task, plan.datasets.get(task.name)) for task in plan.tasks],
        "commands": [
            {
                "label": command.label,
                "tasks": [task.alias for task in command.tasks],
                "argv": list(command.argv),
                "shell": shell_line(command.argv, plan.env),
                "returncode": None,
            }
            for command in plan.commands
        ],
        "environment": plan.env,
        "packages": {
            "ours": ours.versions,
            "lmms_eval_python": plan.probe.versions,
            "python": plan.probe.python_version,
        },
        "judge": asdict(plan.judge),
        "prompt": {"cot_instruction": COT_INSTRUCTION, "format": "question + ' ' + cot_instruction"},
        "decoding": {
            **asdict(plan.decoding),
            "temperature": 0,
            "backend": plan.backend.value,
            "max_pixels": args.max_pixels,
        },
    }


def execute(plan: EvalPlan, args: argparse.Namespace, manifest: dict) -> bool:
    """Merge (FSDP), write the task YAMLs, run lmms-eval; returns whether every command succeeded."""
    manifest_path = plan.out / MANIFEST_NAME
    if plan.checkpoint.kind is CheckpointKind.FSDP:
        merged = merge_fsdp_checkpoint(plan.checkpoint.path.resolve(), plan.model_dir, force=args.force_merge)
        print(f"[eval] {'merged' if merged else 'reusing merged'} model: {plan.model_dir}", flush=True)
    tasks_dir = args.lmms_eval_tasks_dir or plan.probe.lmms_eval_tasks_dir
    write_task_yamls(plan.tasks, Path(tasks_dir), plan.run_settings.include_path, plan.decoding, plan.datasets)
    succeeded = True
    for record, command in zip(manifest["commands"], plan.commands, strict=True):
        print(f"[eval] {command.label}: {record['shell']}", flush=True)
        completed = subprocess.run(list(command.argv), env={**os.environ, **plan.env}, check=False)
        record["returncode"] = completed.returncode
        succeeded &= completed.returncode == 0
        write_manifest(manifest_path, manifest)
    return succeeded


def run(args: argparse.Namespace) -> int:
    started_at = utc_now()
    plan = make_plan(args)
    if args.dry_run:
        print_plan(plan)
        return 0
    if plan.errors:
        raise EvalSetupError("\n".join(plan.errors))

    plan.out.mkdir(parents=True, exist_ok=True)
    manifest_path = plan.out / MANIFEST_NAME
    manifest = initial_manifest(plan, args, started_at)
    write_manifest(manifest_path, manifest)
    for note in plan.notes:
        print(f"[eval] note: {note}", flush=True)
    succeeded = False
    try:
        succeeded = execute(plan, args, manifest)
    finally:
        manifest.update(status="finished" if succeeded else "failed", finished_at=utc_now())
        write_manifest(manifest_path, manifest)
    print(f"[eval] results: {plan.run_settings.output_path}; manifest: {manifest_path}", flush=True)
    if plan.judge_note:
        print(f"[eval] {plan.judge_note}", flush=True)
    return 0 if succeeded else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (EvalSetupError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
