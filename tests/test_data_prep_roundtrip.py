"""Round trip: converter output -> verl's RLHFDataset -> qwen_vl_utils -> the tiny Qwen2.5-VL processor."""

from __future__ import annotations

import json
import pathlib

import pytest
from data_prep_fixtures import build_mmrlhf_tree, gradient_rgb, image_bytes

from data_prep import jsonl, mmrlhf, synthetic

QUIET = ["--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def tokenizer_and_processor(tiny_qwen25vl_dir: pathlib.Path):
    from transformers import AutoProcessor, AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen25vl_dir), AutoProcessor.from_pretrained(tiny_qwen25vl_dir)


def _dataset(path: pathlib.Path, tokenizer_and_processor, tmp_path: pathlib.Path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer, processor = tokenizer_and_processor
    config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "image_key": "images",
            "max_prompt_length": 4096,
            "truncation": "error",
            # The filter tokenises every row with the processor; a row that fails there is dropped
            # (verl prints and filters it), so `len(dataset)` tells whether every row loaded.
            "filter_overlong_prompts": True,
            # None: filter in this process. Any number makes datasets fork a Pool, which can deadlock
            # in a pytest process that already runs threads (seen here with num_proc=1).
            "filter_overlong_prompts_workers": None,
            "cache_dir": str(tmp_path / "verl_cache"),
        }
    )
    return RLHFDataset(data_files=[str(path)], tokenizer=tokenizer, config=config, processor=processor)


def _model_inputs(dataset, item: int, processor):
    """What the agent loop feeds the model for row `item`: (prompt token ids, images, grid thw)."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    row = dataset[item]
    messages = row["raw_prompt"]
    images, _, _ = RLHFDataset._process_multi_modal_info(messages, dataset.image_patch_size, dataset.config)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=images, return_tensors="pt")
    return row, inputs["input_ids"][0], images, inputs["image_grid_thw"]


def _image_tokens_match(input_ids, grid_thw, processor) -> bool:
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = processor.image_processor.merge_size**2
    return int((input_ids == pad_id).sum()) == int(grid_thw.prod(dim=1).sum()) // merge


def test_synthetic_rows_load_and_prompt_lengths_vary(tmp_path, tokenizer_and_processor):
    _, processor = tokenizer_and_processor
    paths = synthetic.write_synthetic_dataset(tmp_path, num_train=16, num_val=0, seed=0)
    dataset = _dataset(paths["train"], tokenizer_and_processor, tmp_path)
    assert len(dataset) == 16
    lengths = []
    for item in range(len(dataset)):
        row, input_ids, images, grid_thw = _model_inputs(dataset, item, processor)
        assert len(images) == 1 and images[0].mode == "RGB"
        assert _image_tokens_match(input_ids, grid_thw, processor)
        assert row["extra_info"]["question"] and row["reward_model"]["ground_truth"]
        lengths.append(len(input_ids))
    assert all(len(set(lengths[start : start + 4])) > 1 for start in range(0, 16, 4)), lengths


def test_mmrlhf_rows_of_every_image_mode_load(tmp_path, tokenizer_and_processor):
    _, processor = tokenizer_and_processor
    tree = build_mmrlhf_tree(tmp_path, num_rows=11)  # one row per image-mode variant
    argv = ["--input", str(tree.json_path), "--image-root", str(tree.image_root), "--output-dir", str(tmp_path / "o")]
    mmrlhf.main([*argv, *QUIET])
    dataset = _dataset(tmp_path / "o" / "train.parquet", tokenizer_and_processor, tmp_path)
    assert len(dataset) == 11
    for item in range(len(dataset)):
        row, input_ids, images, grid_thw = _model_inputs(dataset, item, processor)
        assert [image.mode for image in images] == ["RGB"]
        assert _image_tokens_match(input_ids, grid_thw, processor)
        assert row["data_source"] == "mm_rlhf" and row["index"] == item


def _large_image_tree(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "big.png").write_bytes(image_bytes(gradient_rgb(280, 196)))
    (tmp_path / "imgs" / "small.png").write_bytes(image_bytes(gradient_rgb(60, 60)))
    rows = [{"question": "<image> and <image>: which is bigger?", "answer": "first", "image": ["big.png", "small.png"]}]
    path = tmp_path / "imgs" / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


@pytest.mark.parametrize("storage", ["--embed-images", "--image-paths"])
def test_recorded_max_pixels_is_honoured_by_the_loader(tmp_path, tokenizer_and_processor, storage):
    _, processor = tokenizer_and_processor
    path = _large_image_tree(tmp_path)
    sizes = {}
    for max_pixels in ("0", "3136"):  # 0: not recorded (qwen_vl_utils' default cap applies)
        out = tmp_path / f"out_{max_pixels}"
        jsonl.main(["--input", str(path), "--output-dir", str(out), "--max-pixels", max_pixels, storage, *QUIET])
        dataset = _dataset(out / "train.parquet", tokenizer_and_processor, tmp_path)
        assert len(dataset) == 1
        _, input_ids, images, grid_thw = _model_inputs(dataset, 0, processor)
        assert _image_tokens_match(input_ids, grid_thw, processor)
        sizes[max_pixels] = [image.size for image in images]
    assert sizes["0"][0] == (280, 196)  # already multiples of 28: unchanged
    assert all(width * height <= 3136 for width, height in sizes["3136"])
    assert sizes["3136"][0][0] > sizes["3136"][0][1]  # aspect kept
