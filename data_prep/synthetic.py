"""A generated multimodal task with verifiable short answers, for the demo and the tests.

    python -m data_prep.synthetic --output-dir data/synthetic --num-train 1000 --num-val 100

Each image shows a few coloured shapes (circle, square, triangle) on a light background,
one per cell of a 3x3 grid, so none overlap. Four task kinds, drawn at random per row:

    count     "How many circles are in the image?"                          -> "3"
    colour    "What colour is the square?"                                  -> "red"
    position  "Is the triangle left of the circle? Answer the question with Yes or No."  -> "Yes"
    choice    "What colour is the circle? choices: A. red B. blue C. green" -> "B"

Every row is a pure function of (seed, split, row number), so a seed reproduces the data
and train row i does not depend on --num-val. Image widths and heights are multiples of 28
(the Qwen2.5-VL patch x merge size) between --image-size/2 and --image-size, and questions
vary in wording, so prompt token lengths vary within a batch (verl's
`maybe_fix_3d_position_ids` breaks when all sequences of a batch have equal length).
"""

from __future__ import annotations

import argparse
import io
import string
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data_prep.pipeline import (
    TRAIN,
    VAL,
    ConversionOptions,
    ConversionSummary,
    DataPrepError,
    add_common_arguments,
    convert,
    new_parser,
    options_from_args,
    run_main,
)
from data_prep.records import ImageSource, RowTemplate, SourceRecord

DATA_SOURCE = "synthetic_shapes"
ABILITY = "visual_reasoning"
DEFAULT_IMAGE_SIZE = 112
SIZE_STEP = 28  # Qwen2.5-VL: 14 px patches, 2x2 merged -> one image token per 28x28 pixels
GRID = 3
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
_SPLIT_CODES = {TRAIN: 0, VAL: 1}


@dataclass(frozen=True)
class Shape:
    """One drawn object: its kind, colour name and grid cell (column, row), 0-based from top left."""

    kind: str
    colour: str
    column: int
    row: int


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    question: str
    answer: str


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _place(rng: np.random.Generator, specs: list[tuple[str, str]]) -> list[Shape]:
    """Put each (kind, colour) in its own random grid cell."""
    cells = rng.permutation(GRID * GRID)[: len(specs)]
    return [
        Shape(kind, colour, int(cell) % GRID, int(cell) // GRID)
        for (kind, colour), cell in zip(specs, cells, strict=True)
    ]


def _others(kind: str) -> list[str]:
    return [shape for shape in SHAPES if shape != kind]


def _distractors(rng: np.random.Generator, kinds: Sequence[str], count: int) -> list[tuple[str, str]]:
    return [(_pick(rng, kinds), _pick(rng, list(COLOURS))) for _ in range(count)]


def count_scene(rng: np.random.Generator) -> Scene:
    kind = _pick(rng, SHAPES)
    count = int(rng.integers(1, 5))
    specs = [(kind, _pick(rng, list(COLOURS))) for _ in range(count)]
    specs += _distractors(rng, _others(kind), int(rng.integers(0, 3)))
    template = _pick(rng, ("How many {k}s are in the image?", "Count the {k}s in the picture. How many are there?"))
    return Scene(tuple(_place(rng, specs)), template.format(k=kind), str(count))


def colour_scene(rng: np.random.Generator) -> Scene:
    kind = _pick(rng, SHAPES)
    colour = _pick(rng, list(COLOURS))
    specs = [(kind, colour), *_distractors(rng, _others(kind), int(rng.integers(1, 4)))]
    template = _pick(rng, ("What colour is the {k}?", "The image contains one {k}. What colour is it?"))
    return Scene(tuple(_place(rng, specs)), template.format(k=kind), colour)


def position_scene(rng: np.random.Generator) -> Scene:
    first, second = (str(kind) for kind in rng.permutation(SHAPES)[:2])
    third = next(kind for kind in SHAPES if kind not in (first, second))
    columns = rng.permutation(GRID)[:2]
    rows = rng.integers(0, GRID, size=2)
    shapes = [
        Shape(first, _pick(rng, list(COLOURS)), int(columns[0]), int(rows[0])),
        Shape(second, _pick(rng, list(COLOURS)), int(columns[1]), int(rows[1])),
    ]
    taken = {(shape.column, shape.row) for shape in shapes}
    free = [cell for cell in range(GRID * GRID) if (cell % GRID, cell // GRID) not in taken]
    for cell in rng.permutation(free)[: int(rng.integers(0, 3))]:
        shapes.append(Shape(third, _pick(rng, list(COLOURS)), int(cell) % GRID, int(cell) // GRID))
    relation = _pick(rng, ("left of", "right of"))
    truth = columns[0] < columns[1] if relation == "left of" else columns[0] > columns[1]
    question = f"Is the {first} {relation} the {second}? Answer the question with Yes or No."
    return Scene(tuple(shapes), question, "Yes" if truth else "No")


def choice_scene(rng: np.random.Generator) -> Scene:
    kind = _pick(rng, SHAPES)
    num_options = int(rng.integers(3, 6))
    options = [str(colour) for colour in rng.permutation(list(COLOURS))[:num_options]]
    colour = _pick(rng, options)
    specs = [(kind, colour), *_distractors(rng, _others(kind), int(rng.integers(1, 4)))]
    letters = string.ascii_uppercase[:num_options]
    listed = " ".join(f"{letter}. {option}" for letter, option in zip(letters, options, strict=True))
    question = f"What colour is the {kind}? choices: {listed}"
    return Scene(tuple(_place(rng, specs)), question, letters[options.index(colour)])


TASKS: dict[str, Callable[[np.random.Generator], Scene]] = {
    "count": count_scene,
    "colour": colour_scene,
    "position": position_scene,
    "choice": choice_scene,
}


def image_sizes(image_size: int) -> list[int]:
    """Side lengths used: multiples of 28 in [image_size / 2, image_size] (at least 28)."""
    if image_size < SIZE_STEP:
        raise DataPrepError(f"--image-size must be >= {SIZE_STEP}, got {image_size}")
    low = max(SIZE_STEP, image_size // 2)
    return [size for size in range(SIZE_STEP, image_size + 1, SIZE_STEP) if size >= low] or [SIZE_STEP]


def draw(scene: Scene, width: int, height: int, background: tuple[int, int, int]) -> Image.Image:
    """Render `scene` as an RGB image of `width` x `height` pixels."""
    image = Image.new("RGB", (width, height), background)
    canvas = ImageDraw.Draw(image)
    cell_w, cell_h = width / GRID, height / GRID
    for shape in scene.shapes:
        margin_w, margin_h = cell_w * 0.15, cell_h * 0.15
        left, top = shape.column * cell_w + margin_w, shape.row * cell_h + margin_h
        right, bottom = (shape.column + 1) * cell_w - margin_w, (shape.row + 1) * cell_h - margin_h
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            canvas.ellipse((left, top, right, bottom), fill=fill)
        elif shape.kind == "square":
            canvas.rectangle((left, top, right, bottom), fill=fill)
        else:
            canvas.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def synthetic_record(seed: int, split: str, row: int, image_size: int = DEFAULT_IMAGE_SIZE) -> SourceRecord:
    """Row `row` of `split`: a pure function of its arguments."""
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], row])
    scene = TASKS[_pick(rng, list(TASKS))](rng)
    sizes = image_sizes(image_size)
    width, height = _pick(rng, sizes), _pick(rng, sizes)  # type: ignore[arg-type]
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = ImageSource(
        field="image", data=png_bytes(draw(scene, width, height, background)), name=f"{split}/{row}.png"
    )
    return SourceRecord(row, split, scene.question, scene.answer, (image,), split=split)


def synthetic_records(num_train: int, num_val: int, seed: int, image_size: int) -> Iterator[SourceRecord]:
    for split, count in ((TRAIN, num_train), (VAL, num_val)):
        for row in range(count):
            yield synthetic_record(seed, split, row, image_size)


def generate(
    options: ConversionOptions, *, num_train: int, num_val: int, image_size: int = DEFAULT_IMAGE_SIZE, cot: bool = True
) -> ConversionSummary:
    if num_train < 1 or num_val < 0:
        raise DataPrepError(f"need --num-train >= 1 and --num-val >= 0, got {num_train} and {num_val}")
    image_sizes(image_size)  # validate before writing anything
    return convert(
        synthetic_records(num_train, num_val, options.seed, image_size),
        num_rows=num_train + num_val,
        template=RowTemplate(DATA_SOURCE, ABILITY, cot=cot, image_field="image"),
        options=options,
        input_has_splits=num_val > 0,
        name="data_prep.synthetic",
    )


def write_synthetic_dataset(
    output_dir: str | Path,
    *,
    num_train: int,
    num_val: int,
    seed: int,
    image_size: int = DEFAULT_IMAGE_SIZE,
    cot: bool = True,
) -> dict[str, Path]:
    """Write train.parquet (and val.parquet when num_val > 0) under `output_dir`.

    Returns {"train": path, "val": path} (no "val" key when num_val == 0). Runs in-process,
    without a progress bar; about a few thousand rows per second.
    """
    options = ConversionOptions(output_dir=Path(output_dir), seed=seed, workers=0, progress=False)
    summary = generate(options, num_train=num_train, num_val=num_val, image_size=image_size, cot=cot)
    return dict(summary.outputs)


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("python -m data_prep.synthetic", __doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=1000, help="training rows (default 1000)")
    parser.add_argument("--num-val", type=int, default=100, help="validation rows (default 100; 0 = no val.parquet)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help=f"largest image side in pixels; sides vary from half of it up (default {DEFAULT_IMAGE_SIZE})",
    )
    add_common_arguments(parser, val_size=False, default_workers=0, image_files=False)
    return parser


def main(argv: Sequence[str] | None = None) -> ConversionSummary:
    args = build_parser().parse_args(argv)
    return generate(
        options_from_args(args),
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        cot=not args.no_cot,
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
