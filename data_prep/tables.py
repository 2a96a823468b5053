"""Reading local Hugging Face datasets (a `save_to_disk` folder or parquet files) in batches.

Images stay encoded: rows are read as Arrow batches, never through `datasets`' Image
feature, so nothing is decoded in the main process and memory holds one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.pipeline import DataPrepError

BATCH_ROWS = 64


def open_parquet(path: Path) -> pq.ParquetFile:
    """A reader whose memory stays near one batch: no whole-row-group pre-buffering (which would
    hold tens of MB of image bytes per row group), reads in 1 MiB chunks."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)


@dataclass(frozen=True)
class TableSplit:
    """One split of a local dataset: its name, row count and a way to stream its rows."""

    name: str
    num_rows: int
    columns: tuple[str, ...]
    read_batches: Callable[[list[str]], Iterator[pa.RecordBatch | pa.Table]]

    def rows(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        """Yield each row as a dict of the given columns, in order."""
        missing = [column for column in columns if column not in self.columns]
        if missing:
            raise DataPrepError(
                f"split {self.name!r} has no column(s) {missing}; its columns are {list(self.columns)} "
                "(choose others with the --*-field options)"
            )
        for batch in self.read_batches(columns):
            yield from batch.to_pylist()


def _parquet_split(name: str, files: list[Path]) -> TableSplit:
    metadata = [open_parquet(file).metadata for file in files]
    columns = tuple(open_parquet(files[0]).schema_arrow.names)

    def read_batches(selected: list[str]) -> Iterator[pa.RecordBatch]:
        for file in files:
            yield from open_parquet(file).iter_batches(batch_size=BATCH_ROWS, columns=selected)

    return TableSplit(name, sum(meta.num_rows for meta in metadata), columns, read_batches)


def _arrow_split(name: str, folder: Path) -> TableSplit:
    import datasets

    dataset = datasets.load_from_disk(str(folder))
    if not isinstance(dataset, datasets.Dataset):
        raise DataPrepError(f"{folder} is a DatasetDict; pass its parent folder")

    def read_batches(selected: list[str]) -> Iterator[pa.Table]:
        yield from dataset.select_columns(selected).with_format("arrow").iter(batch_size=BATCH_ROWS)

    return TableSplit(name, len(dataset), tuple(dataset.column_names), read_batches)


def _split_of_file(file: Path) -> str:
    """Hub layout names files SPLIT-00000-of-00001[-hash].parquet; plain SPLIT.parquet works too."""
    return file.stem.split("-", 1)[0]


def discover_splits(path: Path) -> dict[str, TableSplit]:
    """Splits of a local dataset at `path`.

    Accepted: a `DatasetDict.save_to_disk` folder (dataset_dict.json + one folder per
    split), a `Dataset.save_to_disk` folder (one split, "train"), a folder of parquet files
    named by split (hub layout, searched recursively), or one parquet file (split from its
    name, e.g. test-00000-of-00001.parquet -> "test").
    """
    if path.is_file():
        if path.suffix != ".parquet":
            raise DataPrepError(f"{path} is not a parquet file")
        return {_split_of_file(path): _parquet_split(_split_of_file(path), [path])}
    if not path.is_dir():
        raise DataPrepError(f"dataset path {path} does not exist")
    if (path / "dataset_dict.json").is_file():
        import json

        names = json.loads((path / "dataset_dict.json").read_text())["splits"]
        return {name: _arrow_split(name, path / name) for name in names}
    if (path / "state.json").is_file():
        return {"train": _arrow_split("train", path)}
    files: dict[str, list[Path]] = {}
    for file in sorted(path.rglob("*.parquet")):
        files.setdefault(_split_of_file(file), []).append(file)
    if not files:
        raise DataPrepError(
            f"{path} holds neither a datasets.save_to_disk folder (dataset_dict.json / state.json) nor parquet files"
        )
    return {name: _parquet_split(name, split_files) for name, split_files in files.items()}
