"""Convert any JSON list / JSONL file of image-question-answer rows to verl parquet.

    python -m data_prep.jsonl --input rows.jsonl --image-root imgs/ --output-dir out/ \
        --question-field question --answer-field answer --image-field image --val-size 0.05

Each row holds a question, an answer and one image path or a list of paths (relative to
--image-root; a path that leads outside it, symlinks followed, is refused unless
--allow-images-outside-root). A question without `<image>` gets one placeholder per image in front; a
question with placeholders must have exactly one per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

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
from data_prep.records import RowTemplate, SourceRecord
from data_prep.sources import FieldNames, count_json_rows, iter_json_rows, record_from_json

DEFAULT_VAL_VALUES = ("val", "validation", "valid", "dev", "test")
DEFAULT_ABILITY = "visual_reasoning"


def json_records(
    path: Path, names: FieldNames, image_root: Path, split_values: dict[str, str]
) -> Iterator[SourceRecord]:
    for row, value in iter_json_rows(path):
        yield record_from_json(value, row, path.name, names, image_root, split_values)


def convert_json_file(
    path: Path,
    *,
    names: FieldNames,
    image_root: Path,
    template: RowTemplate,
    options: ConversionOptions,
    name: str,
    val_values: Sequence[str] = DEFAULT_VAL_VALUES,
) -> ConversionSummary:
    """Convert one .json/.jsonl file; `val_values` are the split-field values meaning validation.

    Image paths are relative to `image_root` and must lie inside it (see `options.allow_images_outside_root`).
    """
    if not path.is_file():
        raise DataPrepError(f"input file {path} does not exist")
    if not image_root.is_dir():
        raise DataPrepError(f"image root {image_root} is not a folder; pass the folder image paths are relative to")
    split_values = {TRAIN: TRAIN, **{value.lower(): VAL for value in val_values}}
    return convert(
        json_records(path, names, image_root, split_values),
        num_rows=count_json_rows(path),
        template=template,
        options=dataclasses.replace(options, image_root=image_root),
        input_has_splits=names.split is not None,
        name=name,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("python -m data_prep.jsonl", __doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="a .json list of objects or a .jsonl file")
    parser.add_argument(
        "--image-root", type=Path, default=None, help="folder image paths are relative to (default: the input's folder)"
    )
    parser.add_argument("--question-field", default="question", help="key of the question text (default: question)")
    parser.add_argument("--answer-field", default="answer", help="key of the reference answer (default: answer)")
    parser.add_argument(
        "--image-field", default="image", help="key of the image path or list of paths (default: image)"
    )
    parser.add_argument(
        "--split-field",
        default=None,
        help="key whose value puts the row in train ('train') or validation (see --val-values); replaces --val-size",
    )
    parser.add_argument(
        "--val-values",
        default=",".join(DEFAULT_VAL_VALUES),
        help=f"comma-separated split-field values meaning validation (default: {','.join(DEFAULT_VAL_VALUES)})",
    )
    parser.add_argument("--data-source", default=None, help="data_source column (default: the input file's stem)")
    parser.add_argument("--ability", default=DEFAULT_ABILITY, help=f"ability column (default: {DEFAULT_ABILITY})")
    add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> ConversionSummary:
    args = build_parser().parse_args(argv)
    names = FieldNames(args.question_field, args.answer_field, args.image_field, args.split_field)
    template = RowTemplate(
        data_source=args.data_source or args.input.stem,
        ability=args.ability,
        cot=not args.no_cot,
        question_field=names.question,
        answer_field=names.answer,
        image_field=names.image,
    )
    return convert_json_file(
        args.input,
        names=names,
        image_root=args.image_root or args.input.parent,
        template=template,
        options=options_from_args(args),
        name="data_prep.jsonl",
        val_values=[value.strip() for value in args.val_values.split(",") if value.strip()],
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
