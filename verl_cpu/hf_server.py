"""The ``hf`` rollout server: a Ray actor speaking verl's token-in/token-out server protocol.

verl's ``LLMServerClient`` calls ``generate`` on it (via the load balancer), the replica calls
the control methods (``sleep``, ``wake_up``, ``clear_kv_cache``, ...) and the trainer-side
:class:`verl_cpu.hf_adapter.HFServerAdapter` pushes weights with
``begin_weight_update`` / ``load_weights`` / ``finish_weight_update``. The model stays in host
memory for the whole run, so the memory-management methods are no-ops.

Requests are batched: ``generate`` queues its request, and one batching task runs whatever has
arrived within ``batch_wait_s`` of the first (up to ``max_batch``) as one
:meth:`HFGenerator.generate_batch` call. A request's ``sampling_params["seed"]`` (set by the
NoisyGRPO agent loop when ``noisygrpo.seeded_sampling`` is on) makes its tokens a function of that
seed, whatever its batch mates.

The class is plain Python (wrapped with ``ray.remote`` by :class:`verl_cpu.hf_replica.HFReplica`),
so tests can drive it in-process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import torch
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.tokenizer import normalize_token_ids
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.replica import RolloutMode, TokenOutput
from verl.workers.rollout.utils import get_max_position_embeddings

from verl_cpu.hf_generator import GenerationResult, HFGenerator, ModelInputs, SamplingSpec, load_hf_model

logger = logging.getLogger(__name__)

# flash-attn is verl's default and is not installable on CPU; sdpa matches the actor override.
DEFAULT_ATTN_IMPLEMENTATION = "sdpa"
# A batch takes what arrives within this long of its first request (a step's requests come together).
DEFAULT_BATCH_WAIT_S = 0.05
DEFAULT_MAX_BATCH = 64


@dataclass
class _Request:
    inputs: ModelInputs
    spec: SamplingSpec
    seed: int | None
    future: asyncio.Future


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
    """One model replica on the host; generation runs in a worker thread, requests batched together."""

    def __init__(
        self,
        config: RolloutConfig | Any,
        model_config: HFModelConfig | Any,
        replica_rank: int = 0,
        rollout_mode: RolloutMode | None = None,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        max_batch: int = DEFAULT_MAX_BATCH,
    ):
        self.batch_wait_s, self.max_batch = batch_wait_s, max_batch
        # The batching task and its queue live on the loop that serves requests (Ray's actor loop;
        # a test may bring a new loop per test, which then gets its own).
        self._queue: asyncio.Queue[_Request] | None = None
        self._batcher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
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
            raise ValueError(
                "the CPU (hf) rollout handles text and images only, this request has video or audio; "
                "use the vLLM rollout on a GPU for them"
            )
        prompt_ids = normalize_token_ids(prompt_ids)
        spec = resolve_sampling_spec(dict(sampling_params), len(prompt_ids), self.config, self.max_model_len)
        inputs = self.generator.build_inputs(prompt_ids, image_data, mm_processor_kwargs)
        seed = sampling_params.get("seed")
        result = await self._submit(inputs, spec, None if seed is None else int(seed))
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    async def _submit(self, inputs: ModelInputs, spec: SamplingSpec, seed: int | None) -> GenerationResult:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._batcher = loop.create_task(self._run_batches(self._queue))
        future = loop.create_future()
        await self._queue.put(_Request(inputs, spec, seed, future))
        return await future

    async def _run_batches(self, queue: asyncio.Queue[_Request]) -> None:
        """Forever: take the first waiting request and what follows within ``batch_wait_s``, generate them together."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.batch_wait_s
            while len(batch) < self.max_batch and (remaining := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            # Seeded rows first, in seed order: the same requests make the same batch layout.
            batch.sort(key=lambda request: (request.seed is None, request.seed or 0))
            work = [(request.inputs, request.spec, request.seed) for request in batch]
            try:
                results = await asyncio.to_thread(self.generator.generate_batch, work)
            except Exception as error:  # every waiting caller gets the failure
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            for request, result in zip(batch, results, strict=True):
                if not request.future.done():
                    request.future.set_result(result)

    # ------------------------------------------------------------------ weight sync

    async def begin_weight_update(self) -> None:
        self.generator.begin_weight_update()

    async def load_weights(self, named_tensors: dict[str, torch.Tensor]) -> int:
        return await asyncio.to_thread(self.generator.load_weights, named_tensors.items())

    async def apply_lora(self, deltas: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        applied = await asyncio.to_thread(self.generator.apply_lora, deltas)
        if global_steps is not None:
            self.global_steps = global_steps
        return applied

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
