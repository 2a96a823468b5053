"""Command-line options shared by every converter, and the error handling around `main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from data_prep.parallel import default_workers as available_default_workers
from data_prep.pipeline import PAPER_MAX_PIXELS, ConversionOptions, ConversionSummary, DataPrepError
from data_prep.writer import DEFAULT_ROW_GROUP_ROWS

OUTPUT_HELP = """
output (under --output-dir):
  train.parquet       verl rows: data_source, prompt, images, ability, reward_model, extra_info
  val.parquet         same layout, with --val-size or when the input has its own split
  skipped.jsonl       with --skip-invalid: one line per problem {row, source, field, reason, detail}
  invalid_rows.jsonl  without --skip-invalid, when the run stops on invalid rows
Files are written under a hidden .NAME.partial name and renamed when complete.
"""


def _val_size(text: str) -> float:
    value = float(text)
    if value < 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError("a fraction in (0, 1) or a whole number of rows")
    return value


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=OUTPUT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_common_arguments(
    parser: argparse.ArgumentParser, *, val_size: bool = True, cot: bool = True, default_workers: int | None = None
) -> None:
    """The options every converter shares: output, split, image storage, validation policy."""
    workers = available_default_workers() if default_workers is None else default_workers
    group = parser.add_argument_group("common options")
    group.add_argument("--output-dir", type=Path, required=True, help="folder for train.parquet / val.parquet")
    group.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    if val_size:
        group.add_argument(
            "--val-size",
            type=_val_size,
            default=0.0,
            help="hold out a validation split: a fraction in (0, 1) or a row count (default: none)",
        )
    images = group.add_mutually_exclusive_group()
    images.add_argument(
        "--embed-images",
        dest="embed_images",
        action="store_true",
        default=True,
        help="store image bytes inside the parquet, so it is self-contained (default)",
    )
    images.add_argument(
        "--image-paths",
        dest="embed_images",
        action="store_false",
        help="store absolute image paths instead (valid on this machine only); images needing "
        "conversion, and in-memory inputs, are written to OUTPUT_DIR/images/",
    )
    group.add_argument(
        "--max-pixels",
        type=int,
        default=PAPER_MAX_PIXELS,
        help=f"recorded per image; verl's loader resizes larger images below it "
        f"(default {PAPER_MAX_PIXELS} = 1536^2, the paper's setting; 0 = do not record)",
    )
    group.add_argument(
        "--min-pixels", type=int, default=None, help="recorded per image; smaller images are upscaled (default: none)"
    )
    group.add_argument("--limit", type=int, default=None, help="convert only the first N input rows")
    group.add_argument(
        "--workers",
        type=int,
        default=workers,
        help=f"image-decoding processes; 0 = in this process (default {workers})",
    )
    group.add_argument(
        "--skip-invalid",
        action="store_true",
        help="write the valid rows and list invalid ones in skipped.jsonl (default: stop with an error)",
    )
    group.add_argument("--row-group-size", type=int, default=DEFAULT_ROW_GROUP_ROWS, help="rows per parquet row group")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    if cot:
        group.add_argument(
            "--no-cot",
            action="store_true",
            help="leave out the paper's <think>/<answer> instruction after the question",
        )


def options_from_args(args: argparse.Namespace) -> ConversionOptions:
    if args.max_pixels < 0 or (args.min_pixels is not None and args.min_pixels < 1):
        raise DataPrepError(f"need --max-pixels >= 0 and --min-pixels >= 1, got {args.max_pixels}, {args.min_pixels}")
    if args.max_pixels and args.min_pixels and args.min_pixels > args.max_pixels:
        raise DataPrepError(f"--min-pixels {args.min_pixels} exceeds --max-pixels {args.max_pixels}")
    return ConversionOptions(
        output_dir=args.output_dir,
        seed=args.seed,
        val_size=getattr(args, "val_size", 0.0),
        embed_images=args.embed_images,
        max_pixels=args.max_pixels or None,
        min_pixels=args.min_pixels,
        limit=args.limit,
        workers=args.workers,
        skip_invalid=args.skip_invalid,
        row_group_rows=args.row_group_size,
        progress=not args.no_progress,
    )


def run_main(convert: Callable[[Sequence[str] | None], ConversionSummary], argv: Sequence[str] | None = None) -> int:
    """Run a converter's `main`, print its summary, and turn `DataPrepError` into exit code 1."""
    try:
        summary = convert(argv)
    except DataPrepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: partial files removed, earlier complete outputs left as they were", file=sys.stderr)
        return 130
    print(summary.format())
    return 0
