"""The paper's reference rows, from ``paper_values.json`` next to this module.

The file holds the published values we know (docs/algorithm.md §6) and null for the rest; every key
must be a column key of ``table_spec`` so a typo cannot silently drop a number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from recipe.noisygrpo.eval.table_spec import all_column_keys

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
