"""Per-step JSON-lines logs across launches: one file per launch, read back as one log.

verl 0.9.1's ``FileLogger`` opens its path with mode ``"wb"``, so resuming a run would empty the
metrics of every step before the resume. The entry point therefore gives each launch a file of its
own (``launch_path``): the first launch writes ``metrics.jsonl`` itself, later ones
``metrics.launch2.jsonl``, ``metrics.launch3.jsonl``, ... beside it. The trainer's per-rollout
advantage log (``advantages.jsonl``) follows the same scheme: a run killed after logging a step's
rows but before checkpointing that step trains the step again in the next launch.

``read_records`` (verl's metrics) and ``read_advantage_rows`` read every launch of a log in order; a
step logged by several launches (re-run after a crash) keeps only the rows of the latest launch that
logged it, so no step is missing and none appears twice.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

LAUNCH_NUMBER = r"\.launch(?P<number>[0-9]+)"
ADVANTAGE_LOG_NAME = "advantages.jsonl"


def file_logger_path(project_name: str, experiment_name: str) -> Path:
    """Where verl's ``FileLogger`` writes: ``$VERL_FILE_LOGGER_PATH``, else ``$VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl``."""
    explicit = os.environ.get("VERL_FILE_LOGGER_PATH")
    if explicit:
        return Path(explicit)
    root = Path(os.path.expanduser(os.environ.get("VERL_FILE_LOGGER_ROOT", ".")))
    return root / project_name / f"{experiment_name}.jsonl"


def _launch_numbers(path: Path) -> dict[int, Path]:
    pattern = re.compile(re.escape(path.stem) + LAUNCH_NUMBER + re.escape(path.suffix))
    found = {1: path} if path.exists() else {}
    if path.parent.is_dir():
        for candidate in path.parent.glob(f"{path.stem}.launch*{path.suffix}"):
            match = pattern.fullmatch(candidate.name)
            if match and int(match["number"]) > 1:
                found[int(match["number"])] = candidate
    return found


def launch_files(path: Path) -> list[Path]:
    """The files of the log ``path`` that exist, in launch order (``path`` itself first)."""
    found = _launch_numbers(Path(path))
    return [found[number] for number in sorted(found)]


def launch_path(path: Path) -> Path:
    """The file the next launch should write: ``path`` when no launch wrote it yet, else the next ``.launchN``."""
    path = Path(path)
    found = _launch_numbers(path)
    return path.with_name(f"{path.stem}.launch{max(found) + 1}{path.suffix}") if found else path


def _read_one(path: Path, check: Callable[[Any], str | None]) -> list[dict[str, Any]]:
    """The JSON objects of one file; ``check`` returns what is wrong with a record, or None."""
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            if number == len(lines):  # the run was killed while writing its last line
                warnings.warn(f"{path}:{number}: unreadable last line skipped ({error})", stacklevel=4)
                continue
            raise ValueError(f"{path}:{number}: not JSON ({error})") from error
        problem = check(record)
        if problem:
            raise ValueError(f"{path}:{number}: {problem}")
        records.append(record)
    return records


def _read_launches(path: Path, check: Callable[[Any], str | None], what: str) -> list[dict[str, Any]]:
    """Records of every launch of ``path`` in step order; a step keeps the latest launch's records."""
    files = launch_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no such {what} (nor any {Path(path).stem}.launchN{Path(path).suffix})")
    by_launch = [_read_one(file, check) for file in files]
    latest_launch = {}
    for index, records in enumerate(by_launch):
        for record in records:
            latest_launch[record["step"]] = index
    kept = [
        (record["step"], index, order)
        for index, records in enumerate(by_launch)
        for order, record in enumerate(records)
        if latest_launch[record["step"]] == index
    ]
    return [by_launch[index][order] for _, index, order in sorted(kept)]


def _metrics_problem(record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict) or "step" not in record:
        return 'expected {"step": N, "data": {...}} (verl\'s file logger format)'
    return None


def _advantage_problem(record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return 'expected {"step": N, "uid": ..., "score": ..., "advantage": ...} (the trainer\'s advantage log)'
    return None


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every ``{"step", "data"}`` record of the metrics log ``path`` over all its launches, in step order.

    A step logged by several launches keeps the records of the latest of them; within one launch
    records keep their order. Raises ``FileNotFoundError`` when no launch wrote the log and
    ``ValueError`` naming the file and line of a malformed record (a broken last line of a file is
    skipped with a warning).
    """
    records = _read_launches(path, _metrics_problem, "metrics log")
    return [{"step": int(record["step"]), "data": record["data"]} for record in records]


def advantage_log_path(log_dir: str | Path) -> Path:
    """The file this launch's advantage rows go to (``advantages.jsonl``, or its next ``.launchN``)."""
    return launch_path(Path(log_dir) / ADVANTAGE_LOG_NAME)


def read_advantage_rows(log_dir: str | Path) -> list[dict[str, Any]]:
    """Every row of the advantage log in ``log_dir`` over all launches, in step order, each step once.

    Same rules and errors as :func:`read_records`.
    """
    return _read_launches(Path(log_dir) / ADVANTAGE_LOG_NAME, _advantage_problem, "advantage log")
