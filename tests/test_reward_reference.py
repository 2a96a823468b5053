"""``compute_score(mode="reference")`` scores a response exactly as the authors' rewards do.

The oracle below restates, in this test's own code, what the reference's
``correctness_bem_score_reward + format_reward`` (rewards.py) compute for one response, given
the row's raw ``problem`` and ``solution`` and the prompt text the reference builds from them
(``"{problem}\\n{instruction}"``). Both sides use the same embedding model (the bundled
all-MiniLM-L6-v2; the paper used all-mpnet-base-v2, the rules do not depend on the model). The
rows go through ``data_prep.mmrlhf`` first, so the test also checks that the converter keeps
what the reference's reward reads.
"""

from __future__ import annotations

import io
import json
import re
import string

import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep import mmrlhf
from verl_ext import reward
from verl_ext.reward import compute_score
from verl_ext.task import COT_INSTRUCTION

RAW_ROWS = [
    ("What animal is shown?\nchoices:\nA. cat\nB. dog\nC. bird", "<answer> B </answer>"),
    ("What animal is shown? Choices: A. cat B. dog", "B. dog"),
    ("Pick one.\nCHOICES: (A) red (B) blue", "The answer is (A) ."),
    ("Is there a dog? Answer the question with Yes or No.", "No"),
    ("Is there a cat? Answer the question with Yes or No.", "<answer> Yes </answer>"),
    ("Is it sunny? Answer the question with Yes or No. ", "  no, it rains"),
    ("Describe the scene in one sentence.", "<answer> A dog runs across a green park. </answer>"),
    ("  What colour is the car?  ", "red"),
]

RESPONSES = [
    "<think>a</think><answer>B</answer>",
    "<think>a</think><answer> b </answer>",
    "<think>a</think><answer>C</answer>",
    "<think>a</think> <answer>A</answer>",
    "<think>looks</think><answer>Yes, but there is no dog</answer>",
    "<think>x</think><answer>No</answer>",
    "<think>x</think><answer>yes</answer>",
    "<think>x</think><answer>I play the piano</answer>",
    "<think>x</think><answer>A dog is running in a park.</answer>",
    "<think>x</think><answer>red</answer>",
    "<think>x</think><answer>The car is red.</answer>",
    "<answer>B</answer>",
    "<think>x</think><answer>B</answer>\n",
    "<think>no answer tag</think> B",
    "<think>x</think><answer></answer>",
]


def oracle_reward(response: str, solution: str, prompt_text: str, similarity) -> float:
    """correctness (similarity, then the multiple-choice and yes/no checks) + format, as the reference does."""
    found = re.search(r"<answer>([\s\S]*?)</answer>", response)
    correctness = 0.0
    if found:
        answer = found.group(1).strip()
        cosine = similarity(answer, solution)  # against the solution exactly as stored
        if cosine >= 0.6:
            correctness = cosine
        if "choices:" in prompt_text.lower():
            without_punctuation = "".join(c for c in solution.strip() if c not in string.punctuation)
            letter = re.search(r"\s([A-K])\s", without_punctuation)
            if letter is not None and answer.strip().upper() == letter.group(1):
                correctness = 1.0
        if "Answer the question with Yes or No." in prompt_text:
            truth = solution.strip().lower()
            said = answer.strip().lower()
            truth_yes, truth_no = "yes" in re.findall(r"yes\b", truth), "no" in re.findall(r"no\b", truth)
            said_yes, said_no = "yes" in re.findall(r"yes\b", said), "no" in re.findall(r"no\b", said)
            if (truth_yes and said_yes) or (truth_no and said_no):
                correctness = 1.0
    matched = re.fullmatch(r"<think>([\s\S]*?)</think>\s*<answer>([\s\S]*?)</answer>", response)
    return correctness + (1.0 if matched else 0.0)


@pytest.fixture(scope="module")
def converted_rows(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmrlhf_reference")
    (root / "images").mkdir()
    rows = []
    for index, (problem, solution) in enumerate(RAW_ROWS):
        buffer = io.BytesIO()
        Image.new("RGB", (40 + index, 36), (10 * index, 80, 200)).save(buffer, format="PNG")
        (root / "images" / f"{index}.png").write_bytes(buffer.getvalue())
        rows.append({"image": f"images/{index}.png", "problem": problem, "solution": solution})
    (root / "rows.json").write_text(json.dumps(rows))
    mmrlhf.main(
        ["--input", str(root / "rows.json"), "--image-root", str(root), "--output-dir", str(root / "out")]
        + ["--workers", "0", "--no-progress"]
    )
    return pq.read_table(root / "out" / "train.parquet").to_pylist()


@pytest.fixture(scope="module")
def similarity():
    model = reward.EMBEDDING_MODELS.get(reward.resolve_embedding_model_path(None), "cpu").model

    def cosine(first: str, second: str) -> float:
        embeddings = model.encode([first, second], convert_to_tensor=True, normalize_embeddings=True)
        return float((embeddings[0] * embeddings[1]).sum())

    return cosine


def test_converted_rows_keep_what_the_reference_reward_reads(converted_rows):
    assert len(converted_rows) == len(RAW_ROWS)
    for row, (problem, solution) in zip(converted_rows, RAW_ROWS, strict=True):
        assert row["reward_model"]["ground_truth"] == solution  # raw: tags and whitespace kept
        assert row["extra_info"]["question"] == problem
        # the text part of the prompt is the reference's "{Question}\n{instruction}", question not stripped
        assert row["prompt"][0]["content"] == f"<image>{problem}\n{COT_INSTRUCTION}"


@pytest.mark.parametrize("response", RESPONSES)
def test_reference_mode_equals_the_reference_rewards(converted_rows, similarity, response):
    for row, (problem, solution) in zip(converted_rows, RAW_ROWS, strict=True):
        ours = compute_score(
            row["data_source"], response, row["reward_model"]["ground_truth"], row["extra_info"], mode="reference"
        )
        expected = oracle_reward(response, solution, f"{problem}\n{COT_INSTRUCTION}", similarity)
        assert ours["score"] == pytest.approx(expected, abs=1e-5), (problem, solution)


def test_the_issue_cases_differ_between_reference_and_strict(converted_rows):
    by_solution = {row["reward_model"]["ground_truth"]: row for row in converted_rows}

    def score(solution: str, answer: str, mode: str) -> float:
        row = by_solution[solution]
        response = f"<think>x</think><answer>{answer}</answer>"
        return compute_score("mm_rlhf", response, solution, row["extra_info"], mode=mode)["correctness"]

    # "B. dog" names no letter for the reference (no whitespace before it): the answer keeps its similarity
    assert score("B. dog", "B", "reference") < 1.0 and score("B. dog", "B", "strict") == 1.0
    # both texts contain "no": the reference's yes/no check passes; strict reads "yes" first and disagrees
    assert score("No", "Yes, but there is no dog", "reference") == 1.0
    assert score("No", "Yes, but there is no dog", "strict") == 0.0
    assert score("<answer> B </answer>", "B", "reference") == score("<answer> B </answer>", "B", "strict") == 1.0
    assert score("<answer> B </answer>", "C", "strict") == 0.0
