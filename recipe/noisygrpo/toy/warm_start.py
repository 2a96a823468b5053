"""Warm start of the toy reproduction: supervised fine-tuning of the tiny Qwen2.5-VL until it sees.

    python -m recipe.noisygrpo.toy.warm_start --output DIR [--steps 300] [--seed 0]

A random-weight model scores 0 on every rollout, so RL would have nothing to learn from. This
teaches the tiny model the answer format and to read the toy scenes: each example is the RL
prompt (image, question, the paper's CoT instruction, the same chat template) followed by the
target ``<think>{caption}</think><answer>{answer}</answer>``, the loss on the response tokens
only, AdamW, batch 32. A plain transformers training loop, not verl's SFT trainer: verl's
``sft_trainer`` needs its FSDP engine, Ray and the CPU backend's patches for a job that is one
small model on one process (a few minutes of a loop, against minutes of start-up).

The result is cached by a hash of the settings and of the task and training code, so a second
call (or another seed of the reproduction) loads it. ``evaluate`` measures held-out accuracy on
the clean, blind (another row's image) and noisy-per-level scenes with greedy decoding: the
checks the reproduction prints (clean well above chance, blind and noisy below it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from recipe.noisygrpo.demo.tiny_model import build_tiny_qwen25vl
from recipe.noisygrpo.toy import scenes as toy_scenes
from recipe.noisygrpo.toy.scenes import Scene, scene, split_scenes
from verl_ext.noise import add_noise, prompt_noise_seed
from verl_ext.task import build_prompt, extract_answer


@dataclass(frozen=True)
class WarmStartSettings:
    """Sizes of the warm start (defaults: about 4 CPU-minutes on 2 cores)."""

    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 1e-3
    sft_rows: int = 4096
    eval_rows: int = 192
    seed: int = 0

    def key(self) -> str:
        """Content hash of the settings and of the code that builds the task and trains."""
        code = b"".join(Path(module.__file__).read_bytes() for module in (toy_scenes, _this_module()))
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode() + code).hexdigest()[:16]


def _this_module():
    import sys

    return sys.modules[__name__]


def response_text(example: Scene) -> str:
    return f"<think>{example.caption}</think><answer>{example.answer}</answer>"


def _chat_prompt(processor: Any, question: str) -> str:
    """The prompt text verl's dataset builds from the row (image part first, then the text part)."""
    text = build_prompt(question)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode_batch(processor: Any, examples: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """Right-padded prompt + response ids, labels on the response (EOS included) only, and the image inputs.

    ``mm_token_type_ids`` (1 on image tokens) make transformers give image tokens the M-RoPE positions
    verl's actor and the CPU rollout use; without them it silently falls back to 1-D positions.
    """
    tokenizer = processor.tokenizer
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows, labels, token_types, pixel_values, grids = [], [], [], [], []
    for example in examples:
        prompt = processor(
            text=[_chat_prompt(processor, example.question)], images=[example.image], return_tensors="pt"
        )
        response = tokenizer(response_text(example), add_special_tokens=False)["input_ids"] + [end_of_turn]
        prompt_ids = prompt["input_ids"][0].tolist()
        rows.append(prompt_ids + response)
        labels.append([-100] * len(prompt_ids) + response)
        token_types.append(prompt["mm_token_type_ids"][0].tolist() + [0] * len(response))
        pixel_values.append(prompt["pixel_values"])
        grids.append(prompt["image_grid_thw"])
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id or 0
    return {
        "input_ids": torch.tensor([row + [pad] * (width - len(row)) for row in rows]),
        "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows]),
        "labels": torch.tensor([label + [-100] * (width - len(label)) for label in labels]),
        "mm_token_type_ids": torch.tensor([types + [0] * (width - len(types)) for types in token_types]),
        "pixel_values": torch.cat(pixel_values),
        "image_grid_thw": torch.cat(grids),
    }


def train(model: Any, processor: Any, settings: WarmStartSettings, log_every: int = 50) -> list[dict[str, float]]:
    """Supervised steps on the ``sft`` scenes; returns the logged losses."""
    torch.manual_seed(settings.seed)
    examples = [scene(settings.seed, "sft", row) for row in range(settings.sft_rows)]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(settings.seed)).tolist()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    model.train()
    log, started = [], time.perf_counter()
    for step in range(settings.steps):
        start = step * settings.batch_size % len(order)
        batch = encode_batch(processor, [examples[i] for i in order[start : start + settings.batch_size]])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (step + 1) % log_every == 0 or step == 0:
            log.append({"step": step + 1, "loss": float(loss), "seconds": time.perf_counter() - started})
            print(f"[warm start] step {step + 1}/{settings.steps}: loss {float(loss):.3f}", flush=True)
    model.eval()
    return log


@torch.inference_mode()
def greedy_answers(model: Any, processor: Any, examples: Sequence[Scene], batch_size: int = 32) -> list[str | None]:
    """The answer inside each greedy response's tags (None without them)."""
    answers: list[str | None] = []
    processor.tokenizer.padding_side = "left"
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        inputs = processor(
            text=[_chat_prompt(processor, example.question) for example in batch],
            images=[example.image for example in batch],
            return_tensors="pt",
            padding=True,
        )
        output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        texts = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answers += [extract_answer(text) for text in texts]
    return answers


def accuracy(model: Any, processor: Any, examples: Sequence[Scene]) -> float:
    answers = greedy_answers(model, processor, examples)
    return sum(answer == example.answer for answer, example in zip(answers, examples, strict=True)) / len(examples)


def evaluate(model: Any, processor: Any, seed: int, rows: int) -> dict[str, float]:
    """Held-out accuracy: clean, blind (another row's image), and the clean scenes at each noise level."""
    clean = split_scenes(seed, "clean", rows)
    results = {
        "clean": accuracy(model, processor, clean),
        "blind": accuracy(model, processor, split_scenes(seed, "blind", rows)),
    }
    for level in toy_scenes.NOISY_LEVELS:
        noisy = [
            Scene(
                add_noise(s.image, level, seed=prompt_noise_seed(seed + 1, row)),
                s.question,
                s.answer,
                s.caption,
                s.kind,
            )
            for row, s in enumerate(clean)
        ]
        results[f"noise_{level:.1f}"] = accuracy(model, processor, noisy)
    return results


def chance_accuracy() -> float:
    """Accuracy of a model that knows the question kinds but not the image: half colour (1/6), half count (1/4)."""
    return 0.5 / len(toy_scenes.COLOURS) + 0.5 / 4


def warm_start(output_root: Path, settings: WarmStartSettings = WarmStartSettings()) -> Path:
    """The warm-started model folder (built once per settings and code; later calls load it)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = output_root / f"warm_start_{settings.key()}"
    if (folder / "warm_start.json").exists():
        return folder
    base = output_root / "tiny_qwen25vl"
    if not (base / "config.json").exists():
        build_tiny_qwen25vl(base, seed=settings.seed, overwrite=base.exists())
    processor = AutoProcessor.from_pretrained(base)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32, attn_implementation="sdpa")
    started = time.perf_counter()
    log = train(model, processor, settings)
    train_s = time.perf_counter() - started
    metrics = evaluate(model, processor, settings.seed, settings.eval_rows)
    staging = folder.with_name(folder.name + ".partial")
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    report = {
        "settings": asdict(settings),
        "train_seconds": train_s,
        "log": log,
        "accuracy": metrics,
        "chance": chance_accuracy(),
    }
    (staging / "warm_start.json").write_text(json.dumps(report, indent=2))
    staging.rename(folder)
    print(f"[warm start] {train_s:.0f} s of training; held-out accuracy {json.dumps(metrics)}", flush=True)
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.noisygrpo.toy.warm_start", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output", type=Path, required=True, help="folder holding the cached warm starts")
    defaults = WarmStartSettings()
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    folder = warm_start(args.output, WarmStartSettings(steps=args.steps, seed=args.seed))
    report = json.loads((folder / "warm_start.json").read_text())
    print(f"{folder}: accuracy {report['accuracy']}, chance {report['chance']:.3f}")


if __name__ == "__main__":
    main()
