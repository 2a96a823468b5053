"""Serving a LoRA-trained policy on the HF rollout: the adapters merged into a kept copy of the base.

verl's FSDP engine syncs a LoRA actor in two parts (``peft_config`` set, ``lora.merge=False``, the
default and what vLLM serves as adapters): once the base weights, named as PEFT wraps them
(``...q_proj.base_layer.weight``), then at every step only the adapter matrices
(``...q_proj.lora_A.weight`` / ``lora_B``). The HF rollout has no adapter runtime, so it merges:
``W = W_base + scaling * B @ A`` per adapted module, in fp32, always from the base copy (merging
into the previous step's merged weight would add the adapters up). PEFT's scaling is
``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight")


def base_weight_name(name: str) -> str:
    """The plain Hugging Face name of a weight as PEFT names it (prefix and ``base_layer`` removed)."""
    name = name.removeprefix(_PEFT_PREFIX)
    return name.replace(".base_layer.", ".")


def lora_scaling(peft_config: Mapping[str, Any]) -> float:
    """PEFT's multiplier of ``B @ A``: ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA."""
    rank, alpha = int(peft_config["r"]), float(peft_config["lora_alpha"])
    return alpha / math.sqrt(rank) if peft_config.get("use_rslora", False) else alpha / rank


def lora_deltas(
    adapter_weights: Iterable[tuple[str, torch.Tensor]], peft_config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """``{plain weight name: scaling * B @ A}`` (fp32, shape of the weight) from the adapter matrices.

    ``lora_A``: (r, in_features), ``lora_B``: (out_features, r). Raises ``ValueError`` for a name that
    is neither, or a module with only one of the two.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in adapter_weights:
        match = _LORA_KEY.fullmatch(name)
        if match is None:
            raise ValueError(f"adapter weight {name!r} is neither lora_A nor lora_B; the hf rollout serves LoRA only")
        parts.setdefault(match["module"], {})[match["part"]] = tensor.detach().to("cpu", torch.float32)
    scaling = lora_scaling(peft_config)
    deltas = {}
    for module, pair in parts.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"adapter of {module!r} came without its lora_{'B' if 'A' in pair else 'A'} matrix")
        deltas[base_weight_name(module) + ".weight"] = scaling * (pair["B"] @ pair["A"])
    return deltas
