"""LoRA through the NoisyGRPO path: the merge arithmetic of the CPU rollout, and 2 real steps (e2e).

verl's FSDP engine trains adapters (``actor_rollout_ref.model.lora_rank`` ...) and syncs them to
the rollout as adapter matrices; the CPU backend's HF rollout merges them into its base copy
(:mod:`verl_cpu.lora`). The e2e run keeps the vision tower out of the adapters, as
``scripts/run_qwen25vl_7b_lora.sh`` does.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from recipe.noisygrpo.demo.run_demo import DemoSettings, demo_overrides, read_step_metrics, train_on_cpu
from recipe.noisygrpo.eval.evaluate_checkpoint import merge_fsdp_checkpoint
from verl_cpu.lora import base_weight_name, lora_deltas, lora_scaling

LORA_OVERRIDES = (
    "actor_rollout_ref.model.lora_rank=8",
    "actor_rollout_ref.model.lora_alpha=16",
    "actor_rollout_ref.model.target_modules=all-linear",
    "actor_rollout_ref.model.exclude_modules=.*visual.*",
)


def test_peft_names_map_to_the_plain_weight_names():
    assert (
        base_weight_name("base_model.model.model.language_model.layers.0.self_attn.q_proj.base_layer.weight")
        == "model.language_model.layers.0.self_attn.q_proj.weight"
    )
    assert base_weight_name("model.visual.blocks.0.attn.qkv.weight") == "model.visual.blocks.0.attn.qkv.weight"


def test_merged_weight_equals_what_peft_computes():
    """The delta is what a PEFT LoRA layer adds to its base output: x @ (W + s B A)^T == peft(x)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False))
    config = LoraConfig(r=2, lora_alpha=6, target_modules=["0"], init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    adapters = [(name, tensor) for name, tensor in peft_model.state_dict().items() if "lora_" in name]
    deltas = lora_deltas(((name.replace(".default", ""), tensor) for name, tensor in adapters), config.to_dict())
    assert list(deltas) == ["0.weight"] and lora_scaling(config.to_dict()) == 3.0
    base_weight = peft_model.base_model.model[0].base_layer.weight
    x = torch.randn(3, 6)
    torch.testing.assert_close(x @ (base_weight + deltas["0.weight"]).T, peft_model(x))
    assert lora_scaling({"r": 4, "lora_alpha": 8, "use_rslora": True}) == 4.0
    with pytest.raises(ValueError, match="without its lora_B"):
        lora_deltas([adapters[0]], config.to_dict())


def test_adapters_merge_into_the_base_copy_not_into_the_last_merge(tiny_qwen25vl_dir):
    from transformers import AutoModelForImageTextToText

    from verl_cpu.hf_generator import HFGenerator

    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen25vl_dir, torch_dtype=torch.float32)
    generator = HFGenerator(model, processor=None, tokenizer=None)
    name = next(key for key in generator.model.state_dict() if key.endswith("self_attn.q_proj.weight"))
    base = generator.model.state_dict()[name].clone()
    delta = torch.full_like(base, 0.5)
    generator.apply_lora({name: delta})
    generator.apply_lora({name: delta})  # the next step's adapters replace, not add to, the last ones
    torch.testing.assert_close(generator.model.state_dict()[name], base + delta)
    generator.begin_weight_update()  # a full load sets a new base
    generator.load_weights([(name, base * 2)])
    generator.apply_lora({name: delta})
    torch.testing.assert_close(generator.model.state_dict()[name], base * 2 + delta)
    with pytest.raises(KeyError, match="not a weight of the rollout model"):
        generator.apply_lora({"no.such.weight": delta})


def _canonical(name: str) -> str:
    """A weight name without PEFT's wrappers and the parts that differ between layouts ("model.", "language_model.")."""
    return ".".join(part for part in base_weight_name(name).split(".") if part not in ("model", "language_model"))


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    from data_prep.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), num_train=16, num_val=4, seed=0)


@pytest.mark.e2e
def test_two_noisygrpo_steps_with_lora_train_only_adapters_and_merge_into_a_model_that_generates(
    tmp_path, tiny_qwen25vl_dir, data_files
):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    workdir = tmp_path / "lora"
    overrides = [
        *demo_overrides(tiny_qwen25vl_dir, data_files, workdir, DemoSettings(steps=2)),
        *LORA_OVERRIDES,
        "actor_rollout_ref.actor.optim.lr=1e-2",  # adapters start at zero: make 2 steps visible
        "trainer.save_freq=2",
    ]
    result = train_on_cpu(workdir, overrides, timeout_s=1200)
    log = result.log_path.read_text(errors="replace")
    assert result.returncode == 0 and result.leftovers == [], log[-8000:]
    steps = read_step_metrics(workdir / "metrics.jsonl")
    assert [step["step"] for step in steps] == [1, 2]
    assert all(math.isfinite(step["actor/pg_loss"]) and "noisygrpo/kalman_gain_mean" in step for step in steps)
    # Step 2 was generated by the step-1 adapters merged on the rollout: its log-probs still
    # match the actor's recomputation.
    assert steps[1]["training/rollout_probs_diff_max"] < 1e-3

    actor = workdir / "checkpoints" / "global_step_2" / "actor"
    shard = torch.load(actor / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    shard = {name: getattr(tensor, "full_tensor", lambda t=tensor: t)() for name, tensor in shard.items()}
    initial = load_file(tiny_qwen25vl_dir / "model.safetensors")
    adapters = {name: tensor for name, tensor in shard.items() if "lora_" in name}
    base = {_canonical(name): tensor for name, tensor in shard.items() if "lora_" not in name}
    assert adapters and not any("visual" in name for name in adapters)  # the vision tower has none
    # Base weights bit-identical (compared by name without the wrappers both layouts may add).
    assert {_canonical(name) for name in initial} <= set(base), sorted(set(base))[:5]
    for name, tensor in initial.items():
        assert torch.equal(base[_canonical(name)], tensor), name
    assert any(
        not torch.equal(tensor, torch.zeros_like(tensor)) for name, tensor in adapters.items() if "lora_B" in name
    )

    merged = tmp_path / "merged"
    merge_fsdp_checkpoint(actor, merged)
    adapter_config = json.loads((merged / "lora_adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and adapter_config["lora_alpha"] == 16
    model = AutoModelForImageTextToText.from_pretrained(merged, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(model, merged / "lora_adapter").merge_and_unload()
    processor = AutoProcessor.from_pretrained(tiny_qwen25vl_dir)
    inputs = processor(text=["How many shapes?"], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
