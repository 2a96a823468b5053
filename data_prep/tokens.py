"""Prompt length in tokens, image tokens included, as verl's loader will see it (Qwen2-VL family).

Used by ``python -m data_prep.check FILE --tokens MODEL_DIR`` so users see the length
distribution before training (``data.filter_overlong_prompts`` drops rows longer than
``data.max_prompt_length``). Images are not decoded: their token count follows from the header
size, the row's ``max_pixels``/``min_pixels`` (qwen_vl_utils resizes within them, as verl's
loader does) and the processor's own limits, in units of (patch size x merge size)^2 pixels.
"""

from __future__ import annotations

import re
from typing import Any

from qwen_vl_utils.vision_process import IMAGE_MAX_TOKEN_NUM, IMAGE_MIN_TOKEN_NUM, smart_resize

IMAGE_PLACEHOLDER = "<image>"


def load_processor(model_dir: str) -> Any:
    """The model folder's processor, from local files only."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_dir, local_files_only=True)


def image_token_count(width: int, height: int, entry: dict[str, Any], processor: Any) -> int:
    """Tokens of one image of ``width`` x ``height`` px with its row entry's pixel limits."""
    image_processor = processor.image_processor
    patch, merge = image_processor.patch_size, image_processor.merge_size
    factor = patch * merge
    height, width = smart_resize(
        height,
        width,
        factor=factor,
        min_pixels=entry.get("min_pixels") or IMAGE_MIN_TOKEN_NUM * factor**2,
        max_pixels=entry.get("max_pixels") or IMAGE_MAX_TOKEN_NUM * factor**2,
    )
    size = image_processor.size  # the processor resizes again within its own limits
    height, width = smart_resize(
        height, width, factor=factor, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"]
    )
    return (height // patch) * (width // patch) // merge**2


def _messages(prompt: list[dict[str, str]]) -> list[dict[str, Any]]:
    """verl's message layout: each ``<image>`` in a text becomes an image part."""
    messages = []
    for message in prompt:
        parts = [part for part in re.split(f"({IMAGE_PLACEHOLDER})", message["content"]) if part]
        content = [{"type": "image"} if part == IMAGE_PLACEHOLDER else {"type": "text", "text": part} for part in parts]
        messages.append({"role": message["role"], "content": content})
    return messages


def prompt_token_count(prompt: list[dict[str, str]], image_tokens: list[int], processor: Any) -> int:
    """Tokens of the chat-templated prompt (generation prompt added) with each image expanded to its tokens."""
    text = processor.apply_chat_template(_messages(prompt), add_generation_prompt=True, tokenize=False)
    text_tokens = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    # the template holds one image-pad token per image; the processor expands it to the image's tokens
    return text_tokens + sum(count - 1 for count in image_tokens)
