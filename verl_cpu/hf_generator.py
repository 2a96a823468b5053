"""Token-in/token-out generation with a plain transformers model: the engine behind the ``hf`` rollout.

No Ray and no verl server protocol here (that is :mod:`verl_cpu.hf_server`), so the
generation and log-prob maths can be unit-tested in-process.

Log-prob convention (matches verl's default ``rollout.logprobs_mode=processed_logprobs`` and
the FSDP actor's recomputation): ``log_softmax(raw_logits / temperature)`` at the sampled
token, *before* top-k/top-p and before banning vision placeholders; greedy decoding
(temperature 0) scores with temperature 1.

Positions: verl's actor gets M-RoPE position ids from the model's own ``get_rope_index``, fed with
``mm_token_type_ids`` (the agent loop marks image tokens 1, video tokens 2). transformers 5.9's
Qwen2.5-VL and Qwen3-VL ``generate`` compute the same positions only when they receive
``mm_token_type_ids``; without them image tokens get plain 1-D positions and nothing raises (Qwen2-VL
raises). So the rollout passes them for the model types in :data:`POSITIONS_FROM_TOKEN_TYPES`.

Batches: :meth:`HFGenerator.generate_batch` runs several requests in one left-padded
``model.generate``. Sampling is then done per row by :class:`SeededSampler` with the row's own
``torch.Generator``: a request that carries a seed gets the same tokens whatever else shares its
batch (up to float rounding of the batched forward), so a seeded run reproduces its responses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from verl.utils.model import get_hf_auto_model_class
from verl.utils.torch_dtypes import PrecisionType
from verl.workers.rollout.utils import get_vision_placeholder_token_ids, qwen2_5_vl_dedup_image_tokens


@dataclass(frozen=True)
class SamplingSpec:
    """What one request asks of the sampler (verl's vLLM-style ``sampling_params``, resolved).

    ``temperature == 0`` means greedy; ``top_k <= 0`` and ``top_p == 1`` disable those filters.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def logprob_temperature(self) -> float:
        return 1.0 if self.greedy else self.temperature


@dataclass(frozen=True)
class GenerationResult:
    """One response: ``token_ids`` (n,) new tokens (EOS included when hit) and their ``log_probs`` (n,) in nats."""

    token_ids: list[int]
    log_probs: list[float]
    finished_by_eos: bool


# Model types whose rollout passes ``mm_token_type_ids`` so that ``generate`` uses verl's M-RoPE
# positions (module docstring). Without them the tiny random Qwen2.5-VL's rollout log-probs were
# ~3e-3 nats off the actor's, the tiny Qwen3-VL's 0.4 (tests/test_qwen3vl.py).
POSITIONS_FROM_TOKEN_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl"})
# Values of ``mm_token_type_ids``, as verl's agent loop and the Qwen processors set them.
TEXT_TOKEN_TYPE, IMAGE_TOKEN_TYPE, VIDEO_TOKEN_TYPE = 0, 1, 2


@dataclass(frozen=True)
class ModelInputs:
    """A single prompt ready for ``model.generate``: ``input_ids`` (1, L) with image pads expanded,
    plus ``pixel_values`` (P, C*t*p*p) and ``image_grid_thw`` (num_images, 3) when there are images,
    and ``mm_token_type_ids`` (1, L; 0 text, 1 image token) when the model's positions need them."""

    input_ids: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    mm_token_type_ids: torch.Tensor | None = None

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        kwargs = {"input_ids": self.input_ids, "attention_mask": torch.ones_like(self.input_ids)}
        if self.pixel_values is not None:
            kwargs["pixel_values"] = self.pixel_values
            kwargs["image_grid_thw"] = self.image_grid_thw
        if self.mm_token_type_ids is not None:
            kwargs["mm_token_type_ids"] = self.mm_token_type_ids
        return kwargs


def load_hf_model(
    local_path: str, hf_config: Any, dtype: str | torch.dtype, attn_implementation: str
) -> PreTrainedModel:
    """Load the checkpoint with the same auto class verl's FSDP engine uses, in eval mode on CPU."""
    auto_class = get_hf_auto_model_class(hf_config=hf_config)
    model = auto_class.from_pretrained(
        local_path,
        config=hf_config,
        dtype=PrecisionType.to_dtype(dtype),
        attn_implementation=attn_implementation,
    )
    return model.eval()


class SeededSampler(LogitsProcessor):
    """Samples each row with its own seeded generator (temperature, top-k, top-p as transformers applies them)
    and leaves only the drawn token finite, so greedy decoding emits it.

    Runs after transformers' own processors of the generation config (repetition penalty, banned
    tokens, EOS held back until ``min_new_tokens``), as ``generate`` appends custom processors last.
    """

    def __init__(self, spec: SamplingSpec, seeds: Sequence[int]):
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(spec.temperature)])
        if spec.top_k > 0:
            self.warpers.append(TopKLogitsWarper(spec.top_k))
        if spec.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(spec.top_p))
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probabilities = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        chosen = torch.stack(
            [
                torch.multinomial(row, 1, generator=gen)[0]
                for row, gen in zip(probabilities, self.generators, strict=True)
            ]
        )
        only_chosen = torch.full_like(scores, float("-inf"))
        return only_chosen.scatter_(1, chosen[:, None], 0.0)


class HFGenerator:
    """Owns one transformers model (+ processor) and serves single-prompt generation and weight loads.

    Thread-safe: generation and weight loading take one lock, so a weight update never lands
    halfway through a response.
    """

    def __init__(self, model: PreTrainedModel, processor: Any | None, tokenizer: Any):
        self.model = model
        self.processor = processor
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self._banned_token_ids = get_vision_placeholder_token_ids(processor) if processor is not None else []
        generation_config = getattr(model, "generation_config", None)
        eos = getattr(generation_config, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos_token_ids: list[int] = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        pad = getattr(generation_config, "pad_token_id", None)
        self._pad_token_id: int = pad if pad is not None else (tokenizer.pad_token_id or self._eos_token_ids[0])
        self._pending_weight_names: set[str] | None = None
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        self._positions_from_token_types = model_type in POSITIONS_FROM_TOKEN_TYPES
        self._lora_base: dict[str, torch.Tensor] = {}  # base weights of the adapted modules (LoRA serving)

    # ------------------------------------------------------------------ inputs

    def build_inputs(
        self,
        prompt_ids: Sequence[int],
        images: Sequence[Any] | None = None,
        processor_kwargs: Mapping[str, Any] | None = None,
    ) -> ModelInputs:
        """Turn verl's prompt ids (image pads expanded, as the agent loop tokenises them, or one pad
        per image, as vLLM takes them) plus PIL images into model inputs.

        Images go through the processor's image processor (Qwen2-VL's, which Qwen2-VL, Qwen2.5-VL
        and Qwen3-VL share: ``pixel_values``, ``image_grid_thw``); each image's pad run is
        re-expanded to its merged-patch count, so the ids always agree with ``image_grid_thw``
        whatever the caller sent. For :data:`POSITIONS_FROM_TOKEN_TYPES` models the inputs also
        carry ``mm_token_type_ids``.
        """
        if not images:
            return ModelInputs(input_ids=torch.tensor([list(prompt_ids)], dtype=torch.long))
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is None or not hasattr(image_processor, "merge_size"):
            raise ValueError(
                "the CPU (hf) rollout handles images only for Qwen2-VL-family image processors (Qwen2-VL, "
                "Qwen2.5-VL, Qwen3-VL); run other models with the vLLM rollout on a GPU"
            )
        processed = image_processor(images=list(images), return_tensors="pt", **dict(processor_kwargs or {}))
        grid_thw: torch.Tensor = processed["image_grid_thw"]
        tokens_per_image = (grid_thw.prod(dim=-1) // image_processor.merge_size**2).tolist()

        image_token_id = self.processor.image_token_id
        single_pad_ids = qwen2_5_vl_dedup_image_tokens(list(prompt_ids), self.processor)
        num_pad_runs = sum(1 for token in single_pad_ids if token == image_token_id)
        if num_pad_runs != len(tokens_per_image):
            raise ValueError(
                f"prompt has {num_pad_runs} image placeholders but {len(tokens_per_image)} images were given"
            )
        expanded: list[int] = []
        image_index = 0
        for token in single_pad_ids:
            if token == image_token_id:
                expanded.extend([image_token_id] * tokens_per_image[image_index])
                image_index += 1
            else:
                expanded.append(token)
        input_ids = torch.tensor([expanded], dtype=torch.long)
        return ModelInputs(
            input_ids=input_ids,
            pixel_values=processed["pixel_values"].to(self.model.dtype),
            image_grid_thw=grid_thw,
            mm_token_type_ids=self._token_types(input_ids) if self._positions_from_token_types else None,
        )

    def _token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``mm_token_type_ids`` (same shape as ``input_ids``) as verl's agent loop builds them for the actor."""
        token_types = torch.full_like(input_ids, TEXT_TOKEN_TYPE)
        token_types[input_ids == self.processor.image_token_id] = IMAGE_TOKEN_TYPE
        video_token_id = getattr(self.processor, "video_token_id", None)
        if video_token_id is not None:
            token_types[input_ids == video_token_id] = VIDEO_TOKEN_TYPE
        return token_types

    # ------------------------------------------------------------------ generation

    def _generation_config(self, spec: SamplingSpec) -> GenerationConfig:
        # Built from scratch: a checkpoint's generation_config.json may carry top_k=50 etc.
        sampling = (
            {} if spec.greedy else {"temperature": spec.temperature, "top_p": spec.top_p, "top_k": max(spec.top_k, 0)}
        )
        return GenerationConfig(
            max_new_tokens=spec.max_new_tokens,
            min_new_tokens=spec.max_new_tokens if spec.ignore_eos else 0,
            do_sample=not spec.greedy,
            **sampling,
            repetition_penalty=spec.repetition_penalty,
            suppress_tokens=self._banned_token_ids or None,
            eos_token_id=self._eos_token_ids,
            pad_token_id=self._pad_token_id,
            num_beams=1,
            output_logits=True,
            return_dict_in_generate=True,
        )

    def generate(self, inputs: ModelInputs, spec: SamplingSpec) -> GenerationResult:
        """Sample one response; log-probs per :mod:`this module's convention <verl_cpu.hf_generator>`."""
        prompt_length = inputs.input_ids.shape[1]
        with self._lock, torch.inference_mode():
            output = self.model.generate(**inputs.as_kwargs(), generation_config=self._generation_config(spec))
        new_tokens = output.sequences[0, prompt_length:]
        # output.logits: one (1, V) tensor of raw (unprocessed) logits per generated token.
        raw_logits = torch.cat(output.logits, dim=0).float()[: new_tokens.shape[0]]
        log_probs = torch.log_softmax(raw_logits / spec.logprob_temperature, dim=-1)
        token_log_probs = log_probs.gather(-1, new_tokens[:, None]).squeeze(-1)
        token_ids = new_tokens.tolist()
        finished_by_eos = bool(token_ids) and token_ids[-1] in self._eos_token_ids and not spec.ignore_eos
        return GenerationResult(
            token_ids=token_ids, log_probs=token_log_probs.tolist(), finished_by_eos=finished_by_eos
        )

    def generate_batch(
        self, requests: Sequence[tuple[ModelInputs, SamplingSpec, int | None]]
    ) -> list[GenerationResult]:
        """Sample every request (inputs, spec, seed) in one left-padded ``model.generate`` per sampling setting.

        Sampled requests are drawn per row with their own generator (``seed``; None draws a seed from
        torch's global generator), so a seeded request's tokens do not depend on its batch mates.
        """
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[SamplingSpec, list[int]] = {}
        for index, (_, spec, _) in enumerate(requests):
            groups.setdefault(replace(spec, max_new_tokens=0), []).append(index)
        for indices in groups.values():
            batch = [requests[index] for index in indices]
            for index, result in zip(indices, self._generate_group(batch), strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def _generate_group(
        self, requests: Sequence[tuple[ModelInputs, SamplingSpec, int | None]]
    ) -> list[GenerationResult]:
        specs = [spec for _, spec, _ in requests]
        spec = replace(specs[0], max_new_tokens=max(s.max_new_tokens for s in specs))
        lengths = [inputs.input_ids.shape[1] for inputs, _, _ in requests]
        width = max(lengths)
        input_ids = torch.full((len(requests), width), self._pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, ((inputs, _, _), length) in enumerate(zip(requests, lengths, strict=True)):
            input_ids[row, width - length :] = inputs.input_ids[0]
            attention_mask[row, width - length :] = 1
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        with_images = [inputs for inputs, _, _ in requests if inputs.pixel_values is not None]
        if with_images:
            kwargs["pixel_values"] = torch.cat([inputs.pixel_values for inputs in with_images])
            kwargs["image_grid_thw"] = torch.cat([inputs.image_grid_thw for inputs in with_images])
        if any(inputs.mm_token_type_ids is not None for inputs, _, _ in requests):
            # Left-padded like the ids; padding and text-only rows are text (0).
            token_types = torch.full((len(requests), width), TEXT_TOKEN_TYPE, dtype=torch.long)
            for row, ((inputs, _, _), length) in enumerate(zip(requests, lengths, strict=True)):
                if inputs.mm_token_type_ids is not None:
                    token_types[row, width - length :] = inputs.mm_token_type_ids[0]
            kwargs["mm_token_type_ids"] = token_types
        generation_config = self._generation_config(spec)
        processors = LogitsProcessorList()
        if not spec.greedy:
            seeds = [int(torch.randint(2**62, ())) if seed is None else int(seed) for _, _, seed in requests]
            processors.append(SeededSampler(spec, seeds))
            generation_config.do_sample = False  # the sampler leaves one token per row; greedy takes it
            for name in ("temperature", "top_p", "top_k"):
                setattr(generation_config, name, None)
        with self._lock, torch.inference_mode():
            output = self.model.generate(**kwargs, generation_config=generation_config, logits_processor=processors)
        raw_logits = torch.stack(output.logits, dim=1).float()  # (B, T, V), unprocessed
        results = []
        for row, (_, row_spec, _) in enumerate(requests):
            new_tokens = output.sequences[row, width:][: row_spec.max_new_tokens]
            token_ids = new_tokens.tolist()
            ended = next((i for i, token in enumerate(token_ids) if token in self._eos_token_ids), None)
            if ended is not None and not row_spec.ignore_eos:
                token_ids = token_ids[: ended + 1]
            log_probs = torch.log_softmax(raw_logits[row, : len(token_ids)] / spec.logprob_temperature, dim=-1)
            token_log_probs = log_probs.gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1)
            finished_by_eos = bool(token_ids) and token_ids[-1] in self._eos_token_ids and not row_spec.ignore_eos
            results.append(GenerationResult(token_ids, token_log_probs.tolist(), finished_by_eos))
        return results

    # ------------------------------------------------------------------ weights

    def begin_weight_update(self) -> None:
        with self._lock:
            self._pending_weight_names = set(self.model.state_dict().keys())
            self._lora_base = {}  # new base weights: adapters merge into these from now on

    def apply_lora(self, deltas: Mapping[str, torch.Tensor]) -> int:
        """Set each named weight to its base value plus ``deltas[name]`` (see :mod:`verl_cpu.lora`);
        the base value is the weight as it was before the first adapter update since the last full load."""
        with self._lock, torch.no_grad():
            state = self.model.state_dict()
            for name, delta in deltas.items():
                if name not in state:
                    raise KeyError(f"LoRA adapter for {name!r}, which is not a weight of the rollout model")
                if tuple(state[name].shape) != tuple(delta.shape):
                    raise ValueError(f"LoRA delta {name!r}: shape {tuple(delta.shape)} != {tuple(state[name].shape)}")
                base = self._lora_base.setdefault(name, state[name].detach().clone())
                state[name].copy_(base + delta.to(dtype=base.dtype))
            return len(deltas)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy full tensors into the model by state-dict name; returns how many were loaded.

        Unknown names raise (a naming mismatch with the trainer must not pass silently).
        """
        with self._lock, torch.no_grad():
            state = self.model.state_dict()
            loaded = 0
            for name, tensor in named_tensors:
                if name not in state:
                    raise KeyError(f"weight {name!r} from the trainer is not a parameter of the rollout model")
                target = state[name]
                if tuple(target.shape) != tuple(tensor.shape):
                    raise ValueError(
                        f"weight {name!r}: trainer shape {tuple(tensor.shape)} != rollout {tuple(target.shape)}"
                    )
                target.copy_(tensor.to(dtype=target.dtype))
                if self._pending_weight_names is not None:
                    self._pending_weight_names.discard(name)
                loaded += 1
            return loaded

    def finish_weight_update(self) -> None:
        """Raise if a weight update started with :meth:`begin_weight_update` left parameters untouched."""
        with self._lock:
            missing, self._pending_weight_names = self._pending_weight_names, None
        if missing:
            raise RuntimeError(
                f"weight update did not include {len(missing)} rollout weights, e.g. {sorted(missing)[:3]}"
            )
