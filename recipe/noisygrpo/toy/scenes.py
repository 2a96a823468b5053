"""The toy task: scenes a 1.6M-parameter VLM can learn to see in minutes, and its held-out splits.

Two kinds of question, drawn at random per row (answers are short and checked by exact match):

    colour  one shape filling about 3/4 of the image      "What colour is the shape?"       -> "red"
    count   1-4 shapes of the asked kind on a 2x2 grid,   "How many circles are there?"     -> "3"
            plus at most one shape of another kind

The think text the warm start learns is a caption of the scene ("red circle, blue circle"), so
the answer depends on what the model reads from the image. Images are 56-112 px (multiples of 28:
one image token per 28 x 28 pixels) on light backgrounds.

Splits (each row a pure function of (seed, split, row); ``data_source`` is ``toy_<split>``, so
verl's validation logs each split's accuracy on its own):

    sft      warm-start rows (with their caption)
    train    RL prompts
    clean    held out, same distribution
    noisy    the clean scenes with Gaussian noise at levels 0.3 / 0.6 / 0.9 (by row), baked into the image
    shifted  unseen image sizes (140-168 px) and darker backgrounds
    blind    the clean questions with another row's image (what a model that ignores images scores)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from verl_ext.noise import add_noise, prompt_noise_seed
from verl_ext.task import IMAGE_PLACEHOLDER, build_prompt

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 140, 20),
}
BACKGROUNDS = ((255, 255, 255), (245, 245, 240), (235, 240, 245))
SHIFTED_BACKGROUNDS = ((90, 90, 100), (60, 70, 60), (120, 110, 100))
SIZES = (56, 84, 112)
SHIFTED_SIZES = (140, 168)
NOISY_LEVELS = (0.3, 0.6, 0.9)
SPLITS = ("sft", "train", "clean", "noisy", "shifted", "blind")
HELD_OUT = ("clean", "noisy", "shifted", "blind")
_SPLIT_CODES = {split: code for code, split in enumerate(SPLITS)}


@dataclass(frozen=True)
class Scene:
    """One row: the image, the question, the answer and the caption the warm start learns to think."""

    image: Image.Image
    question: str
    answer: str
    caption: str
    kind: str


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=colour)


def _canvas(rng: np.random.Generator, sizes: Sequence[int], backgrounds: Sequence[tuple[int, int, int]]):
    width, height = (int(rng.choice(sizes)) for _ in range(2))
    image = Image.new("RGB", (width, height), backgrounds[int(rng.integers(len(backgrounds)))])
    return image, ImageDraw.Draw(image)


def colour_scene(rng: np.random.Generator, sizes: Sequence[int], backgrounds: Sequence[tuple[int, int, int]]) -> Scene:
    image, draw = _canvas(rng, sizes, backgrounds)
    shape, colour = SHAPES[int(rng.integers(3))], list(COLOURS)[int(rng.integers(len(COLOURS)))]
    width, height = image.size
    margin_x, margin_y = width // 8, height // 8
    _draw(draw, shape, (margin_x, margin_y, width - margin_x, height - margin_y), COLOURS[colour])
    question = ("What colour is the shape?", f"What colour is the {shape}?")[int(rng.integers(2))]
    return Scene(image, question, colour, f"{colour} {shape}", "colour")


def count_scene(rng: np.random.Generator, sizes: Sequence[int], backgrounds: Sequence[tuple[int, int, int]]) -> Scene:
    image, draw = _canvas(rng, sizes, backgrounds)
    kind = SHAPES[int(rng.integers(3))]
    count = int(rng.integers(1, 5))
    shapes = [kind] * count
    if count < 4 and rng.random() < 0.5:
        shapes.append([other for other in SHAPES if other != kind][int(rng.integers(2))])
    cells = rng.permutation(4)[: len(shapes)]
    width, height = image.size
    cell_w, cell_h = width // 2, height // 2
    described = []
    for shape, cell in zip(shapes, cells, strict=True):
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        column, row = int(cell) % 2, int(cell) // 2
        pad_x, pad_y = cell_w // 6, cell_h // 6
        box = (column * cell_w + pad_x, row * cell_h + pad_y, (column + 1) * cell_w - pad_x, (row + 1) * cell_h - pad_y)
        _draw(draw, shape, box, COLOURS[colour])
        described.append((int(cell), f"{colour} {shape}"))
    caption = ", ".join(text for _, text in sorted(described))  # reading order: top left to bottom right
    question = (f"How many {kind}s are there?", f"Count the {kind}s. How many are in the image?")[int(rng.integers(2))]
    return Scene(image, question, str(count), caption, "count")


def scene(seed: int, split: str, row: int) -> Scene:
    """The scene of row ``row`` of ``split`` (before noise / shuffling)."""
    base = "clean" if split in ("noisy", "blind") else split  # same scenes as clean, then changed
    rng = np.random.default_rng([seed, _SPLIT_CODES[base], row])
    shifted = split == "shifted"
    sizes, backgrounds = (SHIFTED_SIZES, SHIFTED_BACKGROUNDS) if shifted else (SIZES, BACKGROUNDS)
    make = colour_scene if rng.random() < 0.5 else count_scene
    return make(rng, sizes, backgrounds)


def split_scenes(seed: int, split: str, rows: int) -> list[Scene]:
    """The ``rows`` scenes of ``split``, with the noisy split's noise and the blind split's image shuffle applied."""
    scenes = [scene(seed, split, row) for row in range(rows)]
    if split == "noisy":
        scenes = [
            Scene(
                add_noise(s.image, NOISY_LEVELS[row % len(NOISY_LEVELS)], seed=prompt_noise_seed(seed, row)),
                s.question,
                s.answer,
                s.caption,
                s.kind,
            )
            for row, s in enumerate(scenes)
        ]
    if split == "blind":
        order = np.random.default_rng([seed, 99]).permutation(rows)
        order = np.where(order == np.arange(rows), (order + 1) % rows, order)  # never the row's own image
        scenes = [
            Scene(scenes[int(other)].image, s.question, s.answer, s.caption, s.kind)
            for s, other in zip(scenes, order, strict=True)
        ]
    return scenes


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def verl_row(scene: Scene, split: str, row: int) -> dict[str, Any]:
    """A verl RL row (the geo3k layout data_prep writes), the caption in ``extra_info``."""
    return {
        "data_source": f"toy_{split}",
        "prompt": [{"role": "user", "content": build_prompt(IMAGE_PLACEHOLDER + scene.question)}],
        "images": [{"bytes": png_bytes(scene.image), "path": f"{split}_{row}.png"}],
        "ability": "visual_reasoning",
        "reward_model": {"style": "rule", "ground_truth": scene.answer},
        "extra_info": {
            "split": split,
            "index": row,
            "question": scene.question,
            "answer": scene.answer,
            "answer_type": "free_form",
            "caption": scene.caption,
            "kind": scene.kind,
        },
    }


def write_split(folder: Path, seed: int, split: str, rows: int) -> Path:
    """``folder/<split>.parquet`` with ``rows`` rows; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.parquet"
    table = pa.Table.from_pylist([verl_row(s, split, row) for row, s in enumerate(split_scenes(seed, split, rows))])
    pq.write_table(table, path)
    return path
