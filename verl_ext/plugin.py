"""Registers NoisyGRPO's pieces with verl's registries.

Imported by verl itself through the ``verl.plugins`` entry point (see setup.py) on every
``import verl``, so the trainer process, agent-loop workers and reward workers all see the
same registrations. verl swallows import errors of plugins, so ``tests/test_plugin.py``
asserts the registrations from a fresh interpreter.

The CPU debug backend is a separate package with its own entry point (``verl_cpu.plugin``).
"""

from verl_ext import (
    advantage,  # noqa: F401  registers the "noisygrpo" advantage estimator
    agent_loop,  # noqa: F401  registers the "noisygrpo_agent" agent loop
    engine,  # noqa: F401  registers the "noisygrpo_language_model" FSDP engine (vision freeze, linear LR)
)
