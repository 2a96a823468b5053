"""Helpers shared by the benchmark scripts: threads, timing, tables, JSON reports and machine info.

Every script follows the same shape: parse ``add_common_arguments`` options, call ``configure_threads``
and ``configure_malloc`` (both change the whole process: run benchmarks as their own process), time
its cases with ``time_cases`` (warm-up, then interleaved repeats; best and median), print
``format_table`` tables and write one JSON report made by ``report_header`` with ``write_json``.
Peak memory lives in ``benchmarks._rss``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"

# Thread-pool sizes read by the native libraries of a process when they start (children inherit them).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

# A timing sample lasts at least this long (seconds): fast cases are called several times per sample.
DEFAULT_MIN_SAMPLE_S = 0.02

REPORTED_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "pyarrow", "pandas", "verl", "psutil")


# ---------------------------------------------------------------------------------------------------
# Threads


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that pin the native thread pools to ``threads`` (for child processes)."""
    return {name: str(threads) for name in THREAD_ENV_VARS}


def configure_threads(threads: int) -> None:
    """Use ``threads`` threads in torch (intra-op and, if still settable, inter-op) and pyarrow.

    Also exports the ``OMP_NUM_THREADS``-style variables so child processes start with the same pools.
    Both sides of every comparison run in the same process after this call, so they share the setting.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    os.environ.update(thread_env(threads))
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # settable once, before any inter-op work; intra-op is what these kernels use
        pass
    try:
        import pyarrow

        pyarrow.set_cpu_count(threads)
    except ImportError:
        pass


# ---------------------------------------------------------------------------------------------------
# Allocator

# glibc's default mmap threshold is dynamic: freeing a block of up to 32 MiB raises it, and freeing a lot
# at once trims the heap again. Whether a 28 MiB temporary (a 1536^2 RGB float32 tensor) is reused or
# re-faulted page by page (7000 faults, twice the reference's time) then depends on what ran before.
# "fixed" pins both thresholds so freed blocks are reused: reproducible, and every side's best case.
MALLOC_MODES = ("fixed", "default")
FIXED_MMAP_THRESHOLD_BYTES = 256 * 2**20
FIXED_TRIM_THRESHOLD_BYTES = 512 * 2**20
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def configure_malloc(mode: str) -> dict[str, Any]:
    """Set the C allocator's behaviour for this process and its children; returns what was applied.

    ``"fixed"``: glibc mmap threshold 256 MiB and trim threshold 512 MiB (``mallopt`` here, the
    ``MALLOC_*_`` environment variables for children), so freed large blocks are reused rather than
    returned and re-faulted. ``"default"``: leave glibc's dynamic thresholds alone. ``applied`` is
    False where the C library has no ``mallopt`` (not glibc).
    """
    if mode not in MALLOC_MODES:
        raise ValueError(f"malloc mode must be one of {MALLOC_MODES}, got {mode!r}")
    if mode == "default":
        return {"mode": mode, "applied": True}
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(FIXED_MMAP_THRESHOLD_BYTES)
    os.environ["MALLOC_TRIM_THRESHOLD_"] = str(FIXED_TRIM_THRESHOLD_BYTES)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        applied = False
    else:
        applied = (
            mallopt(_M_MMAP_THRESHOLD, FIXED_MMAP_THRESHOLD_BYTES) == 1
            and mallopt(_M_TRIM_THRESHOLD, FIXED_TRIM_THRESHOLD_BYTES) == 1
        )
    return {
        "mode": mode,
        "mmap_threshold_bytes": FIXED_MMAP_THRESHOLD_BYTES,
        "trim_threshold_bytes": FIXED_TRIM_THRESHOLD_BYTES,
        "applied": applied,
    }


# ---------------------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of one case (seconds per call).

    Attributes:
        best_s: per-call time of the fastest sample; the figure least disturbed by other work on a
            shared machine.
        median_s: per-call time of the median sample.
        repeats: timed samples (after the warm-up calls, which are not counted).
        calls_per_sample: back-to-back calls in each sample (more for fast cases).
    """

    best_s: float
    median_s: float
    repeats: int
    calls_per_sample: int

    @property
    def best_per_s(self) -> float:
        """Calls per second of the fastest call."""
        return 1.0 / self.best_s

    @property
    def median_per_s(self) -> float:
        """Calls per second of the median call."""
        return 1.0 / self.median_s

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "best_per_s": self.best_per_s, "median_per_s": self.median_per_s}


def _no_sync() -> None:
    return None


def _sample(case: Callable[[], object], calls: int, sync: Callable[[], None]) -> float:
    """Seconds per call of ``calls`` back-to-back calls (the last result is freed after the clock stops)."""
    result = None
    start = time.perf_counter()
    for _ in range(calls):
        result = case()
        sync()
    elapsed = time.perf_counter() - start
    del result
    return elapsed / calls


def time_cases(
    cases: Mapping[str, Callable[[], object]],
    *,
    warmup: int,
    repeats: int,
    min_sample_s: float = DEFAULT_MIN_SAMPLE_S,
    sync: Callable[[], None] = _no_sync,
) -> dict[str, Timing]:
    """Time every zero-argument callable of ``cases``: warm-up calls, then ``repeats`` interleaved rounds.

    Each case first gets ``max(warmup, 1)`` untimed calls; the last one sizes its sample: a sample is
    as many back-to-back calls as fill ``min_sample_s`` (at least one), reported per call, so
    sub-millisecond cases are not at the mercy of the clock and of single interruptions. Each round
    takes one sample of every case, starting from a different case each round, so a burst of load
    from other processes hits all cases alike and the ratios between them stay fair. The garbage
    collector runs once before the rounds and is off during them (as in ``timeit``). ``sync`` runs
    after every call, inside the timed region (e.g. ``torch.cuda.synchronize``).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(cases)
    calls: dict[str, int] = {}
    for name in names:
        for _ in range(max(warmup, 1) - 1):
            cases[name]()
            sync()
        one_call_s = _sample(cases[name], 1, sync)
        calls[name] = max(1, math.ceil(min_sample_s / max(one_call_s, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for round_index in range(repeats):
            first = round_index % len(names)
            for name in names[first:] + names[:first]:
                samples[name].append(_sample(cases[name], calls[name], sync))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        name: Timing(
            best_s=min(times), median_s=statistics.median(times), repeats=len(times), calls_per_sample=calls[name]
        )
        for name, times in samples.items()
    }


def speedup(baseline_s: float, candidate_s: float) -> float:
    """How many times faster the candidate is than the baseline (> 1: faster), from seconds per call."""
    return baseline_s / candidate_s


# ---------------------------------------------------------------------------------------------------
# Tables and JSON


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None) -> str:
    """Plain-text table: numbers right-aligned, text left-aligned, one space-padded column per header."""
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [all(_is_number(row[col]) for row in rows) if rows else False for col in range(len(headers))]
    widths = [max([len(header)] + [len(row[col]) for row in cells]) for col, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if is_numeric else value.ljust(width)
            for value, width, is_numeric in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    out = [] if title is None else [title]
    out += [line(list(headers)), line(["-" * width for width in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return format_number(value)
    return "-" if value is None else str(value)


def format_number(value: float) -> str:
    """Three significant digits, without scientific notation for the usual benchmark magnitudes."""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100 or magnitude == 0:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2e}"


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (NaN/inf rejected, so the file is valid JSON); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, allow_nan=False, sort_keys=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def default_output_path(benchmark: str, quick: bool) -> Path:
    """``benchmarks/results/<name>.json``, or ``<name>.quick.json`` for ``--quick`` runs."""
    return RESULTS_DIR / f"{benchmark}{'.quick' if quick else ''}.json"


# ---------------------------------------------------------------------------------------------------
# Machine info and report skeleton


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            fields = dict(
                (key.strip(), value.strip())
                for key, _, value in (line.partition(":") for line in cpuinfo)
                if key.strip() in ("model name", "cpu family", "model")
            )
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name", platform.processor() or platform.machine())
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_parallel_backend() -> str | None:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.partition(":")[2].strip()
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (runnable processes), or None where the OS has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, memory, OS, Python, package versions, torch threads and GPU (if any)."""
    try:
        import psutil

        memory_gib: float | None = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gib = None
    usable_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = torch.cuda.is_available()
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _package_version(name) for name in REPORTED_PACKAGES},
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch_parallel_backend": _torch_parallel_backend(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
    }


def report_header(benchmark: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The common head of a JSON report: name, UTC time, machine, the run's config, load at start."""
    return {
        "benchmark": benchmark,
        "schema_version": 1,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": dict(config),
        "load_average_start": load_average(),
    }


def finish_report(report: dict[str, Any], started: float) -> dict[str, Any]:
    """Add the load average at the end and the run's wall time (seconds) to ``report``."""
    report["load_average_end"] = load_average()
    report["wall_time_s"] = round(time.perf_counter() - started, 2)
    return report


# ---------------------------------------------------------------------------------------------------
# Command line


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every benchmark takes: --quick, --threads, --warmup, --repeats, --output, --no-rss, --malloc."""
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (under a minute)")
    parser.add_argument("--threads", type=positive_int, default=1, help="threads for both sides (default 1)")
    parser.add_argument("--warmup", type=non_negative_int, default=None, help="untimed calls per case")
    parser.add_argument("--repeats", type=positive_int, default=None, help="timed calls per case")
    parser.add_argument("--output", type=Path, default=None, help="JSON report path (default benchmarks/results/)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--malloc",
        choices=MALLOC_MODES,
        default="fixed",
        help="glibc thresholds: fixed (default; large freed blocks reused, reproducible) or glibc's dynamic default",
    )
