"""Where a run resumes from: verl's checkpoint tracker, read without starting anything.

verl writes ``<trainer.default_local_dir>/latest_checkpointed_iteration.txt`` only after every part
of ``global_step_N/`` is saved, and a new launch with ``trainer.resume_mode=auto`` (the default)
continues from the step it names. A run stopped by Ctrl-C, SIGTERM or ``kill -9`` therefore
resumes from that step; the steps after it are trained again.
"""

from __future__ import annotations

from pathlib import Path

from verl.utils.checkpoint.checkpoint_manager import get_checkpoint_tracker_filename


def last_checkpoint(default_local_dir: str | Path) -> tuple[int, Path] | None:
    """``(step, folder)`` of the checkpoint the tracker names, or None when there is none to resume from."""
    tracker = Path(get_checkpoint_tracker_filename(str(default_local_dir)))
    try:
        step = int(tracker.read_text().strip())
    except (OSError, ValueError):  # no tracker yet, or one cut short
        return None
    folder = tracker.parent / f"global_step_{step}"
    return (step, folder) if folder.is_dir() else None


def resume_hint(default_local_dir: str | Path) -> str:
    """One sentence for a stopped run: the checkpoint the next launch starts from, or that there is none."""
    found = last_checkpoint(default_local_dir)
    if found is None:
        return (
            f"no checkpoint in {default_local_dir} (trainer.save_freq sets how often one is saved): "
            "the next launch starts from step 0."
        )
    step, folder = found
    return f"last complete checkpoint: {folder} (step {step}); run the same command again to resume from it."
