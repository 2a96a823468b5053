"""Pre-flight: the files a run needs, checked in seconds before Ray starts.

The config checks (:mod:`recipe.noisygrpo.validation`) look at settings; these look at the file
system: the model folder, every data file and its columns, and the output folder. Without them a
missing model or parquet fails after Ray has started (minutes, in a remote traceback), and a parquet
without ``reward_model`` fails only at the first rollout.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json")


def _is_local(path: str) -> bool:
    # Hub ids ("Qwen/Qwen2.5-VL-3B-Instruct") and remote URLs are verl's to resolve.
    return path.startswith(("/", ".", "~")) or Path(path).exists()


def model_problems(model_path: str) -> list[str]:
    if not _is_local(model_path):
        return []
    folder = Path(model_path).expanduser()
    key = "actor_rollout_ref.model.path"
    if not folder.is_dir():
        return [f"{key}={model_path}: no such folder; point it at a local Hugging Face model folder."]
    problems = []
    if not (folder / "config.json").is_file():
        problems.append(f"{key}={model_path}: no config.json in the folder (is it a Hugging Face model folder?).")
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        problems.append(
            f"{key}={model_path}: no processor or tokenizer files ({', '.join(PROCESSOR_FILES)}); "
            "save the processor next to the weights (AutoProcessor.save_pretrained)."
        )
    return problems


def _files(value) -> list[str]:
    if value is None:
        return []
    return [str(item) for item in value] if isinstance(value, (list, tuple, ListConfig)) else [str(value)]


def data_problems(files_by_key: dict[str, object], required_columns: list[str]) -> list[str]:
    """One message per unusable data file, naming every key that lists it (train and val may share one)."""
    import pyarrow.parquet as pq

    keys_by_file: dict[str, list[str]] = {}
    for key, files in files_by_key.items():
        for file in _files(files):
            keys_by_file.setdefault(file, [])
            if key not in keys_by_file[file]:
                keys_by_file[file].append(key)
    problems = []
    for file, keys in keys_by_file.items():
        key = ", ".join(keys)
        path = Path(file).expanduser()
        if not path.is_file():
            problems.append(
                f"{key}: {file} does not exist; prepare it with python -m data_prep.<source> or fix the path."
            )
            continue
        try:
            columns = pq.read_schema(path).names
        except Exception as error:  # pyarrow raises several types for a file that is not parquet
            problems.append(f"{key}: {file} is not a readable parquet file ({error}).")
            continue
        missing = [column for column in required_columns if column not in columns]
        if missing:
            problems.append(
                f"{key}: {file} has no column(s) {missing} (it has {columns}); "
                "write it with one of the data_prep converters, or check it with python -m data_prep.check FILE."
            )
    return problems


def output_problems(key: str, folder: str) -> list[str]:
    path = Path(folder).expanduser().absolute()
    existing = next((parent for parent in (path, *path.parents) if parent.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return [f"{key}={folder}: cannot write there ({existing} is not a writable folder); choose another folder."]
    return []


def preflight_problems(config: DictConfig) -> list[str]:
    """Every problem of the run's files, in the order a user would fix them; empty when ready."""
    data = config.data
    required = [data.get("prompt_key", "prompt"), data.get("image_key", "images"), "reward_model", "data_source"]
    problems = model_problems(str(config.actor_rollout_ref.model.path))
    problems += data_problems({"data.train_files": data.train_files, "data.val_files": data.get("val_files")}, required)
    problems += output_problems("trainer.default_local_dir", str(config.trainer.default_local_dir))
    return problems
