"""Evaluate one checkpoint on the paper's benchmarks with lmms-eval 0.7.3 (``scripts/eval_checkpoint.sh``).

    python -m recipe.noisygrpo.eval.evaluate_checkpoint CKPT OUT [--dry-run] [options]

1. CKPT is a Hugging Face model folder (used as is) or a verl FSDP checkpoint
   (``global_step_N/actor``, or ``global_step_N``), merged into ``OUT/hf_model`` by verl's
   ``python -m verl.model_merger merge --backend fsdp --local_dir <actor> --target_dir <dir>``
   (verl 0.9.1 writes ``fsdp_config.json``, one ``model_world_size_<W>_rank_<r>.pt`` per rank and
   a ``huggingface/`` folder with config, tokenizer and processor);
2. our include-path tasks (``OUT/lmms_tasks``: upstream task + the training CoT prompt, greedy,
   ``--max-new-tokens``) run in lmms-eval, vLLM when importable else transformers; MME-CoT runs
   in its own command with ``--reasoning_tags none`` so the judge sees the whole chain;
3. ``OUT/manifest.json`` records checkpoint, tasks, exact commands, package versions, times.

Results: ``OUT/lmms_eval/<model>/<timestamp>_results.json`` (read by ``tables``). Datasets come
from the local Hugging Face cache (offline by default); AMBER needs its metadata folder; MME-CoT's
judge needs a GPT key (without one, the submission files are still written, see README.md).

Facts of lmms-eval 0.7.3 this module relies on: ``python -m lmms_eval --model M --model_args
k=v,... --tasks a,b`` is the flat CLI, and ``--batch_size`` must not also appear in
``--model_args``; Qwen2.5-VL runs as ``qwen2_5_vl`` (transformers: ``pretrained``, ``max_pixels``,
``attn_implementation``) or ``vllm`` (``model``, ``tensor_parallel_size``,
``gpu_memory_utilization``, ``max_new_tokens``; unknown args go to ``vllm.LLM``, brace values are
JSON); Qwen3-VL (``model_type`` qwen3_vl in the checkpoint's config.json, see :data:`MODEL_FAMILIES`)
runs as ``qwen3_vl`` with ``--force_simple`` (its chat class sizes images ignoring ``max_pixels``)
or as ``vllm`` with ``is_qwen3_vl=true``; ``--reasoning_tags`` strips reasoning blocks before scoring (its default also strips
``<think>``, so MME-CoT needs ``none``); results land in ``<output_path>/<sanitized model
path>/<YYYYMMDD_HHMMSS>_results.json``. lmms-eval may live in another interpreter
(``--lmms-python``), so it is probed in a subprocess with ``find_spec`` (no torch start-up). Its
judge is built from ``API_TYPE`` (OpenAI: ``OPENAI_API_KEY``; Azure: ``AZURE_API_KEY`` +
``AZURE_ENDPOINT``; model ``MODEL_VERSION``); without a key every judge call scores 0, a number
that must not reach a table, so the manifest records whether a judge was available. Manifest
schema: ``status``, ``started_at`` / ``finished_at`` (UTC), ``checkpoint``, ``tasks``,
``commands`` [{label, tasks, argv, shell, returncode}], ``environment`` (never secrets),
``packages``, ``judge`` {available, api_type, model, note}, ``prompt``, ``decoding``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from recipe.noisygrpo.eval.lmms_tasks import DatasetOverride, Decoding, EvalTask, select_tasks, write_task_yamls
from verl_ext.task import COT_INSTRUCTION

FSDP_CONFIG = "fsdp_config.json"
# Written by verl's trainer into trainer.default_local_dir next to the global_step_N folders.
LATEST_STEP_FILE = "latest_checkpointed_iteration.txt"
MERGE_MARKER = "merged_from.json"
HF_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class CheckpointKind(str, Enum):
    HF = "hf"
    FSDP = "fsdp"


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """``path`` is the Hugging Face folder (HF) or the ``actor`` folder (FSDP)."""

    kind: CheckpointKind
    path: Path


def _has_hf_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in HF_WEIGHT_PATTERNS)


def _check_fsdp_actor(actor: Path) -> ResolvedCheckpoint:
    try:
        world_size = json.loads((actor / FSDP_CONFIG).read_text(encoding="utf-8"))["world_size"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{actor / FSDP_CONFIG}: unreadable or without 'world_size' ({error})") from error
    rank0 = actor / f"model_world_size_{world_size}_rank_0.pt"
    if not rank0.is_file():
        raise FileNotFoundError(f"{actor}: FSDP checkpoint without model shards ({rank0.name} missing)")
    if not (actor / "huggingface" / "config.json").is_file():
        raise FileNotFoundError(
            f"{actor}: FSDP checkpoint without huggingface/config.json, which verl's merger needs "
            "(verl saves it with every checkpoint; was the folder copied partially?)"
        )
    return ResolvedCheckpoint(CheckpointKind.FSDP, actor)


def _latest_step_actor(run_dir: Path) -> Path:
    text = (run_dir / LATEST_STEP_FILE).read_text(encoding="utf-8").strip()
    if not text.isdigit():
        raise ValueError(f"{run_dir / LATEST_STEP_FILE}: expected a step number, got {text!r}")
    return run_dir / f"global_step_{text}" / "actor"


def resolve_checkpoint(path: Path) -> ResolvedCheckpoint:
    """Classify ``path``: a HF model folder, a verl ``global_step_N/actor`` folder, ``global_step_N``, or
    a run folder (``trainer.default_local_dir``: its latest step, from ``latest_checkpointed_iteration.txt``).

    Raises FileNotFoundError / ValueError with what was expected when it is none of these.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} is a file; pass a model folder or a verl global_step_N/actor folder")
    if (path / FSDP_CONFIG).is_file():
        return _check_fsdp_actor(path)
    if (path / "actor" / FSDP_CONFIG).is_file():
        return _check_fsdp_actor(path / "actor")
    if (path / LATEST_STEP_FILE).is_file():
        actor = _latest_step_actor(path)
        if not (actor / FSDP_CONFIG).is_file():
            raise FileNotFoundError(f"{path}: {LATEST_STEP_FILE} points at {actor}, which has no {FSDP_CONFIG}")
        return _check_fsdp_actor(actor)
    if (path / "config.json").is_file():
        if not _has_hf_weights(path):
            raise FileNotFoundError(f"{path}: config.json but no weights (*.safetensors / pytorch_model*.bin)")
        return ResolvedCheckpoint(CheckpointKind.HF, path)
    raise ValueError(
        f"{path} is neither a Hugging Face model folder (config.json + weights) nor a verl FSDP checkpoint "
        f"(global_step_N/actor with {FSDP_CONFIG})"
    )


def merge_command(actor: Path, target_dir: Path, python: str = sys.executable) -> list[str]:
    """verl's own merger, as an argv."""
    return [
        python,
        "-m",
        "verl.model_merger",
        "merge",
        "--backend",
        "fsdp",
        "--local_dir",
        str(actor),
        "--target_dir",
        str(target_dir),
    ]


def already_merged(actor: Path, target_dir: Path) -> bool:
    """True when ``target_dir`` holds a finished merge of this very ``actor`` folder."""
    marker = target_dir / MERGE_MARKER
    if not (marker.is_file() and (target_dir / "config.json").is_file()):
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("actor") == str(actor.resolve())
    except ValueError:
        return False


def merge_fsdp_checkpoint(actor: Path, target_dir: Path, python: str = sys.executable, force: bool = False) -> bool:
    """Run verl's merger unless ``target_dir`` already holds this merge; returns whether it ran.

    Raises RuntimeError with the command when the merger fails.
    """
    if not force and already_merged(actor, target_dir):
        return False
    argv = merge_command(actor, target_dir, python)
    completed = subprocess.run(argv, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"verl's model merger failed (exit {completed.returncode}): {' '.join(argv)}")
    (target_dir / MERGE_MARKER).write_text(json.dumps({"actor": str(actor.resolve())}, indent=2), encoding="utf-8")
    return True


# The paper's training max_pixels (1536^2): evaluation sees images at the training resolution.
TRAINING_MAX_PIXELS = 2359296


@dataclass(frozen=True)
class ModelFamily:
    """How lmms-eval 0.7.3 runs one model family (selected by config.json's ``model_type``).

    Attributes:
        model_type: Hugging Face ``model_type``.
        hf_lmms_model: lmms-eval ``--model`` of the transformers backend.
        hf_force_simple: pass ``--force_simple`` (lmms-eval's simple class instead of its chat class).
        hf_min_pixels: ``min_pixels`` model arg of the transformers backend (None: lmms-eval's default).
        vllm_model_args: extra ``key=value`` args of lmms-eval's ``vllm`` model.
    """

    model_type: str
    hf_lmms_model: str
    hf_force_simple: bool = False
    hf_min_pixels: int | None = None
    vllm_model_args: tuple[str, ...] = ()


# Read from lmms-eval 0.7.3's source (lmms_eval/models/__init__.py: "qwen2_5_vl" and "qwen3_vl" have
# simple and chat classes, chat by default; lmms_eval/models/chat/vllm.py takes any vLLM model).
MODEL_FAMILIES: dict[str, ModelFamily] = {
    "qwen2_5_vl": ModelFamily(model_type="qwen2_5_vl", hf_lmms_model="qwen2_5_vl"),
    "qwen3_vl": ModelFamily(
        model_type="qwen3_vl",
        hf_lmms_model="qwen3_vl",
        # The chat class (models/chat/qwen3_vl.py:62-71, 86, 98) gives images no pixel limits and calls
        # the processor with do_resize=False, so max_pixels would not reach images (qwen_vl_utils'
        # default then allows 16,384 tokens); the simple class puts max_pixels/min_pixels on every
        # image (models/simple/qwen3_vl.py:330-335).
        hf_force_simple=True,
        # Its default min_pixels is 256*28*28 = 200,704 (models/simple/qwen3_vl.py:86); training saw
        # Qwen3-VL's released processor minimum, 65,536 px (64 tokens).
        hf_min_pixels=65536,
        # Only changes how videos are fed (timestamps before frames, models/chat/vllm.py:40, 87).
        vllm_model_args=("is_qwen3_vl=true",),
    ),
}
# A config.json without model_type (not a transformers checkpoint) is evaluated as the paper's model.
DEFAULT_MODEL_TYPE = "qwen2_5_vl"


def checkpoint_model_type(checkpoint: ResolvedCheckpoint) -> str | None:
    """``model_type`` of the checkpoint's config.json (FSDP: ``actor/huggingface/config.json``, which the
    merged model keeps); None when the file has none. Raises ValueError naming the file when unreadable."""
    folder = checkpoint.path / "huggingface" if checkpoint.kind is CheckpointKind.FSDP else checkpoint.path
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable ({error})") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if isinstance(model_type, str) and model_type else None


def model_family(model_type: str | None) -> ModelFamily:
    """The :data:`MODEL_FAMILIES` entry of ``model_type`` (None: :data:`DEFAULT_MODEL_TYPE`).

    Raises ValueError listing the supported model types for any other.
    """
    family = MODEL_FAMILIES.get(model_type or DEFAULT_MODEL_TYPE)
    if family is None:
        raise ValueError(
            f"model_type {model_type!r}: this driver runs {', '.join(sorted(MODEL_FAMILIES))} checkpoints in lmms-eval"
        )
    return family


STRIP_THINK_TAGS = json.dumps([["<think>", "</think>"]])
KEEP_REASONING_TAGS = "none"


class Backend(str, Enum):
    VLLM = "vllm"
    HF = "hf"


@dataclass(frozen=True)
class ModelSettings:
    """How lmms-eval loads the model.

    Attributes:
        model_dir: Hugging Face model folder.
        backend: vLLM or transformers.
        max_new_tokens: generation budget (vLLM takes the max of this and the task's).
        max_pixels: image pixel budget of the Qwen2.5-VL processor, in pixels.
        tensor_parallel_size: vLLM tensor parallel degree.
        gpu_memory_utilization: vLLM's fraction of GPU memory.
        attn_implementation: transformers attention kernel (None: transformers' default).
        extra_model_args: further ``key=value`` model args, appended verbatim.
        family: the model family (lmms-eval model class and its family-specific args).
    """

    model_dir: Path
    backend: Backend
    max_new_tokens: int
    max_pixels: int = TRAINING_MAX_PIXELS
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.8
    attn_implementation: str | None = None
    extra_model_args: tuple[str, ...] = ()
    family: ModelFamily = MODEL_FAMILIES[DEFAULT_MODEL_TYPE]


def _vllm_model_args(settings: ModelSettings) -> list[str]:
    return [
        f"model={settings.model_dir}",
        f"tensor_parallel_size={settings.tensor_parallel_size}",
        f"gpu_memory_utilization={settings.gpu_memory_utilization}",
        f"max_new_tokens={settings.max_new_tokens}",
        f"max_pixels={settings.max_pixels}",
        # The chat class applies max_pixels to videos only; images go through vLLM's processor.
        f'mm_processor_kwargs={{"max_pixels": {settings.max_pixels}}}',
        *settings.family.vllm_model_args,
    ]


def _hf_model_args(settings: ModelSettings) -> list[str]:
    args = [f"pretrained={settings.model_dir}", f"max_pixels={settings.max_pixels}"]
    if settings.family.hf_min_pixels is not None:
        args.append(f"min_pixels={settings.family.hf_min_pixels}")
    if settings.attn_implementation is not None:
        args.append(f"attn_implementation={settings.attn_implementation}")
    return args


@dataclass(frozen=True)
class BackendSpec:
    """``lmms_model`` / ``force_simple``: lmms-eval's ``--model`` and whether ``--force_simple`` goes with it."""

    lmms_model: Callable[[ModelFamily], str]
    force_simple: Callable[[ModelFamily], bool]
    model_args: Callable[[ModelSettings], list[str]]
    default_batch_size: int


BACKENDS: dict[Backend, BackendSpec] = {
    Backend.VLLM: BackendSpec(
        lmms_model=lambda family: "vllm",
        force_simple=lambda family: False,
        model_args=_vllm_model_args,
        default_batch_size=128,
    ),
    Backend.HF: BackendSpec(
        lmms_model=lambda family: family.hf_lmms_model,
        force_simple=lambda family: family.hf_force_simple,
        model_args=_hf_model_args,
        default_batch_size=1,
    ),
}


def choose_backend(requested: str, vllm_importable: bool) -> Backend:
    """``auto`` -> vLLM when importable, else transformers; an explicit choice is kept."""
    if requested == "auto":
        return Backend.VLLM if vllm_importable else Backend.HF
    try:
        return Backend(requested)
    except ValueError:
        raise ValueError(f"unknown backend {requested!r}; choose auto, vllm or hf") from None


def model_args_string(settings: ModelSettings) -> str:
    args = BACKENDS[settings.backend].model_args(settings) + list(settings.extra_model_args)
    for arg in args:
        if "=" not in arg:
            raise ValueError(f"model arg {arg!r} is not key=value")
    return ",".join(args)


@dataclass(frozen=True)
class RunSettings:
    """Where lmms-eval runs and writes.

    Attributes:
        python: interpreter with lmms-eval installed.
        include_path: folder with our task YAMLs.
        output_path: lmms-eval's ``--output_path``.
        batch_size: requests per batch (None: the backend's default).
        limit: lmms-eval ``--limit`` (samples per task, or a fraction below 1); None: all.
    """

    python: str
    include_path: Path
    output_path: Path
    batch_size: int | None = None
    limit: float | None = None


@dataclass(frozen=True)
class LmmsEvalCommand:
    label: str
    tasks: tuple[EvalTask, ...]
    reasoning_tags: str
    argv: tuple[str, ...]


def _command(label: str, tasks: list[EvalTask], reasoning_tags: str, model: ModelSettings, run: RunSettings):
    backend = BACKENDS[model.backend]
    batch_size = run.batch_size if run.batch_size is not None else backend.default_batch_size
    argv = [
        run.python,
        "-m",
        "lmms_eval",
        "--model",
        backend.lmms_model(model.family),
        "--model_args",
        model_args_string(model),
        "--tasks",
        ",".join(task.alias for task in tasks),
        "--include_path",
        str(run.include_path),
        "--batch_size",
        str(batch_size),
        "--output_path",
        str(run.output_path),
        "--log_samples",
        "--reasoning_tags",
        reasoning_tags,
    ]
    if backend.force_simple(model.family):
        argv.append("--force_simple")
    if run.limit is not None:
        argv += ["--limit", f"{run.limit:g}"]
    return LmmsEvalCommand(label=label, tasks=tuple(tasks), reasoning_tags=reasoning_tags, argv=tuple(argv))


def build_commands(tasks: list[EvalTask], model: ModelSettings, run: RunSettings) -> list[LmmsEvalCommand]:
    """One lmms-eval command per reasoning-tag setting: answer-scored tasks, then chain-scored tasks."""
    groups = (
        ("answer-scored tasks (think block stripped)", STRIP_THINK_TAGS, [t for t in tasks if not t.keep_reasoning]),
        ("chain-scored tasks (MME-CoT, reasoning kept)", KEEP_REASONING_TAGS, [t for t in tasks if t.keep_reasoning]),
    )
    return [_command(label, group, tags, model, run) for label, tags, group in groups if group]


# Distributions recorded in the manifest.
RECORDED_PACKAGES = (
    "lmms-eval",
    "vllm",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "qwen-vl-utils",
    "verl",
    "noisygrpo",
)

_PROBE = r"""
import importlib.metadata as metadata, importlib.util, json, os, sys
versions = {}
for name in json.loads(sys.argv[1]):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
spec = importlib.util.find_spec("lmms_eval")
origin = spec.origin if spec is not None else None
print(json.dumps({
    "python": sys.executable,
    "python_version": sys.version.split()[0],
    "versions": versions,
    "lmms_eval_tasks_dir": os.path.join(os.path.dirname(origin), "tasks") if origin else None,
    "vllm_importable": importlib.util.find_spec("vllm") is not None,
}))
"""


@dataclass(frozen=True)
class PythonProbe:
    python: str
    python_version: str
    versions: dict[str, str | None]
    lmms_eval_tasks_dir: Path | None
    vllm_importable: bool


def probe_python(python: str = sys.executable, packages: tuple[str, ...] = RECORDED_PACKAGES) -> PythonProbe:
    """Probe ``python``; raises RuntimeError naming the interpreter when it cannot run."""
    try:
        completed = subprocess.run(
            [python, "-c", _PROBE, json.dumps(list(packages))], capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise RuntimeError(f"cannot run Python interpreter {python!r}: {error}") from error
    if completed.returncode != 0:
        raise RuntimeError(f"probing {python!r} failed (exit {completed.returncode}): {completed.stderr.strip()}")
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    tasks_dir = found["lmms_eval_tasks_dir"]
    return PythonProbe(
        python=found["python"],
        python_version=found["python_version"],
        versions=found["versions"],
        lmms_eval_tasks_dir=Path(tasks_dir) if tasks_dir else None,
        vllm_importable=bool(found["vllm_importable"]),
    )


DEFAULT_API_TYPE = "openai"
DEFAULT_JUDGE_MODEL = "gpt-4o-2024-11-20"
# lmms-eval's provider that answers "dummy" without any network call.
DUMMY_API_TYPE = "dummy"

# API_TYPE -> environment variables its provider needs. Providers not listed (local, bedrock)
# authenticate in ways we cannot check; they are trusted.
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "async_openai": ("OPENAI_API_KEY",),
    "azure": ("AZURE_API_KEY", "AZURE_ENDPOINT"),
    "async_azure": ("AZURE_API_KEY", "AZURE_ENDPOINT"),
}


class JudgeMode(str, Enum):
    AUTO = "auto"  # on when the provider's key variables are set
    ON = "on"  # trust the user (e.g. keys in a .env file that lmms-eval loads itself)
    OFF = "off"  # never call a judge


@dataclass(frozen=True)
class JudgeStatus:
    available: bool
    api_type: str
    model: str
    missing_env: tuple[str, ...]
    note: str


def judge_status(mode: JudgeMode, environ: Mapping[str, str]) -> JudgeStatus:
    """Decide whether judged metrics will be real; never reads or records the key values."""
    api_type = environ.get("API_TYPE", DEFAULT_API_TYPE).lower()
    model = environ.get("MODEL_VERSION", DEFAULT_JUDGE_MODEL)
    missing = tuple(name for name in REQUIRED_ENV.get(api_type, ()) if not environ.get(name))
    if mode is JudgeMode.OFF:
        return JudgeStatus(False, api_type, model, missing, "judge switched off (--judge off)")
    if mode is JudgeMode.ON:
        return JudgeStatus(True, api_type, model, missing, "judge assumed configured (--judge on)")
    if missing:
        return JudgeStatus(False, api_type, model, missing, f"no judge key: {', '.join(missing)} not set")
    return JudgeStatus(True, api_type, model, missing, f"judge {api_type}:{model}")


MANIFEST_NAME = "manifest.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def shell_line(argv: list[str] | tuple[str, ...], env: Mapping[str, str] | None = None) -> str:
    """A copy-pasteable shell line: ``VAR=value ... argv``, every word quoted as needed."""
    prefix = [f"{name}={shlex.quote(value)}" for name, value in (env or {}).items()]
    return " ".join([*prefix, shlex.join(list(argv))])


def write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Write atomically (a crash mid-write leaves the previous manifest, not half a file)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def find_manifest(results_dir: Path) -> Path | None:
    """The manifest of a results folder: in it, or in its parent (``--run NAME=OUT/lmms_eval``)."""
    for folder in (results_dir, results_dir.parent):
        candidate = folder / MANIFEST_NAME
        if candidate.is_file():
            return candidate
    return None


def judge_available(results_dir: Path) -> bool | None:
    """``judge.available`` from the folder's manifest; None without a manifest (unknown).

    Raises ValueError naming the file when the manifest is not valid JSON.
    """
    path = find_manifest(results_dir)
    if path is None:
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete or fix it") from error
    judge = manifest.get("judge") if isinstance(manifest, dict) else None
    if not isinstance(judge, dict) or not isinstance(judge.get("available"), bool):
        return None
    return judge["available"]


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
    family: ModelFamily
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
    model_type = checkpoint_model_type(checkpoint)
    family = model_family(model_type)
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
        family=family,
    )
    run_settings = RunSettings(
        python=args.lmms_python,
        include_path=out / TASKS_DIR,
        output_path=out / LMMS_OUTPUT_DIR,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    errors, warnings = preflight(args, tasks, probe, env)
    if model_type is None:
        warnings.append(f"the checkpoint's config.json names no model_type; evaluating it as {DEFAULT_MODEL_TYPE}")
    if backend is Backend.VLLM and not probe.vllm_importable:
        errors.append(f"--backend vllm but vllm is not importable in {probe.python}")
    judge_note = describe_judge(judge, tasks, run_settings.output_path)
    return EvalPlan(
        tasks=tasks,
        checkpoint=checkpoint,
        out=out,
        model_dir=model_dir,
        merge_argv=merge_command(checkpoint.path.resolve(), model_dir) if is_fsdp else None,
        family=family,
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
            "model_type": plan.family.model_type,
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
