"""Run a verl entry point (``python -m <module> <overrides>``) on the CPU backend and clean up after it.

What a CPU run needs besides the Hydra overrides of :func:`verl_cpu.overrides.cpu_overrides`:

* the environment of :func:`verl_cpu.overrides.cpu_env` (plus offline hub flags and no Ray
  usage stats), which the driver hands down to every Ray process it starts;
* its own short Ray temp dir (``ray_kwargs.ray_init._temp_dir``; unix socket paths are limited
  to ~107 bytes), removed after a successful run and kept after a failed one (Ray's logs);
* no leftovers: every process of the run inherits a unique marker variable, so processes still
  alive after the driver exits (raylet, GCS, workers -- Ray rewrites worker command lines, so
  the environment is the reliable tag) are found, reported and killed by pid. Nothing else on
  the host is touched (no ``ray stop``).

Typical use (the demo and the e2e tests)::

    result = run_on_cpu("verl.trainer.main_ppo", [*cpu_overrides(), *my_overrides], workdir=tmp)
    assert result.returncode == 0 and result.leftovers == []
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from verl_cpu.overrides import cpu_env

RUN_MARKER_ENV = "NOISYGRPO_CPU_RUN_ID"
RAY_TEMP_DIR_KEY = "ray_kwargs.ray_init._temp_dir"

# No model, dataset or telemetry traffic from a debug run (setdefault: a caller may opt in).
_QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


@dataclass(frozen=True)
class CPURunResult:
    """Outcome of :func:`run_on_cpu`.

    ``returncode``: the driver's exit status (negative: killed by that signal, e.g. on timeout).
    ``leftovers``: pids of the run's processes still alive ``grace_s`` after the driver ended
    (all of them have been killed since). ``elapsed_s``: wall time of the driver in seconds.
    """

    returncode: int
    log_path: Path
    elapsed_s: float
    leftovers: list[int]
    timed_out: bool
    ray_temp_dir: Path | None


def pids_with_env(key: str, value: str) -> list[int]:
    """Live processes (readable by this user) whose environment holds ``key=value``; zombies excluded."""
    needle = f"{key}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ:
            pids.append(int(entry.name))
    return pids


def _kill(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap_run(marker: tuple[str, str], grace_s: float) -> list[int]:
    """Wait up to ``grace_s`` for the run's processes to exit, then kill what is left; returns those pids."""
    deadline = time.monotonic() + grace_s
    alive = pids_with_env(*marker)
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = pids_with_env(*marker)
    if alive:
        _kill(alive, signal.SIGTERM)
        time.sleep(2)
        _kill(pids_with_env(*marker), signal.SIGKILL)
    return alive


def _pump(stream: TextIO, log_file: TextIO, echo: bool) -> None:
    for line in stream:
        log_file.write(line)
        log_file.flush()
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()


def run_on_cpu(
    module: str,
    overrides: Sequence[str],
    *,
    workdir: str | Path,
    log_path: str | Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 1800,
    echo: bool = False,
    grace_s: float = 15,
) -> CPURunResult:
    """Run ``python -m module *overrides`` in ``workdir`` with the CPU backend's environment.

    Args:
        module: entry point, e.g. ``"verl.trainer.main_ppo"`` or ``"recipe.noisygrpo.main_noisygrpo"``.
        overrides: Hydra overrides, normally ``[*cpu_overrides(), *yours]``. A Ray temp dir is added
            unless one is given (``ray_kwargs.ray_init._temp_dir``).
        log_path: where stdout+stderr go, appended after a header line (default ``workdir/run.log``).
        extra_env: more environment variables (win over the CPU backend's).
        timeout_s: the driver's process group is killed after this many seconds.
        echo: also stream the output to this process's stdout.
        grace_s: how long the run's processes may take to exit after the driver before they count as leftovers.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path is not None else workdir / "run.log"
    marker = (RUN_MARKER_ENV, uuid.uuid4().hex)
    env = {**os.environ, **cpu_env(), **dict(extra_env or {}), marker[0]: marker[1]}
    for key, value in _QUIET_ENV.items():
        env.setdefault(key, value)

    overrides = list(overrides)
    ray_temp_dir = None
    if not any(RAY_TEMP_DIR_KEY in override for override in overrides):
        ray_temp_dir = Path(tempfile.mkdtemp(prefix="ray_cpu_", dir="/tmp"))
        overrides.append(f"++{RAY_TEMP_DIR_KEY}={ray_temp_dir}")

    started = time.monotonic()
    timed_out = False
    # Appended, never truncated: a resumed run keeps the earlier launches' output above its own.
    log_file = open(log_path, "a")  # closed below, after the output pump has drained
    if log_file.tell() > 0:
        log_file.write("\n")
    log_file.write(f"[run_on_cpu] launch at {time.strftime('%Y-%m-%d %H:%M:%S')}: python -m {module}\n")
    log_file.flush()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *overrides],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, so a timeout can stop all of it
        )
        pump = threading.Thread(target=_pump, args=(process.stdout, log_file, echo), daemon=True)
        pump.start()
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGTERM)
            try:
                returncode = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                returncode = process.wait()
        elapsed_s = time.monotonic() - started
        # Leftovers may still hold the output pipe: reap them before waiting for the pump.
        leftovers = _reap_run(marker, grace_s)
        pump.join(timeout=30)
        if timed_out:
            log_file.write(f"\n[run_on_cpu] killed after the {timeout_s:.0f} s timeout\n")
        if leftovers:
            log_file.write(f"\n[run_on_cpu] killed processes that outlived the run: {leftovers}\n")
    finally:
        log_file.close()

    if ray_temp_dir is not None and returncode == 0 and not leftovers:
        shutil.rmtree(ray_temp_dir, ignore_errors=True)
    return CPURunResult(
        returncode=returncode,
        log_path=log_path,
        elapsed_s=elapsed_s,
        leftovers=leftovers,
        timed_out=timed_out,
        ray_temp_dir=ray_temp_dir,
    )
