"""Convert the paper's training set, the MM-RLHF 13k subset, to verl parquet.

    python -m data_prep.mmrlhf --input mm_rlhf_13k.json --image-root MM-RLHF/ --output-dir data/mm_rlhf

The input is a JSON list (or JSONL) of {"image", "problem", "solution"}; image paths are
relative to --image-root, the MM-RLHF folder holding long/, mcq/, safety/ and short/.
The prompt is the question followed by the paper's CoT instruction (docs/algorithm.md §5);
a solution written as "<answer> X </answer>" is stored as "X".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from data_prep.jsonl import convert_json_file
from data_prep.pipeline import ConversionSummary, add_common_arguments, new_parser, options_from_args, run_main
from data_prep.records import RowTemplate
from data_prep.sources import FieldNames

DATA_SOURCE = "mm_rlhf"
ABILITY = "visual_reasoning"
FIELDS = FieldNames(question="problem", answer="solution", image="image")
SUBSET_FOLDERS = ("long", "mcq", "safety", "short")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("python -m data_prep.mmrlhf", __doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="the 13k subset: JSON list (or JSONL) of rows")
    parser.add_argument(
        "--image-root",
        type=Path,
        required=True,
        help=f"the MM-RLHF folder that holds {', '.join(f'{name}/' for name in SUBSET_FOLDERS)}",
    )
    add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> ConversionSummary:
    args = build_parser().parse_args(argv)
    template = RowTemplate(
        data_source=DATA_SOURCE,
        ability=ABILITY,
        cot=not args.no_cot,
        question_field=FIELDS.question,
        answer_field=FIELDS.answer,
        image_field=FIELDS.image,
    )
    return convert_json_file(
        args.input,
        names=FIELDS,
        image_root=args.image_root,
        template=template,
        options=options_from_args(args),
        name="data_prep.mmrlhf",
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
