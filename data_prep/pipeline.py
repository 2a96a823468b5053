"""The streaming conversion every converter runs: records in, verl parquet out, problems named.

A converter (``mmrlhf``, ``geo3k``, ``jsonl``, ``synthetic``) yields ``SourceRecord`` s; this module
checks their text, prepares their images on a process pool, assigns the train/validation split,
writes parquet row groups under a hidden ``.NAME.partial`` name and renames the files when complete
(so an interrupted run leaves earlier outputs as they were), and, by default, stops naming the first
bad rows with counts per reason (``--skip-invalid`` writes ``skipped.jsonl`` instead).

In this module, in order: the deterministic split (a seeded sample
of input positions drawn before any row is converted, so it depends only on seed, row count and
val size); the process pool; the parquet writer (the geo3k row layout of docs/design.md); the
pipeline; the command-line options every converter shares.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_prep.images import MAX_IMAGE_BYTES, ImageJob, ImageSettings, PreparedImage, prepare_row_images
from data_prep.records import REASONS, Problem, RowTemplate, SourceRecord
from data_prep.rows import build_row, text_problems

TRAIN = "train"
VAL = "val"
SPLITS = (TRAIN, VAL)


def validation_count(num_rows: int, val_size: float) -> int:
    """Rows to hold out: a fraction of `num_rows` when 0 < val_size < 1, else a row count.

    Raises ValueError when that leaves no training row or val_size is negative/fractional > 1.
    """
    if val_size < 0:
        raise ValueError(f"--val-size must be >= 0, got {val_size}")
    if 0 < val_size < 1:
        count = int(round(val_size * num_rows))
    elif float(val_size).is_integer():
        count = int(val_size)
    else:
        raise ValueError(f"--val-size is a fraction in (0, 1) or a whole row count, got {val_size}")
    if count >= num_rows > 0:
        raise ValueError(f"--val-size {val_size} holds out {count} of {num_rows} rows, leaving none for training")
    return count


class SplitAssigner:
    """Maps an input position (0-based, < num_rows) to "train" or "val"."""

    def __init__(self, num_rows: int, val_size: float, seed: int):
        count = validation_count(num_rows, val_size)
        rng = np.random.default_rng(seed)
        self.num_rows = num_rows
        self.val_positions = (
            frozenset(rng.choice(num_rows, size=count, replace=False).tolist()) if count else frozenset()
        )

    def __call__(self, position: int) -> str:
        if not 0 <= position < self.num_rows:
            raise IndexError(f"input position {position} outside 0..{self.num_rows - 1}")
        return VAL if position in self.val_positions else TRAIN


T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; let only the parent react, so it can cancel the
    # queued work and remove its partial files instead of workers dying mid-task.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_worker_count() -> int:
    return min(8, available_cpus())


def ordered_map(
    function: Callable[[T], R], items: Iterable[T], *, workers: int, window: int | None = None
) -> Iterator[R]:
    """Yield `function(item)` for every item, in input order.

    workers: 0 runs in this process (no pickling, best for small jobs and tests); N > 0
        uses N worker processes started with "spawn" (safe with pyarrow and tqdm threads
        in the parent, unlike fork).
    window: items submitted but not yet yielded; default 4 per worker.
    Exceptions raised by `function` propagate at the item that raised them.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        yield from map(function, items)
        return
    window = window or 4 * workers
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_interrupts
    )
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # On early exit (error, Ctrl-C, consumer stopped) drop queued work instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)


DEFAULT_ROW_GROUP_ROWS = 256
# Flush a row group early when its images pass this size, so huge images cannot blow up memory.
DEFAULT_ROW_GROUP_BYTES = 32 * 1024 * 1024


def image_struct_type(embed: bool, with_max_pixels: bool, with_min_pixels: bool) -> pa.DataType:
    """The `images` element type verl's loader understands.

    Embedded: {"bytes", "path"} (HF datasets' image layout; the loader opens `bytes`).
    Paths: {"image": absolute path} — verl's loader treats any dict with a "bytes" key as
    embedded, so a null "bytes" would break it; "image" is what qwen_vl_utils opens.
    `max_pixels`/`min_pixels`, when recorded, are read per image by qwen_vl_utils.fetch_image.
    """
    fields = (
        [pa.field("bytes", pa.binary()), pa.field("path", pa.string())] if embed else [pa.field("image", pa.string())]
    )
    if with_max_pixels:
        fields.append(pa.field("max_pixels", pa.int64()))
    if with_min_pixels:
        fields.append(pa.field("min_pixels", pa.int64()))
    return pa.struct(fields)


def row_schema(image_type: pa.DataType) -> pa.Schema:
    """The geo3k-style row layout (docs/design.md), with `images` of `image_type`."""
    return pa.schema(
        [
            pa.field("data_source", pa.string()),
            pa.field("prompt", pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))),
            pa.field("images", pa.list_(image_type)),
            pa.field("ability", pa.string()),
            pa.field(
                "reward_model", pa.struct([pa.field("style", pa.string()), pa.field("ground_truth", pa.string())])
            ),
            pa.field(
                "extra_info",
                pa.struct(
                    [
                        pa.field("split", pa.string()),
                        pa.field("index", pa.int64()),
                        pa.field("question", pa.string()),
                        pa.field("answer", pa.string()),
                        pa.field("answer_type", pa.string()),
                    ]
                ),
            ),
        ]
    )


def partial_path(final_path: Path) -> Path:
    return final_path.with_name(f".{final_path.name}.partial")


class AtomicParquetWriter:
    """Appends rows to a parquet file in row groups; the file appears at `final_path` on `commit()`.

    A row group is flushed when it holds `row_group_rows` rows or `row_group_bytes` bytes of
    images, so memory holds at most one row group.
    """

    def __init__(
        self,
        final_path: Path,
        schema: pa.Schema,
        *,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    ):
        if row_group_rows < 1:
            raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
        self.final_path = final_path
        self.temp_path = partial_path(final_path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.rows_written = 0
        self._buffer: list[dict[str, Any]] = []
        self._buffer_bytes = 0
        self._writer = pq.ParquetWriter(self.temp_path, schema)

    @property
    def row_count(self) -> int:
        """Rows written so far, buffered ones included."""
        return self.rows_written + len(self._buffer)

    def write(self, row: dict[str, Any], size_bytes: int = 0) -> None:
        """Queue one row (`size_bytes`: its image payload, for the byte limit)."""
        self._buffer.append(row)
        self._buffer_bytes += size_bytes
        if len(self._buffer) >= self.row_group_rows or self._buffer_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self.rows_written += len(self._buffer)
        self._buffer = []
        self._buffer_bytes = 0

    def commit(self) -> Path:
        """Write what is buffered, close, and move the file to its final name."""
        self._flush()
        self._writer.close()
        os.replace(self.temp_path, self.final_path)
        return self.final_path

    def abort(self) -> None:
        """Close and delete the partial file; the final path is left untouched."""
        self._buffer = []
        try:
            self._writer.close()
        finally:
            self.temp_path.unlink(missing_ok=True)


class AtomicJsonlWriter:
    """One JSON object per line, streamed to a partial file and renamed on `commit()`."""

    def __init__(self, final_path: Path):
        self.final_path = final_path
        self.temp_path = partial_path(final_path)
        self.lines_written = 0
        self._file = self.temp_path.open("w", encoding="utf-8")

    def write(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.lines_written += 1

    def commit(self) -> Path:
        self._file.close()
        os.replace(self.temp_path, self.final_path)
        return self.final_path

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self.temp_path.unlink(missing_ok=True)


# docs/algorithm.md §5: the paper's scripts cap images at 1536^2 pixels.
PAPER_MAX_PIXELS = 2359296
SKIPPED_REPORT = "skipped.jsonl"
IMAGE_DIR = "images"  # under OUTPUT_DIR, with --image-paths
INVALID_REPORT = "invalid_rows.jsonl"
ERRORS_SHOWN = 10


class DataPrepError(Exception):
    """A conversion that cannot go on; the message says what is wrong and what to do."""


class InvalidRowsError(DataPrepError):
    """Some input rows are invalid and `skip_invalid` is off; no parquet was written."""

    def __init__(self, counts: Counter[str], first: list[Problem], invalid_rows: int, valid_rows: int, report: Path):
        self.counts = counts
        self.first = first
        self.invalid_rows = invalid_rows
        self.report = report
        by_reason = ", ".join(f"{reason} {count}" for reason, count in counts.most_common())
        lines = [
            f"{invalid_rows} invalid row(s) ({by_reason}); no parquet was written.",
            f"First {len(first)}:",
            *(f"  {problem.describe()}" for problem in first),
            "What to do:",
            *(f"  {reason}: {REASONS[reason]}" for reason in counts),
            f"Every problem is listed in {report}.",
            f"Fix the input, or rerun with --skip-invalid to write the {valid_rows} valid row(s) "
            f"and a {SKIPPED_REPORT} report.",
        ]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ConversionOptions:
    """Options shared by every converter (see `data_prep.pipeline` for their command-line form).

    val_size: 0 = no validation split; 0 < x < 1 = fraction of input rows; >= 1 = row count.
    max_pixels / min_pixels: recorded in each image entry for qwen_vl_utils' resize; None = not recorded.
    limit: convert only the first `limit` input rows.
    workers: image-decoding processes; 0 = decode in this process.
    image_root: the folder image files must lie in (symlinks followed; set by the converters that read
        image paths); None = not confined. allow_images_outside_root lifts that rule.
    max_image_bytes: image files larger than this many bytes are refused unread.
    """

    output_dir: Path
    seed: int = 0
    val_size: float = 0.0
    embed_images: bool = True
    max_pixels: int | None = PAPER_MAX_PIXELS
    min_pixels: int | None = None
    limit: int | None = None
    workers: int = field(default_factory=default_worker_count)
    skip_invalid: bool = False
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    progress: bool = True
    image_root: Path | None = None
    allow_images_outside_root: bool = False
    max_image_bytes: int = MAX_IMAGE_BYTES


@dataclass
class ConversionSummary:
    """What a run did. `problems_by_reason` counts problems (a row can have several)."""

    name: str
    rows_read: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)
    rows_skipped: int = 0
    problems_by_reason: Counter[str] = field(default_factory=Counter)
    outputs: dict[str, Path] = field(default_factory=dict)
    skipped_report: Path | None = None
    removed_stale: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def format(self) -> str:
        written = sum(self.rows_written.values())
        per_split = ", ".join(f"{split} {count}" for split, count in self.rows_written.items())
        lines = [
            f"{self.name}: read {self.rows_read} rows, wrote {written} ({per_split}), "
            f"skipped {self.rows_skipped} in {self.seconds:.1f} s"
        ]
        if self.problems_by_reason:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self.problems_by_reason.most_common())
            lines.append(f"  skipped by reason: {reasons}")
        for split, path in self.outputs.items():
            lines.append(f"  {split}: {path} ({human_size(path.stat().st_size)}, {self.rows_written[split]} rows)")
            if self.rows_written[split] == 0:
                lines.append(f"  warning: {path.name} has no rows")
        if self.skipped_report is not None:
            lines.append(f"  skipped report: {self.skipped_report} ({self.rows_skipped} rows)")
        for path in self.removed_stale:
            lines.append(f"  removed {path} left by an earlier run")
        return "\n".join(lines)


def human_size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def output_path(output_dir: Path, split: str) -> Path:
    return output_dir / f"{split}.parquet"


class _Outputs:
    """The open writers of one run; all are committed together or all aborted."""

    def __init__(self, options: ConversionOptions, splits: Iterable[str]):
        self.options = options
        image_type = image_struct_type(
            options.embed_images, options.max_pixels is not None, options.min_pixels is not None
        )
        self.schema = row_schema(image_type)
        self.parquet: dict[str, AtomicParquetWriter] = {}
        report_name = SKIPPED_REPORT if options.skip_invalid else INVALID_REPORT
        self.report = AtomicJsonlWriter(options.output_dir / report_name)
        for split in splits:
            self.writer(split)

    def writer(self, split: str) -> AtomicParquetWriter:
        if split not in self.parquet:
            self.parquet[split] = AtomicParquetWriter(
                output_path(self.options.output_dir, split), self.schema, row_group_rows=self.options.row_group_rows
            )
        return self.parquet[split]

    def abort(self) -> None:
        for writer in [*self.parquet.values(), self.report]:
            writer.abort()


def _image_settings(options: ConversionOptions) -> ImageSettings:
    """What the workers need; in path mode `convert` has created OUTPUT_DIR/images."""
    return ImageSettings(
        embed=options.embed_images,
        image_dir=None if options.embed_images else options.output_dir / IMAGE_DIR,
        image_root=options.image_root.resolve() if options.image_root is not None else None,
        allow_outside_root=options.allow_images_outside_root,
        max_bytes=options.max_image_bytes,
    )


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return the ones created, deepest first."""
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(folders: Iterable[Path]) -> None:
    """Remove the given folders (deepest first) while they are empty; a folder holding anything stays."""
    for folder in folders:
        try:
            folder.rmdir()  # fails on a folder that is not empty: nothing else is ever removed
        except OSError:
            return


def _prepared(
    records: Iterable[SourceRecord], settings: ImageSettings, workers: int
) -> Iterator[tuple[SourceRecord, list[PreparedImage | Problem]]]:
    """Pair each record with its prepared images, decoding in `workers` processes, in order."""
    queued: deque[SourceRecord] = deque()

    def jobs() -> Iterator[ImageJob]:
        for record in records:
            queued.append(record)
            yield ImageJob(record.row, record.source, record.images, settings)

    # ordered_map pulls jobs and yields results in the same order, so `queued` pairs them up.
    for results in ordered_map(prepare_row_images, jobs(), workers=workers):
        yield queued.popleft(), results


def convert(
    records: Iterable[SourceRecord],
    *,
    num_rows: int,
    template: RowTemplate,
    options: ConversionOptions,
    input_has_splits: bool = False,
    name: str = "data_prep",
) -> ConversionSummary:
    """Convert `records` (`num_rows` of them, before `options.limit`) into parquet files.

    Writes `train.parquet` and, when `options.val_size` > 0 or the input carries its own
    splits (`input_has_splits`, records with `split` set), `val.parquet` under
    `options.output_dir`. Returns the summary; raises `InvalidRowsError` on invalid rows
    unless `options.skip_invalid`, and `DataPrepError` for unusable options. A failed run
    removes the folders it created that are left empty (never one that existed before).
    """
    created = _make_folders(options.output_dir)
    if not options.embed_images:
        created = _make_folders(options.output_dir / IMAGE_DIR) + created
    try:
        return _convert(
            records,
            num_rows=num_rows,
            template=template,
            options=options,
            input_has_splits=input_has_splits,
            name=name,
        )
    except BaseException:
        _remove_empty(created)
        raise


def _convert(
    records: Iterable[SourceRecord],
    *,
    num_rows: int,
    template: RowTemplate,
    options: ConversionOptions,
    input_has_splits: bool,
    name: str,
) -> ConversionSummary:
    """`convert` inside existing output folders."""
    started = time.perf_counter()
    if options.limit is not None:
        if options.limit < 1:
            raise DataPrepError(f"--limit must be >= 1, got {options.limit}")
        records = itertools.islice(records, options.limit)
        num_rows = min(num_rows, options.limit)
    if input_has_splits and options.val_size:
        raise DataPrepError("this input defines its own train/validation split; drop --val-size")
    try:
        assigner = SplitAssigner(num_rows, options.val_size, options.seed) if options.val_size else None
    except ValueError as error:
        raise DataPrepError(str(error)) from error
    settings = _image_settings(options)
    summary = ConversionSummary(name=name)
    first_problems: list[Problem] = []
    outputs = _Outputs(options, SPLITS if (assigner is not None or input_has_splits) else (TRAIN,))
    progress = tqdm(total=num_rows, desc=name, unit="row", disable=not options.progress, dynamic_ncols=True)
    try:
        positions = itertools.count()
        for record, results in _prepared(records, settings, options.workers):
            position = next(positions)
            summary.rows_read += 1
            progress.update()
            problems = [*record.problems, *text_problems(record, template)]
            problems += [result for result in results if isinstance(result, Problem)]
            if problems:
                summary.rows_skipped += 1
                for problem in problems:
                    summary.problems_by_reason[problem.reason] += 1
                    outputs.report.write(problem.as_json())
                    if len(first_problems) < ERRORS_SHOWN:
                        first_problems.append(problem)
                progress.set_postfix(invalid=summary.rows_skipped, refresh=False)
                continue
            if summary.rows_skipped and not options.skip_invalid:
                continue  # the run will fail: keep checking rows, stop writing them
            split = record.split or (assigner(position) if assigner is not None else TRAIN)
            if split not in (TRAIN, VAL):
                raise DataPrepError(f"{record.source} row {record.row}: split {split!r} is not one of {SPLITS}")
            images = [result for result in results if isinstance(result, PreparedImage)]
            row = build_row(
                record, images, split, template, max_pixels=options.max_pixels, min_pixels=options.min_pixels
            )
            outputs.writer(split).write(row, size_bytes=sum(len(image.data or b"") for image in images))
        progress.close()
    except BaseException:
        progress.close()
        outputs.abort()
        raise
    failed = bool(summary.rows_skipped) and not options.skip_invalid
    if failed or outputs.writer(TRAIN).row_count == 0:
        for writer in outputs.parquet.values():
            writer.abort()
        if not summary.rows_skipped:  # nothing to report: leave no empty report behind
            outputs.report.abort()
            raise DataPrepError(f"no rows to write: the input holds {summary.rows_read} row(s); nothing written")
        report = outputs.report.commit()
        if failed:
            valid = summary.rows_read - summary.rows_skipped
            raise InvalidRowsError(summary.problems_by_reason, first_problems, summary.rows_skipped, valid, report)
        raise DataPrepError(
            f"no valid training rows out of {summary.rows_read} read; nothing written "
            f"(skipped rows are listed in {report})"
        )
    # Commit validation before train: a crash in between leaves no new train.parquet.
    for split in sorted(outputs.parquet, key=lambda s: s == TRAIN):
        outputs.parquet[split].commit()
    for split, writer in sorted(outputs.parquet.items(), key=lambda item: item[0] != TRAIN):
        summary.outputs[split] = writer.final_path
        summary.rows_written[split] = writer.rows_written
    if options.skip_invalid:
        summary.skipped_report = outputs.report.commit()
    else:
        outputs.report.abort()
    # Files of an earlier run that this run did not rewrite would be read as belonging to it
    # (a stale val.parquet overlapping the new train.parquet): remove them.
    stale = [output_path(options.output_dir, split) for split in SPLITS if split not in outputs.parquet]
    stale += [options.output_dir / INVALID_REPORT] + (
        [] if options.skip_invalid else [options.output_dir / SKIPPED_REPORT]
    )
    for path in stale:
        if path.exists():
            path.unlink()
            summary.removed_stale.append(path)
    summary.seconds = time.perf_counter() - started
    return summary


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
    parser: argparse.ArgumentParser,
    *,
    val_size: bool = True,
    cot: bool = True,
    default_workers: int | None = None,
    image_files: bool = True,
) -> None:
    """The options every converter shares: output, split, image storage, validation policy.

    image_files: the converter reads image files named by its input, so add the options that
    confine and bound them (--allow-images-outside-root, --max-image-bytes).
    """
    workers = default_worker_count() if default_workers is None else default_workers
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
    if image_files:
        group.add_argument(
            "--allow-images-outside-root",
            action="store_true",
            help="read image paths that lead outside --image-root (absolute paths, '..', symlinks out); "
            "default: refuse them unopened, since a path in the input could name any file on this machine",
        )
        group.add_argument(
            "--max-image-bytes",
            type=int,
            default=MAX_IMAGE_BYTES,
            help=f"refuse image files larger than this many bytes, unread (default {MAX_IMAGE_BYTES} = "
            f"{MAX_IMAGE_BYTES // 2**20} MiB)",
        )
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
    max_image_bytes = getattr(args, "max_image_bytes", MAX_IMAGE_BYTES)
    if max_image_bytes < 1:
        raise DataPrepError(f"need --max-image-bytes >= 1, got {max_image_bytes}")
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
        allow_images_outside_root=getattr(args, "allow_images_outside_root", False),
        max_image_bytes=max_image_bytes,
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
