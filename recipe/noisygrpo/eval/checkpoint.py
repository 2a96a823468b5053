"""Which model folder to evaluate: a Hugging Face folder as is, or a verl FSDP checkpoint merged first.

verl 0.9.1's ``FSDPCheckpointManager`` writes ``<run>/global_step_N/actor/`` with
``fsdp_config.json`` (``world_size``), one ``model_world_size_<W>_rank_<r>.pt`` per rank and a
``huggingface/`` folder with config, tokenizer and processor (no weights unless ``hf_model`` is in
``checkpoint.save_contents``). verl's own merger turns it into a Hugging Face folder:
``python -m verl.model_merger merge --backend fsdp --local_dir <actor> --target_dir <dir>``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

FSDP_CONFIG = "fsdp_config.json"
# Written by verl's trainer into trainer.default_local_dir next to the global_step_N folders.
LATEST_STEP_FILE = "latest_checkpointed_iteration.txt"
MERGE_MARKER = "merged_from.json"
HF_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class CheckpointKind(str, Enum):
    HF = "hf"
    FSDP = "fsdp"


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """``path`` is the Hugging Face folder (HF) or the ``actor`` folder (FSDP)."""

    kind: CheckpointKind
    path: Path


def _has_hf_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in HF_WEIGHT_PATTERNS)


def _check_fsdp_actor(actor: Path) -> ResolvedCheckpoint:
    try:
        world_size = json.loads((actor / FSDP_CONFIG).read_text(encoding="utf-8"))["world_size"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{actor / FSDP_CONFIG}: unreadable or without 'world_size' ({error})") from error
    rank0 = actor / f"model_world_size_{world_size}_rank_0.pt"
    if not rank0.is_file():
        raise FileNotFoundError(f"{actor}: FSDP checkpoint without model shards ({rank0.name} missing)")
    if not (actor / "huggingface" / "config.json").is_file():
        raise FileNotFoundError(
            f"{actor}: FSDP checkpoint without huggingface/config.json, which verl's merger needs "
            "(verl saves it with every checkpoint; was the folder copied partially?)"
        )
    return ResolvedCheckpoint(CheckpointKind.FSDP, actor)


def _latest_step_actor(run_dir: Path) -> Path:
    text = (run_dir / LATEST_STEP_FILE).read_text(encoding="utf-8").strip()
    if not text.isdigit():
        raise ValueError(f"{run_dir / LATEST_STEP_FILE}: expected a step number, got {text!r}")
    return run_dir / f"global_step_{text}" / "actor"


def resolve_checkpoint(path: Path) -> ResolvedCheckpoint:
    """Classify ``path``: a HF model folder, a verl ``global_step_N/actor`` folder, ``global_step_N``, or
    a run folder (``trainer.default_local_dir``: its latest step, from ``latest_checkpointed_iteration.txt``).

    Raises FileNotFoundError / ValueError with what was expected when it is none of these.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} is a file; pass a model folder or a verl global_step_N/actor folder")
    if (path / FSDP_CONFIG).is_file():
        return _check_fsdp_actor(path)
    if (path / "actor" / FSDP_CONFIG).is_file():
        return _check_fsdp_actor(path / "actor")
    if (path / LATEST_STEP_FILE).is_file():
        actor = _latest_step_actor(path)
        if not (actor / FSDP_CONFIG).is_file():
            raise FileNotFoundError(f"{path}: {LATEST_STEP_FILE} points at {actor}, which has no {FSDP_CONFIG}")
        return _check_fsdp_actor(actor)
    if (path / "config.json").is_file():
        if not _has_hf_weights(path):
            raise FileNotFoundError(f"{path}: config.json but no weights (*.safetensors / pytorch_model*.bin)")
        return ResolvedCheckpoint(CheckpointKind.HF, path)
    raise ValueError(
        f"{path} is neither a Hugging Face model folder (config.json + weights) nor a verl FSDP checkpoint "
        f"(global_step_N/actor with {FSDP_CONFIG})"
    )


def merge_command(actor: Path, target_dir: Path, python: str = sys.executable) -> list[str]:
    """verl's own merger, as an argv."""
    return [
        python,
        "-m",
        "verl.model_merger",
        "merge",
        "--backend",
        "fsdp",
        "--local_dir",
        str(actor),
        "--target_dir",
        str(target_dir),
    ]


def already_merged(actor: Path, target_dir: Path) -> bool:
    """True when ``target_dir`` holds a finished merge of this very ``actor`` folder."""
    marker = target_dir / MERGE_MARKER
    if not (marker.is_file() and (target_dir / "config.json").is_file()):
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("actor") == str(actor.resolve())
    except ValueError:
        return False


def merge_fsdp_checkpoint(actor: Path, target_dir: Path, python: str = sys.executable, force: bool = False) -> bool:
    """Run verl's merger unless ``target_dir`` already holds this merge; returns whether it ran.

    Raises RuntimeError with the command when the merger fails.
    """
    if not force and already_merged(actor, target_dir):
        return False
    argv = merge_command(actor, target_dir, python)
    completed = subprocess.run(argv, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"verl's model merger failed (exit {completed.returncode}): {' '.join(argv)}")
    (target_dir / MERGE_MARKER).write_text(json.dumps({"actor": str(actor.resolve())}, indent=2), encoding="utf-8")
    return True
