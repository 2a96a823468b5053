"""What converters hand to the pipeline, and what the pipeline reports back about bad rows.

A converter maps each input row to one `SourceRecord` and never decides on its own to drop
a row: anything wrong it notices (a missing key, a non-string value) goes into
`SourceRecord.problems`, and the pipeline adds what it finds while validating text and
decoding images. Every problem carries one of the `REASONS` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# reason -> what to do about it; the keys are the stable names used in skipped.jsonl and summaries.
REASONS: dict[str, str] = {
    "bad_json": "the line is not valid JSON",
    "not_utf8": "the text is not valid UTF-8; re-encode the file as UTF-8 (for a Latin-1 file: "
    "iconv -f latin1 -t utf-8 IN > OUT) or fix the escaped lone surrogate, then rerun",
    "missing_field": "the row lacks a required key or its value has the wrong type; check the field-name options",
    "no_image": "the row has no image; this recipe trains on image-question pairs",
    "missing_image": "the image file does not exist; check --image-root",
    "undecodable_image": "the image file is not a readable image (truncated, corrupt or unsupported format)",
    "not_a_file": "the image path leads to a folder, FIFO, device or socket, not a regular file; "
    "point it at an image file",
    "image_too_large": "the image file is larger than --max-image-bytes; shrink it, or raise --max-image-bytes "
    "if it is a genuine image",
    "image_outside_root": "the image path (symlinks followed) leads outside --image-root; fix the path, move the image "
    "under the root, or pass --allow-images-outside-root if you trust every path in the input",
    "bad_aspect_ratio": "the image is more than 200 times longer than wide (or vice versa); Qwen2.5-VL rejects it",
    "empty_question": "the question is empty or only whitespace",
    "empty_answer": "the answer/solution is empty or only whitespace",
    "placeholder_count": "the question's <image> placeholders do not match the number of images",
    "unknown_split": "the split field has a value that is neither a train nor a validation name",
}

# `Problem.field` values for problems that concern the whole row rather than one key.
WHOLE_ROW_FIELDS = ("<row>", "<line>")


@dataclass(frozen=True)
class Problem:
    """One reason a row cannot be written.

    `row` is the 0-based position of the row in its input `source` (a file name or split
    name); `field` names the input key (e.g. "image" or "images[1]").
    """

    row: int
    source: str
    field: str
    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown problem reason {self.reason!r}; known: {sorted(REASONS)}")

    def as_json(self) -> dict[str, object]:
        return {
            "row": self.row,
            "source": self.source,
            "field": self.field,
            "reason": self.reason,
            "detail": self.detail,
        }

    def describe(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.source} row {self.row}, field {self.field!r}: {self.reason}{detail}"


@dataclass(frozen=True)
class ImageSource:
    """One input image, either a file (`path`) or encoded bytes (`data`).

    `field` is the input key it came from, for reports; `name` is what gets stored as the
    image's `path` in the parquet (the path as written in the input, or a label).
    """

    field: str
    path: Path | None = None
    data: bytes | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("ImageSource needs exactly one of `path` and `data`")


@dataclass(frozen=True)
class SourceRecord:
    """One input row mapped to the recipe's terms.

    `question` is the raw question text without the CoT instruction (it may contain
    `<image>` placeholders); `answer` is the reference solution. `split` is "train" or
    "val" when the input says so, None when the pipeline assigns it from the seed.
    `None` text fields mean the converter could not read them (a matching problem is in
    `problems`).
    """

    row: int
    source: str
    question: str | None
    answer: str | None
    images: tuple[ImageSource, ...]
    split: str | None = None
    problems: tuple[Problem, ...] = field(default=())


@dataclass(frozen=True)
class RowTemplate:
    """The per-dataset constants of every output row, and the input key names used in reports."""

    data_source: str
    ability: str
    cot: bool = True
    question_field: str = "question"
    answer_field: str = "answer"
    image_field: str = "images"
