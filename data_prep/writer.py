"""Streaming output files that only appear under their final name once complete.

Each output is written to a hidden `.NAME.partial` next to its final path and moved into
place with `os.replace` (atomic on one filesystem) by `commit()`. An interrupted run
therefore leaves either the previous complete file or nothing — never a truncated file
under the name verl reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
