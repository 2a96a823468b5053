"""Qwen3-VL: the tiny offline checkpoint, the CPU rollout's log-probs against verl's actor path,
the evaluation driver's model selection, and one real NoisyGRPO step (marked ``e2e``).

The unit tests take ~1 minute on 2 cores (the actor reference runs in a fresh interpreter, since
verl's monkey patch rewrites transformers' Qwen3-VL classes for the whole process); the e2e
test trains one step through ``recipe.noisygrpo.main_noisygrpo`` on the CPU backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from recipe.noisygrpo.demo.tiny_model import (
    QWEN3VL_PLAIN_ADDED_TOKENS,
    TinyQwen3VLSpec,
    build_tiny_qwen3vl,
    folder_size_bytes,
    main,
)
from verl_ext.task import COT_INSTRUCTION

PIXELS_PER_TOKEN = 32 * 32  # 16-px patches, 2x2 merged


def _random_image(seed: int, size: tuple[int, int]) -> Image.Image:
    """A ``size`` = (width, height) RGB image of uniform noise (the tiny model reacts to any pixel)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _chat_text(processor, question: str, with_image: bool = True, system: str | None = None) -> str:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def processor(tiny_qwen3vl_dir: pathlib.Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_qwen3vl_dir)


def _load_model(path: pathlib.Path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa").eval()


# ---------------------------------------------------------------------------------------------
# The tiny checkpoint
# ---------------------------------------------------------------------------------------------


def test_folder_is_a_small_qwen3vl_with_the_real_processor_classes(tiny_qwen3vl_dir, processor):
    config = json.loads((tiny_qwen3vl_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    assert config["vision_config"]["patch_size"] == 16 and config["vision_config"]["deepstack_visual_indexes"] == [0]
    assert config["text_config"]["rope_parameters"]["mrope_interleaved"] is True
    assert folder_size_bytes(tiny_qwen3vl_dir) < 10 * 1024**2
    assert type(processor).__name__ == "Qwen3VLProcessor"
    image_processor = processor.image_processor
    assert (image_processor.patch_size, image_processor.merge_size, image_processor.temporal_patch_size) == (16, 2, 2)
    assert list(image_processor.image_mean) == [0.5, 0.5, 0.5]
    model = _load_model(tiny_qwen3vl_dir)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration" and model.dtype == torch.float32
    assert sum(parameter.numel() for parameter in model.parameters()) < 1_000_000


def test_chat_template_has_qwen3vl_layout_without_a_default_system_turn(processor):
    text = _chat_text(processor, "What colour is the circle?")
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour is the circle?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = _chat_text(processor, "Hi", with_image=False, system="Be brief.")
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")


def test_processor_makes_one_token_per_32px_square_and_marks_them(processor):
    text = _chat_text(processor, "How many?")
    encoded = processor(text=[text], images=[_random_image(0, (96, 64))], return_tensors="pt")
    assert encoded["image_grid_thw"].tolist() == [[1, 64 // 16, 96 // 16]]
    image_tokens = encoded["input_ids"] == processor.image_token_id
    assert int(image_tokens.sum()) == 96 * 64 // PIXELS_PER_TOKEN == 6
    # Qwen3-VL's positions are computed from these types (1 = image token), not from the ids.
    assert torch.equal(encoded["mm_token_type_ids"].bool(), image_tokens)
    assert encoded["pixel_values"].shape == (24, 3 * 2 * 16 * 16)


def test_think_tags_are_single_tokens_that_decoding_keeps(processor):
    tokenizer = processor.tokenizer
    ids = tokenizer.encode("<think> red </think><|im_end|>", add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<think>")
    assert len(set(tokenizer.convert_tokens_to_ids(list(QWEN3VL_PLAIN_ADDED_TOKENS)))) == len(
        QWEN3VL_PLAIN_ADDED_TOKENS
    )
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think> red </think>"
    assert len(tokenizer.encode(COT_INSTRUCTION, add_special_tokens=False)) < len(COT_INSTRUCTION) / 3


def test_generate_answers_an_image_chat_with_peaked_distributions(tiny_qwen3vl_dir, processor):
    text = _chat_text(processor, "What colour is the circle? " + COT_INSTRUCTION)
    encoded = processor(text=[text], images=[_random_image(1, (100, 80))], return_tensors="pt")
    prompt_length = encoded["input_ids"].shape[1]
    with torch.no_grad():
        output = _load_model(tiny_qwen3vl_dir).generate(
            **encoded, max_new_tokens=8, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    assert torch.equal(output.sequences[0, :prompt_length], encoded["input_ids"][0])
    assert prompt_length < output.sequences.shape[1] <= prompt_length + 8
    top_probabilities = torch.softmax(torch.stack(output.logits).float(), dim=-1).amax(dim=-1)
    # logit_scale: far from the ~1/4000 of a default-initialised random model, and not all ~1.
    assert top_probabilities.max() > 0.05 and top_probabilities.min() < 0.99


def test_same_seed_same_bytes_other_seed_other_weights(tiny_qwen3vl_dir, tmp_path):
    from safetensors.torch import load_file

    rng_before = torch.random.get_rng_state()
    again = build_tiny_qwen3vl(tmp_path / "again", seed=0)
    other = build_tiny_qwen3vl(tmp_path / "other", seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_qwen3vl_dir / name).read_bytes(), name
    assert not torch.equal(
        load_file(other / "model.safetensors")["lm_head.weight"],
        load_file(again / "model.safetensors")["lm_head.weight"],
    )


def test_tied_variant_like_the_2b_and_4b_models_loads_tied(tmp_path):
    path = build_tiny_qwen3vl(tmp_path / "tied", spec=TinyQwen3VLSpec(tie_word_embeddings=True))
    model = _load_model(path)
    assert model.config.tie_word_embeddings is True
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()


def test_cli_builds_either_family(tmp_path, capsys):
    main(["--output-dir", str(tmp_path / "q3"), "--family", "qwen3-vl", "--seed", "2"])
    assert json.loads((tmp_path / "q3" / "config.json").read_text())["model_type"] == "qwen3_vl"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"mrope_section": (4, 4, 4)}, "mrope_section"),
        ({"deepstack_visual_indexes": (2,)}, "deepstack"),
        ({"vision_position_embeddings": 60}, "square"),
    ],
)
def test_spec_rejects_inconsistent_sizes(change, words):
    with pytest.raises(ValueError, match=words):
        TinyQwen3VLSpec(**change)


def test_verl_binds_qwen3vls_rope_index_to_the_processor(tiny_qwen3vl_dir):
    from transformers.models.qwen3_vl import Qwen3VLModel
    from verl.utils import hf_processor, hf_tokenizer

    processor = hf_processor(str(tiny_qwen3vl_dir))
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert processor.get_rope_index.__func__ is Qwen3VLModel.get_rope_index
    assert hf_tokenizer(str(tiny_qwen3vl_dir)).pad_token == "<|endoftext|>"


def test_data_check_counts_qwen3vl_image_tokens_with_16px_patches():
    """The count behind run_qwen3vl_*.sh's prompt budget: a 1536^2 image is (1536 / 32)^2 tokens."""
    from data_prep.check import image_token_count

    released = SimpleNamespace(  # Qwen3-VL's preprocessor_config.json limits
        patch_size=16, merge_size=2, size={"shortest_edge": 65536, "longest_edge": 16777216}
    )
    processor = SimpleNamespace(image_processor=released)
    assert image_token_count(1536, 1536, {"max_pixels": 1536 * 1536}, processor) == 2304
    # Qwen3-VL's processor enlarges small images to 65,536 px (64 tokens); Qwen2.5-VL's stops at 4 tokens.
    assert image_token_count(56, 56, {"max_pixels": 1536 * 1536}, processor) == 64


# ---------------------------------------------------------------------------------------------
# The CPU rollout against verl's actor path
# ---------------------------------------------------------------------------------------------

TEMPERATURE = 0.9
MAX_TOKENS = 12

# Log-probs of prompt + response as verl's FSDP actor computes them: the agent loop's own
# multimodal inputs and position ids (AgentLoopWorker._compute_multi_modal_inputs /
# _compute_position_ids, called on a stand-in for the worker), the model verl's engine loads,
# verl's monkey patch for Qwen3-VL (use_remove_padding=false, as on the CPU backend), logits
# divided by the temperature. Run in a fresh interpreter: the patch rewrites transformers' classes.
_ACTOR_REFERENCE = r"""
import sys, types, torch
from PIL import Image
from transformers import AutoModelForImageTextToText
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
from verl.models.transformers.monkey_patch import apply_monkey_patch
from verl.utils import hf_processor, hf_tokenizer

model_dir, cases_path, out_path = sys.argv[1:4]
processor, tokenizer = hf_processor(model_dir), hf_tokenizer(model_dir)
worker = types.SimpleNamespace(processor=processor, tokenizer=tokenizer, _get_mm_processor_kwargs=lambda audios: {})
model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
apply_monkey_patch(model, use_remove_padding=False)
results = []
for case in torch.load(cases_path, weights_only=False):
    prompt, response = case["prompt_ids"], case["response_ids"]
    input_ids = torch.tensor([prompt + response])
    attention_mask = torch.ones_like(input_ids)
    images = [Image.fromarray(array) for array in case["images"]]
    output = types.SimpleNamespace(multi_modal_data={"images": images} if images else {}, mm_processor_kwargs=None)
    multi_modal_inputs = AgentLoopWorker._compute_multi_modal_inputs(worker, output, input_ids)
    position_ids = AgentLoopWorker._compute_position_ids(worker, input_ids, attention_mask, multi_modal_inputs)
    extra = {key: multi_modal_inputs[key] for key in ("pixel_values", "image_grid_thw") if key in multi_modal_inputs}
    with torch.no_grad():
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids.transpose(0, 1), **extra
        ).logits[0].float()
    steps = logits[len(prompt) - 1 : -1] / case["temperature"]
    results.append(torch.log_softmax(steps, dim=-1).gather(-1, torch.tensor(response)[:, None])[:, 0])
torch.save(results, out_path)
"""


def actor_log_probs(model_dir: pathlib.Path, cases: list[dict], tmp_path: pathlib.Path) -> list[torch.Tensor]:
    """Per case {prompt_ids, images (HxWx3 uint8 arrays), response_ids, temperature}: the actor's
    log-prob of each response token (nats), computed by :data:`_ACTOR_REFERENCE`."""
    cases_path, out_path = tmp_path / "cases.pt", tmp_path / "actor_log_probs.pt"
    torch.save(cases, cases_path)
    completed = subprocess.run(
        [sys.executable, "-c", _ACTOR_REFERENCE, str(model_dir), str(cases_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return torch.load(out_path)


def _make_server(model_dir: pathlib.Path):
    from verl.workers.config import HFModelConfig, RolloutConfig

    from verl_cpu.hf_server import HFRolloutServer

    config = RolloutConfig(
        name="hf", dtype="float32", tensor_model_parallel_size=1, prompt_length=256, response_length=32
    )
    return HFRolloutServer(config, HFModelConfig(path=str(model_dir)))


@pytest.fixture(scope="module")
def hf_server(tiny_qwen3vl_dir):
    return _make_server(tiny_qwen3vl_dir)


def _prompt(server, question: str, image: Image.Image | None) -> list[int]:
    """Prompt ids as verl's agent loop hands them to the server: chat template, image pads expanded."""
    processor = server.generator.processor
    text = _chat_text(processor, question, with_image=image is not None)
    if image is None:
        return processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    return processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()


async def test_batched_rollout_log_probs_match_verls_actor_for_image_and_text_prompts(
    hf_server, tiny_qwen3vl_dir, tmp_path
):
    requests = [
        ("What colour is the circle? " + COT_INSTRUCTION, _random_image(10, (100, 80))),
        ("How many?", _random_image(11, (64, 130))),
        ("Is there a red square in the picture?", _random_image(12, (40, 40))),  # enlarged to the 4-token minimum
        ("Count to ten.", None),
    ]
    sampling = {"temperature": TEMPERATURE, "top_p": 1.0, "top_k": -1, "logprobs": True, "max_tokens": MAX_TOKENS}
    # Sent together: the server runs them as one left-padded batch of different prompt lengths.
    outputs = await asyncio.gather(
        *(
            hf_server.generate(
                _prompt(hf_server, question, image),
                {**sampling, "seed": index},
                f"r{index}",
                image_data=None if image is None else [image],
            )
            for index, (question, image) in enumerate(requests)
        )
    )
    cases = [
        {
            "prompt_ids": _prompt(hf_server, question, image),
            "images": [] if image is None else [np.asarray(image)],
            "response_ids": output.token_ids,
            "temperature": TEMPERATURE,
        }
        for (question, image), output in zip(requests, outputs, strict=True)
    ]
    image_token_id = hf_server.generator.processor.image_token_id
    for output in outputs:
        assert 1 <= len(output.token_ids) <= MAX_TOKENS and len(output.log_probs) == len(output.token_ids)
        assert image_token_id not in output.token_ids  # vision placeholders are banned, as in vLLM
    reference = actor_log_probs(tiny_qwen3vl_dir, cases, tmp_path)
    for output, expected in zip(outputs, reference, strict=True):
        rollout = torch.tensor(output.log_probs)
        torch.testing.assert_close(rollout, expected, atol=1e-4, rtol=0)
    # The check has teeth: some sampled tokens are likely, so a wrong position shows in probabilities too.
    assert max(max(output.log_probs) for output in outputs) > math.log(0.05)


def test_without_token_types_the_image_tokens_get_other_positions(hf_server):
    """The negative control of the test above: the same prompt without ``mm_token_type_ids`` (what
    the rollout sent before Qwen3-VL support) gets 1-D image positions and other log-probs."""
    from verl_cpu.hf_generator import SamplingSpec

    generator = hf_server.generator
    image = _random_image(13, (96, 96))
    inputs = generator.build_inputs(_prompt(hf_server, "What is shown?", image), [image])
    assert inputs.mm_token_type_ids is not None
    assert torch.equal(inputs.mm_token_type_ids.bool(), inputs.input_ids == generator.processor.image_token_id)
    greedy = SamplingSpec(max_new_tokens=4, temperature=0.0, ignore_eos=True)
    with_types = generator.generate(inputs, greedy)
    without_types = generator.generate(dataclasses.replace(inputs, mm_token_type_ids=None), greedy)
    assert abs(with_types.log_probs[0] - without_types.log_probs[0]) > 1e-3


async def test_vllm_style_single_pad_prompt_gives_the_same_greedy_output(hf_server):
    from verl.workers.rollout.utils import qwen2_5_vl_dedup_image_tokens

    image = _random_image(14, (128, 96))
    expanded = _prompt(hf_server, "Describe the picture.", image)
    single = qwen2_5_vl_dedup_image_tokens(expanded, hf_server.generator.processor)
    assert len(single) == len(expanded) - (128 * 96 // PIXELS_PER_TOKEN - 1)
    greedy = {"temperature": 0.0, "max_tokens": 6, "ignore_eos": True, "logprobs": True}
    first = await hf_server.generate(expanded, dict(greedy), "a", image_data=[image])
    second = await hf_server.generate(single, dict(greedy), "b", image_data=[image])
    assert first.token_ids == second.token_ids and len(first.token_ids) == 6
    assert second.log_probs == pytest.approx(first.log_probs, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Run scripts (composed and validated with the others in tests/test_recipe_config.py)
# ---------------------------------------------------------------------------------------------

REPO = pathlib.Path(__file__).resolve().parents[1]


def _script_overrides(script: str, tmp_path: pathlib.Path) -> list[str]:
    """The overrides ``scripts/<script>`` launches with (its print mode), same environment for every script."""
    mpnet = tmp_path / "mpnet"
    mpnet.mkdir(exist_ok=True)
    (mpnet / "config.json").write_text(json.dumps({"model_type": "mpnet"}))
    (mpnet / "modules.json").write_text("[]")
    env = {
        **os.environ,
        "NOISYGRPO_PRINT_OVERRIDES": "1",
        "MODEL_PATH": str(tmp_path / "model"),
        "DATA_DIR": str(tmp_path / "data"),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "EMBEDDING_MODEL": str(mpnet),
        "PYTHON": sys.executable,
    }
    completed = subprocess.run(["bash", str(REPO / "scripts" / script)], env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    return [line for line in completed.stdout.splitlines() if line and not line.startswith("trainer.experiment_name=")]


@pytest.mark.parametrize(
    ("qwen3vl_script", "qwen25vl_script"),
    [
        ("run_qwen3vl_2b.sh", "run_qwen25vl_3b.sh"),
        ("run_qwen3vl_4b.sh", "run_qwen25vl_3b.sh"),
        ("run_qwen3vl_8b.sh", "run_qwen25vl_7b.sh"),
    ],
)
def test_qwen3vl_scripts_launch_exactly_like_their_qwen25vl_counterparts(qwen3vl_script, qwen25vl_script, tmp_path):
    """Same paper settings, micro-batches and tensor parallel size; only the model (and run name) differ."""
    assert _script_overrides(qwen3vl_script, tmp_path) == _script_overrides(qwen25vl_script, tmp_path)
    text = (REPO / "scripts" / qwen3vl_script).read_text()
    size = qwen3vl_script.removeprefix("run_qwen3vl_").removesuffix(".sh").upper()
    assert f"$HOME/models/Qwen3-VL-{size}-Instruct" in text and "2,304 tokens" in text


# ---------------------------------------------------------------------------------------------
# The evaluation driver picks lmms-eval's Qwen3-VL model from config.json
# ---------------------------------------------------------------------------------------------


def _eval_plan(checkpoint: pathlib.Path, out: pathlib.Path, *extra: str):
    from recipe.noisygrpo.eval.evaluate_checkpoint import build_parser, make_plan

    return make_plan(build_parser().parse_args([str(checkpoint), str(out), "--dry-run", "--tasks", "mmstar", *extra]))


def _fake_fsdp_actor(root: pathlib.Path, config: dict) -> pathlib.Path:
    """verl's FSDP checkpoint layout, files only (enough for detection, not loadable)."""
    actor = root / "global_step_1" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 1}))
    (actor / "model_world_size_1_rank_0.pt").write_bytes(b"")
    (actor / "huggingface" / "config.json").write_text(json.dumps(config))
    return actor


def test_eval_runs_a_qwen3vl_folder_with_lmms_evals_simple_qwen3_vl_class(tiny_qwen3vl_dir, tmp_path):
    from recipe.noisygrpo.eval.evaluate_checkpoint import initial_manifest

    plan = _eval_plan(tiny_qwen3vl_dir, tmp_path / "out", "--backend", "hf")
    (command,) = plan.commands
    argv = list(command.argv)
    assert argv[argv.index("--model") + 1] == "qwen3_vl"
    # the simple class is the one that applies max_pixels / min_pixels to images
    assert "--force_simple" in argv
    assert argv[argv.index("--model_args") + 1] == f"pretrained={tiny_qwen3vl_dir},max_pixels=2359296,min_pixels=65536"
    args = SimpleNamespace(checkpoint=tiny_qwen3vl_dir, lmms_python=sys.executable, max_pixels=2359296)
    assert initial_manifest(plan, args, "now")["decoding"]["model_type"] == "qwen3_vl"


def test_eval_runs_a_qwen3vl_fsdp_checkpoint_on_vllm_with_the_qwen3vl_flag(tmp_path):
    actor = _fake_fsdp_actor(tmp_path / "run", {"model_type": "qwen3_vl"})
    plan = _eval_plan(actor, tmp_path / "out", "--backend", "vllm")
    assert plan.merge_argv is not None and plan.family.model_type == "qwen3_vl"
    argv = list(plan.commands[0].argv)
    assert argv[argv.index("--model") + 1] == "vllm" and "--force_simple" not in argv
    model_args = argv[argv.index("--model_args") + 1]
    assert model_args.startswith(f"model={(tmp_path / 'out' / 'hf_model').resolve()},")
    assert model_args.endswith('mm_processor_kwargs={"max_pixels": 2359296},is_qwen3_vl=true')


def test_eval_keeps_qwen25vl_commands_and_refuses_unknown_model_types(tiny_qwen25vl_dir, tmp_path):
    from recipe.noisygrpo.eval.evaluate_checkpoint import model_family

    plan = _eval_plan(tiny_qwen25vl_dir, tmp_path / "out", "--backend", "hf")
    argv = list(plan.commands[0].argv)
    assert argv[argv.index("--model") + 1] == "qwen2_5_vl" and "--force_simple" not in argv
    assert argv[argv.index("--model_args") + 1] == f"pretrained={tiny_qwen25vl_dir},max_pixels=2359296"
    untyped = _eval_plan(_fake_fsdp_actor(tmp_path / "untyped", {}), tmp_path / "out2", "--backend", "hf")
    assert untyped.family.model_type == "qwen2_5_vl"
    assert any("names no model_type" in note for note in untyped.notes)
    with pytest.raises(ValueError, match="qwen2_5_vl, qwen3_vl"):
        model_family("llava")
    with pytest.raises(ValueError, match="qwen2_5_vl, qwen3_vl"):
        _eval_plan(_fake_fsdp_actor(tmp_path / "llava", {"model_type": "llava"}), tmp_path / "out3")


# ---------------------------------------------------------------------------------------------
# One NoisyGRPO step on the CPU backend
# ---------------------------------------------------------------------------------------------


def _canonical(name: str) -> str:
    """A weight name without the wrappers that differ between checkpoint layouts ("model.", "language_model.")."""
    return ".".join(part for part in name.split(".") if part not in ("model", "language_model"))


@pytest.fixture(scope="module")
def noisygrpo_step(tmp_path_factory, tiny_qwen3vl_dir):
    """One NoisyGRPO step with the vision tower frozen and a checkpoint saved.

    Every rollout of a group sees the clean image (levels all 0, clamp conversion): the agent loop,
    estimator and engine are NoisyGRPO's, and the rollout's log-probs must then equal the actor's,
    which verl reports as ``training/rollout_probs_diff_*``. The debug reward gives the rollouts of
    a group different scores (the random model never answers right), so the update is not zero.
    """
    from data_prep.synthetic import write_synthetic_dataset
    from recipe.noisygrpo.demo.run_demo import DemoSettings, demo_overrides, read_step_metrics, train_on_cpu

    workdir = tmp_path_factory.mktemp("qwen3vl_noisygrpo")
    data_files = write_synthetic_dataset(workdir / "data", num_train=16, num_val=4, seed=0)
    overrides = [
        *demo_overrides(tiny_qwen3vl_dir, data_files, workdir, DemoSettings(steps=1)),
        "noisygrpo.noise.levels=[0.0,0.0,0.0,0.0]",
        "reward.custom_reward_function.path=pkg://verl_cpu.debug_reward",
        "actor_rollout_ref.actor.freeze_vision_tower=true",
        "trainer.save_freq=1",
    ]
    started = time.monotonic()
    result = train_on_cpu(workdir, overrides, timeout_s=1200)
    wall_s = time.monotonic() - started
    log = result.log_path.read_text(errors="replace")
    assert result.returncode == 0, log[-8000:]
    print(f"[qwen3vl e2e] one NoisyGRPO step: {wall_s:.0f} s wall")
    return SimpleNamespace(workdir=workdir, result=result, log=log, steps=read_step_metrics(workdir / "metrics.jsonl"))


@pytest.mark.e2e
def test_noisygrpo_step_on_qwen3vl_logs_finite_losses_and_the_estimators_metrics(noisygrpo_step):
    from recipe.noisygrpo.metrics_log import read_advantage_rows
    from verl_ext.kalman import bayesian_advantage

    assert noisygrpo_step.result.leftovers == [], f"Ray processes outlived the run: {noisygrpo_step.result.leftovers}"
    (step,) = noisygrpo_step.steps
    assert step["step"] == 1
    for key in (
        "actor/pg_loss",
        "actor/kl_loss",
        "actor/grad_norm",
        "noisygrpo/kalman_gain_mean",
        "noisygrpo/prior_weight_mean",
        "noisygrpo/sigma_s_mean",
        "noisygrpo/reward_std",
        "noisygrpo/advantage_std",
        "noisygrpo/reward@noise_0.00",
    ):
        assert key in step, key
        assert math.isfinite(step[key]), (key, step[key])
    assert step["actor/grad_norm"] > 0 and step["noisygrpo/advantage_std"] > 0
    # The logged advantages and Kalman gain are the estimator's, recomputed from the logged rewards.
    rows = read_advantage_rows(noisygrpo_step.workdir / "advantages")
    assert len(rows) == 2 * 4 and {row["noise_extent"] for row in rows} == {0.0}
    scores = torch.tensor([row["score"] for row in rows], dtype=torch.float64)
    expected, stats = bayesian_advantage(
        scores, torch.tensor([row["noise_extent"] for row in rows], dtype=torch.float64), [row["uid"] for row in rows]
    )
    torch.testing.assert_close(
        torch.tensor([row["advantage"] for row in rows], dtype=torch.float64), expected, atol=1e-4, rtol=0
    )
    assert step["noisygrpo/kalman_gain_mean"] == pytest.approx(float(stats.kalman_gain.mean()), abs=1e-5)
    assert 0 < step["noisygrpo/kalman_gain_mean"] <= 1 / 1.1


@pytest.mark.e2e
def test_noisygrpo_step_on_qwen3vl_rollout_log_probs_match_the_actor(noisygrpo_step):
    (step,) = noisygrpo_step.steps
    # Probabilities of the sampled tokens (the tiny model's are peaked: see TinyQwen3VLSpec); 1-D
    # image positions in the rollout would differ by ~0.06.
    assert step["training/rollout_probs_diff_valid"] == 1
    assert step["training/rollout_probs_diff_max"] < 1e-3
    assert step["training/rollout_actor_probs_pearson_corr"] > 0.9999


@pytest.mark.e2e
def test_noisygrpo_step_on_qwen3vl_keeps_the_vision_tower_frozen(noisygrpo_step, tiny_qwen3vl_dir):
    from safetensors.torch import load_file

    assert "froze the vision tower" in noisygrpo_step.log
    actor = noisygrpo_step.workdir / "checkpoints" / "global_step_1" / "actor"
    shard = torch.load(actor / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    trained = {_canonical(name): tensor.full_tensor() for name, tensor in shard.items()}
    initial = {_canonical(name): tensor for name, tensor in load_file(tiny_qwen3vl_dir / "model.safetensors").items()}
    assert set(initial) <= set(trained), sorted(set(initial) - set(trained))[:5]
    changed = {key for key, tensor in initial.items() if not torch.equal(tensor, trained[key])}
    visual = [key for key in initial if "visual" in key]
    assert any("deepstack" in key for key in visual), "the DeepStack mergers belong to the tower"
    assert not changed & set(visual), sorted(changed & set(visual))[:5]
    assert changed - set(visual), "no language-model weight changed"


@pytest.mark.e2e
def test_noisygrpo_step_on_qwen3vl_checkpoint_merges_and_is_evaluated_as_qwen3vl(noisygrpo_step, tmp_path):
    from transformers import AutoModelForImageTextToText

    from recipe.noisygrpo.eval.evaluate_checkpoint import merge_fsdp_checkpoint

    actor = noisygrpo_step.workdir / "checkpoints" / "global_step_1" / "actor"
    assert _eval_plan(actor, tmp_path / "plan").family.model_type == "qwen3_vl"
    merged = tmp_path / "merged"
    merge_fsdp_checkpoint(actor, merged)  # verl's own model merger
    model = AutoModelForImageTextToText.from_pretrained(merged)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    plan = _eval_plan(merged, tmp_path / "out", "--backend", "hf")
    assert plan.commands[0].argv[plan.commands[0].argv.index("--model") + 1] == "qwen3_vl"
