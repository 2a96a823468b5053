"""CPU debug backend for verl 0.9.1: run real verl training steps on a host without accelerators.

Importing :mod:`verl_cpu.backend` registers, through verl's own extension points only:

* the ``cpu`` platform in ``verl.plugin.platform.PlatformRegistry`` (:mod:`verl_cpu.platform`);
* the ``hf`` rollout (HF ``generate`` server, replica and weight-sync adapter) in verl's rollout
  registries (:mod:`verl_cpu.registry`).

Its own ``verl.plugins`` entry point, :mod:`verl_cpu.plugin`, imports it only when
``NOISYGRPO_CPU_BACKEND=1``, so a GPU run never loads it. This package itself has no side effects:
Ray imports ``verl_cpu.worker_setup`` before verl in each worker, and verl's import must then find
the platform registered by that plugin before anything asks for the device, so its entry point is
named to load first (``cpu_backend``: setuptools lists a group's entry points by name;
tests/test_plugin.py checks the order in a fresh interpreter).

A CPU run also needs the Hydra overrides and env vars of :mod:`verl_cpu.overrides`
(which include the Ray setup hook of :mod:`verl_cpu.worker_setup`); :func:`verl_cpu.launch.run_on_cpu`
runs an entry point with them and cleans up its Ray processes::

    from verl_cpu.launch import run_on_cpu
    from verl_cpu.overrides import cpu_overrides

    result = run_on_cpu("recipe.noisygrpo.main_noisygrpo", [*cpu_overrides(), *my_overrides], workdir=run_dir)

Shell scripts: ``eval "$(python -m verl_cpu env)"`` and ``python -m verl_cpu overrides``.
"""

# The one switch of the backend: verl_cpu.plugin registers it (in every process of a run) only when
# this environment variable is "1"; verl_cpu.overrides.cpu_env() sets it for the runs it starts.
CPU_BACKEND_ENV = "NOISYGRPO_CPU_BACKEND"
