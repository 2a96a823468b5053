"""``manifest.json`` of an evaluation folder: written by ``evaluate_checkpoint``, read by ``tables``.

Schema (JSON object): ``status`` (running | finished | failed), ``started_at`` / ``finished_at``
(ISO 8601, UTC), ``checkpoint`` {input, kind, model_dir, merge_command}, ``tasks`` [...],
``commands`` [{label, tasks, argv, shell, returncode}], ``environment`` (variables we set; never
secrets), ``packages`` {ours, lmms_eval_python}, ``judge`` {available, api_type, model, note},
``prompt``, ``decoding``. ``tables`` only reads ``judge.available``.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def shell_line(argv: list[str] | tuple[str, ...], env: Mapping[str, str] | None = None) -> str:
    """A copy-pasteable shell line: ``VAR=value ... argv``, every word quoted as needed."""
    prefix = [f"{name}={shlex.quote(value)}" for name, value in (env or {}).items()]
    return " ".join([*prefix, shlex.join(list(argv))])


def write_manifest(path: Path, manifest: Mapping[str, Any]) -> None:
    """Write atomically (a crash mid-write leaves the previous manifest, not half a file)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def find_manifest(results_dir: Path) -> Path | None:
    """The manifest of a results folder: in it, or in its parent (``--run NAME=OUT/lmms_eval``)."""
    for folder in (results_dir, results_dir.parent):
        candidate = folder / MANIFEST_NAME
        if candidate.is_file():
            return candidate
    return None


def judge_available(results_dir: Path) -> bool | None:
    """``judge.available`` from the folder's manifest; None without a manifest (unknown).

    Raises ValueError naming the file when the manifest is not valid JSON.
    """
    path = find_manifest(results_dir)
    if path is None:
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete or fix it") from error
    judge = manifest.get("judge") if isinstance(manifest, dict) else None
    if not isinstance(judge, dict) or not isinstance(judge.get("available"), bool):
        return None
    return judge["available"]
