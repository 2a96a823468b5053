"""The benchmarks of the paper (docs/algorithm.md §6) as lmms-eval 0.7.3 tasks: one registry entry each.

Every entry becomes an include-path task named ``noisygrpo_<task>`` (see ``task_yaml``): it
includes the upstream YAML unchanged and swaps in our prompt / answer extraction. The upstream
name cannot be reused, because lmms-eval indexes its own task folder first and the first
definition of a name wins (``TaskManager.initialize_tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

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
