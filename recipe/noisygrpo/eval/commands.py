"""The lmms-eval 0.7.3 command lines for one model folder (pure: argv lists, nothing is run here).

Facts from lmms-eval 0.7.3's source this relies on:
- ``python -m lmms_eval --model M --model_args k=v,... --tasks a,b`` is the flat CLI;
  ``--batch_size`` must not also appear in ``--model_args`` (both reach the model's constructor).
- Qwen2.5-VL model ids: ``qwen2_5_vl`` (transformers; resolves to its chat class, args
  ``pretrained``, ``max_pixels``, ``attn_implementation``) and ``vllm`` (chat class, args ``model``,
  ``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_new_tokens``; unknown args go to
  ``vllm.LLM``, brace values are parsed as JSON). vLLM uses max(task, model) ``max_new_tokens``.
- ``--reasoning_tags`` (JSON list of [start, end] pairs, or ``none``) strips reasoning blocks from
  responses before scoring; its default also strips ``<think>``, so MME-CoT needs ``none``.
- Results: ``<output_path>/<sanitized model path>/<YYYYMMDD_HHMMSS>_results.json``; with
  ``--log_samples`` also ``<timestamp>_samples_<task>.jsonl``; MME-CoT submission files go to
  ``<output_path>/submissions/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from recipe.noisygrpo.eval.benchmarks import EvalTask

# The paper's training max_pixels (1536^2): evaluation sees images at the training resolution.
TRAINING_MAX_PIXELS = 2359296

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
    """

    model_dir: Path
    backend: Backend
    max_new_tokens: int
    max_pixels: int = TRAINING_MAX_PIXELS
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.8
    attn_implementation: str | None = None
    extra_model_args: tuple[str, ...] = ()


def _vllm_model_args(settings: ModelSettings) -> list[str]:
    return [
        f"model={settings.model_dir}",
        f"tensor_parallel_size={settings.tensor_parallel_size}",
        f"gpu_memory_utilization={settings.gpu_memory_utilization}",
        f"max_new_tokens={settings.max_new_tokens}",
        f"max_pixels={settings.max_pixels}",
        # The chat class applies max_pixels to videos only; images go through vLLM's processor.
        f'mm_processor_kwargs={{"max_pixels": {settings.max_pixels}}}',
    ]


def _hf_model_args(settings: ModelSettings) -> list[str]:
    args = [f"pretrained={settings.model_dir}", f"max_pixels={settings.max_pixels}"]
    if settings.attn_implementation is not None:
        args.append(f"attn_implementation={settings.attn_implementation}")
    return args


@dataclass(frozen=True)
class BackendSpec:
    lmms_model: str
    model_args: Callable[[ModelSettings], list[str]]
    default_batch_size: int


BACKENDS: dict[Backend, BackendSpec] = {
    Backend.VLLM: BackendSpec(lmms_model="vllm", model_args=_vllm_model_args, default_batch_size=128),
    Backend.HF: BackendSpec(lmms_model="qwen2_5_vl", model_args=_hf_model_args, default_batch_size=1),
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
        backend.lmms_model,
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
