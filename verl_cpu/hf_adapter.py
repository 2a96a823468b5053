"""``BaseRollout`` adapter of the ``hf`` rollout, living in each FSDP worker (hybrid engine).

verl's ``ActorRolloutRefWorker.update_weights`` hands it a generator of ``(name, full tensor)``
pairs (FSDP2 DTensors are gathered with ``full_tensor()`` as the generator advances, a
collective every rank must join); the replica's leader rank ships them in buckets to its
:class:`~verl_cpu.hf_server.HFRolloutServer`. ``resume``/``release`` are no-ops: the
server keeps its weights in host memory. A LoRA actor's adapters are merged on the server
(:mod:`verl_cpu.lora`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout

from verl_cpu.hf_replica import hf_server_actor_name
from verl_cpu.lora import base_weight_name, lora_deltas


class HFServerAdapter(BaseRollout):
    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.is_leader = rank % rollout_world_size == 0
        self.bucket_bytes = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
        self._server: ray.actor.ActorHandle | None = None

    @property
    def server(self) -> ray.actor.ActorHandle:
        # Looked up lazily: the server is launched after the hybrid engine builds this adapter.
        if self._server is None:
            self._server = ray.get_actor(hf_server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]],
        wire_format: str = "named_tensors",
        global_steps: int | None = None,
        peft_config: Any = None,
        **kwargs: Any,
    ):
        if wire_format != "named_tensors":
            raise ValueError(
                f"the CPU (hf) rollout takes weights as full tensors only, got wire_format={wire_format!r}; "
                "leave the weight-sync settings at verl's defaults, or use the vLLM rollout on a GPU"
            )
        if peft_config is not None and kwargs.get("base_sync_done", True):
            # A LoRA step: only the adapter matrices come; the server merges them into its base copy.
            deltas = lora_deltas(weights, peft_config)  # every rank consumes the generator
            if self.is_leader:
                await self.server.apply_lora.remote(deltas, global_steps)
            return
        if peft_config is not None:  # the LoRA base sync: full weights under PEFT's names
            weights = ((base_weight_name(name), tensor) for name, tensor in weights)
        if self.is_leader:
            await self.server.begin_weight_update.remote()
        bucket: dict[str, torch.Tensor] = {}
        bucket_size = 0
        for name, tensor in weights:  # every rank advances the generator: full_tensor() is a collective
            if not self.is_leader:
                continue
            bucket[name] = tensor.detach().to("cpu").contiguous()
            bucket_size += tensor.numel() * tensor.element_size()
            if bucket_size >= self.bucket_bytes:
                await self.server.load_weights.remote(bucket)
                bucket, bucket_size = {}, 0
        if self.is_leader:
            if bucket:
                await self.server.load_weights.remote(bucket)
            await self.server.finish_weight_update.remote(global_steps)
