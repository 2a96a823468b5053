"""The paper's tables from lmms-eval results of several runs, in Markdown, LaTeX and CSV.

    python -m recipe.noisygrpo.eval.tables --run base=OUT_BASE --run grpo=OUT_GRPO \\
        --run noisygrpo=OUT_NOISY --out tables/

``--run NAME=DIR``: DIR is an ``evaluate_checkpoint`` output folder (or any folder holding
lmms-eval's ``<model>/<timestamp>_results.json``). Rows: the runs in the order given, the deltas
(percentage points) of every run against the base run and of every other run against GRPO, then
the paper's published values (``paper_values.json``). Runs named ``GROUP/LABEL`` (``3B/base``,
``3B/noisygrpo``, ``7B/base``...) get their deltas within their group. A missing task or metric
is shown as "—" and explained in the table's notes; it never stops the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipe.noisygrpo.eval.paper import PAPER_VALUES_FILE, load_paper_rows
from recipe.noisygrpo.eval.render import RENDERERS, render_markdown
from recipe.noisygrpo.eval.results import load_run
from recipe.noisygrpo.eval.table_build import BuiltTable, Roles, build_table
from recipe.noisygrpo.eval.table_spec import TABLES


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
