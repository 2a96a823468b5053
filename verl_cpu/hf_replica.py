"""``RolloutReplica`` for the ``hf`` rollout: one :class:`~verl_cpu.hf_server.HFRolloutServer` actor per replica.

Blocker 5 (docs/design.md): verl 0.9.1 ships only vllm/sglang/trtllm replicas. In hybrid mode
(the sync trainer) ``LLMServerManager`` gives each replica the FSDP workers it shares a node
with; the server actor is pinned to that node and named so that the trainer-side
:class:`~verl_cpu.hf_adapter.HFServerAdapter` finds it with ``ray.get_actor``.
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutReplica

from verl_cpu.hf_server import HFRolloutServer

HF_SERVER_NAME_PREFIX = "hf_server"


def hf_server_actor_name(replica_rank: int, role: str = "", name_suffix: str = "") -> str:
    """Ray actor name of a replica's server; ``role`` is "", "reward" or "teacher" as in verl's replicas."""
    role_part = f"{role}_" if role else ""
    return f"{HF_SERVER_NAME_PREFIX}_{role_part}{replica_rank}{name_suffix}"


class HFReplica(RolloutReplica):
    """A replica whose server generates with ``transformers`` on the host CPU."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(HFRolloutServer)

    def _role(self) -> str:
        if self.is_reward_model:
            return "reward"
        if self.is_teacher_model:
            return "teacher"
        return ""

    async def launch_servers(self):
        name = hf_server_actor_name(self.replica_rank, self._role(), self.name_suffix)
        options: dict = {"name": name, "max_concurrency": self.max_concurrency}
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        server = self.server_class.options(**options).remote(
            config=self.config,
            model_config=self.model_config,
            replica_rank=self.replica_rank,
            rollout_mode=self.rollout_mode,
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        # Only a key for verl's load balancer: this server has no HTTP endpoint.
        self._server_address = f"ray://{name}"
