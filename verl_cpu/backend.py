"""Registers the CPU debug backend with verl: the ``cpu`` platform and the ``hf`` rollout (see the package docstring)."""

from verl_cpu.platform import CPU_PLATFORM_NAME, PlatformCPU
from verl_cpu.registry import HF_ROLLOUT_NAME, register_hf_rollout

register_hf_rollout()

__all__ = ["CPU_PLATFORM_NAME", "HF_ROLLOUT_NAME", "PlatformCPU"]
