"""The paper's benchmarks (docs/algorithm.md §6) as lmms-eval 0.7.3 include-path tasks: the registry and their YAMLs.

Every registry entry becomes an include-path task named ``noisygrpo_<task>``: it includes the
upstream YAML unchanged (by absolute path: lmms-eval's ``include`` takes full paths, and the
upstream ``!function utils.*`` references still resolve next to the upstream file) and overrides
only the task name, its tag, ``doc_to_text`` / ``process_results`` (our adapters, ``!function`` by
module path) and ``generation_kwargs``. The upstream name cannot be reused, because lmms-eval
indexes its own task folder first and the first definition of a name wins
(``TaskManager.initialize_tasks``). Overriding ``generation_kwargs`` is what gives CoT answers room:
upstream MME-RealWorld-Lite allows 16 new tokens; ``until: []`` keeps the default stop sequence
"\n\n" from cutting a reasoning chain at its first blank line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

TASK_ALIAS_PREFIX = "noisygrpo_"


class PromptStyle(str, Enum):
    """How the user turn of a task is written."""

    TRAINING_COT = "training_cot"  # the benchmark question, one space, the §5 CoT instruction
    BENCHMARK = "benchmark"  # the upstream task's own prompt, unchanged


@dataclass(frozen=True)
class EvalTask:
    """One lmms-eval task we run.

    Attributes:
        name: upstream lmms-eval task name (``mmstar``, ...).
        upstream_yaml: the task's YAML, relative to the installed ``lmms_eval/tasks/`` folder.
        prompt: how the question is prompted.
        keep_reasoning: scored on the whole response, ``<think>`` block included
            (``--reasoning_tags none``); otherwise lmms-eval strips the think block first.
        needs_judge: its scores need an LLM judge (GPT) key.
        doc_to_text: our ``lmms_adapters`` function replacing upstream's, or None to keep it.
        process_results: our ``lmms_adapters`` function wrapping upstream's, or None to keep it.
    """

    name: str
    upstream_yaml: str
    prompt: PromptStyle
    keep_reasoning: bool
    needs_judge: bool
    doc_to_text: str | None
    process_results: str | None

    @property
    def alias(self) -> str:
        """The include-path task name that lmms-eval runs and writes into its results JSON."""
        return task_alias(self.name)


def task_alias(name: str) -> str:
    """``mmstar`` -> ``noisygrpo_mmstar``."""
    return f"{TASK_ALIAS_PREFIX}{name}"


# MME-CoT direct keeps the benchmark's direct-answer prompt: MME-CoT's robustness scores compare
# the CoT prompt against exactly that prompt, so swapping in our CoT instruction would void them.
EVAL_TASKS: dict[str, EvalTask] = {
    task.name: task
    for task in (
        EvalTask(
            name="mmstar",
            upstream_yaml="mmstar/mmstar.yaml",
            prompt=PromptStyle.TRAINING_COT,
            keep_reasoning=False,
            needs_judge=False,
            doc_to_text="mmstar_doc_to_text",
            process_results="mmstar_process_results",
        ),
        EvalTask(
            name="mme_cot_reason",
            upstream_yaml="mme_cot/mme_cot_reason.yaml",
            prompt=PromptStyle.TRAINING_COT,
            keep_reasoning=True,
            needs_judge=True,
            doc_to_text="mme_cot_reason_doc_to_text",
            process_results=None,
        ),
        EvalTask(
            name="mme_cot_direct",
            upstream_yaml="mme_cot/mme_cot_direct.yaml",
            prompt=PromptStyle.BENCHMARK,
            keep_reasoning=True,
            needs_judge=False,
            doc_to_text=None,
            process_results=None,
        ),
        EvalTask(
            name="amber_g",
            upstream_yaml="amber_g/amber_g.yaml",
            prompt=PromptStyle.TRAINING_COT,
            keep_reasoning=False,
            needs_judge=False,
            doc_to_text="amber_g_doc_to_text",
            process_results="amber_g_process_results",
        ),
        EvalTask(
            name="mmerealworld_lite",
            upstream_yaml="mme_realworld/mme_realworld_lite.yaml",
            prompt=PromptStyle.TRAINING_COT,
            keep_reasoning=False,
            needs_judge=False,
            doc_to_text="mme_realworld_doc_to_text",
            process_results="mme_realworld_process_results",
        ),
    )
}


def select_tasks(names: list[str] | None) -> list[EvalTask]:
    """The registry entries for ``names`` (all, in registry order, when None); unknown names raise."""
    if names is None:
        return list(EVAL_TASKS.values())
    unknown = [name for name in names if name not in EVAL_TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(EVAL_TASKS)}")
    return [EVAL_TASKS[name] for name in dict.fromkeys(names)]


ADAPTER_MODULE = "recipe.noisygrpo.eval.lmms_adapters"
TASK_TAG = "noisygrpo"


@dataclass(frozen=True)
class DatasetOverride:
    """A local copy of a task's dataset replacing the upstream hub ``dataset_path``.

    ``path``: a snapshot of the hub dataset repo (loaded by ``datasets.load_dataset``), or a
    ``DatasetDict.save_to_disk`` folder (``dataset_dict.json`` inside), which lmms-eval loads with
    ``load_from_disk`` (its offline route; the split names must match the task's).
    """

    path: str

    @property
    def load_from_disk(self) -> bool:
        return (Path(self.path) / "dataset_dict.json").is_file()


@dataclass(frozen=True)
class Decoding:
    """Greedy decoding settings written into every task (the paper's eval decoding is not stated)."""

    max_new_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(text)


def render_task_yaml(
    task: EvalTask, upstream_yaml: Path, decoding: Decoding, dataset: DatasetOverride | None = None
) -> str:
    """The YAML text of ``task``'s include-path task.

    Args:
        task: registry entry.
        upstream_yaml: absolute path of the upstream task YAML inside the installed lmms-eval.
        decoding: generation settings.
        dataset: a local dataset replacing the upstream hub one.
    """
    lines = [
        f"# Generated by recipe.noisygrpo.eval for lmms-eval 0.7.3: upstream {task.name!r}, prompt {task.prompt.value}.",
        f"include: {_quoted(str(upstream_yaml))}",
        f"task: {task.alias}",
        "tag:",
        f"  - {TASK_TAG}",
    ]
    if task.doc_to_text is not None:
        lines.append(f"doc_to_text: !function {ADAPTER_MODULE}.{task.doc_to_text}")
    if task.process_results is not None:
        lines.append(f"process_results: !function {ADAPTER_MODULE}.{task.process_results}")
    lines += [
        "generation_kwargs:",
        f"  max_new_tokens: {decoding.max_new_tokens}",
        "  temperature: 0",
        "  top_p: 1.0",
        "  num_beams: 1",
        "  do_sample: false",
        "  until: []",
    ]
    if dataset is not None:
        lines.append(f"dataset_path: {_quoted(dataset.path)}")
        if dataset.load_from_disk:
            # Replaces the upstream dataset_kwargs (hub token, ...), which a local folder does not need.
            lines += ["dataset_kwargs:", "  load_from_disk: true"]
    return "\n".join(lines) + "\n"


def write_task_yamls(
    tasks: list[EvalTask],
    lmms_eval_tasks_dir: Path,
    include_dir: Path,
    decoding: Decoding,
    datasets: dict[str, DatasetOverride] | None = None,
) -> list[Path]:
    """Write one ``<alias>.yaml`` per task into ``include_dir`` (the ``--include_path``); returns the files.

    Raises FileNotFoundError naming the missing upstream YAML (wrong lmms-eval version or install).
    """
    datasets = datasets or {}
    include_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in tasks:
        upstream_yaml = (lmms_eval_tasks_dir / task.upstream_yaml).resolve()
        if not upstream_yaml.is_file():
            raise FileNotFoundError(
                f"lmms-eval task file {upstream_yaml} not found for task {task.name!r}: install lmms-eval==0.7.3 "
                "(the `eval` extra) in the Python that runs lmms-eval, or pass --lmms-eval-tasks-dir"
            )
        path = include_dir / f"{task.alias}.yaml"
        path.write_text(render_task_yaml(task, upstream_yaml, decoding, datasets.get(task.name)), encoding="utf-8")
        written.append(path)
    return written
