"""Convert geometry3k (hiyouga/geometry3k) from a local copy to verl parquet, like verl's example.

    python -m data_prep.geo3k --input ~/data/geometry3k --output-dir data/geo3k

--input is a `datasets.save_to_disk` folder or the dataset's parquet files (hub layout
data/train-00000-of-00001.parquet, ...). Rows have `images` (list of {"bytes", "path"}),
`problem` (with `<image>` placeholders) and `answer`; an image entry without bytes names a file
relative to --image-root (default: the --input folder), which it must lie inside. As in verl's
examples/data_preprocess/geo3k.py, the train split becomes train.parquet and the test split
the validation file; the prompt is the problem followed by the paper's CoT instruction
(--no-cot leaves it out).

Rewards: the ground truth is the answer as written (a number or a LaTeX expression, e.g. 12 or
\\frac{1}{2}) and the CoT instruction asks for the answer inside <answer> tags. Train with
noisygrpo.reward.correctness=math: it scores the answer (bare or in \\boxed{...}) 1 when it equals
the ground truth as mathematics (0.5 for \\frac{1}{2}, \\sqrt{12} for 2\\sqrt{3}, 3.0 for 3), where
the default similarity kind and exact do not.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from data_prep.pipeline import (
    TRAIN,
    VAL,
    ConversionSummary,
    DataPrepError,
    add_common_arguments,
    convert,
    new_parser,
    options_from_args,
    run_main,
)
from data_prep.records import ImageSource, Problem, RowTemplate, SourceRecord
from data_prep.tables import TableSplit, discover_splits

DATA_SOURCE = "hiyouga/geometry3k"
ABILITY = "math"
NO_SPLIT = "none"


def _images(
    value: Any, field: str, row: int, source: str, problems: list[Problem], image_root: Path
) -> tuple[ImageSource, ...]:
    """HF image values: a list of {"bytes", "path"} dicts (or one dict).

    Bytes win over a path; a path is relative to `image_root`.
    """
    if value is None:
        return ()
    entries = value if isinstance(value, list) else [value]
    images = []
    for position, entry in enumerate(entries):
        label = f"{field}[{position}]"
        if isinstance(entry, dict) and entry.get("bytes"):
            images.append(ImageSource(field=label, data=entry["bytes"], name=entry.get("path") or f"{source}/{row}"))
        elif isinstance(entry, dict) and entry.get("path"):
            images.append(ImageSource(field=label, path=image_root / entry["path"], name=entry["path"]))
        else:
            problems.append(Problem(row, source, label, "missing_image", "image entry has neither bytes nor a path"))
    return tuple(images)


def _text(value: Any, field: str, row: int, source: str, problems: list[Problem]) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    problems.append(Problem(row, source, field, "missing_field", f"expected text, got {type(value).__name__}"))
    return None


def table_records(
    table: TableSplit,
    split: str | None,
    *,
    question_field: str,
    answer_field: str,
    image_field: str,
    image_root: Path,
) -> Iterator[SourceRecord]:
    for row, values in enumerate(table.rows([question_field, answer_field, image_field])):
        problems: list[Problem] = []
        question = _text(values[question_field], question_field, row, table.name, problems)
        answer = _text(values[answer_field], answer_field, row, table.name, problems)
        images = _images(values[image_field], image_field, row, table.name, problems, image_root)
        yield SourceRecord(row, table.name, question, answer, images, split=split, problems=tuple(problems))


def build_parser() -> argparse.ArgumentParser:
    paragraphs = __doc__.split("\n\n")
    # The summary and the reward paragraph: which correctness kind scores these rows.
    parser = new_parser("python -m data_prep.geo3k", f"{paragraphs[0]}\n\n{paragraphs[-1]}")
    parser.add_argument("--input", type=Path, required=True, help="save_to_disk folder, parquet folder or parquet file")
    parser.add_argument("--train-split", default="train", help="input split written to train.parquet (default: train)")
    parser.add_argument(
        "--val-split",
        default="test",
        help=f"input split written to val.parquet (default: test, as verl's example; '{NO_SPLIT}' = none, "
        "then --val-size may hold out rows of the train split)",
    )
    parser.add_argument("--question-field", default="problem", help="default: problem")
    parser.add_argument("--answer-field", default="answer", help="default: answer")
    parser.add_argument("--image-field", default="images", help="default: images")
    parser.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="folder that image entries without bytes name files in (default: the --input folder)",
    )
    add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> ConversionSummary:
    args = build_parser().parse_args(argv)
    splits = discover_splits(args.input)
    wanted = {TRAIN: args.train_split}
    if args.val_split.lower() != NO_SPLIT:
        wanted[VAL] = args.val_split
    missing = [name for name in wanted.values() if name not in splits]
    if missing:
        raise DataPrepError(
            f"{args.input} has no split(s) {missing}; it has {sorted(splits)} (use --train-split / --val-split)"
        )
    image_root = args.image_root or (args.input if args.input.is_dir() else args.input.parent)
    options = dataclasses.replace(options_from_args(args), image_root=image_root)
    if VAL in wanted and options.val_size:
        raise DataPrepError(f"--val-size needs --val-split {NO_SPLIT}: the {args.val_split!r} split is already used")
    fields = {"question_field": args.question_field, "answer_field": args.answer_field, "image_field": args.image_field}

    def records() -> Iterator[SourceRecord]:
        for split, name in wanted.items():
            # Without a val split, leave `split` unset so that --val-size (if any) assigns it.
            yield from table_records(splits[name], split if VAL in wanted else None, **fields, image_root=image_root)

    template = RowTemplate(DATA_SOURCE, ABILITY, cot=not args.no_cot, **fields)
    return convert(
        records(),
        num_rows=sum(splits[name].num_rows for name in wanted.values()),
        template=template,
        options=options,
        input_has_splits=VAL in wanted,
        name="data_prep.geo3k",
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
