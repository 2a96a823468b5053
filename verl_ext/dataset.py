"""``NoisyRLHFDataset``: verl's RLHF dataset plus a per-prompt noise seed and agent-loop routing.

Selected with ``data.custom_cls.path=pkg://verl_ext.dataset`` and
``data.custom_cls.name=NoisyRLHFDataset``. verl builds it in the trainer process through
``verl.trainer.ppo.utils.create_rl_dataset`` (train and validation each), and every
agent-loop worker loads the class (not an instance) for its ``process_multi_modal_info``
classmethod, which is inherited unchanged.

Each row is upstream's row plus:

- ``noise_seed`` (int): ``prompt_noise_seed(base_seed, row)`` where ``row`` is the row's
  position in this dataset and ``base_seed`` is ``data.seed`` (or
  :data:`DEFAULT_NOISE_BASE_SEED` when that is null). The agent loop derives each
  rollout's noise from it, so a resumed run sees the same noise.
- ``agent_name`` (str): :data:`TRAIN_AGENT_NAME` for training rows (noisy rollouts),
  :data:`VALIDATION_AGENT_NAME` for validation rows (clean, upstream's single-turn loop).

Train vs validation: ``create_rl_dataset`` takes ``is_train`` but does not pass it to the
dataset class (verl 0.9.1), and row-level labels such as ``extra_info.split`` describe where
a row came from, not what this run uses it for. So the role is explicit when the caller
passes ``is_train``, and otherwise read from which config list the dataset's files are:
``data.train_files`` or ``data.val_files`` (see :func:`is_training_dataset`).

No validation: ``data.val_files=null`` (the paper trains on every row and never validates) gives a
one-row placeholder built from the first training row, since verl's v1 trainer always builds a
validation dataset and loader; the recipe's start-up check makes sure validation never runs then.

Over-long prompts: with ``data.filter_overlong_prompts`` upstream drops rows whose prompt (image
tokens included) exceeds ``data.max_prompt_length`` with one "filter dataset len" line; here the
dropped rows are counted and named, so none disappears unnoticed.

Images: upstream silently drops a row whose image cannot be decoded when
``data.filter_overlong_prompts`` is on (the length filter catches every error and counts
the row as too long) and fails with a bare PIL error, naming neither row nor file, when it
is off. Both checks hook the one upstream method every construction passes through,
``maybe_filter_out_long_prompts``, on the rows upstream loaded: every image is decoded once
there, and an undecodable one raises :class:`UndecodableImageError` naming the file, the row
and the image. Rows carry decoded images (see :meth:`NoisyRLHFDataset._build_messages`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from io import BytesIO
from typing import Any

import datasets
import pyarrow.parquet as pq
from omegaconf import DictConfig
from PIL import Image
from verl.utils.dataset.rl_dataset import RLHFDataset

# Importing the agent loop registers it wherever this class is loaded: the trainer and every
# agent-loop worker (AgentLoopWorker loads data.custom_cls), so the name the rows carry resolves.
from verl_ext.agent_loop import AGENT_NAME as TRAIN_AGENT_NAME
from verl_ext.noise import prompt_noise_seed

VALIDATION_AGENT_NAME = "single_turn_agent"
# Base of the per-prompt noise seeds when data.seed is null.
DEFAULT_NOISE_BASE_SEED = 0
# Most undecodable images listed in one error message, and most dropped rows named in the report.
MAX_REPORTED_PROBLEMS = 10
_ROW_COLUMN = "__noisygrpo_row__"


class UndecodableImageError(ValueError):
    """An image of a data row cannot be decoded; the message names the file and the row."""


class DatasetRoleError(ValueError):
    """It cannot be told whether a dataset holds training or validation rows."""


def _as_path_list(files: str | os.PathLike | Sequence[str] | None) -> list[str]:
    if files is None:
        return []
    if isinstance(files, str | os.PathLike):
        files = [files]
    return [os.path.normpath(os.fspath(f)) for f in files]


def is_training_dataset(
    data_files: str | Sequence[str], data_config: DictConfig | dict, is_train: bool | None = None
) -> bool:
    """Whether a dataset built from ``data_files`` holds training rows.

    Args:
        data_files: the files the dataset is built from (as verl passes them).
        data_config: the ``data`` config section (``train_files``, ``val_files``).
        is_train: an explicit answer; when given it wins.

    Raises:
        DatasetRoleError: ``data_files`` are both (or neither of) ``data.train_files`` and
            ``data.val_files``, and ``is_train`` was not given.
    """
    if is_train is not None:
        return bool(is_train)
    files = _as_path_list(data_files)
    train_files = _as_path_list(data_config.get("train_files"))
    val_files = _as_path_list(data_config.get("val_files"))
    is_train_list, is_val_list = files == train_files, files == val_files
    if is_train_list and not is_val_list:
        return True
    if is_val_list and not is_train_list:
        return False
    if is_train_list and is_val_list:
        raise DatasetRoleError(
            f"data.train_files and data.val_files are the same files {files}: NoisyRLHFDataset routes training rows "
            f"to '{TRAIN_AGENT_NAME}' (noisy rollouts) and validation rows to '{VALIDATION_AGENT_NAME}' (clean) and "
            "tells the two datasets apart by their file lists. Point data.val_files at another path (a copy or a "
            "symlink of the file is enough)."
        )
    raise DatasetRoleError(
        f"NoisyRLHFDataset was built from {files}, which is neither data.train_files={train_files} nor "
        f"data.val_files={val_files}; pass is_train=True/False explicitly."
    )


def decode_image_entry(entry: Any) -> None:
    """Fully decodes one image entry of a row (what upstream's loaders accept).

    Entries: ``{"bytes": ..., "path": ...}`` dicts (bytes first, as upstream), PIL images,
    and local paths. Remote URLs are not fetched (no network here) and pass unchecked.

    Raises:
        Exception: whatever PIL raises for undecodable data, or TypeError for an entry of
            an unsupported type.
    """
    if isinstance(entry, Image.Image):
        entry.load()
        return
    if isinstance(entry, dict):
        if entry.get("bytes") is not None:
            with Image.open(BytesIO(entry["bytes"])) as image:
                image.load()
            return
        entry = entry.get("path") or entry.get("image")
        if entry is None:
            raise TypeError("image entry has neither 'bytes' nor 'path'")
        if isinstance(entry, Image.Image):
            entry.load()
            return
    if isinstance(entry, str | os.PathLike):
        path = os.fspath(entry)
        if "://" in path and not path.startswith("file://"):
            return
        with Image.open(path.removeprefix("file://")) as image:
            image.load()
        return
    raise TypeError(f"unsupported image entry of type {type(entry).__name__}")


def _image_problems_of_batch(batch: dict[str, list], indices: list[int], image_key: str) -> dict[str, list]:
    """``datasets.map`` function: the (row, image position, reason) of every image that does not decode."""
    problems: dict[str, list] = {"row": [], "image": [], "reason": []}
    for row, entries in zip(indices, batch[image_key], strict=True):
        for position, entry in enumerate(entries or []):
            try:
                decode_image_entry(entry)
            except Exception as error:  # any failure to decode is the finding, whatever PIL raises
                problems["row"].append(row)
                problems["image"].append(position)
                problems["reason"].append(f"{type(error).__name__}: {error}")
    return problems


def _without_image_decoding(feature: Any) -> Any:
    """The same feature with HF ``Image`` columns left as raw ``{bytes, path}`` (decoding is what we check)."""
    if isinstance(feature, datasets.Image):
        return datasets.Image(decode=False)
    if isinstance(feature, datasets.List):
        inner = _without_image_decoding(feature.feature)
        return feature if inner is feature.feature else datasets.List(inner, length=feature.length)
    return feature


def find_undecodable_images(
    dataset: datasets.Dataset, image_key: str, num_proc: int | None = None
) -> list[tuple[int, int, str]]:
    """Decodes every image of ``dataset[image_key]``.

    Returns:
        ``(row, image position in the row, reason)`` for each image that does not decode,
        rows counted from 0 in ``dataset``; empty when all decode or there is no such column.
    """
    if image_key not in dataset.column_names:
        return []
    images = dataset.select_columns([image_key])
    undecoded_feature = _without_image_decoding(images.features[image_key])
    if undecoded_feature is not images.features[image_key]:
        images = images.cast_column(image_key, undecoded_feature)
    problems = images.map(
        _image_problems_of_batch,
        batched=True,
        with_indices=True,
        fn_kwargs={"image_key": image_key},
        remove_columns=[image_key],
        num_proc=num_proc if num_proc and num_proc > 1 and len(images) > 1 else None,
        desc=f"Decoding every image of column {image_key!r}",
    )
    if len(problems) == 0:  # no rows out: datasets infers no columns
        return []
    return list(zip(problems["row"], problems["image"], problems["reason"], strict=True))


def _row_count(data_file: str) -> int:
    """Rows of a data file: from the parquet footer, or by loading a JSON / JSONL file (datasets caches it)."""
    if data_file.endswith(".parquet"):
        return pq.ParquetFile(data_file).metadata.num_rows
    return len(datasets.load_dataset("json", data_files=data_file)["train"])


class NoisyRLHFDataset(RLHFDataset):
    """RLHFDataset rows plus ``noise_seed`` and ``agent_name``; undecodable images fail at construction.

    Args:
        data_files, tokenizer, config, processor, max_samples: as :class:`RLHFDataset`.
        is_train: training (True) or validation (False) rows; None infers it from
            ``config.train_files`` / ``config.val_files`` (:func:`is_training_dataset`).
    """

    def __init__(
        self,
        data_files: str | list[str] | None,
        tokenizer,
        config: DictConfig,
        processor=None,
        max_samples: int = -1,
        is_train: bool | None = None,
    ):
        self.validation_disabled = data_files is None
        if self.validation_disabled:
            # data.val_files=null: verl still builds a validation loader, which needs a row.
            print("[noisygrpo] data.val_files is null: validation is off (a 1-row placeholder stands in)")
            data_files, max_samples, is_train = config.get("train_files"), 1, False
        # Decided before upstream reads any file, so a config mistake fails fast.
        self.is_train = is_training_dataset(data_files, config, is_train)
        self.agent_name = TRAIN_AGENT_NAME if self.is_train else VALIDATION_AGENT_NAME
        seed = config.get("seed")
        self.noise_base_seed = DEFAULT_NOISE_BASE_SEED if seed is None else int(seed)
        super().__init__(
            data_files=data_files, tokenizer=tokenizer, config=config, processor=processor, max_samples=max_samples
        )

    def maybe_filter_out_long_prompts(self, dataframe: datasets.Dataset = None) -> datasets.Dataset:
        """Undecodable images are an error; then upstream's length filter, with the dropped rows counted and named."""
        if dataframe is None:
            return super().maybe_filter_out_long_prompts(dataframe)
        if not self.validation_disabled:  # the placeholder row is never used
            self._raise_on_undecodable_images(dataframe)
        if not self.filter_overlong_prompts:
            return super().maybe_filter_out_long_prompts(dataframe)
        numbered = dataframe.add_column(_ROW_COLUMN, list(range(len(dataframe))))
        kept = super().maybe_filter_out_long_prompts(numbered)
        dropped = sorted(set(range(len(dataframe))) - set(kept[_ROW_COLUMN]))
        if dropped:
            named = "; ".join(self._locate(row) for row in dropped[:MAX_REPORTED_PROBLEMS])
            more = f"; and {len(dropped) - MAX_REPORTED_PROBLEMS} more" if len(dropped) > MAX_REPORTED_PROBLEMS else ""
            print(
                f"[noisygrpo] WARNING: data.filter_overlong_prompts dropped {len(dropped)} of {len(dataframe)} rows "
                f"whose prompt, image tokens included, is longer than data.max_prompt_length={self.max_prompt_length}: "
                f"{named}{more}. Raise data.max_prompt_length, or lower the images' max_pixels in data prep "
                "(python -m data_prep.check FILE --tokens MODEL_PATH shows the lengths).",
                flush=True,
            )
        self.dropped_overlong_rows = dropped
        return kept.remove_columns(_ROW_COLUMN)

    def _locate(self, row: int) -> str:
        """"FILE row R" for a row of the loaded data (rows counted from 0 within each file)."""
        if len(self.dataframe) == sum(self._file_rows):  # no max_samples selection: rows follow the files
            for original_file, count in zip(self.original_data_files, self._file_rows, strict=True):
                if row < count:
                    return f"{original_file} row {row}"
                row -= count
        return f"row {row} of the {len(self.dataframe)} rows selected from {list(self.original_data_files)}"

    @functools.cached_property
    def _file_rows(self) -> list[int]:
        return [_row_count(local_file) for local_file in self.data_files]

    def _raise_on_undecodable_images(self, dataframe: datasets.Dataset) -> None:
        problems = find_undecodable_images(dataframe, self.image_key, self.num_workers)
        if not problems:
            return
        listed = "\n  ".join(
            f"{self._locate(row)} image {image}: {reason}" for row, image, reason in problems[:MAX_REPORTED_PROBLEMS]
        )
        more = f"\n  and {len(problems) - MAX_REPORTED_PROBLEMS} more" if len(problems) > MAX_REPORTED_PROBLEMS else ""
        raise UndecodableImageError(
            f"cannot decode {len(problems)} image(s) in column {self.image_key!r} (rows counted from 0 within each "
            f"file):\n  {listed}{more}\nRepair or drop these rows (e.g. re-run the data preparation) and start again."
        )

    def _build_messages(self, example: dict, key: str) -> list:
        """Upstream's messages, with every PIL image decoded now rather than lazily.

        Upstream leaves ``Image.open`` handles (lazy file objects) in the row. The v1 worker
        hands one row to all ``rollout.n`` sessions of a group, whose ``process_vision_info``
        calls run on parallel threads; decoding the same lazy image from several threads at
        once is not safe in PIL. A decoded image is also what Ray's pickling would produce.
        """
        messages = super()._build_messages(example, key)
        for message in messages:
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if not (isinstance(part, dict) and part.get("type") == "image"):
                    continue
                if isinstance(part.get("image"), Image.Image):
                    part["image"].load()  # construction decoded every image once, so this one decodes
        return messages

    def __getitem__(self, item: int) -> dict:
        row = int(item)
        row_dict = super().__getitem__(row)
        row_dict["noise_seed"] = int(prompt_noise_seed(self.noise_base_seed, row))
        row_dict["agent_name"] = self.agent_name
        return row_dict


__all__ = [
    "DEFAULT_NOISE_BASE_SEED",
    "TRAIN_AGENT_NAME",
    "VALIDATION_AGENT_NAME",
    "DatasetRoleError",
    "NoisyRLHFDataset",
    "UndecodableImageError",
    "decode_image_entry",
    "find_undecodable_images",
    "is_training_dataset",
]
