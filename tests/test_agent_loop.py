"""NoisyGRPOAgentLoop driven through verl's real v1 agent-loop worker with a fake rollout server.

The path is the trainer's: NoisyRLHFDataset rows -> verl's collate_fn -> TensorDict ->
``AgentLoopWorkerTQ.generate_sequences`` (which fans each prompt out to ``rollout.n``
sessions with ``session_id``) -> the registered agent loop -> the worker's TransferQueue
post-processing, which computes the actor's ``multi_modal_inputs`` from the images the loop
returns. Only the rollout server and the TransferQueue client are fakes.
"""

from __future__ import annotations

import asyncio
import functools
import io
import pathlib
import pickle
import threading
import uuid
from typing import Any

import hydra
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopWorker,
    DictConfigWrap,
    ToolListWrap,
    _agent_loop_registry,
)
from verl.protocol import DataProto
from verl.trainer.ppo.utils import create_rl_dataset
from verl.trainer.ppo.v1 import agent_loop_tq
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.rl_dataset import collate_fn
from verl.workers.rollout.replica import TokenOutput

import verl_ext.agent_loop as noisy_agent_loop
from verl_ext.agent_loop import AGENT_NAME, NOISE_THREAD_PREFIX, NoisyGRPOAgentLoop, rollout_noise_extent
from verl_ext.config import NoiseConfig
from verl_ext.dataset import NoisyRLHFDataset
from verl_ext.noise import add_noise, image_noise_seed, rollout_noise_seed, rollout_sampling_seed

LEVELS = [0.0, 0.3, 0.6, 0.9]
RESPONSE_IDS = [87, 280, 220, 18]  # "x = 3" in the tiny tokenizer


class FakeRolloutServer:
    """Stands in for the LLM server client: records each request, answers a fixed short response."""

    def __init__(self):
        self.requests: list[dict[str, Any]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], image_data=None, **kwargs) -> TokenOutput:
        self.requests.append(
            {"request_id": request_id, "prompt_ids": list(prompt_ids), "image_data": image_data, **kwargs}
        )
        await asyncio.sleep(0)  # let the group's other sessions interleave, as a real server would
        return TokenOutput(token_ids=RESPONSE_IDS, log_probs=[-0.5] * len(RESPONSE_IDS))


class FakeTransferQueue:
    """The ``tq`` client the v1 worker writes to: keeps prompt statuses and the stored rollout fields."""

    def __init__(self):
        self.status: dict[str, str] = {}
        self.fields: dict[str, dict[str, Any]] = {}
        self._last_fields: list[dict[str, Any]] = []

    def init(self):
        pass

    async def async_kv_put(self, key, partition_id, tag):
        self.status[key] = tag["status"]

    async def async_kv_batch_put(self, keys, fields, tags, partition_id):
        assert all(tag["status"] == "success" for tag in tags)
        self.fields.update(zip(keys, self._last_fields, strict=True))

    def record_fields(self, list_of_dicts):
        # Wraps verl's list_of_dict_to_tensordict: the real conversion must succeed, and the
        # test reads the per-rollout dicts the worker stored.
        self._last_fields = list_of_dicts
        return REAL_LIST_OF_DICT_TO_TENSORDICT(list_of_dicts)


REAL_LIST_OF_DICT_TO_TENSORDICT = agent_loop_tq.list_of_dict_to_tensordict


def random_png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def geo3k_row(index: int, images: list[bytes], split: str) -> dict:
    question = "<image>" * len(images) + "What is x" + "?" * index
    return {
        "data_source": "hiyouga/geometry3k",
        "prompt": [{"role": "user", "content": question}],
        "images": [{"bytes": image} for image in images],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "3"},
        "extra_info": {"split": split, "index": index, "question": question, "answer": "3"},
    }


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("geo3k_agent_loop")
    train_rows = [
        geo3k_row(0, [random_png(64, 48, 0)], "train"),
        geo3k_row(1, [random_png(60, 60, 1), random_png(50, 70, 2)], "train"),
    ]
    pd.DataFrame(train_rows).to_parquet(folder / "train.parquet")
    pd.DataFrame([geo3k_row(0, [random_png(56, 56, 3)], "test")]).to_parquet(folder / "test.parquet")
    return {"train": str(folder / "train.parquet"), "val": str(folder / "test.parquet")}


def trainer_config(model_dir: pathlib.Path, data_files: dict[str, str], *overrides: str):
    """The recipe's composed trainer config, as the agent-loop workers receive it."""
    with initialize_config_module(config_module="recipe.noisygrpo.config", version_base=None):
        return compose(
            config_name="noisygrpo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={model_dir}",
                "actor_rollout_ref.rollout.name=vllm",
                "actor_rollout_ref.rollout.prompt_length=512",
                "actor_rollout_ref.rollout.response_length=16",
                f"data.train_files={data_files['train']}",
                f"data.val_files={data_files['val']}",
                "data.max_prompt_length=512",
                "data.seed=11",
                "data.filter_overlong_prompts_workers=1",
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def config(tiny_qwen25vl_dir, data_files):
    return trainer_config(tiny_qwen25vl_dir, data_files)


@pytest.fixture
def fake_tq(monkeypatch) -> FakeTransferQueue:
    queue = FakeTransferQueue()
    monkeypatch.setattr(agent_loop_tq, "tq", queue)
    monkeypatch.setattr(agent_loop_tq, "list_of_dict_to_tensordict", queue.record_fields)
    return queue


@pytest.fixture
def noise_threads(monkeypatch) -> list[str]:
    """Names of the threads that ran add_noise (the real function still runs)."""
    names: list[str] = []

    def recording_add_noise(*args, **kwargs):
        names.append(threading.current_thread().name)
        return add_noise(*args, **kwargs)

    monkeypatch.setattr(noisy_agent_loop, "add_noise", recording_add_noise)
    return names


def make_worker(config, server: FakeRolloutServer):
    worker_class = agent_loop_tq.AgentLoopWorkerTQ.__ray_metadata__.modified_class  # the class under @ray.remote
    return worker_class(config, server)


@functools.cache
def load_processor(model_dir: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_dir)


def dataset(config, *, is_train: bool) -> NoisyRLHFDataset:
    """Built the way the v1 trainer builds its datasets (create_rl_dataset resolves data.custom_cls)."""
    files = config.data.train_files if is_train else config.data.val_files
    processor = load_processor(config.actor_rollout_ref.model.path)
    return create_rl_dataset(files, config.data, processor.tokenizer, processor, is_train=is_train)


def clean_pixel_values(images: list[Image.Image], config) -> torch.Tensor:
    """pixel_values the actor should get: the processor applied to the clean images."""
    processor = load_processor(config.actor_rollout_ref.model.path)
    return processor.image_processor(images=images, return_tensors="pt")["pixel_values"]


def prompt_batch(rows: list[dict], global_steps: int, validate: bool = False):
    """The TensorDict the v1 trainer hands to AgentLoopManagerTQ.generate_sequences."""
    batch_dict = collate_fn(rows)
    batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in rows], dtype=object)
    batch = tu.get_tensordict(batch_dict)
    tu.assign_non_tensor_data(batch, "global_steps", global_steps)
    if validate:
        tu.assign_non_tensor_data(batch, "validate", True)
    # Ray serialises the batch on its way to the agent-loop worker actor.
    return pickle.loads(pickle.dumps(batch))


async def run_prompts(worker, rows: list[dict], global_steps: int, validate: bool = False) -> None:
    await worker.generate_sequences(prompt_batch(rows, global_steps, validate))
    await asyncio.gather(*list(worker.background_tasks))


def image_bytes(image: Image.Image) -> bytes:
    return image.mode.encode() + repr(image.size).encode() + image.tobytes()


async def clean_images(row: dict, config) -> list[Image.Image]:
    images, _, _ = await NoisyRLHFDataset.process_multi_modal_info(
        row["raw_prompt"], image_patch_size=14, config=config.data
    )
    return images


def test_registered_under_its_agent_name():
    assert _agent_loop_registry[AGENT_NAME] == {"_target_": "verl_ext.agent_loop.NoisyGRPOAgentLoop"}


async def test_group_rollouts_see_noisy_images_and_the_actor_gets_clean_ones(config, fake_tq, noise_threads):
    train = dataset(config, is_train=True)
    row = train[0]
    server = FakeRolloutServer()
    worker = make_worker(config, server)
    step = 3

    await run_prompts(worker, [row], global_steps=step)

    assert list(fake_tq.status.values()) == ["finished"]
    assert len(server.requests) == len(LEVELS)
    clean = (await clean_images(row, config))[0]
    expected = {
        session: add_noise(clean, level, kind="gaussian", seed=rollout_noise_seed(row["noise_seed"], session, step))
        for session, level in enumerate(LEVELS)
    }
    # The server got one image per session: the clean one for level 0, then a distinct noisy copy per level.
    received = [image_bytes(request["image_data"][0]) for request in server.requests]
    assert sorted(received) == sorted(image_bytes(image) for image in expected.values())
    assert image_bytes(expected[0]) == image_bytes(clean)
    assert len(set(received)) == len(LEVELS)
    assert all(request["image_data"][0].size == clean.size for request in server.requests)
    # Same prompt token ids for every rollout of the group (noise keeps the image-token layout).
    assert all(request["prompt_ids"] == server.requests[0]["prompt_ids"] for request in server.requests)
    # Noise ran off the event loop, on the noise thread pool (level 0 needs no noise).
    assert len(noise_threads) == len(LEVELS) - 1
    assert all(name.startswith(NOISE_THREAD_PREFIX) for name in noise_threads)
    assert threading.current_thread().name not in noise_threads

    stored = dict(fake_tq.fields)
    assert len(stored) == len(LEVELS)
    processor_pixels = clean_pixel_values([clean], config)
    assert not torch.equal(processor_pixels, clean_pixel_values([expected[3]], config))
    for key, fields in stored.items():
        session = int(key.split("_")[1])
        assert fields["session_id"] == session
        assert fields["extra_fields"]["noise_extent"] == pytest.approx(LEVELS[session])
        assert isinstance(fields["extra_fields"]["noise_extent"], float)
        assert fields["extra_fields"]["noise_seed"] == rollout_noise_seed(row["noise_seed"], session, step)
        # The actor's inputs are rebuilt from the clean image for every rollout.
        assert torch.equal(fields["multi_modal_inputs"]["pixel_values"], processor_pixels)
        assert torch.equal(fields["prompts"], stored[next(iter(stored))]["prompts"])
        assert fields["responses"].tolist()[: len(RESPONSE_IDS)] == RESPONSE_IDS
        assert fields["rollout_log_probs"].tolist()[: len(RESPONSE_IDS)] == [-0.5] * len(RESPONSE_IDS)


async def test_reference_conversion_noises_every_rollout_and_the_actor_sees_the_groups_t0_copy(
    tiny_qwen25vl_dir, data_files, fake_tq, noise_threads
):
    config = trainer_config(tiny_qwen25vl_dir, data_files, "noisygrpo.noise.conversion=reference")
    row = dataset(config, is_train=True)[0]
    server = FakeRolloutServer()
    step = 4
    await run_prompts(make_worker(config, server), [row], global_steps=step)

    clean = (await clean_images(row, config))[0]

    def reference_copy(level: float, session: int) -> Image.Image:
        seed = rollout_noise_seed(row["noise_seed"], session, step)
        return add_noise(clean, level, kind="gaussian", seed=seed, conversion="reference")

    expected = {session: reference_copy(level, session) for session, level in enumerate(LEVELS)}
    t0_copy = expected[0]
    # Level 0 is noisy too (the reference adds the t = 0 noise): no rollout sees the clean image.
    received = [image_bytes(request["image_data"][0]) for request in server.requests]
    assert sorted(received) == sorted(image_bytes(image) for image in expected.values())
    assert image_bytes(clean) not in received
    # Noise for 4 rollouts plus the t = 0 copy of the 3 noisy sessions, all on the noise pool.
    assert len(noise_threads) == 2 * len(LEVELS) - 1
    assert all(name.startswith(NOISE_THREAD_PREFIX) for name in noise_threads)
    # Every rollout of the group trains on the same image: the group's t = 0 copy, not the clean one.
    t0_pixels = clean_pixel_values([t0_copy], config)
    assert not torch.equal(t0_pixels, clean_pixel_values([clean], config))
    assert len(fake_tq.fields) == len(LEVELS)
    for fields in fake_tq.fields.values():
        assert torch.equal(fields["multi_modal_inputs"]["pixel_values"], t0_pixels)


async def test_seeded_sampling_gives_each_rollout_its_own_reproducible_seed(tiny_qwen25vl_dir, data_files, fake_tq):
    row = dataset(trainer_config(tiny_qwen25vl_dir, data_files), is_train=True)[0]
    step = 6

    async def seeds(*overrides: str) -> list:
        server = FakeRolloutServer()
        await run_prompts(make_worker(trainer_config(tiny_qwen25vl_dir, data_files, *overrides), server), [row], step)
        return sorted(request["sampling_params"].get("seed", -1) for request in server.requests)

    assert await seeds() == [-1] * len(LEVELS)  # off by default: the server's own randomness
    seeded = await seeds("noisygrpo.seeded_sampling=true")
    assert seeded == sorted(rollout_sampling_seed(row["noise_seed"], session, step) for session in range(len(LEVELS)))
    assert len(set(seeded)) == len(LEVELS) and seeded == await seeds("noisygrpo.seeded_sampling=true")


def images_by_session(fake_tq: FakeTransferQueue, server: FakeRolloutServer, clean: list[Image.Image]) -> dict:
    """{session_id: bytes of the images the server got}, matched through each rollout's recorded noise.

    Asserts on the way that the recorded (noise_extent, noise_seed) reproduce exactly one request's images.
    """
    received = [[image_bytes(image) for image in request["image_data"]] for request in server.requests]
    by_session = {}
    for key, fields in fake_tq.fields.items():
        extent, seed = fields["extra_fields"]["noise_extent"], fields["extra_fields"]["noise_seed"]
        expected = [
            image_bytes(add_noise(image, extent, kind="gaussian", seed=image_noise_seed(seed, index)))
            for index, image in enumerate(clean)
        ]
        assert received.count(expected) == 1
        by_session[int(key.split("_")[1])] = expected
    return by_session


async def test_noise_is_reproducible_and_changes_with_the_step(config, fake_tq):
    row = dataset(config, is_train=True)[0]
    clean = await clean_images(row, config)

    async def run_group(step: int) -> dict:
        server = FakeRolloutServer()
        fake_tq.fields.clear()
        await run_prompts(make_worker(config, server), [row], global_steps=step)
        return images_by_session(fake_tq, server, clean)

    first, again, later = await run_group(5), await run_group(5), await run_group(6)
    assert set(first) == set(later) == set(range(len(LEVELS)))
    assert first == again
    assert later[0] == first[0] == [image_bytes(clean[0])]  # the clean anchor does not depend on the step
    assert all(later[session] != first[session] for session in range(1, len(LEVELS)))


async def test_every_image_of_a_multi_image_row_is_noised_with_its_own_seed(config, fake_tq):
    row = dataset(config, is_train=True)[1]
    server = FakeRolloutServer()
    await run_prompts(make_worker(config, server), [row], global_steps=1)

    clean = await clean_images(row, config)
    assert len(clean) == 2
    by_session = images_by_session(fake_tq, server, clean)
    assert by_session[0] == [image_bytes(image) for image in clean]
    for session in range(1, len(LEVELS)):
        assert all(noisy != image_bytes(image) for noisy, image in zip(by_session[session], clean, strict=True))
    clean_pixels = clean_pixel_values(clean, config)
    for fields in fake_tq.fields.values():
        assert torch.equal(fields["multi_modal_inputs"]["pixel_values"], clean_pixels)


async def test_validation_rows_take_the_clean_single_turn_loop(config, fake_tq, noise_threads):
    val = dataset(config, is_train=False)
    row = val[0]
    server = FakeRolloutServer()
    await run_prompts(make_worker(config, server), [row], global_steps=2, validate=True)

    assert row["agent_name"] == "single_turn_agent"
    assert len(server.requests) == config.actor_rollout_ref.rollout.val_kwargs.n
    clean = (await clean_images(row, config))[0]
    assert all(image_bytes(r["image_data"][0]) == image_bytes(clean) for r in server.requests)
    assert noise_threads == []
    assert all("noise_extent" not in fields["extra_fields"] for fields in fake_tq.fields.values())


async def test_legacy_trainer_without_session_id_is_a_clear_error(config):
    # verl's non-v1 worker calls agent loops without session_id.
    row = dataset(config, is_train=True)[0]
    worker = AgentLoopWorker(config, FakeRolloutServer())
    batch = DataProto.from_single_dict(collate_fn([row]), meta_info={"global_steps": 1})
    with pytest.raises(ValueError, match=r"session_id.*trainer\.use_v1=true"):
        await worker.generate_sequences(batch)


def loop_for(config, server=None) -> NoisyGRPOAgentLoop:
    """The agent loop built the way AgentLoopWorker._run_agent_loop builds it."""
    worker = AgentLoopWorker(config, server or FakeRolloutServer())
    return hydra.utils.instantiate(
        config=_agent_loop_registry[AGENT_NAME],
        trainer_config=DictConfigWrap(config=worker.config),
        server_manager=worker.llm_client,
        tokenizer=worker.tokenizer,
        processor=worker.processor,
        hf_model_type=worker.hf_model_type,
        dataset_cls=worker.dataset_cls,
        data_config=DictConfigWrap(worker.config.data),
        tools=ToolListWrap(worker.tools),
    )


async def test_row_without_noise_seed_is_a_clear_error(config):
    row = dataset(config, is_train=True)[0]
    del row["noise_seed"]
    with pytest.raises(ValueError, match="noise_seed.*NoisyRLHFDataset"):
        await loop_for(config).run({}, session_id=1, global_steps=1, **row)


def test_decay_scales_every_level_and_needs_a_step_count(tiny_qwen25vl_dir, data_files):
    config = trainer_config(
        tiny_qwen25vl_dir, data_files, "noisygrpo.noise.decay=true", "noisygrpo.noise.decay_total_steps=10"
    )
    loop = loop_for(config)
    extents = [rollout_noise_extent(loop.noise, 4, session, 99, 5, loop.decay_total_steps) for session in range(4)]
    assert extents == pytest.approx([level * 0.75 for level in LEVELS])
    assert loop.rollout_noise({"session_id": 2, "global_steps": 20, "noise_seed": 99}).extent == pytest.approx(0.3)

    no_total = trainer_config(tiny_qwen25vl_dir, data_files, "noisygrpo.noise.decay=true")
    with pytest.raises(Exception, match="decay_total_steps"):
        loop_for(no_total)
    with_trainer_total = trainer_config(
        tiny_qwen25vl_dir, data_files, "noisygrpo.noise.decay=true", "trainer.total_training_steps=40"
    )
    assert loop_for(with_trainer_total).decay_total_steps == 40


def test_uniform_sampling_gives_the_whole_group_one_draw_per_step():
    noise = NoiseConfig(sampling="uniform")
    group = [rollout_noise_extent(noise, 4, session, 7, 1, None) for session in range(4)]
    assert group[0] == 0.0
    assert all(0 <= extent <= 1 for extent in group) and len(set(group)) == 4
    assert group == [rollout_noise_extent(noise, 4, session, 7, 1, None) for session in range(4)]
    assert group != [rollout_noise_extent(noise, 4, session, 7, 2, None) for session in range(4)]
    assert group != [rollout_noise_extent(noise, 4, session, 8, 1, None) for session in range(4)]


def test_config_section_is_read_from_the_trainer_config(tiny_qwen25vl_dir, data_files):
    config = trainer_config(tiny_qwen25vl_dir, data_files, "noisygrpo.noise.kind=random_mask")
    loop = loop_for(config)
    assert loop.noise.kind == "random_mask"
    assert loop.rollout_noise({"session_id": 3, "global_steps": 1, "noise_seed": 5}).kind == "random_mask"
    assert OmegaConf.select(config, "noisygrpo.noise.levels") == LEVELS


async def test_benchmark_alternating_loop_noises_only_the_noisygrpo_steps(
    tiny_qwen25vl_dir, data_files, fake_tq, monkeypatch, tmp_path
):
    """bench_step's alternating runs, through the same worker path: the benchmark's dataset routes training rows
    to its loop (registered from an agent-loop config file), which noises the group on NoisyGRPO steps only."""
    from benchmarks import _alternating

    monkeypatch.setenv(_alternating.PARITY_ENV, "1")  # NoisyGRPO on odd steps
    loops = tmp_path / "agent_loops.yaml"
    loops.write_text(_alternating.agent_loop_config_yaml())
    config = trainer_config(tiny_qwen25vl_dir, data_files, *_alternating.run_overrides(str(loops)))
    row = dataset(config, is_train=True)[0]
    assert row["agent_name"] == _alternating.AGENT_NAME
    clean = image_bytes((await clean_images(row, config))[0])
    server = FakeRolloutServer()
    worker = make_worker(config, server)

    for step, noisy in ((3, True), (4, False)):
        server.requests.clear()
        fake_tq.fields.clear()
        await run_prompts(worker, [row], global_steps=step)
        extents = sorted(fields["extra_fields"]["noise_extent"] for fields in fake_tq.fields.values())
        received = [image_bytes(request["image_data"][0]) for request in server.requests]
        assert len(received) == len(LEVELS)
        if noisy:
            assert extents == pytest.approx(LEVELS) and len(set(received)) == len(LEVELS) and clean in received
        else:
            assert extents == [0.0] * len(LEVELS) and set(received) == {clean}
