"""Small generated input trees for the data_prep tests (and for trying the converters by hand).

Nothing here downloads anything; every builder is deterministic.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION_TAG = 0x0112


def image_bytes(
    image: Image.Image, image_format: str = "PNG", exif_orientation: int | None = None, **save_kwargs
) -> bytes:
    """Encode `image`; `exif_orientation` (1..8) writes that EXIF orientation tag."""
    buffer = io.BytesIO()
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = exif_orientation
        save_kwargs["exif"] = exif.tobytes()
    image.save(buffer, format=image_format, **save_kwargs)
    return buffer.getvalue()


def gradient_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB image with distinct left/right and top/bottom halves (orientation is visible)."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    pixels[..., 2] = rng.integers(0, 256, dtype=np.uint8)
    return Image.fromarray(pixels)


def mode_variants() -> dict[str, bytes]:
    """Encoded images in every mode the converters must turn into RGB, keyed by a file name."""
    base = gradient_rgb(40, 30)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.new("L", base.size, 128))
    grey16 = Image.fromarray((np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16))
    palette_transparent = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette_transparent.info["transparency"] = 0
    return {
        "rgb.jpg": image_bytes(base, "JPEG", quality=95),
        "rgb.png": image_bytes(base),
        "palette.png": image_bytes(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)),
        "palette_alpha.png": image_bytes(palette_transparent, transparency=0),
        "rgba.png": image_bytes(rgba),
        "la.png": image_bytes(base.convert("LA")),
        "grey.jpg": image_bytes(base.convert("L"), "JPEG"),
        "grey16.png": image_bytes(grey16),
        "cmyk.jpg": image_bytes(base.convert("CMYK"), "JPEG"),
        "rotated.jpg": image_bytes(base, "JPEG", exif_orientation=6, quality=95),
        "bitmap.bmp": image_bytes(base, "BMP"),
    }


@dataclass
class MmrlhfTree:
    """An MM-RLHF-like input: `json_path` (list of {image, problem, solution}) and `image_root`."""

    json_path: Path
    image_root: Path
    rows: list[dict[str, str]]
    bad_rows: dict[int, str] = field(default_factory=dict)  # row -> expected reason


GOOD_QUESTIONS = (
    ("What is shown in the picture?", "<answer> A red gradient. </answer>"),
    ("Which option is correct? choices: A. cat B. dog C. bird", "<answer> B </answer>"),
    ("Is there a dog? Answer the question with Yes or No.", "No"),
    ("Describe the colours in detail.", "Red to green."),
)
SUBSETS = ("long", "mcq", "safety", "short")

# reason -> how to break a row of the fixture
BAD_CASES = ("missing_image", "undecodable_image", "empty_question", "empty_answer", "placeholder_count")


def build_mmrlhf_tree(root: Path, *, num_rows: int = 12, bad: dict[int, str] | None = None) -> MmrlhfTree:
    """Write an MM-RLHF-like tree under `root`.

    Rows cycle through `mode_variants()` images (in the long/mcq/safety/short folders) and
    `GOOD_QUESTIONS`. `bad` maps row -> one of `BAD_CASES` to break that row.
    """
    image_root = root / "MM-RLHF"
    variants = list(mode_variants().items())
    rows: list[dict[str, str]] = []
    for row in range(num_rows):
        name, data = variants[row % len(variants)]
        relative = f"{SUBSETS[row % len(SUBSETS)]}/{row:03d}_{name}"
        (image_root / relative).parent.mkdir(parents=True, exist_ok=True)
        (image_root / relative).write_bytes(data)
        question, solution = GOOD_QUESTIONS[row % len(GOOD_QUESTIONS)]
        rows.append({"image": relative, "problem": f"{question} (item {row})", "solution": solution})
    bad = dict(bad or {})
    for row, case in bad.items():
        if case == "missing_image":
            (image_root / rows[row]["image"]).unlink()
        elif case == "undecodable_image":
            (image_root / rows[row]["image"]).write_bytes(b"this is not an image")
        elif case == "empty_question":
            rows[row]["problem"] = "   "
        elif case == "empty_answer":
            rows[row]["solution"] = "<answer>  </answer>"
        elif case == "placeholder_count":
            rows[row]["problem"] = "<image> compare with <image>: which is larger?"
        else:
            raise ValueError(f"unknown bad case {case!r}; known: {BAD_CASES}")
    json_path = root / "mm_rlhf_13k.json"
    json_path.write_text(json.dumps(rows, indent=1))
    return MmrlhfTree(json_path, image_root, rows, bad)


def geo3k_columns(num_rows: int, seed: int = 0) -> dict[str, list]:
    """geometry3k-like columns: images (list of {bytes, path}), problem (with <image>), answer."""
    return {
        "images": [
            [{"bytes": image_bytes(gradient_rgb(32 + row, 24, seed=seed + row)), "path": f"{row}.png"}]
            for row in range(num_rows)
        ],
        "problem": [f"<image>Find x in triangle number {row}." for row in range(num_rows)],
        "answer": [str(3 + row) for row in range(num_rows)],
    }


def build_geo3k_copy(root: Path, *, layout: str, sizes: dict[str, int] | None = None) -> Path:
    """A local geometry3k copy: layout "save_to_disk" (DatasetDict folder) or "parquet" (hub layout).

    `sizes`: rows per split (default train 6, validation 2, test 3). Returns the input path.
    """
    import datasets

    sizes = sizes or {"train": 6, "validation": 2, "test": 3}
    features = datasets.Features(
        {
            "images": datasets.Sequence(datasets.Image()),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )
    splits = {
        name: datasets.Dataset.from_dict(geo3k_columns(count, seed=index * 100), features=features)
        for index, (name, count) in enumerate(sizes.items())
    }
    target = root / f"geometry3k_{layout}"
    if layout == "save_to_disk":
        datasets.DatasetDict(splits).save_to_disk(str(target))
    elif layout == "parquet":
        (target / "data").mkdir(parents=True)
        for name, split in splits.items():
            split.to_parquet(str(target / "data" / f"{name}-00000-of-00001.parquet"))
    else:
        raise ValueError(f"layout must be 'save_to_disk' or 'parquet', got {layout!r}")
    return target


def write_jsonl(path: Path, rows: list[object], *, raw_lines: dict[int, str | bytes] | None = None) -> Path:
    """Write `rows` as JSONL; `raw_lines` replaces line i with a literal string (e.g. broken JSON)
    or literal bytes (e.g. bytes that are not UTF-8)."""
    lines = [json.dumps(row).encode() for row in rows]
    for index, text in (raw_lines or {}).items():
        lines[index] = text if isinstance(text, bytes) else text.encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@dataclass
class HostileTree:
    """Files a hostile or careless input can name: `root` is the image root, `outside` a folder next to it.

    Under `root`: good.png and other.png (images), folder.png (a folder), zero.png (a symlink to
    /dev/zero), pipe.png (a FIFO: opening it for reading blocks), loop.png (a symlink to itself),
    big.png (a real PNG of `big_bytes` bytes or more). Under `outside`: x.png (an image) and
    pipe.png (a FIFO).
    """

    root: Path
    outside: Path


def build_hostile_tree(base: Path, *, big_bytes: int = 8192) -> HostileTree:
    root, outside = base / "images", base / "outside"
    root.mkdir(parents=True)
    outside.mkdir()
    (root / "good.png").write_bytes(image_bytes(gradient_rgb(30, 20, seed=1)))
    (root / "other.png").write_bytes(image_bytes(gradient_rgb(30, 20, seed=2)))
    (outside / "x.png").write_bytes(image_bytes(gradient_rgb(30, 20, seed=3)))
    (root / "folder.png").mkdir()
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "loop.png").symlink_to("loop.png")
    os.mkfifo(root / "pipe.png")
    os.mkfifo(outside / "pipe.png")
    side = 16
    while True:  # random pixels do not compress: grow the image until its PNG passes big_bytes
        noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        data = image_bytes(Image.fromarray(noise))
        if len(data) >= big_bytes:
            break
        side *= 2
    (root / "big.png").write_bytes(data)
    return HostileTree(root, outside)
