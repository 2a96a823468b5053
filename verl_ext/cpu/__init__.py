"""CPU debug backend for verl 0.9.1: run real verl training steps on a host without accelerators.

Importing :mod:`verl_ext.cpu.backend` registers, through verl's own extension points only:

* the ``cpu`` platform in ``verl.plugin.platform.PlatformRegistry`` (:mod:`verl_ext.cpu.platform`);
* the ``hf`` rollout (HF ``generate`` server, replica and weight-sync adapter) in verl's rollout
  registries (:mod:`verl_ext.cpu.registry`).

It is imported by :mod:`verl_ext.plugin` only when ``NOISYGRPO_CPU_BACKEND=1``, so a GPU run never
loads it. This package itself has no side effects: Ray imports ``verl_ext.cpu.worker_setup`` before
verl in each worker, and verl's import must then find the platform registered by the plugin
before anything asks for the device. A CPU run also needs the Hydra overrides and env vars of :mod:`verl_ext.cpu.overrides`
(which include the Ray setup hook of :mod:`verl_ext.cpu.worker_setup`); :func:`verl_ext.cpu.launch.run_on_cpu`
runs an entry point with them and cleans up its Ray processes::

    from verl_ext.cpu.launch import run_on_cpu
    from verl_ext.cpu.overrides import cpu_overrides

    result = run_on_cpu("recipe.noisygrpo.main_noisygrpo", [*cpu_overrides(), *my_overrides], workdir=run_dir)

Shell scripts: ``eval "$(python -m verl_ext.cpu env)"`` and ``python -m verl_ext.cpu overrides``.
"""
