"""Validate a verl parquet against what the recipe's loader expects, and summarise it.

    python -m data_prep.check data/mm_rlhf/train.parquet [--quick] [--tokens MODEL_DIR [--max-prompt-length N]]

Checks, per row: the geo3k-layout columns; `prompt` is a list of {role, content} messages; the
`<image>` placeholders match the number of images; every image entry is one verl's loader can open
({"bytes", ...} with non-null bytes, or {"image": existing path}), decodes (header only with
--quick), and has an aspect ratio Qwen2.5-VL accepts; the ground truth, `extra_info.question` and
`extra_info.answer` are non-empty text. Prints rows, splits, image size distribution, answer types
(multiple choice / yes-no / free form); with --tokens, the prompt length in tokens (image tokens
included, as verl's loader counts it: images are not decoded, their tokens follow from the header
size, the row's max_pixels / min_pixels and the processor's own limits) and the rows over
--max-prompt-length, which data.filter_overlong_prompts would drop. Exits with status 1 when any
row fails.

Duplicate rows (same prompt messages, same image bytes, or paths when images are stored as paths,
and same ground truth) are reported as a warning naming each duplicate and the row it repeats;
they do not fail the check, since each loads as verl expects and repeating an example can be
deliberate (up-weighting), but training sees such an example more often than the others, and
the converters never drop rows on their own. Remove them from the input if they are not wanted.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from qwen_vl_utils.vision_process import IMAGE_MAX_TOKEN_NUM, IMAGE_MIN_TOKEN_NUM, smart_resize

from data_prep.images import MAX_ASPECT_RATIO
from data_prep.pipeline import human_size
from data_prep.tables import open_parquet
from verl_ext.task import IMAGE_PLACEHOLDER, answer_type


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


REQUIRED_COLUMNS = ("data_source", "prompt", "images", "ability", "reward_model", "extra_info")
BATCH_ROWS = 32
ERRORS_SHOWN = 10


@dataclass
class CheckReport:
    """Findings for one parquet file. Sizes are in pixels; `errors` holds (row, kind, detail)."""

    path: Path
    rows: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    error_counts: Counter[str] = field(default_factory=Counter)
    splits: Counter[str] = field(default_factory=Counter)
    data_sources: Counter[str] = field(default_factory=Counter)
    answer_types: Counter[str] = field(default_factory=Counter)
    images_per_row: Counter[int] = field(default_factory=Counter)
    image_modes: Counter[str] = field(default_factory=Counter)
    max_pixels: Counter[str] = field(default_factory=Counter)
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    prompt_chars: list[int] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    max_prompt_length: int | None = None
    overlong_rows: list[int] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (row, first row with the same content)
    # row digest -> first row with it; about 150 bytes per distinct row (150 MB for a million rows)
    first_row_of: dict[bytes, int] = field(default_factory=dict, repr=False)

    def note_duplicate(self, row: int, values: dict[str, Any]) -> None:
        """Remember `row`'s content digest; record it when an earlier row had the same one."""
        first = self.first_row_of.setdefault(row_digest(values), row)
        if first != row:
            self.duplicates.append((row, first))

    def error(self, row: int, kind: str, detail: str) -> None:
        self.error_counts[kind] += 1
        if len(self.errors) < ERRORS_SHOWN:
            self.errors.append((row, kind, detail))

    @property
    def ok(self) -> bool:
        return not self.error_counts

    def format(self) -> str:
        lines = [f"{self.path} ({human_size(self.path.stat().st_size)}): {self.rows} rows"]
        lines.append(f"  splits: {_counts(self.splits)}")
        lines.append(f"  data sources: {_counts(self.data_sources)}")
        lines.append(f"  answer types: {_counts(self.answer_types)}")
        lines.append(f"  images per row: {_counts(self.images_per_row)}")
        if self.widths:
            pixels = np.asarray(self.widths) * np.asarray(self.heights)
            lines.append(f"  image width  px: {_distribution(self.widths)}")
            lines.append(f"  image height px: {_distribution(self.heights)}")
            lines.append(f"  image pixels:    {_distribution(pixels.tolist())}")
            lines.append(f"  image modes: {_counts(self.image_modes)}")
            lines.append(f"  max_pixels recorded: {_counts(self.max_pixels)}")
        if self.prompt_chars:
            lines.append(f"  prompt characters: {_distribution(self.prompt_chars)}")
        if self.prompt_tokens:
            lines.append(f"  prompt tokens (images included): {_distribution(self.prompt_tokens)}")
        if self.max_prompt_length is not None:
            shown = ", ".join(str(row) for row in self.overlong_rows[:ERRORS_SHOWN])
            more = " ..." if len(self.overlong_rows) > ERRORS_SHOWN else ""
            lines.append(
                f"  over max_prompt_length={self.max_prompt_length}: {len(self.overlong_rows)} row(s)"
                + (f" (rows {shown}{more}); data.filter_overlong_prompts would drop them" if self.overlong_rows else "")
            )
        if self.duplicates:
            shown = ", ".join(f"row {row} repeats row {first}" for row, first in self.duplicates[:ERRORS_SHOWN])
            more = " ..." if len(self.duplicates) > ERRORS_SHOWN else ""
            lines.append(
                f"  warning: {len(self.duplicates)} duplicate row(s) (same prompt, images and ground truth; training "
                f"sees them more often): {shown}{more}; remove them from the input if that is not intended"
            )
        if self.ok:
            lines.append("  OK: every row loads as verl's RLHFDataset expects")
        else:
            lines.append(f"  FAILED: {sum(self.error_counts.values())} problem(s): {_counts(self.error_counts)}")
            lines += [f"    row {row}: {kind}: {detail}" for row, kind, detail in self.errors]
        return "\n".join(lines)


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{key} {count}" for key, count in counter.most_common()) or "-"


def _distribution(values: Sequence[int]) -> str:
    low, p5, median, p95, high = np.percentile(values, [0, 5, 50, 95, 100])
    return f"min {low:.0f}, p5 {p5:.0f}, median {median:.0f}, p95 {p95:.0f}, max {high:.0f}"


def _image_identity(entry: Any) -> bytes:
    """An `images` entry's encoded bytes, or its path when the image is stored as a path."""
    if not isinstance(entry, dict):
        return b""
    return entry.get("bytes") or str(entry.get("image") or entry.get("path")).encode()


def row_digest(values: dict[str, Any]) -> bytes:
    """SHA-256 of what makes a row the same training example: prompt, image bytes (or paths), ground truth.

    Parts are length-prefixed and the image count is included, so different rows cannot give the same stream.
    """
    images = values.get("images") or []
    ground_truth = (values.get("reward_model") or {}).get("ground_truth")
    parts = [json.dumps(values.get("prompt"), sort_keys=True, default=str).encode(), str(len(images)).encode()]
    parts += [_image_identity(entry) for entry in images]
    parts.append(json.dumps(ground_truth, default=str).encode())
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.digest()


def _open_image(entry: Any) -> tuple[Image.Image | None, str]:
    """Open an `images` entry the way verl's loader does; return (image, "") or (None, why)."""
    if not isinstance(entry, dict):
        return None, f"entry is a {type(entry).__name__}, not a dict"
    if "bytes" in entry:
        if not entry["bytes"]:
            return None, "null/empty 'bytes' (verl's loader opens 'bytes' whenever the key exists)"
        return Image.open(io.BytesIO(entry["bytes"])), ""
    path = entry.get("image")
    if not isinstance(path, str):
        return None, "entry has neither 'bytes' nor an 'image' path"
    if path.startswith("file://"):
        path = path[len("file://") :]
    if not Path(path).is_file():
        return None, f"no file at {path}"
    return Image.open(path), ""


def _check_image(report: CheckReport, row: int, position: int, entry: Any, decode: bool) -> tuple[int, int] | None:
    """Checks one entry; returns its (width, height) when it opens."""
    try:
        image, why = _open_image(entry)
        if image is None:
            report.error(row, "bad_image_entry", f"images[{position}]: {why}")
            return
        with image:
            if decode:
                image.load()
            width, height = image.size
            report.image_modes[image.mode] += 1
    except Exception as error:  # PIL raises many kinds for broken data
        report.error(row, "undecodable_image", f"images[{position}]: {type(error).__name__}: {error}")
        return None
    report.widths.append(width)
    report.heights.append(height)
    report.max_pixels[str(entry.get("max_pixels", "-"))] += 1
    if min(width, height) == 0 or max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        report.error(row, "bad_aspect_ratio", f"images[{position}] is {width}x{height}")
        return None
    return width, height


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_row(report: CheckReport, row: int, values: dict[str, Any], decode: bool, processor: Any = None) -> None:
    """Record every problem of one row and add it to the distributions (token counts when given a processor)."""
    errors_before = report.error_counts.total()
    prompt = values["prompt"]
    if not isinstance(prompt, list) or not prompt:
        report.error(row, "bad_prompt", "prompt must be a non-empty list of {role, content} messages")
        placeholders = 0
    else:
        if not all(isinstance(m, dict) and _text(m.get("role")) and isinstance(m.get("content"), str) for m in prompt):
            report.error(row, "bad_prompt", "every message needs a 'role' and a text 'content'")
        contents = [m.get("content") or "" for m in prompt if isinstance(m, dict)]
        placeholders = sum(content.count(IMAGE_PLACEHOLDER) for content in contents)
        report.prompt_chars.append(sum(len(content) for content in contents))
    images = values["images"] or []
    report.images_per_row[len(images)] += 1
    if placeholders != len(images):
        report.error(row, "placeholder_count", f"{placeholders} <image> placeholder(s) for {len(images)} image(s)")
    sizes = [_check_image(report, row, position, entry, decode) for position, entry in enumerate(images)]
    if processor is not None and report.error_counts.total() == errors_before and placeholders == len(images):
        image_tokens = [
            image_token_count(width, height, entry, processor)
            for (width, height), entry in zip(sizes, images, strict=True)
        ]
        tokens = prompt_token_count(prompt, image_tokens, processor)
        report.prompt_tokens.append(tokens)
        if report.max_prompt_length is not None and tokens > report.max_prompt_length:
            report.overlong_rows.append(row)
    reward_model = values["reward_model"] or {}
    ground_truth = reward_model.get("ground_truth")
    if not _text(ground_truth):
        report.error(row, "empty_answer", "reward_model.ground_truth is empty or not text")
    extra_info = values["extra_info"] or {}
    for key in ("question", "answer"):
        if not _text(extra_info.get(key)):
            report.error(row, "bad_extra_info", f"extra_info.{key} is missing or empty (the reward rules need it)")
    report.splits[str(extra_info.get("split"))] += 1
    report.data_sources[str(values["data_source"])] += 1
    if _text(extra_info.get("question")) and _text(extra_info.get("answer")):
        report.answer_types[answer_type(extra_info["question"], extra_info["answer"])] += 1


def check_parquet(
    path: Path, *, decode: bool = True, processor: Any = None, max_prompt_length: int | None = None
) -> CheckReport:
    """Stream `path` batch by batch and check every row; `decode=False` reads image headers only.

    With a `processor`, also count each row's prompt tokens and list those over `max_prompt_length`.
    """
    report = CheckReport(path=path, max_prompt_length=max_prompt_length if processor is not None else None)
    parquet = open_parquet(path)
    missing = [column for column in REQUIRED_COLUMNS if column not in parquet.schema_arrow.names]
    if missing:
        report.error(-1, "missing_column", f"{missing} (columns: {parquet.schema_arrow.names})")
        return report
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(REQUIRED_COLUMNS)):
        for values in batch.to_pylist():
            check_row(report, report.rows, values, decode, processor)
            report.note_duplicate(report.rows, values)
            report.rows += 1
    if report.rows == 0:
        report.error(-1, "empty_file", "the file has no rows")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.check",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE.parquet")
    parser.add_argument("--quick", action="store_true", help="read image headers only instead of decoding them")
    parser.add_argument(
        "--tokens",
        metavar="MODEL_DIR",
        help="local model folder whose processor counts each prompt's tokens (image tokens included)",
    )
    parser.add_argument(
        "--max-prompt-length",
        type=int,
        default=None,
        help="with --tokens: list the rows longer than this (data.max_prompt_length of the run)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    processor = None
    if args.tokens is not None:
        if not Path(args.tokens, "config.json").is_file():
            print(f"error: --tokens {args.tokens}: not a local model folder (no config.json)", file=sys.stderr)
            return 1
        processor = load_processor(args.tokens)
    status = 0
    for path in args.files:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            status = 1
            continue
        report = check_parquet(
            path, decode=not args.quick, processor=processor, max_prompt_length=args.max_prompt_length
        )
        print(report.format())
        status = status or int(not report.ok)
    return status


if __name__ == "__main__":
    sys.exit(main())
