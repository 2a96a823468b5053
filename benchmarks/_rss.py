"""Peak resident memory (RSS) of one workload, each measured in its own fresh child process.

A benchmark module exposes ``RSS_WORKLOADS``: name -> factory. A factory takes JSON-able keyword
arguments, builds the inputs and returns a zero-argument callable, the workload. The child
(``python -m benchmarks._rss ...``) does, in order:

1. import the benchmark module (torch, verl, ...)                -> RSS ``import_rss_mib``
2. build the inputs with the factory                             -> growth ``inputs_mib``
3. call the workload once                                        -> ``first_call_mib``
4. call it ``runs - 1`` more times                               -> ``steady_call_mib``

Before steps 2, 3 and each call of step 4, free heap pages go back to the OS
(``release_free_memory``), the RSS is read and the kernel's peak-RSS mark is reset (Linux
``/proc/self/clear_refs``); after the step the peak (``VmHWM``) is read. Nothing is kept between
calls. Reported, in MiB:

* ``peak_over_import_mib``: highest peak of steps 3-4 minus the RSS after step 1, i.e. the
  increase over the import baseline, inputs included;
* ``first_call_mib``: peak of step 3 minus the RSS before it: the first call's working memory,
  one-time lazy initialisation included (e.g. pyarrow's compute kernels, torch code pages);
* ``steady_call_mib``: largest peak of a step-4 call minus the RSS before it: the working memory
  of every later call (output included).

Where the mark cannot be reset, peaks are ``ru_maxrss`` since the process started, the steady
figure is left out (None) and ``method`` says so. The children of one call run concurrently: RSS is
per process, so they do not disturb each other's figures (only timings, and none are taken here).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import importlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks._common import REPO_ROOT, configure_threads, positive_int, thread_env

RESULT_MARKER = "RSS_RESULT "
_KIB = 1024
_MIB = 2**20


@dataclass(frozen=True)
class RssProbe:
    """One workload to measure: ``RSS_WORKLOADS[workload](**kwargs)`` of ``module``, shown as ``label``."""

    label: str
    module: str
    workload: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RssResult:
    """Memory of one probe, in MiB (2**20 bytes). See the module docstring for the steps."""

    label: str
    workload: str
    kwargs: dict[str, Any]
    import_rss_mib: float
    inputs_mib: float
    peak_over_import_mib: float
    first_call_mib: float
    steady_call_mib: float | None
    runs: int
    method: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# In the child


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int:
    """Resident set size of this process now (bytes)."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * _KIB
    import psutil

    return psutil.Process().memory_info().rss


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; the symbols of the running process include libc's
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the OS (glibc ``malloc_trim``).

    Without this, memory freed earlier (while building the inputs, or by the previous call) stays
    resident and is silently reused by the next call, hiding part of its working memory.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process to its current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def peak_rss_bytes(mark_was_reset: bool) -> int:
    """Peak RSS (bytes): since the last reset if ``mark_was_reset``, else since the process started."""
    if mark_was_reset:
        kib = _status_kib("VmHWM")
        if kib is not None:
            return kib * _KIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _KIB  # KiB on Linux


def _peak_of_call(workload: Callable[[], object]) -> tuple[int, int, bool]:
    """(RSS before, peak RSS during, whether the mark was reset) of one call of ``workload``, in bytes."""
    release_free_memory()
    before = current_rss_bytes()
    mark_was_reset = reset_peak_rss()
    result = workload()
    del result
    return before, max(peak_rss_bytes(mark_was_reset), before), mark_was_reset


def measure_in_this_process(
    factory: Callable[..., Callable[[], object]], kwargs: dict[str, Any], runs: int, import_rss: int
) -> dict[str, Any]:
    """Steps 2 to 4 of the module docstring; returns the fields of ``RssResult`` (without labels)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    workload = factory(**kwargs)
    calls = [_peak_of_call(workload) for _ in range(runs)]
    inputs_rss, first_peak, mark_was_reset = calls[0]
    steady = [peak - before for before, peak, _ in calls[1:]]
    return {
        "import_rss_mib": import_rss / _MIB,
        "inputs_mib": (inputs_rss - import_rss) / _MIB,
        "peak_over_import_mib": (max(peak for _, peak, _ in calls) - import_rss) / _MIB,
        "first_call_mib": (first_peak - inputs_rss) / _MIB,
        "steady_call_mib": max(steady) / _MIB if steady and mark_was_reset else None,
        "runs": runs,
        "method": "VmHWM after clear_refs" if mark_was_reset else "ru_maxrss since process start",
    }


def _child_main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="measure the peak RSS of one benchmark workload (child process)")
    parser.add_argument("--module", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--kwargs", default="{}", help="JSON object of the factory's keyword arguments")
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    module = importlib.import_module(args.module)
    release_free_memory()
    import_rss = current_rss_bytes()
    factory = module.RSS_WORKLOADS[args.workload]
    fields = measure_in_this_process(factory, json.loads(args.kwargs), args.runs, import_rss)
    print(RESULT_MARKER + json.dumps(fields), flush=True)


# ---------------------------------------------------------------------------------------------------
# In the parent


def _child_command(probe: RssProbe, threads: int, runs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks._rss",
        "--module",
        probe.module,
        "--workload",
        probe.workload,
        "--kwargs",
        json.dumps(probe.kwargs),
        "--runs",
        str(runs),
        "--threads",
        str(threads),
    ]


def _child_env(threads: int) -> dict[str, str]:
    env = {**os.environ, **thread_env(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def measure_peak_rss(
    probes: Sequence[RssProbe], *, threads: int, runs: int = 3, timeout_s: float = 600.0
) -> list[RssResult]:
    """Peak RSS of every probe, each in a fresh child process (all started at once); in probe order."""
    env = _child_env(threads)
    children = [
        subprocess.Popen(
            _child_command(probe, threads, runs),
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for probe in probes
    ]
    results = []
    for probe, child in zip(probes, children, strict=True):
        try:
            stdout, stderr = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise RuntimeError(f"peak-RSS probe {probe.label!r} took longer than {timeout_s:.0f} s") from None
        lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
        if child.returncode != 0 or not lines:
            raise RuntimeError(f"peak-RSS probe {probe.label!r} failed (exit {child.returncode}):\n{stderr[-4000:]}")
        fields = json.loads(lines[-1][len(RESULT_MARKER) :])
        results.append(RssResult(label=probe.label, workload=probe.workload, kwargs=dict(probe.kwargs), **fields))
    return results


RSS_TABLE_HEADERS = (
    "path",
    "inputs",
    "import RSS MiB",
    "inputs MiB",
    "peak - import MiB",
    "1st call MiB",
    "later call MiB",
)


def rss_table_rows(results: Sequence[RssResult]) -> list[list[object]]:
    """Rows for ``format_table(RSS_TABLE_HEADERS, ...)``."""
    return [
        [
            result.label,
            ", ".join(f"{key}={value}" for key, value in result.kwargs.items() if key != "impl"),
            result.import_rss_mib,
            result.inputs_mib,
            result.peak_over_import_mib,
            result.first_call_mib,
            result.steady_call_mib,
        ]
        for result in results
    ]


if __name__ == "__main__":
    _child_main()
