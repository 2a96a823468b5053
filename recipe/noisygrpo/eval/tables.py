"""The paper's tables from lmms-eval results of several runs, in Markdown, LaTeX and CSV.

    python -m recipe.noisygrpo.eval.tables --run base=OUT_BASE --run grpo=OUT_GRPO \
        --run noisygrpo=OUT_NOISY --out tables/

``--run NAME=DIR``: DIR is an ``evaluate_checkpoint`` output folder (or any folder holding
lmms-eval's ``<model>/<timestamp>_results.json``). Rows: the runs in the order given, the deltas
(percentage points) of every run against the base run and of every other run against GRPO, then
the paper's published values (``paper_values.json``). Runs named ``GROUP/LABEL`` (``3B/base``,
``3B/noisygrpo``, ``7B/base``...) get their deltas within their group. A missing task or metric
is shown as "—" and explained in the table's notes; it never stops the table.

In this module, in order: the tables as data (which lmms-eval task and metric fills each column;
metric names and scales are lmms-eval 0.7.3's: MMStar and MME-RealWorld-Lite report fractions
shown in %, AMBER's aggregations already return percentages; a column without a metric, such as
MME-CoT precision / recall / F1 from the official toolkit, only the paper row can fill); the
paper's rows (``paper_values.json``: every key must be a column key, so a typo cannot drop a
number); reading one run's results JSONs (``"results"`` maps each task to ``{"<metric>,<filter>":
value, ...}``; ``"N/A"`` and ``null`` values occur); building a table (values in each column's
displayed unit, deltas computed before rounding); rendering it (Markdown, LaTeX booktabs, CSV
with 6 digits and empty missing cells); the command line.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from recipe.noisygrpo.eval.evaluate_checkpoint import judge_available
from recipe.noisygrpo.eval.lmms_tasks import task_alias

PERCENT_OF_FRACTION = 100.0


@dataclass(frozen=True)
class Column:
    """One table column.

    Attributes:
        key: stable id ``<table>/<header>``, used by the paper-values file.
        header: column title.
        metric: lmms-eval metric name (the part before ``,<filter>``), or None.
        scale: displayed value = lmms-eval value * scale.
        lower_is_better: shown as an arrow in the header.
        needs_judge: the value is only real when an LLM judge key was set.
    """

    key: str
    header: str
    metric: str | None
    scale: float = 1.0
    lower_is_better: bool = False
    needs_judge: bool = False


@dataclass(frozen=True)
class TableSpec:
    """One table: rows are runs, columns come from one lmms-eval task.

    ``task`` is the upstream task name; results are looked up under our include-path alias first
    (``noisygrpo_<task>``, what ``evaluate_checkpoint`` runs), then the upstream name (a stock run).
    """

    key: str
    title: str
    task: str
    columns: tuple[Column, ...]
    notes: tuple[str, ...] = ()

    @property
    def task_names(self) -> tuple[str, str]:
        return (task_alias(self.task), self.task)


def _columns(table: str, spec: tuple[tuple[str, str | None], ...], **common) -> tuple[Column, ...]:
    return tuple(Column(key=f"{table}/{header}", header=header, metric=metric, **common) for header, metric in spec)


MMSTAR = TableSpec(
    key="mmstar",
    title="MMStar (accuracy, %)",
    task="mmstar",
    columns=_columns(
        "mmstar",
        (
            ("CP", "coarse perception"),
            ("FP", "fine-grained perception"),
            ("IR", "instance reasoning"),
            ("LR", "logical reasoning"),
            ("ST", "science & technology"),
            ("MA", "math"),
            ("AVG", "average"),
        ),
        scale=PERCENT_OF_FRACTION,
    ),
    notes=("AVG is lmms-eval's `average`: the mean over MMStar's 18 sub-categories.",),
)

AMBER = TableSpec(
    key="amber",
    title="AMBER generative (%)",
    task="amber_g",
    columns=(
        Column("amber/CHAIR", "CHAIR", "amber_chair", lower_is_better=True),
        Column("amber/Cover", "Cover", "amber_cover"),
        Column("amber/Hal", "Hal", "amber_hal", lower_is_better=True),
        Column("amber/Cog", "Cog", "amber_cog", lower_is_better=True),
    ),
    notes=(
        "Lower is better for CHAIR, Hal and Cog (AMBER's definitions; lmms-eval's YAML marks amber_cog "
        "higher_is_better, which we do not follow).",
        "AMBER's discriminative accuracy / F1 have no lmms-eval 0.7.3 task and are not reported.",
    ),
)

MME_REALWORLD_LITE = TableSpec(
    key="mme_realworld_lite",
    title="MME-RealWorld-Lite (accuracy, %)",
    task="mmerealworld_lite",
    columns=(Column("mme_realworld_lite/Overall", "Overall", "mme_realworld_score", scale=PERCENT_OF_FRACTION),),
)

MME_COT = TableSpec(
    key="mme_cot",
    title="MME-CoT (%)",
    task="mme_cot_reason",
    columns=(
        Column("mme_cot/Precision", "Precision", None),
        Column("mme_cot/Recall", "Recall", None),
        Column("mme_cot/F1", "F1", None),
        Column("mme_cot/JudgeAcc", "Acc (judge)", "llm_as_judge_eval", scale=PERCENT_OF_FRACTION, needs_judge=True),
    ),
    notes=(
        "Precision, recall and F1 are scored by the official MME-CoT toolkit (GPT-4o judges) from the "
        "submission files lmms-eval writes; lmms-eval 0.7.3 does not compute them.",
        "Acc (judge) is lmms-eval's `llm_as_judge_eval` on mme_cot_reason: a GPT judge's yes/no on the answer.",
    ),
)

TABLES: tuple[TableSpec, ...] = (MMSTAR, AMBER, MME_REALWORLD_LITE, MME_COT)


def all_column_keys() -> tuple[str, ...]:
    return tuple(column.key for table in TABLES for column in table.columns)


PAPER_VALUES_FILE = Path(__file__).with_name("paper_values.json")


@dataclass(frozen=True)
class PaperRow:
    """One reference row: ``values`` maps column keys to numbers in the tables' units, or None."""

    label: str
    note: str
    values: dict[str, float | None]


def _number_or_none(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def load_paper_rows(path: Path = PAPER_VALUES_FILE) -> list[PaperRow]:
    """Parse and validate the paper-values file; raises ValueError naming the file and key."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from error
    rows = document.get("rows") if isinstance(document, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected an object with a 'rows' list")
    known = set(all_column_keys())
    parsed = []
    for index, row in enumerate(rows):
        where = f"{path}: rows[{index}]"
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("label"), str)
            or not isinstance(row.get("values"), dict)
        ):
            raise ValueError(f"{where}: needs a string 'label' and a 'values' object")
        unknown = sorted(set(row["values"]) - known)
        if unknown:
            raise ValueError(f"{where}: unknown column key(s) {unknown}; known keys: {sorted(known)}")
        values = {key: _number_or_none(row["values"].get(key), f"{where}.values[{key!r}]") for key in sorted(known)}
        parsed.append(PaperRow(label=row["label"], note=str(row.get("note", "")), values=values))
    return parsed


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


DASH = "—"
CSV_DIGITS = 6
DELTA_KINDS = (RowKind.DELTA_VS_BASE, RowKind.DELTA_VS_GRPO)


def format_cell(value: float | None, kind: RowKind, decimals: int) -> str:
    """``61.23`` -> ``"61.2"``; deltas ``"+6.7"`` / ``"-0.3"`` (``"+0.0"`` when it rounds to zero); None -> "—"."""
    if value is None:
        return DASH
    rounded = round(value, decimals) or 0.0  # folds -0.0 into 0.0
    return f"{rounded:+.{decimals}f}" if kind in DELTA_KINDS else f"{rounded:.{decimals}f}"


def _header(column: Column, down_arrow: str) -> str:
    return f"{column.header} {down_arrow}" if column.lower_is_better else column.header


# --- Markdown -----------------------------------------------------------------------------------


def _markdown_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(table: BuiltTable, decimals: int) -> str:
    columns = table.spec.columns
    lines = [
        f"### {table.spec.title}",
        "",
        "| Model | " + " | ".join(_header(column, "↓") for column in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in table.rows:
        cells = [format_cell(value, row.kind, decimals) for value in row.values]
        lines.append(f"| {_markdown_escape(row.label)} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {_markdown_escape(note)}" for note in table.notes]
    return "\n".join(lines) + "\n"


# --- LaTeX --------------------------------------------------------------------------------------

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "`": "",
}
# Applied after escaping: symbols our labels and notes use.
_LATEX_SYMBOLS = {"Δ": r"$\Delta$", DASH: "---", "§": r"\S{}", "↓": r"$\downarrow$"}


def latex_escape(text: str) -> str:
    escaped = "".join(_LATEX_SPECIALS.get(char, char) for char in text)
    for symbol, replacement in _LATEX_SYMBOLS.items():
        escaped = escaped.replace(symbol, replacement)
    return escaped


def render_latex(table: BuiltTable, decimals: int) -> str:
    columns = table.spec.columns
    width = len(columns) + 1
    lines = [
        f"% {latex_escape(table.spec.title)}; generated by recipe.noisygrpo.eval.tables; needs \\usepackage{{booktabs}}",
        "\\begin{tabular}{l" + "r" * len(columns) + "}",
        "\\toprule",
        "Model & " + " & ".join(latex_escape(_header(column, "↓")) for column in columns) + " \\\\",
        "\\midrule",
    ]
    previous: RowKind | None = None
    for row in table.rows:
        if previous is not None and row.kind != previous:
            lines.append("\\midrule")
        cells = [latex_escape(format_cell(value, row.kind, decimals)) for value in row.values]
        lines.append(f"{latex_escape(row.label)} & " + " & ".join(cells) + " \\\\")
        previous = row.kind
    lines.append("\\bottomrule")
    lines += [f"\\multicolumn{{{width}}}{{l}}{{\\footnotesize {latex_escape(note)}}} \\\\" for note in table.notes]
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


# --- CSV ----------------------------------------------------------------------------------------


def _csv_value(value: float | None) -> str:
    return "" if value is None else repr(round(value, CSV_DIGITS) or 0.0)


def render_csv(table: BuiltTable, decimals: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "kind", *(column.header for column in table.spec.columns)])
    for row in table.rows:
        writer.writerow([row.label, row.kind.value, *(_csv_value(value) for value in row.values)])
    return buffer.getvalue()


RENDERERS: dict[str, Callable[[BuiltTable, int], str]] = {"md": render_markdown, "tex": render_latex, "csv": render_csv}


def parse_run(text: str) -> tuple[str, Path]:
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"--run {text!r} must look like NAME=RESULTS_DIR")
    return name, Path(directory)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.noisygrpo.eval.tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", action="append", required=True, type=parse_run, metavar="NAME=RESULTS_DIR")
    parser.add_argument("--out", type=Path, required=True, help="folder for <table>.md/.tex/.csv and tables.md")
    parser.add_argument("--base-label", default=Roles.base, help="label of the base-model run (default: base)")
    parser.add_argument("--grpo-label", default=Roles.grpo, help="label of the GRPO run (default: grpo)")
    parser.add_argument("--paper-values", type=Path, default=PAPER_VALUES_FILE, help="paper reference values JSON")
    parser.add_argument("--no-paper", action="store_true", help="leave the paper row out")
    parser.add_argument("--decimals", type=int, default=1, help="digits after the decimal point")
    return parser


def write_tables(tables: list[BuiltTable], out: Path, decimals: int) -> list[Path]:
    """Write ``<key>.<ext>`` per table and format, plus ``tables.md`` with every table; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        for extension, render in RENDERERS.items():
            path = out / f"{table.spec.key}.{extension}"
            path.write_text(render(table, decimals), encoding="utf-8")
            written.append(path)
    combined = out / "tables.md"
    combined.write_text("\n".join(render_markdown(table, decimals) for table in tables), encoding="utf-8")
    written.append(combined)
    return written


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [name for name, _ in args.run]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    try:
        if duplicates:
            raise ValueError(f"run names must be unique: {duplicates}")
        runs = [load_run(name, directory) for name, directory in args.run]
        paper_rows = [] if args.no_paper else load_paper_rows(args.paper_values)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for run in runs:
        for task in run.tasks.values():
            print(f"[tables] {run.name}: {task.task} <- {task.source}")
    roles = Roles(base=args.base_label, grpo=args.grpo_label)
    tables = [build_table(spec, runs, paper_rows, roles) for spec in TABLES]
    for path in write_tables(tables, args.out, args.decimals):
        print(f"[tables] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
