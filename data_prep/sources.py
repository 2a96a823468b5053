"""Reading JSON / JSONL inputs and mapping one JSON object to a `SourceRecord`.

Row numbers are 0-based positions of the record in the input: the element index of a
JSON list, or the index among the non-blank lines of a JSONL file.
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
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except json.JSONDecodeError as error:
        raise DataPrepError(f"{path} is not valid JSON ({error}); for one object per line name it *.jsonl") from error
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]}-style wrappers
    if not isinstance(data, list):
        raise DataPrepError(f"{path} holds a JSON {type(data).__name__}; expected a list of row objects")
    return data


def iter_json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (row, value) for each record; a JSONL line that does not parse yields a `BadJson`."""
    if not path.is_file():
        raise DataPrepError(f"input file {path} does not exist")
    if not _is_jsonl(path):
        yield from enumerate(_load_json_list(path))
        return
    with path.open(encoding="utf-8") as file:
        row = 0
        for line in file:
            if not line.strip():
                continue
            try:
                yield row, json.loads(line)
            except json.JSONDecodeError as error:
                yield row, error
            row += 1


@dataclass(frozen=True)
class FieldNames:
    """Which input keys hold the question, the answer, the image(s) and (optionally) the split."""

    question: str
    answer: str
    image: str
    split: str | None = None


def _text(obj: dict[str, Any], key: str, row: int, source: str, problems: list[Problem]) -> str | None:
    if key not in obj or obj[key] is None:
        problems.append(Problem(row, source, key, "missing_field", f"no {key!r} key (keys: {sorted(obj)[:10]})"))
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        problems.append(Problem(row, source, key, "missing_field", f"expected text, got {type(value).__name__}"))
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
