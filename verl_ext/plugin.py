"""Registers NoisyGRPO's pieces with verl's registries.

Imported by verl itself through the ``verl.plugins`` entry point (see setup.py) on every
``import verl``, so the trainer process, agent-loop workers and reward workers all see the
same registrations. verl swallows import errors of plugins, so ``tests/test_plugin.py``
asserts the registrations from a fresh interpreter.

The CPU debug backend (``verl_ext.cpu``) is registered only when the environment asks for it
(``NOISYGRPO_CPU_BACKEND=1``, set by ``scripts/run_demo.sh`` and the e2e tests; Ray workers
inherit the driver's environment), so a GPU run never imports it.
"""

import os

CPU_BACKEND_ENV = "NOISYGRPO_CPU_BACKEND"

# First: importing verl's engines asks for the device platform, which must be registered by then.
if os.environ.get(CPU_BACKEND_ENV, "0") == "1":
    from verl_ext.cpu import backend  # noqa: F401  registers the "cpu" platform and the "hf" rollout

from verl_ext import (  # noqa: E402
    advantage,  # noqa: F401  registers the "noisygrpo" advantage estimator
    agent_loop,  # noqa: F401  registers the "noisygrpo_agent" agent loop
    engine,  # noqa: F401  registers the "noisygrpo_language_model" FSDP engine (vision freeze, linear LR)
)
