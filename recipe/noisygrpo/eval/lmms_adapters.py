"""Prompt and answer adapters that our include-path lmms-eval tasks call (``!function`` targets).

Each function delegates to the upstream lmms-eval 0.7.3 task code, imported by module path when
called (lmms-eval is only installed where evaluation runs, never needed to import this module):

- ``*_doc_to_text``: the benchmark's question text (stripped), then a newline and the paper's CoT
  instruction (``verl_ext.task.build_prompt``, the training prompt of docs/algorithm.md §5). Upstream
  direct-answer instructions ("Answer with the option's letter ...") are left out, since they
  contradict the CoT instruction.
- ``*_process_results``: upstream scoring, fed the text inside ``<answer>...</answer>`` when the
  response has one (the training reward reads the same span); responses without the tag go to the
  upstream scorer unchanged (lmms-eval has already removed the ``<think>`` block), so a base
  model that ignores the format is scored by the benchmark's own lenient extraction.

No scoring logic lives here: only prompt text and the span handed to the upstream scorer.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from verl_ext.task import build_prompt, extract_answer

# Upstream utils modules, by the lmms-eval task folder that holds them.
UPSTREAM_MODULES = {
    "mmstar": "lmms_eval.tasks.mmstar.utils",
    "mme_cot": "lmms_eval.tasks.mme_cot.utils",
    "amber_g": "lmms_eval.tasks.amber_g.utils",
    "mme_realworld": "lmms_eval.tasks.mme_realworld.utils",
}

# mme_realworld_doc_to_text (0.7.3) ends every prompt with this direct-answer instruction and
# ignores lmms_eval_specific_kwargs, so the only way to prompt with CoT is to cut it off.
MME_REALWORLD_DIRECT_SUFFIX = (
    "Respond with only the letter (A, B, C, D, or E) of the correct option.\nThe best answer is: "
)

# mmecot_doc_to_text appends its own instruction for postfix_type "cot"/"direct"; any other value
# appends nothing, which leaves room for ours.
MME_COT_NO_POSTFIX = {"postfix_type": "none"}


def upstream(folder: str) -> ModuleType:
    """The upstream ``utils`` module of an lmms-eval task folder (``mmstar``, ``mme_cot``, ...)."""
    return importlib.import_module(UPSTREAM_MODULES[folder])


def final_answer(response: str) -> str:
    """The stripped text of the first ``<answer>...</answer>`` span, or ``response`` unchanged without one."""
    answer = extract_answer(response)
    return response if answer is None else answer


def final_answers(responses: list[str]) -> list[str]:
    return [final_answer(response) if isinstance(response, str) else response for response in responses]


def strip_required_suffix(text: str, suffix: str, task: str) -> str:
    """``text`` without ``suffix``; raises when it is missing, since the prompt would then be wrong."""
    if not text.endswith(suffix):
        raise ValueError(
            f"{task}: the upstream prompt no longer ends with {suffix!r}; lmms-eval's task changed "
            f"(this adapter targets lmms-eval 0.7.3). Update MME_REALWORLD_DIRECT_SUFFIX in {__name__}."
        )
    return text[: -len(suffix)]


# --- MMStar -------------------------------------------------------------------------------------


def mmstar_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    question = upstream("mmstar").mmstar_doc_to_text(doc, {"pre_prompt": "", "post_prompt": ""})
    return build_prompt(question.strip())


def mmstar_process_results(doc: dict, results: list[str], **kwargs: Any) -> dict:
    return upstream("mmstar").mmstar_process_results(doc, final_answers(results), **kwargs)


# --- MME-CoT (reason) ---------------------------------------------------------------------------


def mme_cot_reason_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    question = upstream("mme_cot").mmecot_doc_to_text(doc, dict(MME_COT_NO_POSTFIX))
    return build_prompt(question.strip())


# --- AMBER (generative) -------------------------------------------------------------------------


def amber_g_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return build_prompt(upstream("amber_g").amber_g_doc_to_text(doc).strip())


def amber_g_process_results(doc: dict, results: list[str], **kwargs: Any) -> dict:
    return upstream("amber_g").amber_g_process_result(doc, final_answers(results), **kwargs)


# --- MME-RealWorld-Lite -------------------------------------------------------------------------


def mme_realworld_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    text = upstream("mme_realworld").mme_realworld_doc_to_text(doc, lmms_eval_specific_kwargs)
    return build_prompt(strip_required_suffix(text, MME_REALWORLD_DIRECT_SUFFIX, "mmerealworld_lite").strip())


def mme_realworld_process_results(doc: dict, results: list[str], **kwargs: Any) -> dict:
    return upstream("mme_realworld").mme_realworld_process_results(doc, final_answers(results), **kwargs)
