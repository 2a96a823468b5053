"""Run a verl entry point (``python -m <module> <overrides>``) on the CPU backend and clean up after it.

What a CPU run needs besides the Hydra overrides of :func:`verl_cpu.overrides.cpu_overrides`:

* the environment of :func:`verl_cpu.overrides.cpu_env` (plus offline hub flags and no Ray
  usage stats), which the driver hands down to every Ray process it starts;
* its own short Ray temp dir (``ray_kwargs.ray_init._temp_dir``; unix socket paths are limited
  to ~107 bytes), removed after a successful run and kept after a failed one (Ray's logs);
* no leftovers: the driver starts in a session of its own, and every process of the run either
  stays in that session (Ray's GCS, raylet, workers and its dashboard / runtime-env agents, which
  blank their environment) or inherits a unique marker variable (Ray rewrites worker command
  lines, so neither the command line nor the process group is a reliable tag). Processes still
  alive after the driver exits are found by either tag, reported and killed by pid. Nothing else
  on the host is touched (no ``ray stop``).
* Ctrl-C / SIGTERM reach the whole run: the first one is passed to the driver as SIGINT (it
  stops training and shuts Ray down), a second one, or a driver still alive ``interrupt_grace_s``
  later, kills the session; the result says which signal stopped the run.

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
    interrupted_by: int | None = None  # SIGINT / SIGTERM received by this process during the run


def session_pids(session_id: int) -> list[int]:
    """Live processes whose session id is ``session_id`` (``/proc/PID/stat`` field 6); zombies excluded."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == session_id:
            pids.append(int(entry.name))
    return pids


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


def run_pids(marker: tuple[str, str], session_id: int) -> list[int]:
    """Every live process of the run: in the driver's session, or carrying the run's marker variable."""
    return sorted(set(pids_with_env(*marker)) | set(session_pids(session_id)))


def _reap_run(marker: tuple[str, str], session_id: int, grace_s: float) -> list[int]:
    """Wait up to ``grace_s`` for the run's processes to exit, then kill what is left; returns those pids."""
    deadline = time.monotonic() + grace_s
    alive = run_pids(marker, session_id)
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = run_pids(marker, session_id)
    if alive:
        _kill(alive, signal.SIGTERM)
        time.sleep(2)
        _kill(run_pids(marker, session_id), signal.SIGKILL)
    return alive


class _Interrupts:
    """While installed (main thread only): SIGINT/SIGTERM are passed to the run; a second one kills it.

    The driver gets SIGINT whichever signal arrived: its Ctrl-C path stops the trainer and shuts
    Ray down. A second signal means "now": every process of the run gets SIGKILL.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, marker: tuple[str, str]):
        self.marker = marker
        self.received: int | None = None
        self.received_at = 0.0  # time.monotonic() of the first signal
        self.session_id: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def deadline(self, grace_s: float) -> float:
        """When a driver that got the interrupt but has not exited is killed."""
        return self.received_at + grace_s

    def _handle(self, signum: int, frame) -> None:
        first = self.received is None
        if first:
            self.received, self.received_at = signum, time.monotonic()
        if self.session_id is None:  # before the driver started: nothing to pass on
            raise KeyboardInterrupt
        if first:
            _kill([self.session_id], signal.SIGINT)
        else:
            _kill(run_pids(self.marker, self.session_id), signal.SIGKILL)


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
    interrupt_grace_s: float = 60,
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
        interrupt_grace_s: after Ctrl-C / SIGTERM, how long the driver may take to stop before it is killed.
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
    # Appended, never truncated: a resumed run keeps the earlier launches' output above its own.
    log_file = open(log_path, "a")  # closed below, after the output pump has drained
    if log_file.tell() > 0:
        log_file.write("\n")
    log_file.write(f"[run_on_cpu] launch at {time.strftime('%Y-%m-%d %H:%M:%S')}: python -m {module}\n")
    log_file.flush()
    try:
        with _Interrupts(marker) as interrupts:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *overrides],
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,  # its own session: a terminal's Ctrl-C reaches it only through us
            )
            interrupts.session_id = process.pid
            pump = threading.Thread(target=_pump, args=(process.stdout, log_file, echo), daemon=True)
            pump.start()
            returncode, timed_out = _wait(process, timeout_s, interrupts, interrupt_grace_s)
            elapsed_s = time.monotonic() - started
            # Leftovers may still hold the output pipe: reap them before waiting for the pump.
            leftovers = _reap_run(marker, process.pid, grace_s)
            pump.join(timeout=30)
        if timed_out:
            log_file.write(f"\n[run_on_cpu] killed after the {timeout_s:.0f} s timeout\n")
        if interrupts.received is not None:
            log_file.write(
                f"\n[run_on_cpu] stopped by {signal.Signals(interrupts.received).name} (exit {returncode})\n"
            )
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
        interrupted_by=interrupts.received,
    )


def _wait(
    process: subprocess.Popen, timeout_s: float, interrupts: _Interrupts, interrupt_grace_s: float
) -> tuple[int, bool]:
    """The driver's exit status and whether it was killed for the timeout (or for ignoring an interrupt)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if interrupts.received is not None:
            deadline = min(deadline, interrupts.deadline(interrupt_grace_s))
        try:
            return process.wait(timeout=min(1.0, max(deadline - time.monotonic(), 0.0))), False
        except subprocess.TimeoutExpired:
            if time.monotonic() < deadline:
                continue
        os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=10), interrupts.received is None
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait(), interrupts.received is None
