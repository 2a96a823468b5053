"""Facts about the Python that runs lmms-eval: package versions, where lmms-eval's tasks live, vLLM.

lmms-eval may live in another interpreter than ours (``--lmms-python``), so it is probed in a
subprocess; ``find_spec`` locates packages without importing them (no torch / CUDA start-up).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Distributions recorded in the manifest.
RECORDED_PACKAGES = (
    "lmms-eval",
    "vllm",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "qwen-vl-utils",
    "verl",
    "noisygrpo",
)

_PROBE = r"""
import importlib.metadata as metadata, importlib.util, json, os, sys
versions = {}
for name in json.loads(sys.argv[1]):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
spec = importlib.util.find_spec("lmms_eval")
origin = spec.origin if spec is not None else None
print(json.dumps({
    "python": sys.executable,
    "python_version": sys.version.split()[0],
    "versions": versions,
    "lmms_eval_tasks_dir": os.path.join(os.path.dirname(origin), "tasks") if origin else None,
    "vllm_importable": importlib.util.find_spec("vllm") is not None,
}))
"""


@dataclass(frozen=True)
class PythonProbe:
    python: str
    python_version: str
    versions: dict[str, str | None]
    lmms_eval_tasks_dir: Path | None
    vllm_importable: bool


def probe_python(python: str = sys.executable, packages: tuple[str, ...] = RECORDED_PACKAGES) -> PythonProbe:
    """Probe ``python``; raises RuntimeError naming the interpreter when it cannot run."""
    try:
        completed = subprocess.run(
            [python, "-c", _PROBE, json.dumps(list(packages))], capture_output=True, text=True, check=False
        )
    except OSError as error:
        raise RuntimeError(f"cannot run Python interpreter {python!r}: {error}") from error
    if completed.returncode != 0:
        raise RuntimeError(f"probing {python!r} failed (exit {completed.returncode}): {completed.stderr.strip()}")
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    tasks_dir = found["lmms_eval_tasks_dir"]
    return PythonProbe(
        python=found["python"],
        python_version=found["python_version"],
        versions=found["versions"],
        lmms_eval_tasks_dir=Path(tasks_dir) if tasks_dir else None,
        vllm_importable=bool(found["vllm_importable"]),
    )
