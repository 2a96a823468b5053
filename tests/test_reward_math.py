"""Tests of ``noisygrpo.reward.correctness=math`` (verl_ext.reward.math_equivalent): symbolic answer
equivalence with mathruler, read from the answer tags, and geo3k rows scored end to end.

The expected values are what mathruler 0.1.0 decides (its MATH-dataset normalisation, then a sympy
difference); the cases where it says "not equivalent" to a form a reader might accept are pinned
too, so that the README's account of them stays true.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from data_prep_fixtures import geo3k_columns
from omegaconf import OmegaConf

from data_prep import geo3k
from verl_ext import reward
from verl_ext.config import CORRECTNESS_KINDS, NoisyGRPOConfig, RewardConfig
from verl_ext.reward import compute_score
from verl_ext.task import COT_INSTRUCTION

THINK = "<think>The triangle is isosceles.</think>"


def respond(answer: str) -> str:
    """A well-formatted response carrying ``answer`` in its answer tags."""
    return f"{THINK}<answer>{answer}</answer>"


def math_correctness(answer: str, ground_truth: str, mode: str = "reference") -> float:
    return compute_score("hiyouga/geometry3k", respond(answer), ground_truth, correctness="math", mode=mode)[
        "correctness"
    ]


# (answer, ground truth): each pair is the same number.
EQUIVALENT = [
    ("0.5", r"\frac{1}{2}"),
    (r"\frac{1}{2}", "0.5"),
    ("1/2", r"\frac{1}{2}"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\boxed{2\sqrt{3}}", r"2\sqrt{3}"),
    (r"2 \sqrt { 3 }", r"2\sqrt{3}"),
    (r"\sqrt{12}", r"2\sqrt{3}"),  # only sympy sees this one
    (r"4\sqrt{3}", r"\sqrt{48}"),
    ("3.0", "3"),
    ("3", "3.0"),
    ("12.5", r"\frac{25}{2}"),
    ("x=5", "5"),
    ("x = 5", "5"),
    (r"y = \frac{1}{2}", "0.5"),
    (r"45^\circ", "45"),
    ("12 cm", "12"),
    (r"2\pi", r"2 \pi"),
    (r"\frac{40}{3}", r"\frac { 40 } { 3 }"),  # spaced LaTeX, as some geometry3k answers are written
]

# (answer, ground truth): different numbers, or forms mathruler does not equate.
NOT_EQUIVALENT = [
    ("4", "3"),
    ("-3", "3"),
    ("0.51", r"\frac{1}{2}"),
    (r"\sqrt{3}", r"2\sqrt{3}"),
    ("x=6", "5"),
    # Forms of the right value that mathruler refuses (documented in the recipe README):
    ("AB = 5", "5"),  # only a left side of at most two characters is dropped
    ("x = 3.0", "3"),  # after dropping "x =", "3.0" is compared as text
    (r"\frac{6}{2}", "3"),  # an integer ground truth needs a number, not an expression
    (r"\sqrt{9}", "3"),
    (r"\frac{2}{4}", r"\frac{1}{2}"),  # fractions must be written the same way
    ("6.93", r"4\sqrt{3}"),  # a rounded decimal is not the exact value
    ("45°", "45"),  # the degree sign (as opposed to ^\circ) is kept
]


@pytest.mark.parametrize("mode", ["reference", "strict"])
@pytest.mark.parametrize(("answer", "ground_truth"), EQUIVALENT)
def test_equivalent_forms_score_one(answer, ground_truth, mode):
    assert math_correctness(answer, ground_truth, mode) == 1.0


@pytest.mark.parametrize("mode", ["reference", "strict"])
@pytest.mark.parametrize(("answer", "ground_truth"), NOT_EQUIVALENT)
def test_other_values_and_refused_forms_score_zero(answer, ground_truth, mode):
    assert math_correctness(answer, ground_truth, mode) == 0.0


def test_exact_and_similarity_kinds_would_miss_these():
    """Why geo3k needs the math kind: exact string matching scores an equivalent form 0."""
    assert compute_score("src", respond("0.5"), r"\frac{1}{2}", correctness="exact")["correctness"] == 0.0
    assert math_correctness("0.5", r"\frac{1}{2}") == 1.0


# ----------------------------------------------------------------------- where the answer is read


@pytest.mark.parametrize(
    ("response", "ground_truth", "expected"),
    [
        (respond(r"The answer is \boxed{12}."), "12", 1.0),  # text around the box is ignored
        (respond(r"\boxed{11} no, \boxed{12}"), "12", 1.0),  # the last box is the answer
        (respond(r"\boxed{12}"), "<answer> 12 </answer>", 1.0),  # a tagged ground truth is read inside
        (respond("12"), r"\boxed{12}", 1.0),  # and so is a boxed one
        (respond(r"\boxed{\frac{1}{2}"), r"\frac{1}{2}", 0.0),  # a box that never closes is no answer
        (respond(""), "12", 0.0),
        (f"{THINK} 12", "12", 0.0),  # no answer tags: the number outside them does not count
        (f"{THINK}<answer>12</answer>\nExtra text.", "12", 1.0),  # read, but costs the format point
    ],
)
def test_answer_is_read_inside_the_answer_tags(response, ground_truth, expected):
    assert compute_score("src", response, ground_truth, correctness="math")["correctness"] == expected


def test_score_is_correctness_plus_format():
    good = compute_score("src", respond(r"\boxed{0.5}"), r"\frac{1}{2}", correctness="math")
    unformatted = compute_score("src", r"<answer>\boxed{0.5}</answer>", r"\frac{1}{2}", correctness="math")
    wrong = compute_score("src", respond("0.25"), r"\frac{1}{2}", correctness="math")
    assert (good["correctness"], good["format"], good["score"]) == (1.0, 1.0, 2.0)
    assert (unformatted["correctness"], unformatted["format"], unformatted["score"]) == (1.0, 0.0, 1.0)
    assert (wrong["correctness"], wrong["format"], wrong["score"]) == (0.0, 1.0, 1.0)
    assert set(good) == {"score", "format", "correctness", "answer_found", "noise_extent"}


# ----------------------------------------------------------------- answers kept away from sympy


@pytest.fixture
def grader_calls(monkeypatch):
    """Records the answers that reach mathruler's grade_answer (which still grades them)."""
    grader = reward.mathruler_grader()
    real_grade = grader.grade_answer
    calls = []

    def recording_grade(answer, ground_truth):
        calls.append(answer)
        return real_grade(answer, ground_truth)

    monkeypatch.setattr(grader, "grade_answer", recording_grade)
    return calls


@pytest.fixture
def refusing_grader(monkeypatch):
    """Makes reaching grade_answer a test failure (the real one would never return on these answers)."""

    def refuse(answer, ground_truth):
        raise AssertionError(f"{answer!r} reached mathruler's grade_answer")

    monkeypatch.setattr(reward.mathruler_grader(), "grade_answer", refuse)


@pytest.mark.parametrize(
    "answer",
    # Against a fraction, sympy.simplify computes the first three numbers and never returns; the
    # product (longer than the ground truth by more than the allowance) takes seconds.
    ["9**9**9", "99999999!", r"\boxed{2**10**10}", "(x+1)" + "*(x+1)" * 60],
)
@pytest.mark.usefixtures("refusing_grader")
def test_answers_sympy_could_hang_on_score_zero_ungraded(answer):
    assert math_correctness(answer, r"\frac{1}{2}") == 0.0


def test_the_guard_lets_ordinary_latex_through(grader_calls):
    # "\!" is LaTeX's negative thin space, not a factorial; a long ground truth allows a long answer.
    assert math_correctness(r"1,\!000", "1000") == 1.0
    long_truth = "+".join(f"\\frac{{{i}}}{{{i + 1}}}" for i in range(1, 40))
    assert math_correctness(long_truth, long_truth) == 1.0
    assert grader_calls == [r"1,\!000", long_truth]


def test_pylatexenc_warnings_about_model_answers_are_silenced():
    import logging

    reward.mathruler_grader()
    assert logging.getLogger("pylatexenc.latex2text").getEffectiveLevel() >= logging.ERROR


# ----------------------------------------------------------------------------- config and start-up


def test_math_is_an_allowed_kind_and_named_in_the_error():
    assert "math" in CORRECTNESS_KINDS
    assert NoisyGRPOConfig.from_config({"reward": {"correctness": "math"}}).reward.correctness == "math"
    with pytest.raises(ValueError, match=r"\['exact', 'math', 'similarity'\]"):
        NoisyGRPOConfig.from_config({"reward": {"correctness": "maths"}})


def test_missing_mathruler_is_a_start_up_error(monkeypatch):
    import importlib.util

    from verl_ext import config

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        config.importlib.util, "find_spec", lambda name, *a: None if name == "mathruler" else real_find_spec(name, *a)
    )
    with pytest.raises(ValueError, match="pip install mathruler"):
        RewardConfig(correctness="math")
    RewardConfig(correctness="exact")  # the other kinds do not need it


def test_start_up_checks_accept_math_without_an_embedding_model():
    """The embedding-model folder is checked only for the similarity kind: math never loads one."""
    from recipe.noisygrpo.validation import check_embedding_model_folder, check_noisygrpo_section, parsed_section

    def config(correctness: str):
        return OmegaConf.create(
            {"noisygrpo": {"reward": {"correctness": correctness, "embedding_model": "/nonexistent/model"}}}
        )

    math_config = config("math")
    assert check_noisygrpo_section(math_config, parsed_section(math_config)) is None
    assert check_embedding_model_folder(math_config, parsed_section(math_config)) is None
    similarity_config = config("similarity")
    assert "/nonexistent/model" in check_embedding_model_folder(similarity_config, parsed_section(similarity_config))
    typo = config("maths")
    assert "'correctness'='maths'" in check_noisygrpo_section(typo, parsed_section(typo))


def test_verl_loader_passes_correctness_math():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://verl_ext.reward",
                    "name": "compute_score",
                    "reward_kwargs": {"correctness": "math", "mode": "reference", "embedding_model": None},
                }
            }
        }
    )
    score_fn = get_custom_reward_fn(config)
    result = score_fn(data_source="src", solution_str=respond("0.5"), ground_truth=r"\frac{1}{2}", extra_info={})
    assert result["correctness"] == 1.0


# ----------------------------------------------------------------- geo3k rows, converted and scored

# Ground truth as geometry3k writes it -> an equivalent answer a model may give -> a wrong one.
GEO3K_ANSWERS = [
    (r"\frac{1}{2}", "0.5", "0.25"),
    ("12", r"\boxed{12}", r"\boxed{13}"),
    (r"2\sqrt{3}", r"\sqrt{12}", r"\sqrt{3}"),
    ("4.5", r"\frac{9}{2}", "4"),
]


@pytest.fixture
def geo3k_rows(tmp_path):
    """A tiny geometry3k copy in the hub's parquet layout, converted by data_prep.geo3k; the train rows."""
    import datasets

    columns = geo3k_columns(len(GEO3K_ANSWERS))
    columns["answer"] = [truth for truth, _, _ in GEO3K_ANSWERS]
    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )
    source = tmp_path / "geometry3k"
    (source / "data").mkdir(parents=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict(columns, features=features).to_parquet(
            str(source / "data" / f"{split}-00000-of-00001.parquet")
        )
    geo3k.main(["--input", str(source), "--output-dir", str(tmp_path / "out"), "--workers", "0", "--no-progress"])
    return pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()


def test_converted_geo3k_rows_are_scored_by_the_math_reward(geo3k_rows):
    """Each written row, through verl's loader of the recipe's reward entry: an equivalent answer scores
    correctness 1 and a wrong one 0, reading the row's ground truth and extra_info as verl hands them over."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://verl_ext.reward",
                    "name": "compute_score",
                    "reward_kwargs": {"correctness": "math"},
                }
            }
        }
    )
    score_fn = get_custom_reward_fn(config)
    assert len(geo3k_rows) == len(GEO3K_ANSWERS)
    for row, (truth, equivalent, wrong) in zip(geo3k_rows, GEO3K_ANSWERS, strict=True):
        # The row asks for the answer in <answer> tags and keeps the answer as written.
        assert row["prompt"][0]["content"].endswith(f"\n{COT_INSTRUCTION}")
        assert row["reward_model"]["ground_truth"] == truth

        def score(answer: str, row=row) -> dict:
            return score_fn(
                data_source=row["data_source"],
                solution_str=respond(answer),
                ground_truth=row["reward_model"]["ground_truth"],
                extra_info={**row["extra_info"], "noise_extent": 0.3},  # as the agent loop adds it
            )

        right, bad = score(equivalent), score(wrong)
        assert (right["correctness"], right["score"]) == (1.0, 2.0), (truth, equivalent)
        assert (bad["correctness"], bad["score"]) == (0.0, 1.0), (truth, wrong)
        assert right["noise_extent"] == 0.3


def test_geo3k_help_names_the_math_reward(capsys):
    with pytest.raises(SystemExit):
        geo3k.main(["--help"])
    assert "noisygrpo.reward.correctness=math" in capsys.readouterr().out
