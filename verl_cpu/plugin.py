"""verl plugin of the CPU debug backend: registers it when ``NOISYGRPO_CPU_BACKEND=1`` (see the package docstring)."""

import os

from verl_cpu import CPU_BACKEND_ENV

if os.environ.get(CPU_BACKEND_ENV, "0") == "1":
    from verl_cpu import backend  # noqa: F401  registers the "cpu" platform and the "hf" rollout
