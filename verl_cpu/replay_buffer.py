"""verl's sync replay buffer, polling for finished rollouts every 0.1 s instead of every 2 s.

verl 0.9.1's ``ReplayBuffer`` sleeps ``poll_interval`` (2 s, not configurable) between checks for
finished rollouts, which rounds every step's generation phase up to a multiple of 2 s: on the CPU
backend, where a step's rollouts take a fraction of a second, that is most of the step. The CPU
overrides select this class through verl's own hook (``trainer.v1.sampler.custom_sampler``);
``$NOISYGRPO_CPU_POLL_INTERVAL_S`` sets the interval (default 0.1 s).
"""

from __future__ import annotations

import os
from typing import Any

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

POLL_INTERVAL_ENV = "NOISYGRPO_CPU_POLL_INTERVAL_S"
DEFAULT_POLL_INTERVAL_S = 0.1


class FinePollReplayBuffer(ReplayBuffer):
    """verl's sync replay buffer with a finer poll for finished rollouts; nothing else changes."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["poll_interval"] = float(os.environ.get(POLL_INTERVAL_ENV, DEFAULT_POLL_INTERVAL_S))
        super().__init__(*args, **kwargs)
