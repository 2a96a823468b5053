"""The ``torch.<device>``-like namespace verl's CPU platform hands out as ``device_module``.

verl calls ``get_torch_device().<fn>()`` all over (memory logging, ``empty_cache`` between
phases, RNG state in checkpoints, ``synchronize`` around weight sync). ``torch.cpu`` has
only a handful of these, so this module provides the whole surface verl touches: streams,
events and ``synchronize`` come from ``torch.cpu``, RNG state from the global CPU generator,
and every memory/cache function is a no-op that reports 0 bytes (there is no separate
device memory to account for).
"""

from __future__ import annotations

import os
import platform as _host_platform
from typing import Any

import torch

# Streams/events: torch.cpu already implements them (no-op semantics on CPU).
Stream = torch.cpu.Stream
Event = torch.cpu.Event
StreamContext = torch.cpu.StreamContext
current_stream = torch.cpu.current_stream
stream = torch.cpu.stream

DEVICE = "cpu"


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return True


def current_device() -> str:
    """verl moves tensors with ``.to(get_device_id())``: the device string is what works on CPU."""
    return DEVICE


def device_count() -> int:
    """One logical device per process (the Ray "GPU" it was scheduled on)."""
    return 1


def set_device(device: Any) -> None:
    return None


def synchronize(device: Any = None) -> None:
    return None


def get_device_name(device: Any = None) -> str:
    return _host_platform.processor() or _host_platform.machine() or DEVICE


def get_device_capability(device: Any = None) -> tuple[None, None]:
    return None, None


# --- RNG: the CPU generator is the device generator -------------------------------------


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    torch.manual_seed(seed)


def get_rng_state(device: Any = None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(new_state: torch.Tensor, device: Any = None) -> None:
    torch.set_rng_state(new_state)


# --- memory / cache: nothing to free or count on the host ------------------------------


def empty_cache() -> None:
    return None


def ipc_collect() -> None:
    return None


def memory_allocated(device: Any = None) -> int:
    return 0


def memory_reserved(device: Any = None) -> int:
    return 0


def max_memory_allocated(device: Any = None) -> int:
    return 0


def max_memory_reserved(device: Any = None) -> int:
    return 0


def reset_peak_memory_stats(device: Any = None) -> None:
    return None


def reset_accumulated_memory_stats(device: Any = None) -> None:
    return None


def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
    return None


def mem_get_info(device: Any = None) -> tuple[int, int]:
    """(free, total) host memory in bytes; (0, 0) where the OS does not say."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return 0, 0


def get_device_properties(device: Any = None) -> Any:
    """Minimal stand-in for ``torch.cuda.get_device_properties`` (name, total_memory in bytes)."""
    from types import SimpleNamespace

    return SimpleNamespace(name=get_device_name(), total_memory=mem_get_info()[1])
