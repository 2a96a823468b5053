"""Ray worker-process setup hook: joins verl's worker-group processes into a plain-gloo process group.

Blocker 3, second half (not covered by the platform alone): verl's
``initialize_global_process_group_ray`` builds the backend string
``f"cpu:gloo,{device}:{backend}"``, which is ``"cpu:gloo,cpu:gloo"`` on the ``cpu`` platform
whatever the platform answers, and torch rejects the duplicate device type. verl skips its own
initialisation when ``torch.distributed`` is already initialised, so this hook, registered
through the run's Ray config (``ray_kwargs.ray_init.runtime_env.worker_process_setup_hook``,
see :func:`verl_cpu.overrides.cpu_overrides`), initialises the default group with plain
``"gloo"`` from the same environment verl's ``RayWorkerGroup`` gives each rank (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) before the worker's ``__init__`` runs.

Every other Ray process of the job (task runner, agent-loop and reward workers, rollout
servers, TransferQueue) lacks that environment and is left alone.
"""

from __future__ import annotations

import os

# Set by verl's RayWorkerGroup on each rank's actor (runtime_env env_vars).
WORKER_GROUP_ENV = ("WG_BACKEND", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_verl_worker_group_process(environ: os._Environ | dict[str, str] = os.environ) -> bool:
    return environ.get("WG_BACKEND") == "ray" and all(environ.get(key) for key in WORKER_GROUP_ENV)


def init_gloo_process_group() -> None:
    """Ray ``worker_process_setup_hook``: in a verl worker-group rank, init torch.distributed with ``"gloo"``.

    Blocks until all ``WORLD_SIZE`` ranks of the group have started (they are created together).
    """
    if not is_verl_worker_group_process():
        return
    import torch.distributed

    if torch.distributed.is_initialized():
        return
    torch.distributed.init_process_group(
        backend="gloo",
        init_method="env://",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )
