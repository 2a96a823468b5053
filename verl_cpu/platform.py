"""verl platform ``cpu``: lets stock verl 0.9.1 place and run its workers on a host without accelerators.

Blockers passed here (docs/design.md, "verl on a CPU"):

* 2 -- the resource pool only counts Ray "GPU"/"NPU" resources, so the platform reports
  ``"GPU"`` as its Ray resource name; the run gives Ray logical GPUs (``num_gpus``) and each
  FSDP rank is scheduled on one of them.
* 3 -- verl has no CPU platform: device ``"cpu"``, a device module whose memory/cache
  functions are no-ops (:mod:`verl_cpu.device_module`), ``current_device()`` == ``"cpu"``
  (verl moves tensors with ``.to(get_device_id())``), and the plain ``"gloo"`` backend.

Registered as ``cpu`` in :class:`verl.plugin.platform.PlatformRegistry` when
``verl_cpu`` is imported; selected by ``VERL_PLATFORM=cpu`` (see
:func:`verl_cpu.overrides.cpu_env`) or, with ``NOISYGRPO_CPU_BACKEND=1``, by auto-detection
on a host without CUDA/NPU/ROCm.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from verl_cpu import CPU_BACKEND_ENV, device_module

CPU_PLATFORM_NAME = "cpu"


@PlatformRegistry.register(platform=CPU_PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """The host CPU as verl's one "accelerator" per worker process."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Auto-detection (no VERL_PLATFORM) tries registered platforms in order and this one comes
        # last. Only claim the host when the CPU backend is switched on, so merely importing this
        # module (e.g. in a test process) leaves verl's fallback platform unchanged.
        return os.environ.get(CPU_BACKEND_ENV, "0") == "1"

    def current_device(self) -> str:  # type: ignore[override]  # verl uses it as a torch device
        return device_module.current_device()

    def device_count(self) -> int:
        return device_module.device_count()

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets CUDA_VISIBLE_DEVICES for actors holding a logical "GPU"; nothing reads it on CPU.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
