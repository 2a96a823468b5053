"""A user's own ``compute_score`` with the NoisyGRPO estimator (recipe/noisygrpo/README.md, "Your own reward").

The reward file is written to tmp_path and loaded the way verl 0.9.1's reward loop loads it
(``load_reward_manager`` -> ``get_custom_reward_fn`` -> ``load_extern_object``), from the recipe's
own composed config; the scores it gives then go through the registered ``noisygrpo`` estimator
with per-rollout noise extents taken, as the trainer takes them, from the agent loop's
``extra_fields``. The advantages must be the Bayesian estimate of those scores, and a group whose
custom scores are all equal must be ranked by noise (cleaner image, higher advantage).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo.core_algos import get_adv_estimator_fn

from verl_ext.advantage import noisygrpo_inputs
from verl_ext.kalman import bayesian_advantage

LEVELS = [0.0, 0.3, 0.6, 0.9]

# What a user writes: a scalar reward that knows nothing of noise. Numeric partial credit: the
# last number of the response, 1.0 when it is the ground truth, 0.5 within a relative `tolerance`
# (a reward kwarg), else 0.0.
MY_REWARD = '''
import re

NUMBER = re.compile(r"-?\\d+(?:\\.\\d+)?")


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    tolerance = float(kwargs.get("tolerance", 0.1))
    numbers = NUMBER.findall(solution_str)
    if not numbers:
        return 0.0
    value, truth = float(numbers[-1]), float(ground_truth)
    if value == truth:
        return 1.0
    return 0.5 if abs(value - truth) <= tolerance * abs(truth) else 0.0


def compute_score_dict(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """The same score as a dict; extra keys become reward_extra_info columns (same keys every call)."""
    extra_info = extra_info or {}
    score = compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    return {"score": score, "seen_noise_extent": float(extra_info.get("noise_extent", -1.0))}


def compute_score_without_kwargs(data_source, solution_str, ground_truth, extra_info=None):
    """No **kwargs: cannot take the recipe's default reward_kwargs (the noisygrpo.reward keys)."""
    return compute_score(data_source, solution_str, ground_truth, extra_info)
'''


@pytest.fixture
def reward_file(tmp_path):
    """my_reward.py in tmp_path; also importable as the module ``my_reward`` for ``pkg://``."""
    path = tmp_path / "my_reward.py"
    path.write_text(textwrap.dedent(MY_REWARD))
    sys.path.insert(0, str(tmp_path))
    yield path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("my_reward", None)  # a later test's file must be imported afresh


def recipe_config(*overrides: str):
    """The recipe's composed config as main_noisygrpo builds it, then verl's reward-config migration
    (as the reward loop sees it)."""
    from verl.experimental.reward_loop.reward_loop import migrate_legacy_reward_impl

    with initialize_config_module(config_module="recipe.noisygrpo.config", version_base=None):
        config = compose(config_name="noisygrpo_trainer", overrides=list(overrides))
    return migrate_legacy_reward_impl(config)


def custom_reward_overrides(path: str, name: str = "compute_score") -> list[str]:
    return [f"reward.custom_reward_function.path={path}", f"reward.custom_reward_function.name={name}"]


# ------------------------------------------------------------------------------ loading


def loader_config(path: str, name: str, reward_kwargs: dict | None = None):
    """The reward section's shape, for quick loader checks."""
    return OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": path, "name": name, "reward_kwargs": reward_kwargs or {}}}}
    )


@pytest.mark.parametrize("form", ["absolute path", "file:// path", "pkg:// module"])
def test_verl_loads_the_file_by_path_file_url_or_module(reward_file, form):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    path = {
        "absolute path": str(reward_file),
        "file:// path": f"file://{reward_file}",
        "pkg:// module": "pkg://my_reward",
    }[form]
    score_fn = get_custom_reward_fn(loader_config(path, "compute_score"))
    call = {"data_source": "geo", "ground_truth": "12", "extra_info": {}}
    assert score_fn(solution_str="<answer>12</answer>", **call) == 1.0
    assert score_fn(solution_str="<answer>11.5</answer>", **call) == 0.5
    assert score_fn(solution_str="<answer>20</answer>", **call) == 0.0


def readme_example() -> str:
    """The my_reward.py of recipe/noisygrpo/README.md ("Your own reward"), as written there."""
    readme = (Path(__file__).resolve().parents[1] / "recipe" / "noisygrpo" / "README.md").read_text()
    section = readme[readme.index("## Your own reward") :]
    start = section.index("    # /path/my_reward.py")
    end = section.index("    python -m recipe.noisygrpo.main_noisygrpo", start)
    return textwrap.dedent(section[start:end])


def test_the_readme_example_loads_and_scores(tmp_path):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    path = tmp_path / "my_reward.py"
    path.write_text(readme_example())
    # As the README sets it, with the recipe's default reward_kwargs arriving in **kwargs.
    score_fn = get_custom_reward_fn(recipe_config(*custom_reward_overrides(str(path))))
    call = {"data_source": "geo", "ground_truth": "12", "extra_info": {"noise_extent": 0.6}}
    assert score_fn(solution_str="<think>...</think><answer>x = 12</answer>", **call) == 1.0
    assert score_fn(solution_str="<think>...</think><answer>13</answer>", **call) == 0.0
    assert score_fn(solution_str="no number", **call) == 0.0


def test_a_missing_file_or_name_is_reported_by_verl(reward_file):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    with pytest.raises(FileNotFoundError, match="Custom module file not found"):
        get_custom_reward_fn(loader_config(str(reward_file.with_name("nope.py")), "compute_score"))
    with pytest.raises(AttributeError, match="compute_scroe"):
        get_custom_reward_fn(loader_config(str(reward_file), "compute_scroe"))


def test_recipe_reward_kwargs_reach_the_function_unless_replaced(reward_file):
    """The recipe passes noisygrpo.reward as reward_kwargs: a function without **kwargs must be given
    its own reward_kwargs ({} or its knobs), which then replace the noisygrpo.reward keys."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    call = {"data_source": "geo", "solution_str": "<answer>11</answer>", "ground_truth": "12", "extra_info": {}}
    default = recipe_config(*custom_reward_overrides(str(reward_file)))
    assert set(default.reward.custom_reward_function.reward_kwargs) >= {"correctness", "mode"}
    # 11 is 8% off 12: partial credit at the default tolerance; the noisygrpo.reward keys land in **kwargs.
    assert get_custom_reward_fn(default)(**call) == 0.5

    strict = custom_reward_overrides(str(reward_file), "compute_score_without_kwargs")
    with pytest.raises(TypeError, match="correctness"):
        get_custom_reward_fn(recipe_config(*strict))(**call)
    emptied = recipe_config(*strict, "reward.custom_reward_function.reward_kwargs={}")
    assert get_custom_reward_fn(emptied)(**call) == 0.5
    loosened = recipe_config(
        *custom_reward_overrides(str(reward_file)), "reward.custom_reward_function.reward_kwargs={tolerance:0.5}"
    )
    call_far = {**call, "solution_str": "<answer>17</answer>"}  # 42% off: credit only with tolerance 0.5
    assert get_custom_reward_fn(loosened)(**call_far) == 0.5
    assert get_custom_reward_fn(default)(**call_far) == 0.0


# ------------------------------------------------------------- custom scores -> noisygrpo advantage


class CharTokenizer:
    """Stand-in for the policy tokenizer: one token per character (the reward manager decodes responses)."""

    @staticmethod
    def encode(text: str) -> list[int]:
        return [ord(char) for char in text]

    @staticmethod
    def decode(ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(int(i)) for i in ids)


RESPONSE_WIDTH = 72
PROMPT_IDS = [1, 2, 3]

# Groups of four rollouts (one per noise level, in LEVELS order): ground truth and the answers.
GROUPS = {
    "mixed": ("12", ["12", "11.5", "30", "12"]),  # scores 1, 0.5, 0, 1: the rewards carry the signal
    "all_right": ("4.5", ["4.5", "4.5", "4.5", "4.5"]),  # all 1: only the noise prior can rank them
    "all_wrong": ("7", ["100", "no idea", "100", "100"]),  # all 0: the same
}


def rollout_row(response: str, ground_truth: str, extra_fields: dict) -> DataProto:
    """One rollout as the agent loop hands it to the reward loop: right-padded response ids, the
    dataset's extra_info and the agent loop's extra_fields (which carry noise_extent)."""
    ids = CharTokenizer.encode(response)
    assert len(ids) <= RESPONSE_WIDTH
    response_ids = torch.tensor([ids + [0] * (RESPONSE_WIDTH - len(ids))])
    prompt_ids = torch.tensor([PROMPT_IDS])
    attention_mask = torch.cat([torch.ones_like(prompt_ids), (response_ids != 0).long()], dim=1)

    def objects(value):
        array = np.empty(1, dtype=object)
        array[0] = value
        return array

    return DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids, "attention_mask": attention_mask},
        non_tensors={
            "data_source": objects("hiyouga/geometry3k"),
            "reward_model": objects({"ground_truth": ground_truth, "style": "rule"}),
            "extra_info": objects({"split": "train", "question": "Find x."}),
            "tool_extra_fields": objects(dict(extra_fields)),
            "__num_turns__": np.array([2]),
        },
    )


def build_rollouts() -> tuple[list[DataProto], list[dict], np.ndarray]:
    """Every group's rollouts, in a shuffled row order (verl balances batches), with their
    extra_fields and uids."""
    rows, fields, uids = [], [], []
    for group, (truth, answers) in GROUPS.items():
        for session, (level, answer) in enumerate(zip(LEVELS, answers, strict=True)):
            extra_fields = {"noise_extent": level, "noise_seed": 1000 + session}
            response = f"<think>Looking at the figure.</think><answer>{answer}</answer>"
            rows.append(rollout_row(response, truth, extra_fields))
            fields.append(extra_fields)
            uids.append(group)
    order = np.random.default_rng(3).permutation(len(rows))
    return [rows[i] for i in order], [fields[i] for i in order], np.array(uids, dtype=object)[order]


@pytest.mark.parametrize("name", ["compute_score", "compute_score_dict"])
async def test_custom_scores_get_the_bayesian_advantage(reward_file, name):
    from verl.trainer.ppo.reward import load_reward_manager

    from recipe.noisygrpo.trainer import noise_extents_from_extra_fields

    manager = load_reward_manager(recipe_config(*custom_reward_overrides(str(reward_file), name)), CharTokenizer())
    rows, extra_fields, uids = build_rollouts()
    outputs = [await manager.run_single(row) for row in rows]
    scores = torch.tensor([output["reward_score"] for output in outputs], dtype=torch.float32)
    if name == "compute_score_dict":
        # extra_info["noise_extent"] was there for the reward to read, had it wanted to.
        seen = [output["reward_extra_info"]["seen_noise_extent"] for output in outputs]
        assert seen == [fields["noise_extent"] for fields in extra_fields]

    # What the trainer does: scores at each response's last token (verl's assemble_rm_scores), the
    # noise extents from the agent loop's extra_fields, never from the reward.
    batch = DataProto.concat(rows)
    token_level_rewards = manager.assemble_rm_scores(batch, scores.tolist())
    response_mask = batch.batch["attention_mask"][:, len(PROMPT_IDS) :]
    extents = noise_extents_from_extra_fields(extra_fields, [f"row{i}" for i in range(len(rows))])
    with noisygrpo_inputs(extents) as inputs:
        advantages, returns = get_adv_estimator_fn("noisygrpo")(
            token_level_rewards=token_level_rewards,
            response_mask=response_mask,
            index=uids,
            config=AlgoConfig(adv_estimator="noisygrpo"),
        )

    expected, stats = bayesian_advantage(scores, extents, uids)
    torch.testing.assert_close(advantages, expected.unsqueeze(-1) * response_mask)
    torch.testing.assert_close(returns, advantages)
    per_rollout = advantages.sum(-1) / response_mask.sum(-1)

    def group(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows_of_group = torch.from_numpy(np.flatnonzero(uids == name))
        return scores[rows_of_group], extents[rows_of_group], per_rollout[rows_of_group]

    for equal_group in ("all_right", "all_wrong"):
        group_scores, group_extents, group_advantages = group(equal_group)
        assert len(set(group_scores.tolist())) == 1
        # Equal custom scores: the advantage ranks the rollouts by the noise they saw, cleaner higher.
        by_cleanliness = group_advantages[torch.argsort(group_extents)]
        assert (by_cleanliness[:-1] > by_cleanliness[1:]).all(), (equal_group, by_cleanliness)
        gain = stats.kalman_gain[stats.group_index[int(np.flatnonzero(uids == equal_group)[0])]]
        assert float(gain) == pytest.approx(1 / 1.1)  # the prior's largest weight, K = 1 / (1 + r_value)

    group_scores, _, group_advantages = group("mixed")
    # Disagreeing scores: the scores decide (near GRPO): right above partial credit above wrong.
    wrong, partial = group_advantages[group_scores == 0.0], group_advantages[group_scores == 0.5]
    right = group_advantages[group_scores == 1.0]
    assert (len(wrong), len(partial), len(right)) == (1, 1, 2)
    assert right.min() > partial.max() > wrong.max()
    assert inputs.metrics["noisygrpo/zero_variance_group_frac"] == pytest.approx(2 / 3)
