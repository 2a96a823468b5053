"""NoisyRLHFDataset on small geo3k-layout parquet files, built through verl's own dataset factory."""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image
from verl.trainer.ppo.utils import create_rl_dataset
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

from verl_ext.dataset import (
    DEFAULT_NOISE_BASE_SEED,
    TRAIN_AGENT_NAME,
    VALIDATION_AGENT_NAME,
    DatasetRoleError,
    NoisyRLHFDataset,
    UndecodableImageError,
    is_training_dataset,
)
from verl_ext.noise import prompt_noise_seed


def png_bytes(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def geo3k_row(index: int, image: bytes, split: str) -> dict:
    question = "What is x" + "?" * index  # prompt lengths differ from row to row
    return {
        "data_source": "hiyouga/geometry3k",
        "prompt": [{"role": "user", "content": f"<image>{question}"}],
        "images": [{"bytes": image}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(index)},
        "extra_info": {"split": split, "index": index, "question": question, "answer": str(index)},
    }


def write_parquet(path: pathlib.Path, images: list[bytes], split: str) -> str:
    pd.DataFrame([geo3k_row(i, image, split) for i, image in enumerate(images)]).to_parquet(path)
    return str(path)


@pytest.fixture(scope="module")
def processor(tiny_qwen25vl_dir: pathlib.Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_qwen25vl_dir)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("geo3k")
    return {
        "train": write_parquet(
            folder / "train.parquet", [png_bytes(64 + 8 * i, 48, (40 * i, 90, 200)) for i in range(4)], "train"
        ),
        "val": write_parquet(folder / "test.parquet", [png_bytes(56, 56, (200, 30 * i, 10)) for i in range(2)], "test"),
    }


def data_config(data_files: dict[str, str], tmp_path: pathlib.Path, **overrides):
    config = {
        "train_files": data_files["train"],
        "val_files": data_files["val"],
        "cache_dir": str(tmp_path / "cache"),
        "max_prompt_length": 1024,
        "filter_overlong_prompts": True,
        # None: datasets filters in this process (any number starts a fork pool, which can hang a busy test process)
        "filter_overlong_prompts_workers": None,
        "seed": 7,
        "custom_cls": {"path": "pkg://verl_ext.dataset", "name": "NoisyRLHFDataset"},
    }
    config.update(overrides)
    return OmegaConf.create(config)


def build(config, processor, *, is_train: bool) -> NoisyRLHFDataset:
    """The way verl's trainers build it (create_rl_dataset resolves data.custom_cls)."""
    files = config.train_files if is_train else config.val_files
    return create_rl_dataset(files, config, processor.tokenizer, processor, is_train=is_train)


def test_verl_factory_builds_our_class_and_rows_extend_upstream(data_files, processor, tmp_path):
    config = data_config(data_files, tmp_path)
    dataset = build(config, processor, is_train=True)
    upstream = RLHFDataset(data_files["train"], processor.tokenizer, config, processor)

    assert type(dataset) is NoisyRLHFDataset
    assert len(dataset) == len(upstream) == 4
    row, upstream_row = dataset[2], upstream[2]
    assert set(row) == set(upstream_row) | {"noise_seed", "agent_name"}
    assert row["extra_info"] == upstream_row["extra_info"]
    assert row["prompt"] == upstream_row["prompt"]
    assert isinstance(row["noise_seed"], int)

    # The new fields survive verl's collate_fn into a batch of one value per prompt.
    batch = collate_fn([dataset[0], dataset[1]])
    assert list(batch["agent_name"]) == [TRAIN_AGENT_NAME, TRAIN_AGENT_NAME]
    assert list(batch["noise_seed"]) == [dataset[0]["noise_seed"], dataset[1]["noise_seed"]]


def test_noise_seed_is_deterministic_distinct_per_row_and_follows_data_seed(data_files, processor, tmp_path):
    first = build(data_config(data_files, tmp_path), processor, is_train=True)
    again = build(data_config(data_files, tmp_path), processor, is_train=True)
    other_seed = build(data_config(data_files, tmp_path, seed=8), processor, is_train=True)
    no_seed = build(data_config(data_files, tmp_path, seed=None), processor, is_train=True)

    seeds = [first[i]["noise_seed"] for i in range(len(first))]
    assert seeds == [again[i]["noise_seed"] for i in range(len(again))]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [prompt_noise_seed(7, i) for i in range(len(first))]
    assert [other_seed[i]["noise_seed"] for i in range(4)] != seeds
    assert [no_seed[i]["noise_seed"] for i in range(4)] == [
        prompt_noise_seed(DEFAULT_NOISE_BASE_SEED, i) for i in range(4)
    ]


def test_training_rows_go_to_the_noisy_loop_and_validation_rows_to_the_clean_one(data_files, processor, tmp_path):
    config = data_config(data_files, tmp_path)
    train = build(config, processor, is_train=True)
    val = build(config, processor, is_train=False)

    assert {train[i]["agent_name"] for i in range(len(train))} == {TRAIN_AGENT_NAME}
    assert {val[i]["agent_name"] for i in range(len(val))} == {VALIDATION_AGENT_NAME}
    assert train.is_train and not val.is_train
    # An explicit flag wins over the file lists (for callers outside verl's trainers).
    forced = NoisyRLHFDataset(data_files["train"], processor.tokenizer, config, processor, is_train=False)
    assert forced[0]["agent_name"] == VALIDATION_AGENT_NAME


def test_role_is_inferred_from_the_file_lists_and_ambiguity_is_an_error(data_files):
    config = OmegaConf.create({"train_files": [data_files["train"]], "val_files": data_files["val"]})
    assert is_training_dataset(data_files["train"], config) is True
    assert is_training_dataset([data_files["val"]], config) is False

    same = OmegaConf.create({"train_files": data_files["train"], "val_files": [data_files["train"]]})
    with pytest.raises(DatasetRoleError, match="data.train_files and data.val_files are the same"):
        is_training_dataset(data_files["train"], same)
    assert is_training_dataset(data_files["train"], same, is_train=False) is False
    with pytest.raises(DatasetRoleError, match="pass is_train"):
        is_training_dataset("/elsewhere/other.parquet", config)


@pytest.mark.parametrize("filter_overlong_prompts", [True, False])
@pytest.mark.parametrize(
    "bad_image", [b"not an image", png_bytes(64, 48, (1, 2, 3))[:60]], ids=["garbage", "truncated"]
)
def test_undecodable_image_names_the_row_and_the_file(processor, tmp_path, filter_overlong_prompts, bad_image):
    # Upstream drops such a row silently when the length filter is on, and fails without
    # naming row or file when it is off; either way construction must fail and say where.
    images = [png_bytes(64, 48, (0, 0, 0)), bad_image, png_bytes(72, 48, (9, 9, 9))]
    files = {"train": write_parquet(tmp_path / "broken.parquet", images, "train"), "val": str(tmp_path / "v.parquet")}
    config = data_config(files, tmp_path, filter_overlong_prompts=filter_overlong_prompts)

    with pytest.raises(UndecodableImageError) as caught:
        build(config, processor, is_train=True)
    message = str(caught.value)
    assert files["train"] in message
    assert "row 1 image 0" in message
    assert "row 0" not in message and "row 2" not in message


def test_loading_the_dataset_class_registers_the_agent_loop_its_rows_name():
    # Agent-loop workers load data.custom_cls; that alone (plugins off) must register the
    # agent loop the training rows are routed to.
    script = (
        "from omegaconf import OmegaConf\n"
        "from verl.experimental.agent_loop.agent_loop import _agent_loop_registry\n"
        "from verl.utils.dataset.rl_dataset import get_dataset_class\n"
        f"assert {TRAIN_AGENT_NAME!r} not in _agent_loop_registry\n"
        "config = OmegaConf.create({'custom_cls': {'path': 'pkg://verl_ext.dataset', 'name': 'NoisyRLHFDataset'}})\n"
        "get_dataset_class(config)\n"
        f"assert {TRAIN_AGENT_NAME!r} in _agent_loop_registry\n"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "none"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_overlong_prompts_are_counted_and_named_not_dropped_silently(processor, tmp_path, capsys):
    # The tiny processor caps images at 224^2: rows 1 and 3 get 64 image tokens (over 64 with the text), 0 and 2 get 4.
    sizes = [(56, 56), (448, 448), (64, 56), (392, 392)]
    images = [png_bytes(width, height, (10, 20, 30)) for width, height in sizes]
    files = {"train": write_parquet(tmp_path / "sizes.parquet", images, "train"), "val": str(tmp_path / "v.parquet")}
    lengths = {}
    for limit in (4096, 64):
        config = data_config(files, tmp_path, max_prompt_length=limit)
        dataset = build(config, processor, is_train=True)
        lengths[limit] = len(dataset)
        if limit == 64:
            assert dataset.dropped_overlong_rows == [1, 3]
            # the rows that remain are the short ones, in order, without the helper column
            assert [dataset[i]["extra_info"]["index"] for i in range(len(dataset))] == [0, 2]
            assert "__noisygrpo_row__" not in dataset.dataframe.column_names
    assert lengths == {4096: 4, 64: 2}
    report = capsys.readouterr().out
    assert "dropped 2 of 4 rows" in report and "data.max_prompt_length=64" in report
    assert "sizes.parquet row 1; " in report and "sizes.parquet row 3." in report


def test_null_val_files_give_a_one_row_placeholder_for_the_validation_loader(data_files, processor, tmp_path):
    config = data_config(data_files, tmp_path, val_files=None)
    val = create_rl_dataset(None, config, processor.tokenizer, processor, is_train=False)
    assert len(val) == 1 and not val.is_train and val.validation_disabled
    assert val[0]["agent_name"] == VALIDATION_AGENT_NAME
    train = build(config, processor, is_train=True)
    assert len(train) == 4 and train.is_train
