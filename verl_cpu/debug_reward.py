"""A trivial rule reward for CPU smoke runs (``reward.custom_reward_function.path=pkg://verl_cpu.debug_reward``).

A random-weight tiny model never answers correctly, so a correctness reward would be 0 for
every rollout and every GRPO advantage would vanish. This reward is a stable pseudo-random
function of the response text instead, so the rollouts of one group get different scores and
the policy-gradient loss is not trivially zero.
"""

from __future__ import annotations

import zlib
from typing import Any

_HASH_BUCKETS = 1000


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """``score`` = text hash in [0, 1] (CRC32 of the UTF-8 text, bucketed) + 1 if ``ground_truth`` occurs in it.

    Returns verl's dict form: ``score`` is the reward, the other keys are logged as extra info.
    """
    text_hash = (zlib.crc32(solution_str.encode("utf-8")) % _HASH_BUCKETS) / (_HASH_BUCKETS - 1)
    hit = float(bool(ground_truth) and str(ground_truth).lower() in solution_str.lower())
    return {"score": text_hash + hit, "text_hash": text_hash, "hit": hit}
