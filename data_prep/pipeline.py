"""The shared conversion pipeline: records in, verl parquet files and a report out.

    records --(text checks)--> image jobs --(worker pool, in order)--> rows --> row groups

Every converter only maps its input to `SourceRecord`s and calls `convert`. Rows stream
through: at most one row group per output and a bounded window of image jobs are held in
memory. Invalid rows are never dropped silently: by default the run fails with
`InvalidRowsError` (and writes no parquet); with `skip_invalid` they go to skipped.jsonl.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from data_prep.images import ImageJob, ImageSettings, PreparedImage, prepare_row_images
from data_prep.parallel import default_workers, ordered_map
from data_prep.records import REASONS, Problem, RowTemplate, SourceRecord
from data_prep.rows import build_row, text_problems
from data_prep.splits import SPLITS, TRAIN, VAL, SplitAssigner
from data_prep.writer import (
    DEFAULT_ROW_GROUP_ROWS,
    AtomicJsonlWriter,
    AtomicParquetWriter,
    image_struct_type,
    row_schema,
)

# docs/algorithm.md §5: the paper's scripts cap images at 1536^2 pixels.
PAPER_MAX_PIXELS = 2359296
SKIPPED_REPORT = "skipped.jsonl"
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
    """Options shared by every converter (see `data_prep.cli` for their command-line form).

    val_size: 0 = no validation split; 0 < x < 1 = fraction of input rows; >= 1 = row count.
    max_pixels / min_pixels: recorded in each image entry for qwen_vl_utils' resize; None = not recorded.
    limit: convert only the first `limit` input rows.
    workers: image-decoding processes; 0 = decode in this process.
    """

    output_dir: Path
    seed: int = 0
    val_size: float = 0.0
    embed_images: bool = True
    max_pixels: int | None = PAPER_MAX_PIXELS
    min_pixels: int | None = None
    limit: int | None = None
    workers: int = field(default_factory=default_workers)
    skip_invalid: bool = False
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    progress: bool = True


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
    if options.embed_images:
        return ImageSettings(embed=True)
    image_dir = options.output_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    return ImageSettings(embed=False, image_dir=image_dir)


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
    unless `options.skip_invalid`, and `DataPrepError` for unusable options.
    """
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
    options.output_dir.mkdir(parents=True, exist_ok=True)
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
        report = outputs.report.commit()
        if failed:
            valid = summary.rows_read - summary.rows_skipped
            raise InvalidRowsError(summary.problems_by_reason, first_problems, summary.rows_skipped, valid, report)
        raise DataPrepError(
            f"no valid training rows out of {summary.rows_read} read; nothing written"
            + (f" (skipped rows are listed in {report})" if summary.rows_skipped else "")
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
