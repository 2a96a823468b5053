"""CPU debug backend for verl 0.9.1: run real verl training steps on a host without accelerators.

Importing this package registers, through verl's own extension points only:

* the ``cpu`` platform in ``verl.plugin.platform.PlatformRegistry`` (:mod:`verl_ext.cpu.platform`);
* the ``hf`` rollout (HF ``generate`` server, replica and weight-sync adapter) in verl's rollout
  registries (:mod:`verl_ext.cpu.registry`).

It is imported by :mod:`verl_ext.plugin` only when ``NOISYGRPO_CPU_BACKEND=1``, so a GPU run never
loads it. A CPU run also needs the Hydra overrides and env vars of :mod:`verl_ext.cpu.overrides`
(which include the Ray setup hook of :mod:`verl_ext.cpu.worker_setup`); :func:`verl_ext.cpu.launch.run_on_cpu`
runs an entry point with them and cleans up its Ray processes::

    from verl_ext.cpu.launch import run_on_cpu
    from verl_ext.cpu.overrides import cpu_overrides

    result = run_on_cpu("recipe.noisygrpo.main_noisygrpo", [*cpu_overrides(), *my_overrides], workdir=run_dir)

Shell scripts: ``eval "$(python -m verl_ext.cpu env)"`` and ``python -m verl_ext.cpu overrides``.
"""

from verl_ext.cpu.platform import CPU_PLATFORM_NAME, PlatformCPU
from verl_ext.cpu.registry import HF_ROLLOUT_NAME, register_hf_rollout

register_hf_rollout()

__all__ = ["CPU_PLATFORM_NAME", "HF_ROLLOUT_NAME", "PlatformCPU"]
