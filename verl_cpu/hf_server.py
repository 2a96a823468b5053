"""The ``hf`` rollout server: a Ray actor speaking verl's token-in/token-out server protocol.

verl's ``LLMServerClient`` calls ``generate`` on it (via the load balancer), the replica calls
the control methods (``sleep``, ``wake_up``, ``clear_kv_cache``, ...) and the trainer-side
:class:`verl_cpu.hf_adapter.HFServerAdapter` pushes weights with
``begin_weight_update`` / ``load_weights`` / ``finish_weight_update``. The model stays in host
memory for the whole run, so the memory-management methods are no-ops.

The class is plain Python (wrapped with ``ray.remote`` by :class:`verl_cpu.hf_replica.HFReplica`),
so tests can drive it in-process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import torch
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.tokenizer import normalize_token_ids
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.replica import RolloutMode, TokenOutput
from verl.workers.rollout.utils import get_max_position_embeddings

from verl_cpu.hf_generator import HFGenerator, SamplingSpec, load_hf_model

logger = logging.getLogger(__name__)

# flash-attn is verl's default and is not installable on CPU; sdpa matches the actor override.
DEFAULT_ATTN_IMPLEMENTATION = "sdpa"


def resolve_sampling_spec(
    sampling_params: dict[str, Any], prompt_length: int, config: RolloutConfig, max_model_len: int
) -> SamplingSpec:
    """verl's vLLM-style ``sampling_params`` -> :class:`SamplingSpec`, with the vLLM server's token budget:
    ``max_tokens`` (or ``max_new_tokens``) if given, else ``min(response_length, prompt_length +
    response_length - len(prompt))``, clamped to ``[1, max_model_len - len(prompt)]``; missing or
    ``None`` sampling fields fall back to the rollout config, as in verl's vLLM server."""
    headroom = max_model_len - prompt_length
    if headroom < 1:
        raise ValueError(
            f"prompt length {prompt_length} leaves no room to generate within max_model_len {max_model_len}"
        )
    if sampling_params.get("max_tokens") is not None:
        max_tokens = int(sampling_params["max_tokens"])
    elif sampling_params.get("max_new_tokens") is not None:
        max_tokens = int(sampling_params["max_new_tokens"])
    else:
        max_tokens = min(config.response_length, config.prompt_length + config.response_length - prompt_length)

    def param(key: str, default: Any) -> Any:
        value = sampling_params.get(key)
        return default if value is None else value

    return SamplingSpec(
        max_new_tokens=max(1, min(max_tokens, headroom)),
        temperature=float(param("temperature", config.temperature)),
        top_p=float(param("top_p", config.top_p)),
        top_k=int(param("top_k", config.top_k)),
        repetition_penalty=float(param("repetition_penalty", config.repetition_penalty)),
        ignore_eos=bool(param("ignore_eos", config.ignore_eos)),
    )


class HFRolloutServer:
    """One model replica on the host; generation runs in a worker thread, one request at a time."""

    def __init__(
        self,
        config: RolloutConfig | Any,
        model_config: HFModelConfig | Any,
        replica_rank: int = 0,
        rollout_mode: RolloutMode | None = None,
    ):
        self.config: RolloutConfig = omega_conf_to_dataclass(config)
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.replica_rank = replica_rank
        self.rollout_mode = rollout_mode
        self.global_steps: int | None = None
        self.max_model_len = self.config.max_model_len or get_max_position_embeddings(self.model_config.hf_config)

        torch.manual_seed(self.config.seed + replica_rank)
        override_config = dict(self.model_config.override_config or {})
        model = load_hf_model(
            self.model_config.local_path,
            self.model_config.hf_config,
            dtype=self.config.dtype,
            attn_implementation=override_config.get("attn_implementation", DEFAULT_ATTN_IMPLEMENTATION),
        )
        self.generator = HFGenerator(model, self.model_config.processor, self.model_config.tokenizer)

    def ready(self) -> bool:
        """Returns once the model is loaded (the replica awaits it before registering the server)."""
        return True

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> TokenOutput:
        """Generate one response; ``log_probs`` only when ``sampling_params["logprobs"]`` is truthy, as in
        verl's vLLM server (verl asks for them when ``rollout.calculate_log_probs``, its default)."""
        if video_data is not None or audio_data is not None:
            raise NotImplementedError("the hf rollout handles text and images only")
        prompt_ids = normalize_token_ids(prompt_ids)
        spec = resolve_sampling_spec(dict(sampling_params), len(prompt_ids), self.config, self.max_model_len)
        inputs = self.generator.build_inputs(prompt_ids, image_data, mm_processor_kwargs)
        result = await asyncio.to_thread(self.generator.generate, inputs, spec)
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    # ------------------------------------------------------------------ weight sync

    async def begin_weight_update(self) -> None:
        self.generator.begin_weight_update()

    async def load_weights(self, named_tensors: dict[str, torch.Tensor]) -> int:
        return await asyncio.to_thread(self.generator.load_weights, named_tensors.items())

    async def finish_weight_update(self, global_steps: int | None = None) -> None:
        self.generator.finish_weight_update()
        if global_steps is not None:
            self.global_steps = global_steps

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # ------------------------------------------------------------------ control surface (no-ops)
    # The weights live in host memory for the whole run and there is no KV cache between requests.

    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        return None

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict[str, Any]:
        # Requests run to completion (a few tokens on CPU); nothing is ever aborted.
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict[str, Any]:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None
