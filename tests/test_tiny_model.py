"""The tiny offline Qwen2.5-VL checkpoint loads through the HF auto classes and verl, and runs."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch
from PIL import Image

from recipe.noisygrpo.demo.tiny_model import (
    COT_INSTRUCTION,
    QWEN25VL_SPECIAL_TOKENS,
    TinyQwen25VLSpec,
    build_config,
    build_model,
    build_tiny_qwen25vl,
    build_tokenizer,
)


@pytest.fixture(scope="module")
def processor(tiny_qwen25vl_dir: pathlib.Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_qwen25vl_dir)


def _load_model(path: pathlib.Path, attn_implementation: str):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, attn_implementation=attn_implementation).eval()


def _image_chat_inputs(processor, image_size: tuple[int, int] = (100, 80)):
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle? " + COT_INSTRUCTION}],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    pixels = torch.Generator().manual_seed(0)
    array = (torch.rand(image_size[1], image_size[0], 3, generator=pixels) * 255).to(torch.uint8).numpy()
    return prompt, processor(text=[prompt], images=[Image.fromarray(array)], return_tensors="pt")


def test_runs_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_folder_is_small_and_complete(tiny_qwen25vl_dir: pathlib.Path):
    names = {p.name for p in tiny_qwen25vl_dir.iterdir()}
    for required in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        assert required in names
    assert sum(p.stat().st_size for p in tiny_qwen25vl_dir.iterdir()) < 10 * 1024**2
    config = json.loads((tiny_qwen25vl_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"


def test_config_matches_tokenizer(tiny_qwen25vl_dir: pathlib.Path):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen25vl_dir)
    config = AutoConfig.from_pretrained(tiny_qwen25vl_dir)
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.text_config.vocab_size >= len(tokenizer)
    assert 2000 <= len(tokenizer) <= 8192
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert config.vision_config.out_hidden_size == text.hidden_size
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"


def test_tokenizer_round_trips_text_and_special_tokens(tiny_qwen25vl_dir: pathlib.Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen25vl_dir)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in QWEN25VL_SPECIAL_TOKENS]
    assert len(set(ids)) == len(QWEN25VL_SPECIAL_TOKENS)
    for token, token_id in zip(QWEN25VL_SPECIAL_TOKENS, ids, strict=True):
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
    text = (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is there a red circle? 42 ünïcode ✓"
        "<|im_end|>\n<|im_start|>assistant\n<think> a small cat </think><answer>Yes</answer><|im_end|>"
    )
    encoded = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(encoded) == text
    # The trained merges compress the built-in vocabulary well below one token per character.
    assert len(tokenizer.encode(COT_INSTRUCTION, add_special_tokens=False)) < len(COT_INSTRUCTION) / 3


def test_chat_template_has_qwen_layout(processor):
    prompt, _ = _image_chat_inputs(processor)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>What colour" in prompt
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_processor_expands_image_tokens_to_grid(processor):
    _, inputs = _image_chat_inputs(processor)
    grid_thw = inputs["image_grid_thw"]
    assert grid_thw.shape == (1, 3)
    merge = processor.image_processor.merge_size
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_image_tokens = int((inputs["input_ids"] == image_token_id).sum())
    assert n_image_tokens == int(grid_thw.prod()) // merge**2
    assert 4 <= n_image_tokens <= 64  # the small pixel budget of the tiny processor
    assert inputs["pixel_values"].shape[0] == int(grid_thw.prod())


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_generate_returns_new_tokens(tiny_qwen25vl_dir: pathlib.Path, processor, attn_implementation: str):
    model = _load_model(tiny_qwen25vl_dir, attn_implementation)
    assert model.dtype == torch.float32
    _, inputs = _image_chat_inputs(processor)
    prompt_len = inputs["input_ids"].shape[1]
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert prompt_len < output.shape[1] <= prompt_len + 8
    assert torch.equal(output[0, :prompt_len], inputs["input_ids"][0])


def test_sdpa_and_eager_agree(tiny_qwen25vl_dir: pathlib.Path, processor):
    _, inputs = _image_chat_inputs(processor)
    with torch.no_grad():
        sdpa = _load_model(tiny_qwen25vl_dir, "sdpa")(**inputs).logits
        eager = _load_model(tiny_qwen25vl_dir, "eager")(**inputs).logits
    assert torch.isfinite(sdpa).all()
    torch.testing.assert_close(sdpa, eager, atol=1e-4, rtol=1e-4)


def test_same_seed_gives_identical_checkpoint(tiny_qwen25vl_dir: pathlib.Path, tmp_path: pathlib.Path):
    rebuilt = build_tiny_qwen25vl(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (rebuilt / name).read_bytes() == (tiny_qwen25vl_dir / name).read_bytes(), name


def test_different_seed_gives_different_weights_and_keeps_global_rng():
    spec = TinyQwen25VLSpec()
    config = build_config(build_tokenizer(spec), spec)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    weights = [dict(build_model(config, seed).state_dict()) for seed in (0, 0, 1)]
    assert torch.equal(torch.random.get_rng_state(), before)
    name = "lm_head.weight"
    assert torch.equal(weights[0][name], weights[1][name])
    assert not torch.equal(weights[0][name], weights[2][name])


def test_refuses_non_empty_dir_without_overwrite(tmp_path: pathlib.Path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        build_tiny_qwen25vl(tmp_path, seed=0)
    with pytest.raises(FileExistsError, match="no config.json"):
        build_tiny_qwen25vl(tmp_path, seed=0, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_spec_rejects_inconsistent_rope_section():
    with pytest.raises(ValueError, match="mrope_section"):
        TinyQwen25VLSpec(mrope_section=(4, 4, 4))


def test_verl_loaders(tiny_qwen25vl_dir: pathlib.Path):
    from verl.utils import hf_processor, hf_tokenizer

    tokenizer = hf_tokenizer(str(tiny_qwen25vl_dir))
    processor = hf_processor(str(tiny_qwen25vl_dir))
    assert tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert processor.chat_template is not None


@pytest.mark.gpu
def test_forward_on_cuda(tiny_qwen25vl_dir: pathlib.Path, processor):
    model = _load_model(tiny_qwen25vl_dir, "sdpa").to("cuda")
    _, inputs = _image_chat_inputs(processor)
    inputs = inputs.to("cuda")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert logits.device.type == "cuda"
    assert torch.isfinite(logits).all()
