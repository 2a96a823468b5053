"""Table contents, independent of output format: rows of runs, deltas and paper values, plus notes.

Values are in each column's displayed unit (``Column.scale`` applied); deltas are differences of
those, in percentage points, computed before rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from recipe.noisygrpo.eval.paper import PaperRow
from recipe.noisygrpo.eval.results import RunResults
from recipe.noisygrpo.eval.table_spec import Column, TableSpec

MISSING_NOTE = (
    "—: not available. In a run row: see the notes below. In the paper row: not among the published "
    "values we know (docs/algorithm.md §6)."
)


class RowKind(str, Enum):
    RUN = "run"
    DELTA_VS_BASE = "delta_vs_base"
    DELTA_VS_GRPO = "delta_vs_grpo"
    PAPER = "paper"


@dataclass(frozen=True)
class Row:
    """One table row; ``values`` are in the column's displayed unit (deltas: percentage points)."""

    label: str
    kind: RowKind
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class BuiltTable:
    spec: TableSpec
    rows: tuple[Row, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Roles:
    """Run labels (the part after the last "/", case-insensitive) of the two reference runs."""

    base: str = "base"
    grpo: str = "grpo"


def split_run_name(name: str) -> tuple[str, str]:
    """``"3B/noisygrpo"`` -> ``("3B", "noisygrpo")``; ``"base"`` -> ``("", "base")``."""
    group, _, label = name.rpartition("/")
    return group, label


def column_value(run: RunResults, spec: TableSpec, column: Column) -> tuple[float | None, str | None]:
    """(value in displayed units, None) or (None, why it is missing); (None, None) for columns lmms-eval never fills."""
    if column.metric is None:
        return None, None
    task = run.first_task(spec.task_names)
    if task is None:
        return None, f"{run.name}: no `{spec.task}` results."
    if column.needs_judge and run.judge_available is False:
        return None, f"{run.name}: evaluated without an LLM judge key; judged metrics omitted."
    value = task.value(column.metric)
    if value is None:
        return (
            None,
            f"{run.name}: metric `{column.metric}` missing or not a number in `{task.task}` ({task.source.name}).",
        )
    return value * column.scale, None


def _difference(values: Sequence[float | None], reference: Sequence[float | None]) -> tuple[float | None, ...]:
    return tuple(None if a is None or b is None else a - b for a, b in zip(values, reference, strict=True))


def _delta_rows(runs: list[RunResults], run_rows: dict[str, Row], roles: Roles) -> list[Row]:
    """Delta rows of one group: every run minus base, then every non-reference run minus GRPO."""
    by_label = {split_run_name(run.name)[1].lower(): run for run in runs}
    base, grpo = by_label.get(roles.base.lower()), by_label.get(roles.grpo.lower())
    references = {run.name for run in (base, grpo) if run is not None}
    rows = []
    for reference, kind in ((base, RowKind.DELTA_VS_BASE), (grpo, RowKind.DELTA_VS_GRPO)):
        if reference is None:
            continue
        skip = {base.name} if kind is RowKind.DELTA_VS_BASE else references
        for run in runs:
            if run.name in skip:
                continue
            values = _difference(run_rows[run.name].values, run_rows[reference.name].values)
            rows.append(Row(label=f"Δ {run.name} - {reference.name}", kind=kind, values=values))
    return rows


def build_table(spec: TableSpec, runs: list[RunResults], paper_rows: list[PaperRow], roles: Roles) -> BuiltTable:
    """Rows (runs and deltas per group, then paper rows) and notes of one table."""
    notes: list[str] = []
    run_rows: dict[str, Row] = {}
    for run in runs:
        cells = [column_value(run, spec, column) for column in spec.columns]
        notes += [reason for _, reason in cells if reason is not None]
        run_rows[run.name] = Row(label=run.name, kind=RowKind.RUN, values=tuple(value for value, _ in cells))

    groups: dict[str, list[RunResults]] = {}
    for run in runs:
        groups.setdefault(split_run_name(run.name)[0], []).append(run)
    rows: list[Row] = []
    for members in groups.values():
        rows += [run_rows[run.name] for run in members]
        rows += _delta_rows(members, run_rows, roles)
    for paper in paper_rows:
        rows.append(Row(paper.label, RowKind.PAPER, tuple(paper.values.get(column.key) for column in spec.columns)))
        notes.append(f"{paper.label}: {paper.note}.")

    if any(value is None for row in rows for value in row.values):
        notes.insert(0, MISSING_NOTE)
    return BuiltTable(spec=spec, rows=tuple(rows), notes=tuple(dict.fromkeys(notes)) + spec.notes)
