"""Registers the ``hf`` rollout in verl's two rollout registries (replica/server side and worker side)."""

from __future__ import annotations

from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.replica import RolloutReplicaRegistry

HF_ROLLOUT_NAME = "hf"
HF_ADAPTER_FQN = "verl_cpu.hf_adapter.HFServerAdapter"


def _load_hf_replica():
    from verl_cpu.hf_replica import HFReplica

    return HFReplica


def register_hf_rollout() -> None:
    """``rollout.name=hf``: ``LLMServerManager`` builds :class:`HFReplica`; each FSDP worker builds
    :class:`HFServerAdapter` (verl's ``get_rollout_class`` looks up ``(name, "async")``)."""
    RolloutReplicaRegistry.register(HF_ROLLOUT_NAME, _load_hf_replica)
    # verl exposes this registry as a module-level dict keyed by (name, mode) -> class path.
    rollout_base._ROLLOUT_REGISTRY[(HF_ROLLOUT_NAME, "async")] = HF_ADAPTER_FQN
