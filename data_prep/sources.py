"""Reading JSON / JSONL inputs and mapping one JSON object to a `SourceRecord`.

Row numbers are 0-based positions of the record in the input: the element index of a
JSON list, or the index among the non-blank lines of a JSONL file.

Text must be UTF-8: a JSONL line that is not becomes a `not_utf8` problem of its row (the
other lines are still read), a JSON list that is not stops the run naming the line, and text
holding an escaped lone surrogate ("\\udcff", which parquet cannot store) is a `not_utf8`
problem of its field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.pipeline import DataPrepError
from data_prep.records import ImageSource, Problem, SourceRecord

# A JSON value that failed to parse, kept so the row is reported instead of dropped.
BadJson = json.JSONDecodeError
ICONV_HINT = "iconv -f latin1 -t utf-8"


@dataclass(frozen=True)
class NotUtf8:
    """A JSONL line whose bytes are not UTF-8, kept so the row is reported instead of stopping the run.

    line: 1-based line number in the file; column: 1-based byte position in the line.
    """

    line: int
    column: int
    byte: int

    def describe(self, file_name: str) -> str:
        return (
            f"line {self.line}, byte {self.column} is 0x{self.byte:02x}, not UTF-8; re-encode {file_name} as UTF-8, "
            f"e.g. {ICONV_HINT} {file_name} > fixed.jsonl if it is Latin-1"
        )


def _line_and_column(error: UnicodeDecodeError, data: bytes) -> tuple[int, int]:
    """(1-based line, 1-based column in bytes) of the first bad byte of `data`."""
    line_start = data.rfind(b"\n", 0, error.start) + 1
    return data.count(b"\n", 0, error.start) + 1, error.start - line_start + 1


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def count_json_rows(path: Path) -> int:
    """Number of records in `path` (.json list or .jsonl), for progress and split sizes."""
    if _is_jsonl(path):
        with path.open("rb") as file:
            return sum(1 for line in file if line.strip())
    return len(_load_json_list(path))


def _load_json_list(path: Path) -> list[Any]:
    # A JSON list can only be parsed whole; 13k MM-RLHF rows are a few MB of text. Use JSONL
    # for inputs too large for memory: it is streamed line by line.
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        line, column = _line_and_column(error, raw)
        raise DataPrepError(
            f"{path} line {line}, byte {column} is 0x{raw[error.start]:02x}, not UTF-8; nothing was written. "
            f"Re-encode the file as UTF-8 (e.g. {ICONV_HINT} {path.name} > fixed.json if it is Latin-1) and rerun."
        ) from error
    except json.JSONDecodeError as error:
        raise DataPrepError(f"{path} is not valid JSON ({error}); for one object per line name it *.jsonl") from error
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]}-style wrappers
    if not isinstance(data, list):
        raise DataPrepError(f"{path} holds a JSON {type(data).__name__}; expected a list of row objects")
    return data


def iter_json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (row, value) for each record; a JSONL line that does not parse yields a `BadJson`,
    one that is not UTF-8 a `NotUtf8`."""
    if not path.is_file():
        raise DataPrepError(f"input file {path} does not exist")
    if not _is_jsonl(path):
        yield from enumerate(_load_json_list(path))
        return
    # Bytes, decoded line by line: one bad line must not stop the reading of the others.
    with path.open("rb") as file:
        row = 0
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            yield row, _parse_line(line, line_number)
            row += 1


def _parse_line(line: bytes, line_number: int) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as error:
        return NotUtf8(line_number, error.start + 1, line[error.start])
    except json.JSONDecodeError as error:
        return error


@dataclass(frozen=True)
class FieldNames:
    """Which input keys hold the question, the answer, the image(s) and (optionally) the split."""

    question: str
    answer: str
    image: str
    split: str | None = None


def _lone_surrogate(text: str) -> str | None:
    """Where `text` holds a lone surrogate (JSON allows "\\udcff"; UTF-8 cannot hold it), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        return f"character {error.start + 1} is the lone surrogate \\u{code:04x}, which UTF-8 cannot hold"
    return None


def _text(obj: dict[str, Any], key: str, row: int, source: str, problems: list[Problem]) -> str | None:
    if key not in obj or obj[key] is None:
        problems.append(Problem(row, source, key, "missing_field", f"no {key!r} key (keys: {sorted(obj)[:10]})"))
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.append(Problem(row, source, key, "missing_field", f"expected text, got {type(value).__name__}"))
        return None
    bad = _lone_surrogate(str(value))
    if bad is not None:
        problems.append(Problem(row, source, key, "not_utf8", bad))
        return None
    return str(value)


def _images(
    obj: dict[str, Any], key: str, image_root: Path, row: int, source: str, problems: list[Problem]
) -> tuple[ImageSource, ...]:
    """The image(s) under `key`: one path or a list of paths, relative to `image_root`."""
    if key not in obj:
        problems.append(Problem(row, source, key, "missing_field", f"no {key!r} key (keys: {sorted(obj)[:10]})"))
        return ()
    value = obj[key]
    if value is None:
        return ()
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
        problems.append(Problem(row, source, key, "missing_field", "expected an image path or a list of paths"))
        return ()
    images = []
    for position, path in enumerate(paths):
        label = key if isinstance(value, str) else f"{key}[{position}]"
        if not path.strip():
            problems.append(Problem(row, source, label, "missing_image", "empty image path"))
            continue
        bad = _lone_surrogate(path)
        if bad is not None:  # the path is stored in the parquet, which needs UTF-8
            problems.append(Problem(row, source, label, "not_utf8", bad))
            continue
        images.append(ImageSource(field=label, path=image_root / path, name=path))
    return tuple(images)


def record_from_json(
    value: Any, row: int, source: str, names: FieldNames, image_root: Path, split_values: dict[str, str]
) -> SourceRecord:
    """Map one parsed JSON value to a record; anything unusable becomes a `Problem`, never an exception.

    split_values: input split value -> "train" / "val" (used when `names.split` is set).
    """
    if isinstance(value, BadJson):
        problem = Problem(row, source, "<line>", "bad_json", str(value))
        return SourceRecord(row, source, None, None, (), problems=(problem,))
    if isinstance(value, NotUtf8):
        problem = Problem(row, source, "<line>", "not_utf8", value.describe(source))
        return SourceRecord(row, source, None, None, (), problems=(problem,))
    if not isinstance(value, dict):
        problem = Problem(row, source, "<row>", "missing_field", f"row is a {type(value).__name__}, not an object")
        return SourceRecord(row, source, None, None, (), problems=(problem,))
    problems: list[Problem] = []
    question = _text(value, names.question, row, source, problems)
    answer = _text(value, names.answer, row, source, problems)
    images = _images(value, names.image, image_root, row, source, problems)
    split = None
    if names.split is not None:
        raw_split = _text(value, names.split, row, source, problems)
        if raw_split is not None:
            split = split_values.get(raw_split.strip().lower())
            if split is None:
                problems.append(
                    Problem(row, source, names.split, "unknown_split", f"{raw_split!r} not in {sorted(split_values)}")
                )
    return SourceRecord(row, source, question, answer, images, split=split, problems=tuple(problems))
