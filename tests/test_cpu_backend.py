"""Tests of the CPU debug backend (verl_cpu): platform, device module, HF rollout, and one real GRPO step.

The unit tests take ~20 s (two fresh interpreters probe the registrations; the HF rollout is
driven in-process, without Ray); the e2e test runs stock ``python -m verl.trainer.main_ppo``
for GRPO steps on the tiny Qwen2.5-VL (about 90 s on 2 free cores) and is marked ``e2e``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _env_without_cpu_backend() -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV}
    for key in ("NOISYGRPO_CPU_BACKEND", "VERL_PLATFORM", "VERL_ENGINE_DEVICE"):
        env.pop(key, None)
    return env


def _last_json_line(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _shape_image(color: str, shape: str, size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    width, height = size
    box = [width // 4, height // 4, 3 * width // 4, 3 * height // 4]
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color)
    return image


# ---------------------------------------------------------------------------------------------
# Registration: only with NOISYGRPO_CPU_BACKEND=1 (fresh interpreters: registries are per process)
# ---------------------------------------------------------------------------------------------

_REGISTRATION_PROBE = """
import json, sys
import verl
from verl.plugin.platform import PlatformRegistry
from verl.workers.rollout.replica import RolloutReplicaRegistry
from verl.workers.rollout import base
info = {
    "platforms": list(PlatformRegistry.registered_names()),
    "cpu_backend_imported": "verl_cpu.backend" in sys.modules,
    "hf_replica": "hf" in RolloutReplicaRegistry._registry,
    "hf_adapter": ("hf", "async") in base._ROLLOUT_REGISTRY,
}
if info["hf_replica"]:
    from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name, get_torch_device
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class
    info.update(
        device=get_device_name(), backend=get_nccl_backend(), resource=get_resource_name(),
        device_id=get_torch_device().current_device(),
        replica=get_rollout_replica_class("hf").__name__, adapter=get_rollout_class("hf", "async").__name__,
    )
    # Blocker 3: verl's own init builds "cpu:gloo,cpu:gloo" on the cpu platform (torch rejects it);
    # after the Ray setup hook ran, verl finds the group initialised and proceeds.
    import torch.distributed as dist
    from verl.utils.distributed import initialize_global_process_group_ray
    from verl_cpu.worker_setup import init_gloo_process_group
    try:
        initialize_global_process_group_ray()
        info["verl_init_alone"] = "ok"
    except ValueError as error:
        info["verl_init_alone"] = str(error)
    init_gloo_process_group()
    initialize_global_process_group_ray()
    info.update(dist_backend=dist.get_backend(), dist_world_size=dist.get_world_size())
print(json.dumps(info))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def registration_probes() -> dict[str, dict]:
    """The probe in two fresh interpreters, run concurrently: without and with the CPU backend env.

    The "with" run also plays rank 0 of a one-rank verl worker group (the env RayWorkerGroup sets).
    """
    from verl_cpu.overrides import cpu_env

    worker_env = {"WG_BACKEND": "ray", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    envs = {
        "without": _env_without_cpu_backend(),
        "with": {**_env_without_cpu_backend(), **cpu_env(), **worker_env, "MASTER_PORT": str(_free_port())},
    }
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", _REGISTRATION_PROBE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, env in envs.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
        results[name] = _last_json_line(stdout)
    return results


def test_cpu_backend_is_not_registered_without_the_env_var(registration_probes):
    info = registration_probes["without"]
    assert "cpu" not in info["platforms"]
    assert not info["cpu_backend_imported"]
    assert not info["hf_replica"] and not info["hf_adapter"]


def test_cpu_backend_registers_platform_and_hf_rollout_with_the_env_var(registration_probes):
    info = registration_probes["with"]
    assert "cpu" in info["platforms"] and info["cpu_backend_imported"]
    assert info["device"] == "cpu" and info["device_id"] == "cpu"
    assert info["backend"] == "gloo"
    assert info["resource"] == "GPU"
    assert info["replica"] == "HFReplica" and info["adapter"] == "HFServerAdapter"


def test_gloo_setup_hook_lets_verl_initialise_its_process_group(registration_probes):
    info = registration_probes["with"]
    assert "cpu:gloo,cpu:gloo" in info["verl_init_alone"]
    assert info["dist_backend"] == "gloo" and info["dist_world_size"] == 1


# ---------------------------------------------------------------------------------------------
# Platform and device module
# ---------------------------------------------------------------------------------------------


def test_device_module_memory_and_cache_functions_are_no_ops():
    from verl_cpu import device_module as dm

    assert dm.empty_cache() is None and dm.ipc_collect() is None and dm.synchronize() is None
    assert dm.set_per_process_memory_fraction(0.9) is None and dm.reset_peak_memory_stats() is None
    for counter in (dm.memory_allocated, dm.memory_reserved, dm.max_memory_allocated, dm.max_memory_reserved):
        assert counter() == 0
    free, total = dm.mem_get_info()
    assert isinstance(free, int) and isinstance(total, int) and 0 <= free <= total
    assert isinstance(dm.get_device_name(), str) and dm.get_device_name()
    assert dm.current_device() == "cpu" and dm.device_count() == 1 and dm.is_available()
    assert torch.ones(2).to(dm.current_device()).device.type == "cpu"
    # RNG state goes through the global CPU generator (verl checkpoints it as the device RNG).
    state = dm.get_rng_state()
    first = torch.rand(3)
    dm.set_rng_state(state)
    assert torch.equal(torch.rand(3), first)


def test_cpu_platform_answers(monkeypatch):
    from verl_cpu import device_module
    from verl_cpu.platform import PlatformCPU

    platform = PlatformCPU()
    assert platform.device_name == "cpu" and platform.device_module is device_module
    assert platform.current_device() == "cpu"
    assert platform.communication_backend_name() == "gloo"
    assert platform.ray_resource_name() == "GPU"
    assert platform.ray_resource_options(1) == {"num_gpus": 1}
    assert platform.get_device_capability() == (None, None) and not platform.is_ipc_supported()
    with platform.nvtx_range("noop"):
        pass
    # Auto-detection claims the host only when the CPU backend is switched on.
    monkeypatch.delenv("NOISYGRPO_CPU_BACKEND", raising=False)
    assert not platform.is_platform_available(use_smi_check=True)
    monkeypatch.setenv("NOISYGRPO_CPU_BACKEND", "1")
    assert platform.is_platform_available(use_smi_check=True)


def test_gloo_setup_hook_ignores_processes_outside_verl_worker_groups():
    from verl_cpu.worker_setup import is_verl_worker_group_process

    worker_env = {"WG_BACKEND": "ray", "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert is_verl_worker_group_process(worker_env)
    assert not is_verl_worker_group_process({k: v for k, v in worker_env.items() if k != "WG_BACKEND"})
    assert not is_verl_worker_group_process({k: v for k, v in worker_env.items() if k != "MASTER_PORT"})


def test_cpu_overrides_compose_with_verl_ppo_config():
    """Every override must exist in verl's config (or be '+'-added) and callers can override them."""
    import verl
    from hydra import compose, initialize_config_dir

    from verl_cpu.overrides import GLOO_SETUP_HOOK, cpu_overrides

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose("ppo_trainer", overrides=[*cpu_overrides(num_cpus=16), "reward.num_workers=2"])
    assert config.ray_kwargs.ray_init.num_cpus == 16 and config.ray_kwargs.ray_init.num_gpus == 1
    assert config.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == GLOO_SETUP_HOOK
    assert config.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1
    assert config.actor_rollout_ref.rollout.name == "hf"
    assert config.actor_rollout_ref.actor.strategy == "fsdp2" and config.actor_rollout_ref.ref.strategy == "fsdp2"
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert config.actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype == "fp32"
    assert config.actor_rollout_ref.ref.fsdp_config.forward_only is False
    assert config.actor_rollout_ref.ref.optim._target_ == "verl.workers.config.FSDPOptimizerConfig"
    assert config.reward.num_workers == 2


def test_cli_prints_env_exports_and_overrides_for_shell_scripts(capsys):
    import shlex

    from verl_cpu.__main__ import main
    from verl_cpu.overrides import cpu_env, cpu_overrides

    main(["env"])
    exported = dict(shlex.split(line)[1].split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert exported == cpu_env()
    main(["overrides", "--num-cpus", "8"])
    assert capsys.readouterr().out.splitlines() == cpu_overrides(num_cpus=8)


# ---------------------------------------------------------------------------------------------
# HF rollout server (in-process, no Ray)
# ---------------------------------------------------------------------------------------------

MAX_TOKENS = 12


def _rollout_config(**overrides):
    from verl.workers.config import RolloutConfig

    kwargs = dict(name="hf", dtype="float32", tensor_model_parallel_size=1, prompt_length=256, response_length=32)
    return RolloutConfig(**{**kwargs, **overrides})


def _make_server(model_dir: Path, **config_overrides):
    from verl.workers.config import HFModelConfig

    from verl_cpu.hf_server import HFRolloutServer

    return HFRolloutServer(_rollout_config(**config_overrides), HFModelConfig(path=str(model_dir)))


@pytest.fixture(scope="module")
def hf_server(tiny_qwen25vl_dir):
    """Read-only server (tests that change weights build their own)."""
    return _make_server(tiny_qwen25vl_dir)


@pytest.fixture(scope="module")
def image_prompt(tiny_qwen25vl_dir):
    """A text+image prompt tokenised by the processor: ids with expanded image pads + the image inputs."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen25vl_dir)
    image = _shape_image("red", "circle", (84, 56))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is shown?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = processor(text=[text], images=[image], return_tensors="pt")
    assert (encoded["input_ids"] == processor.image_token_id).sum() > 1  # pads are expanded
    return {"image": image, "encoded": encoded, "prompt_ids": encoded["input_ids"][0].tolist(), "processor": processor}


def _teacher_forced_log_probs(model_dir: Path, encoded, response_ids: list[int], temperature: float) -> torch.Tensor:
    """Independent reference: a fresh HF model, one full forward pass over prompt + response."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    prompt_ids = encoded["input_ids"]
    input_ids = torch.cat([prompt_ids, torch.tensor([response_ids])], dim=1)
    with torch.no_grad():
        logits = (
            model(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                pixel_values=encoded["pixel_values"],
                image_grid_thw=encoded["image_grid_thw"],
                # The actor's M-RoPE positions: without token types transformers gives image tokens 1-D ones.
                mm_token_type_ids=torch.cat(
                    [encoded["mm_token_type_ids"], torch.zeros(1, len(response_ids), dtype=torch.long)], dim=1
                ),
            )
            .logits[0]
            .float()
        )
    step_logits = logits[prompt_ids.shape[1] - 1 : -1]
    return torch.log_softmax(step_logits / temperature, dim=-1).gather(-1, torch.tensor(response_ids)[:, None])[:, 0]


async def test_hf_server_generates_for_image_prompt_with_teacher_forced_log_probs(
    hf_server, image_prompt, tiny_qwen25vl_dir
):
    temperature = 0.7
    sampling = {"temperature": temperature, "top_p": 0.9, "top_k": -1, "logprobs": True, "max_tokens": MAX_TOKENS}
    torch.manual_seed(0)
    output = await hf_server.generate(
        prompt_ids=image_prompt["prompt_ids"],
        sampling_params=sampling,
        request_id="r0",
        image_data=[image_prompt["image"]],
    )
    assert 1 <= len(output.token_ids) <= MAX_TOKENS
    assert len(output.log_probs) == len(output.token_ids)
    assert output.stop_reason == "completed"
    processor = image_prompt["processor"]
    assert processor.image_token_id not in output.token_ids  # vision placeholders are banned, as in vLLM

    reference = _teacher_forced_log_probs(tiny_qwen25vl_dir, image_prompt["encoded"], output.token_ids, temperature)
    assert torch.allclose(torch.tensor(output.log_probs), reference, atol=1e-4, rtol=0), (
        (torch.tensor(output.log_probs) - reference).abs().max()
    )


async def test_hf_server_accepts_vllm_style_single_pad_prompt(hf_server, image_prompt):
    """vLLM takes one <|image_pad|> per image; the agent loop sends them expanded. Same greedy output either way."""
    from verl.workers.rollout.utils import qwen2_5_vl_dedup_image_tokens

    greedy = {"temperature": 0.0, "max_tokens": MAX_TOKENS, "ignore_eos": True, "logprobs": True}
    expanded = await hf_server.generate(
        image_prompt["prompt_ids"], dict(greedy), "a", image_data=[image_prompt["image"]]
    )
    single_pad_ids = qwen2_5_vl_dedup_image_tokens(image_prompt["prompt_ids"], image_prompt["processor"])
    assert len(single_pad_ids) < len(image_prompt["prompt_ids"])
    collapsed = await hf_server.generate(single_pad_ids, dict(greedy), "b", image_data=[image_prompt["image"]])
    assert len(expanded.token_ids) == MAX_TOKENS  # ignore_eos: runs to the budget
    assert collapsed.token_ids == expanded.token_ids
    assert collapsed.log_probs == pytest.approx(expanded.log_probs, abs=1e-5)


async def test_hf_server_refuses_video_and_processors_it_cannot_place_images_for(hf_server, image_prompt, monkeypatch):
    """Requests outside the CPU rollout's scope fail with a ValueError that points to the vLLM rollout."""
    with pytest.raises(ValueError, match="text and images only.*vLLM rollout"):
        await hf_server.generate([1, 2, 3], {"max_tokens": 2}, "video", video_data=[object()])
    generator = hf_server.generator
    # An image processor without merge_size: not Qwen2-VL-family.
    monkeypatch.setattr(generator, "processor", types.SimpleNamespace(image_processor=object()))
    with pytest.raises(ValueError, match="Qwen2-VL-family image processors.*vLLM rollout"):
        generator.build_inputs(image_prompt["prompt_ids"], [image_prompt["image"]])


async def test_hf_server_returns_log_probs_only_when_asked(hf_server):
    output = await hf_server.generate([1, 2, 3], {"max_tokens": 2, "temperature": 1.0}, "no-logprobs")
    assert 1 <= len(output.token_ids) <= 2 and output.log_probs is None


def test_sampling_budget_follows_the_vllm_server():
    from verl_cpu.hf_server import resolve_sampling_spec

    config = _rollout_config(prompt_length=100, response_length=20, temperature=0.9, top_k=5)
    default = resolve_sampling_spec({"top_k": None}, prompt_length=90, config=config, max_model_len=4096)
    assert default.max_new_tokens == 20 and default.temperature == 0.9 and default.top_k == 5
    long_prompt = resolve_sampling_spec({}, prompt_length=110, config=config, max_model_len=4096)
    assert long_prompt.max_new_tokens == 10  # prompt_length + response_length - len(prompt)
    capped = resolve_sampling_spec(
        {"max_tokens": 50, "temperature": 0}, prompt_length=4090, config=config, max_model_len=4096
    )
    assert capped.max_new_tokens == 6 and capped.greedy and capped.logprob_temperature == 1.0
    with pytest.raises(ValueError):
        resolve_sampling_spec({}, prompt_length=4096, config=config, max_model_len=4096)


class _FakeActorHandle:
    """Stands in for a Ray actor handle on an in-process server: ``handle.method.remote(...)`` -> coroutine."""

    def __init__(self, target):
        self._target = target
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self._target, name)
        calls = self.calls

        class _Remote:
            @staticmethod
            def remote(*args, **kwargs):
                calls.append(name)
                return method(*args, **kwargs)

        return _Remote


def _adapter(monkeypatch, rank: int, handle: _FakeActorHandle, ranks_per_replica: int = 1):
    from verl.workers.config import CheckpointEngineConfig, HFModelConfig

    from verl_cpu.hf_adapter import HFServerAdapter

    monkeypatch.setenv("RANK", str(rank))
    config = _rollout_config(
        tensor_model_parallel_size=ranks_per_replica,
        checkpoint_engine=CheckpointEngineConfig(update_weights_bucket_megabytes=1),
    )
    adapter = HFServerAdapter(config, HFModelConfig(path=str(handle._target.model_config.local_path)), None)
    adapter._server = handle  # instead of ray.get_actor
    return adapter


async def test_weight_update_through_adapter_changes_outputs(tiny_qwen25vl_dir, image_prompt, monkeypatch):
    server = _make_server(tiny_qwen25vl_dir)
    greedy = {"temperature": 0.0, "max_tokens": MAX_TOKENS, "ignore_eos": True, "logprobs": True}
    before = await server.generate(image_prompt["prompt_ids"], dict(greedy), "x", image_data=[image_prompt["image"]])

    generator = torch.Generator().manual_seed(1)
    new_weights = {
        name: tensor + 0.5 * torch.randn(tensor.shape, generator=generator)
        for name, tensor in server.generator.model.state_dict().items()
    }
    handle = _FakeActorHandle(server)
    adapter = _adapter(monkeypatch, rank=0, handle=handle)
    assert adapter.is_leader and adapter.replica_rank == 0
    await adapter.update_weights(iter(new_weights.items()), global_steps=3)

    assert handle.calls[0] == "begin_weight_update" and handle.calls[-1] == "finish_weight_update"
    assert handle.calls.count("load_weights") >= 2  # 3.7 MB of weights in 1 MB buckets
    for name, tensor in server.generator.model.state_dict().items():
        assert torch.equal(tensor, new_weights[name]), name
    after = await server.generate(image_prompt["prompt_ids"], dict(greedy), "y", image_data=[image_prompt["image"]])
    assert after.extra_fields["global_steps"] == 3
    assert after.log_probs != pytest.approx(before.log_probs, abs=1e-3)


async def test_non_leader_rank_joins_the_gather_but_sends_nothing(hf_server, monkeypatch):
    handle = _FakeActorHandle(hf_server)
    adapter = _adapter(monkeypatch, rank=3, handle=handle, ranks_per_replica=2)
    assert not adapter.is_leader and adapter.replica_rank == 1
    consumed = []

    def weights():  # stands in for verl's generator, whose full_tensor() every rank must drive
        for name in ("a", "b"):
            consumed.append(name)
            yield name, torch.zeros(1)

    await adapter.update_weights(weights())
    assert consumed == ["a", "b"] and handle.calls == []


async def test_adapter_refuses_weight_wire_formats_other_than_full_tensors(hf_server, monkeypatch):
    handle = _FakeActorHandle(hf_server)
    adapter = _adapter(monkeypatch, rank=0, handle=handle)
    with pytest.raises(ValueError, match="full tensors only, got wire_format='bucketed'.*vLLM rollout"):
        await adapter.update_weights(iter([("a", torch.zeros(1))]), wire_format="bucketed")
    assert handle.calls == []  # refused before the server is touched


async def test_incomplete_or_misnamed_weight_updates_fail_loudly(tiny_qwen25vl_dir):
    server = _make_server(tiny_qwen25vl_dir)
    state = server.generator.model.state_dict()
    first_name = next(iter(state))
    await server.begin_weight_update()
    await server.load_weights({first_name: state[first_name].clone()})
    with pytest.raises(RuntimeError, match="did not include"):
        await server.finish_weight_update()
    with pytest.raises(KeyError, match="not a parameter"):
        await server.load_weights({"model.no_such_layer.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------
# run_on_cpu: environment, output, leftovers, timeout (with a stand-in entry point, no verl)
# ---------------------------------------------------------------------------------------------

_LEAKY_ENTRY_POINT = """
import os, subprocess, sys
if "--sleep" in sys.argv:
    import time; time.sleep(60)
# A detached grandchild that outlives this driver, like a Ray process that failed to exit.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
print("child", child.pid, "backend", os.environ.get("NOISYGRPO_CPU_BACKEND"), "args", " ".join(sys.argv[1:]))
"""


def _leaky_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "leaky_entry.py").write_text(_LEAKY_ENTRY_POINT)
    return {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_run_on_cpu_sets_env_and_kills_processes_that_outlive_the_run(tmp_path):
    from verl_cpu.launch import run_on_cpu

    result = run_on_cpu("leaky_entry", ["a.b=1"], workdir=tmp_path, extra_env=_leaky_env(tmp_path), grace_s=1)
    log = result.log_path.read_text()
    assert result.returncode == 0 and not result.timed_out, log
    child_pid = int(re.search(r"child (\d+)", log).group(1))
    assert "backend 1" in log and "a.b=1 ++ray_kwargs.ray_init._temp_dir=/tmp/ray_cpu_" in log
    assert result.leftovers == [child_pid]
    time.sleep(0.5)
    assert not Path(f"/proc/{child_pid}").exists() or "Z" in Path(f"/proc/{child_pid}/stat").read_text().split()[2]
    assert result.ray_temp_dir is not None and result.ray_temp_dir.exists()  # kept: the run left processes
    shutil.rmtree(result.ray_temp_dir)


def test_run_on_cpu_stops_a_run_at_its_timeout(tmp_path):
    from verl_cpu.launch import run_on_cpu

    result = run_on_cpu(
        "leaky_entry", ["--sleep"], workdir=tmp_path, extra_env=_leaky_env(tmp_path), timeout_s=3, grace_s=1
    )
    assert result.timed_out and result.returncode != 0
    assert result.elapsed_s < 20
    shutil.rmtree(result.ray_temp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# e2e: one real GRPO step of stock verl main_ppo on CPU
# ---------------------------------------------------------------------------------------------

# verl's geo3k layout. Prompt lengths must differ within a batch: upstream verl's
# maybe_fix_3d_position_ids breaks when every sequence of a batch has the same length (the
# nested tensor then has no ragged dimension) -- not CPU-specific. Questions and image sizes
# (hence image-token counts) both vary here.
_DEBUG_ROWS = [
    ("red", "circle", (56, 56), "What shape is shown?"),
    ("blue", "square", (84, 56), "What color is the shape in the image? Answer with one word."),
    ("green", "circle", (56, 84), "Is there a circle in the image?"),
    ("yellow", "square", (112, 56), "How many shapes are in the picture? Think about it first, then answer."),
]


def write_debug_geo3k_parquet(path: Path) -> Path:
    import pandas as pd

    rows = []
    for index, (color, shape, size, question) in enumerate(_DEBUG_ROWS):
        buffer = io.BytesIO()
        _shape_image(color, shape, size).save(buffer, format="PNG")
        rows.append(
            {
                "data_source": "cpu_debug_shapes",
                "prompt": [{"role": "user", "content": "<image>" + question}],
                "images": [{"bytes": buffer.getvalue()}],
                "ability": "vision",
                "reward_model": {"style": "rule", "ground_truth": shape},
                "extra_info": {"index": index, "split": "train", "question": question},
            }
        )
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_debug_rows_have_distinct_prompt_lengths(tiny_qwen25vl_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen25vl_dir)
    lengths = []
    for color, shape, size, question in _DEBUG_ROWS:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lengths.append(len(processor(text=[text], images=[_shape_image(color, shape, size)])["input_ids"][0]))
    assert len(set(lengths)) == len(lengths), lengths


_METRIC = re.compile(r"([A-Za-z_][\w/@.\-]*):(-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))")


def parse_step_metrics(log: str, step: int = 1) -> dict[str, float]:
    """Metrics of verl's console logger line ``step:N - key:value - ...`` (Ray prefixes/colours allowed)."""
    clean = re.sub(r"\x1b\[[0-9;]*m", "", log)
    lines = [line for line in clean.splitlines() if re.search(rf"\bstep:{step} - ", line)]
    assert lines, f"no 'step:{step}' metrics line in the log"
    body = lines[-1][lines[-1].index(f"step:{step} - ") :]
    return {key: float(value) for key, value in _METRIC.findall(body)}


@pytest.mark.e2e
def test_grpo_step_of_stock_main_ppo_on_cpu(tiny_qwen25vl_dir, tmp_path):
    """One GRPO step of stock ``python -m verl.trainer.main_ppo`` (v1 sync trainer, TransferQueue, FSDP2
    actor + reference, agent loop, reward loop) on the hf rollout, plus a second, cheap step (~4 s) whose rollout
    checks the trainer->rollout weight sync: with lr 1e-3, skipping the sync puts step 2's
    rollout_probs_diff_max at ~5e-4 (measured), against ~1e-6 with it."""
    from verl_cpu.launch import run_on_cpu
    from verl_cpu.overrides import cpu_overrides

    train_file = write_debug_geo3k_parquet(tmp_path / "train.parquet")
    overrides = [
        *cpu_overrides(num_cpus=32),
        "algorithm.adv_estimator=grpo",
        "trainer.use_v1=true",
        "trainer.v1.trainer_mode=sync",
        f"data.train_files={train_file}",
        f"data.val_files={train_file}",
        "data.image_key=images",
        "data.train_batch_size=2",
        "data.max_prompt_length=160",
        "data.max_response_length=16",
        "data.filter_overlong_prompts=false",
        f"actor_rollout_ref.model.path={tiny_qwen25vl_dir}",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        # Whole batch in one micro-batch: prompt lengths differ within it (see _DEBUG_ROWS).
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        # KL loss brings in the reference policy (a second FSDP engine; see cpu_overrides).
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.04",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        "algorithm.use_kl_in_reward=false",
        "reward.custom_reward_function.path=pkg://verl_cpu.debug_reward",
        "reward.custom_reward_function.name=compute_score",
        "trainer.total_training_steps=2",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={tmp_path / 'checkpoints'}",
    ]
    result = run_on_cpu("verl.trainer.main_ppo", overrides, workdir=tmp_path, timeout_s=900)
    log = result.log_path.read_text(errors="replace")
    assert not result.timed_out, f"main_ppo did not finish in 900 s; log: {result.log_path}"
    assert result.returncode == 0, log[-6000:]
    assert result.leftovers == [], f"Ray processes outlived the run: {result.leftovers}"
    assert result.ray_temp_dir is not None and not result.ray_temp_dir.exists()
    elapsed = result.elapsed_s

    metrics = parse_step_metrics(log, step=1)
    for key in ("actor/pg_loss", "actor/grad_norm", "training/rollout_probs_diff_max", "timing_s/step"):
        assert key in metrics, f"{key} missing from step metrics"
    assert math.isfinite(metrics["actor/pg_loss"])
    assert math.isfinite(metrics["actor/grad_norm"]) and metrics["actor/grad_norm"] > 0
    # Rollout (HF generate) vs FSDP actor recomputation, both fp32: only kernel-level noise.
    assert metrics["training/rollout_probs_diff_max"] < 5e-5
    assert metrics["response_length/mean"] > 0
    # Step 2 samples with the weights synced after step 1's update.
    step2 = parse_step_metrics(log, step=2)
    assert step2["training/rollout_probs_diff_max"] < 5e-5
    assert math.isfinite(step2["actor/pg_loss"]) and math.isfinite(step2["actor/grad_norm"])
    # The frozen reference: KL is 0 before the first update and positive after it.
    assert metrics["actor/kl_loss"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < step2["actor/kl_loss"] < 10
    print(
        f"\nGRPO on CPU: step 1 {metrics['timing_s/step']:.1f} s (gen {metrics['timing_s/gen']:.1f} s),"
        f" step 2 {step2['timing_s/step']:.1f} s, whole run {elapsed:.0f} s;"
        f" rollout_probs_diff_max {metrics['training/rollout_probs_diff_max']:.2e} /"
        f" {step2['training/rollout_probs_diff_max']:.2e}; step 1 pg_loss {metrics['actor/pg_loss']:.3g},"
        f" grad_norm {metrics['actor/grad_norm']:.3g}"
    )


def _encoded_prompt(processor, image, question: str):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[image], return_tensors="pt")


async def test_concurrent_requests_are_batched_and_seeded_tokens_do_not_depend_on_the_batch(
    hf_server, image_prompt, tiny_qwen25vl_dir
):
    import asyncio

    processor = image_prompt["processor"]
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "logprobs": True, "max_tokens": MAX_TOKENS}
    others = [
        (
            _encoded_prompt(processor, _shape_image(colour, "square", size), question),
            _shape_image(colour, "square", size),
        )
        for colour, size, question in [
            ("blue", (56, 56), "What colour?"),
            ("green", (112, 84), "How many squares are in the picture?"),
            ("red", (84, 84), "Describe it."),
        ]
    ]
    calls = []
    original = hf_server.generator.generate_batch

    def recording(requests):
        calls.append(len(requests))
        return original(requests)

    hf_server.generator.generate_batch = recording
    try:
        alone = await hf_server.generate(
            image_prompt["prompt_ids"], {**sampling, "seed": 7}, "alone", image_data=[image_prompt["image"]]
        )
        together = await asyncio.gather(
            hf_server.generate(
                image_prompt["prompt_ids"], {**sampling, "seed": 7}, "a", image_data=[image_prompt["image"]]
            ),
            *(
                hf_server.generate(
                    encoded["input_ids"][0].tolist(), {**sampling, "seed": 100 + i}, f"o{i}", image_data=[image]
                )
                for i, (encoded, image) in enumerate(others)
            ),
        )
        other_seed = await hf_server.generate(
            image_prompt["prompt_ids"], {**sampling, "seed": 8}, "b", image_data=[image_prompt["image"]]
        )
    finally:
        hf_server.generator.generate_batch = original
    assert calls == [1, 4, 1]  # the four concurrent requests ran as one batch
    assert together[0].token_ids == alone.token_ids  # same seed, other batch mates, left padding
    assert together[0].log_probs == pytest.approx(alone.log_probs, abs=1e-5)
    assert other_seed.token_ids != alone.token_ids
    # every row of the padded batch scores its tokens as a lone forward pass does
    for output, (encoded, _) in zip(together[1:], others, strict=True):
        reference = _teacher_forced_log_probs(tiny_qwen25vl_dir, encoded, output.token_ids, 1.0)
        assert torch.allclose(torch.tensor(output.log_probs), reference, atol=1e-4, rtol=0)


def test_cpu_overrides_select_the_fine_poll_replay_buffer_through_verls_hook(monkeypatch):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.utils.import_utils import load_extern_type

    from verl_cpu.overrides import cpu_overrides
    from verl_cpu.replay_buffer import POLL_INTERVAL_ENV, FinePollReplayBuffer

    chosen = dict(
        item.split("=", 1) for item in cpu_overrides() if item.startswith("trainer.v1.sampler.custom_sampler")
    )
    cls = load_extern_type(
        chosen["trainer.v1.sampler.custom_sampler.path"], chosen["trainer.v1.sampler.custom_sampler.name"]
    )
    assert cls is FinePollReplayBuffer and issubclass(cls, ReplayBuffer)
    kwargs = dict(
        trainer_mode="sync",
        trainer_config=OmegaConf.create({}),
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs=OmegaConf.create({}),
    )
    assert cls(**kwargs).poll_interval == pytest.approx(0.1)
    monkeypatch.setenv(POLL_INTERVAL_ENV, "0.5")
    assert cls(**kwargs).poll_interval == pytest.approx(0.5)


def test_run_on_cpu_appends_to_the_log_of_an_earlier_launch(tmp_path):
    from verl_cpu.launch import run_on_cpu

    log_path = tmp_path / "train.log"
    log_path.write_text("output of the first launch\n")
    result = run_on_cpu(
        "leaky_entry", ["a.b=1"], workdir=tmp_path, log_path=log_path, extra_env=_leaky_env(tmp_path), grace_s=1
    )
    log = log_path.read_text()
    assert log.startswith("output of the first launch\n\n[run_on_cpu] launch at ")
    assert "python -m leaky_entry" in log and "backend 1" in log
    shutil.rmtree(result.ray_temp_dir, ignore_errors=True)
