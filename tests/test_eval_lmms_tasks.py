"""Include-path task YAMLs and the prompt / answer adapters they point lmms-eval at.

lmms-eval is not installed in the test environment: the upstream task modules are replaced by
stubs that behave like lmms-eval 0.7.3's (same function names, same prompt text), so these tests
check our glue: which text reaches the model and which span reaches the upstream scorer.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
import yaml

from recipe.noisygrpo.eval import lmms_adapters
from recipe.noisygrpo.eval.lmms_tasks import (
    ADAPTER_MODULE,
    EVAL_TASKS,
    DatasetOverride,
    Decoding,
    PromptStyle,
    render_task_yaml,
    select_tasks,
    write_task_yamls,
)
from verl_ext.task import COT_INSTRUCTION


class FunctionTag:
    """What lmms-eval's ``!function`` constructor would import."""

    def __init__(self, target: str) -> None:
        self.target = target


class TaskLoader(yaml.SafeLoader):
    pass


TaskLoader.add_constructor("!function", lambda loader, node: FunctionTag(loader.construct_scalar(node)))


def fake_lmms_tasks_dir(root: Path) -> Path:
    for task in EVAL_TASKS.values():
        path = root / task.upstream_yaml
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"task: {task.name}\n")
    return root


def test_rendered_yaml_includes_upstream_and_points_at_existing_adapters(tmp_path: Path) -> None:
    tasks_dir = fake_lmms_tasks_dir(tmp_path / "lmms_eval" / "tasks")
    saved = tmp_path / "amber_saved"  # a DatasetDict.save_to_disk folder
    saved.mkdir()
    (saved / "dataset_dict.json").write_text('{"splits": ["train"]}')
    overrides = {"mmstar": DatasetOverride("/data/mmstar_snapshot"), "amber_g": DatasetOverride(str(saved))}
    written = write_task_yamls(
        select_tasks(None), tasks_dir, tmp_path / "include", Decoding(max_new_tokens=777), overrides
    )
    assert [path.name for path in written] == [f"{task.alias}.yaml" for task in EVAL_TASKS.values()]
    adapters = importlib.import_module(ADAPTER_MODULE)
    for path, task in zip(written, EVAL_TASKS.values(), strict=True):
        config = yaml.load(path.read_text(), Loader=TaskLoader)
        assert config["include"] == str((tasks_dir / task.upstream_yaml).resolve())
        assert config["task"] == f"noisygrpo_{task.name}"
        assert config["generation_kwargs"] == {
            "max_new_tokens": 777,
            "temperature": 0,
            "top_p": 1.0,
            "num_beams": 1,
            "do_sample": False,
            "until": [],
        }
        for key in ("doc_to_text", "process_results"):
            expected = getattr(task, key)
            if expected is None:
                assert key not in config  # upstream's stays in force
            else:
                module, _, name = config[key].target.rpartition(".")
                assert module == ADAPTER_MODULE and callable(getattr(adapters, name)) and name == expected
        expected_path = {"mmstar": "/data/mmstar_snapshot", "amber_g": str(saved)}.get(task.name)
        assert config.get("dataset_path") == expected_path
        # Only a save_to_disk folder switches lmms-eval to load_from_disk; hub snapshots keep upstream kwargs.
        assert config.get("dataset_kwargs") == ({"load_from_disk": True} if task.name == "amber_g" else None)


def test_missing_upstream_yaml_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="install lmms-eval==0.7.3"):
        write_task_yamls(select_tasks(["amber_g"]), tmp_path / "nowhere", tmp_path / "include", Decoding())


def test_registry_prompts_and_reasoning_modes() -> None:
    # Only MME-CoT keeps the chain for its judge; only MME-CoT direct keeps the benchmark's prompt.
    assert {name for name, task in EVAL_TASKS.items() if task.keep_reasoning} == {"mme_cot_reason", "mme_cot_direct"}
    assert {name for name, task in EVAL_TASKS.items() if task.prompt is PromptStyle.BENCHMARK} == {"mme_cot_direct"}
    with pytest.raises(ValueError, match="unknown task"):
        select_tasks(["mmstar", "pope"])
    assert "until: []" in render_task_yaml(EVAL_TASKS["mmstar"], Path("/x.yaml"), Decoding())


# --- adapters, against stubs of lmms-eval 0.7.3's task modules ----------------------------------


@pytest.fixture()
def upstream_stubs(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    received: dict[str, list] = {"mmstar": [], "amber_g": [], "mme_realworld": []}

    def module(name: str, **functions) -> None:
        monkeypatch.setitem(sys.modules, lmms_adapters.UPSTREAM_MODULES[name], types.SimpleNamespace(**functions))

    def mmstar_doc_to_text(doc, kwargs):
        question = doc["question"].strip()
        if kwargs.get("post_prompt"):
            question += kwargs["post_prompt"]
        return question

    def mmecot_doc_to_text(doc, kwargs):
        prompt = doc["question"].strip() + "\nA. one\nB. two"
        if kwargs["postfix_type"] == "cot":
            prompt += "\nPlease generate a step by step answer, include all your intermediate reasoning process, ..."
        return prompt

    def mme_realworld_doc_to_text(doc, kwargs=None):
        return (
            doc["question"]
            + " The choices are listed below:\n(A) x\n(B) y\n"
            + "Select the best answer to the above multiple-choice question based on the image. "
            + lmms_adapters.MME_REALWORLD_DIRECT_SUFFIX
        )

    module(
        "mmstar",
        mmstar_doc_to_text=mmstar_doc_to_text,
        mmstar_process_results=lambda doc, results: received["mmstar"].append(results) or {"average": 1},
    )
    module("mme_cot", mmecot_doc_to_text=mmecot_doc_to_text)
    module(
        "amber_g",
        amber_g_doc_to_text=lambda doc: "Describe this image",
        amber_g_process_result=lambda doc, result: received["amber_g"].append(result) or {"amber_chair": {}},
    )
    module(
        "mme_realworld",
        mme_realworld_doc_to_text=mme_realworld_doc_to_text,
        mme_realworld_process_results=lambda doc, results: received["mme_realworld"].append(results) or {},
    )
    return received


def test_doc_to_text_is_question_then_training_cot_instruction(upstream_stubs: dict[str, list]) -> None:
    doc = {"question": "  Which colour is the car? Options: A: red, B: blue  "}
    assert lmms_adapters.mmstar_doc_to_text(doc, {"post_prompt": "ignored"}) == (
        f"Which colour is the car? Options: A: red, B: blue\n{COT_INSTRUCTION}"
    )
    assert lmms_adapters.amber_g_doc_to_text({}) == f"Describe this image\n{COT_INSTRUCTION}"
    cot = lmms_adapters.mme_cot_reason_doc_to_text({"question": "How many?"}, {"postfix_type": "cot"})
    assert cot == f"How many?\nA. one\nB. two\n{COT_INSTRUCTION}"  # the benchmark's own CoT postfix is dropped
    realworld = lmms_adapters.mme_realworld_doc_to_text({"question": "What is it?"}, {})
    assert realworld == (
        "What is it? The choices are listed below:\n(A) x\n(B) y\n"
        f"Select the best answer to the above multiple-choice question based on the image.\n{COT_INSTRUCTION}"
    )
    assert "Respond with only the letter" not in realworld


def test_changed_upstream_prompt_fails_loudly(upstream_stubs: dict[str, list], monkeypatch: pytest.MonkeyPatch) -> None:
    changed = types.SimpleNamespace(mme_realworld_doc_to_text=lambda doc, kwargs=None: "Q? Answer with a letter.")
    monkeypatch.setitem(sys.modules, lmms_adapters.UPSTREAM_MODULES["mme_realworld"], changed)
    with pytest.raises(ValueError, match="lmms-eval's task changed"):
        lmms_adapters.mme_realworld_doc_to_text({"question": "Q?"}, {})


def test_process_results_hand_the_answer_span_to_upstream(upstream_stubs: dict[str, list]) -> None:
    assert lmms_adapters.mmstar_process_results({}, ["<answer> B </answer>"]) == {"average": 1}
    lmms_adapters.amber_g_process_results({}, ["<answer>A dog on grass.</answer> trailing <answer>x</answer>"])
    lmms_adapters.mme_realworld_process_results({}, ["The answer is (C)"])
    assert upstream_stubs["mmstar"] == [["B"]]
    assert upstream_stubs["amber_g"] == [["A dog on grass."]]  # first span, as the training reward reads it
    assert upstream_stubs["mme_realworld"] == [["The answer is (C)"]]  # no tag: unchanged
