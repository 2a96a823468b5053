"""Read training metrics logged by verl 0.9.1 into per-metric step series.

Two sources:
- verl's ``file`` logger (``trainer.logger`` containing ``file``): JSON lines
  ``{"step": <int>, "data": {"<metric>": <number>, ...}}``, written to ``$VERL_FILE_LOGGER_PATH``
  (or ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl``, default root ".");
- tensorboard event files (``trainer.logger`` containing ``tensorboard``; ``$TENSORBOARD_DIR``),
  one scalar per metric and step.

When a step is logged more than once (several ``log`` calls per step), the last value wins.
Non-finite values are dropped (verl logs NaN for empty statistics).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TENSORBOARD_PREFIX = "events.out.tfevents"


@dataclass(frozen=True)
class Series:
    """One metric over training: ``steps`` (int, ascending, unique) and ``values`` (float)."""

    steps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class TrainingLog:
    name: str
    source: Path
    series: dict[str, Series]


def _to_series(points: dict[str, dict[int, float]]) -> dict[str, Series]:
    series = {}
    for metric, by_step in points.items():
        steps = sorted(by_step)
        series[metric] = Series(np.asarray(steps, dtype=np.int64), np.asarray([by_step[s] for s in steps], dtype=float))
    return series


def _add_point(points: dict[str, dict[int, float]], metric: str, step: int, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return
    points.setdefault(metric, {})[step] = float(value)


def read_jsonl(path: Path) -> dict[str, Series]:
    """Parse a ``file``-logger JSONL; raises ValueError naming the file and line when malformed.

    A broken last line is tolerated with a warning (the run was killed mid-write).
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    points: dict[str, dict[int, float]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: unreadable last line skipped ({error})", stacklevel=2)
                continue
            raise ValueError(f"{path}:{number}: not JSON ({error})") from error
        if not isinstance(record, dict) or not isinstance(record.get("data"), dict) or "step" not in record:
            raise ValueError(f'{path}:{number}: expected {{"step": N, "data": {{...}}}} (verl\'s file logger format)')
        step = int(record["step"])
        for metric, value in record["data"].items():
            _add_point(points, metric, step, value)
    return _to_series(points)


def read_tensorboard(path: Path) -> dict[str, Series]:
    """Scalars of a tensorboard event file, or of every event file in a folder."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    files = [path] if path.is_file() else sorted(path.rglob(f"{TENSORBOARD_PREFIX}*"))
    if not files:
        raise FileNotFoundError(f"{path}: no tensorboard event files ({TENSORBOARD_PREFIX}*)")
    points: dict[str, dict[int, float]] = {}
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={SCALARS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get(SCALARS, []):
            for event in accumulator.Scalars(tag):
                _add_point(points, tag, int(event.step), event.value)
    return _to_series(points)


def read_log(name: str, path: Path) -> TrainingLog:
    """Dispatch on the path: ``*.jsonl`` / ``*.json`` -> file logger; event file or folder -> tensorboard."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"log {name!r}: {path} does not exist")
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        series = read_jsonl(path)
    elif path.is_dir() or path.name.startswith(TENSORBOARD_PREFIX):
        series = read_tensorboard(path)
    else:
        raise ValueError(f"log {name!r}: {path} is neither a .jsonl file (verl file logger) nor tensorboard events")
    return TrainingLog(name=name, source=path, series=series)
