"""Read lmms-eval 0.7.3 results JSONs of one run (one evaluation folder).

lmms-eval writes ``<output_path>/<sanitized model>/<YYYYMMDD_HHMMSS>_results.json``; its
``"results"`` object maps each task name to ``{"alias": ..., "<metric>,<filter>": value,
"<metric>_stderr,<filter>": ..., "samples": n}``; the filter is ``none`` unless a task defines a
``filter_list``. Non-numeric values occur: ``"N/A"`` stderr, ``null`` for aggregations that only
write files (MME-CoT's ``submission``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from recipe.noisygrpo.eval.manifest import judge_available

RESULTS_GLOB = "*_results.json"
DEFAULT_FILTER = "none"


@dataclass(frozen=True)
class TaskResult:
    """One task's entry of a results JSON and the file it came from."""

    task: str
    metrics: dict[str, object]
    source: Path

    def value(self, metric: str) -> float | None:
        """The finite number stored for ``metric`` (``"<metric>,none"`` first, else the only filter); else None."""
        if f"{metric},{DEFAULT_FILTER}" in self.metrics:
            raw = self.metrics[f"{metric},{DEFAULT_FILTER}"]
        else:
            filtered = [key for key in self.metrics if key.partition(",")[0] == metric and "," in key]
            if len(filtered) != 1:
                return None
            raw = self.metrics[filtered[0]]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            return None
        return float(raw)


@dataclass(frozen=True)
class RunResults:
    """Every task found under a run's folder (the latest results file wins per task).

    ``judge_available`` comes from the folder's ``manifest.json``: False means judged metrics of
    this run are meaningless; None means unknown (no manifest, e.g. lmms-eval run by hand).
    """

    name: str
    directory: Path
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    judge_available: bool | None = None

    def first_task(self, names: tuple[str, ...]) -> TaskResult | None:
        for name in names:
            if name in self.tasks:
                return self.tasks[name]
        return None


def results_files(directory: Path) -> list[Path]:
    """All ``*_results.json`` under ``directory``, oldest first (timestamped names sort by time)."""
    return sorted(directory.rglob(RESULTS_GLOB), key=lambda path: (path.name, str(path)))


def read_results_file(path: Path) -> dict[str, dict[str, object]]:
    """The ``"results"`` object of one file; raises ValueError naming the file when it is malformed."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from error
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: no 'results' object; is this an lmms-eval results JSON?")
    return {task: metrics for task, metrics in results.items() if isinstance(metrics, dict)}


def load_run(name: str, directory: Path) -> RunResults:
    """Load a run; raises FileNotFoundError when the folder has no results file at all."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"run {name!r}: {directory} is not a folder")
    files = results_files(directory)
    if not files:
        raise FileNotFoundError(
            f"run {name!r}: no {RESULTS_GLOB} under {directory} "
            "(expected lmms-eval's <dir>/<model>/<timestamp>_results.json)"
        )
    tasks: dict[str, TaskResult] = {}
    for path in files:
        for task, metrics in read_results_file(path).items():
            tasks[task] = TaskResult(task=task, metrics=metrics, source=path)
    return RunResults(name=name, directory=directory, tasks=tasks, judge_available=judge_available(directory))
