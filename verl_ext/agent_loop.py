"""``NoisyGRPOAgentLoop``: the rollout generates from a noisy image, the actor trains on the clean one.

Registered with verl's agent-loop registry as ``"noisygrpo_agent"``; training rows of
:class:`verl_ext.dataset.NoisyRLHFDataset` name it in their ``agent_name``. It is verl's
``SingleTurnAgentLoop`` with one difference: the images handed to the rollout server
(``server_manager.generate(image_data=...)``) are noisy copies, while the prompt token ids and
``AgentLoopOutput.multi_modal_data`` keep the clean images, so verl rebuilds the actor's
``pixel_values`` (old / ref / current log-probs) from the clean image. Noise keeps the image
size, so the image-token layout of the prompt is the same for both.

``SingleTurnAgentLoop.run`` has no hook between "images sent" and "images returned", so
instead of copying its body this loop wraps its server client: :class:`NoisyImageClient`
forwards every call unchanged except ``generate``, whose ``image_data`` it replaces with noisy
copies of the rollout currently running (held in a context variable that :meth:`run` sets,
so concurrent rollouts never see each other's noise). Upstream's ``run`` is then called as is.

Per rollout (docs/algorithm.md §1-§2), from the v1 trainer's kwargs:

- ``session_id`` (the index in the group, 0..rollout.n-1) picks the level:
  ``group_noise_extents(rollout.n, mode=sampling, levels, seed)[session_id]``, times the decay
  factor when ``noisygrpo.noise.decay`` is on;
- ``global_steps`` (the trainer step) and the row's ``noise_seed`` give the pixel-noise seed
  ``rollout_noise_seed(noise_seed, session_id, global_steps)``, so a resumed run reproduces it.

Both are recorded in ``AgentLoopOutput.extra_fields`` as ``noise_extent`` (float, the level
applied after decay) and ``noise_seed`` (int, the seed of the first image's noise); the
trainer's Bayesian advantage and the reward function read ``noise_extent`` from there.
Noise runs on a thread pool, never on the event loop.

With ``noisygrpo.noise.conversion=reference`` (the authors' code, docs/algorithm.md §2) level 0
is noisy too, and the actor's image is not the clean one but the group's t = 0 copy: every
session computes it from the group's session-0 seed (so all sessions of a group agree without
talking to each other, and session 0's rollout image is that very copy) and returns it in
``multi_modal_data`` in place of the clean image.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from PIL import Image
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from verl_ext.config import NoiseConfig, NoisyGRPOConfig
from verl_ext.noise import (
    add_noise,
    decay_noise_extents,
    group_levels_seed,
    group_noise_extents,
    image_noise_seed,
    rollout_noise_seed,
    rollout_sampling_seed,
)

AGENT_NAME = "noisygrpo_agent"
NOISE_THREAD_PREFIX = "noisygrpo-noise"


@dataclass(frozen=True)
class RolloutNoise:
    """The noise one rollout's images get.

    Attributes:
        kind: noise type (``noisygrpo.noise.kind``).
        extent: noise level n in [0, 1] after decay; under ``clamp`` 0 leaves the images unchanged.
        seed: seed of the first image's noise (``rollout_noise_seed``); image j > 0 of the
            same row uses :func:`image_noise_seed` of it.
        conversion: ``noisygrpo.noise.conversion`` (``clamp`` or ``reference``).
        actor_seed: under ``reference``, the seed of the group's t = 0 copy that the actor sees
            (session 0's ``seed``); None under ``clamp`` (the actor sees the clean image).
    """

    kind: str
    extent: float
    seed: int
    conversion: str = "clamp"
    actor_seed: int | None = None

    @property
    def changes_rollout_images(self) -> bool:
        return self.extent > 0 or self.conversion == "reference"

    @property
    def actor_noise(self) -> RolloutNoise | None:
        """The noise of the actor's image (the group's t = 0 copy), or None when the actor sees the clean image."""
        if self.actor_seed is None:
            return None
        return dataclasses.replace(self, extent=0.0, seed=self.actor_seed)


def rollout_noise_extent(
    noise: NoiseConfig, group_size: int, session_id: int, noise_seed: int, step: int, decay_total_steps: int | None
) -> float:
    """Noise level of rollout ``session_id`` of a group of ``group_size`` at trainer step ``step``.

    Every session of a group computes the whole group's levels from the same seed and takes
    its own, so the group sees exactly ``group_noise_extents`` without any coordination.
    """
    extents = group_noise_extents(
        group_size, mode=noise.sampling, levels=list(noise.levels), seed=group_levels_seed(noise_seed, step)
    )
    if noise.decay:
        extents = decay_noise_extents(extents, step, decay_total_steps)
    return float(extents[session_id])


def noisy_copies(images: list[Image.Image], noise: RolloutNoise) -> list[Image.Image]:
    """Noisy copies of ``images`` (same sizes and modes); the inputs are not modified."""
    return [
        add_noise(
            image, noise.extent, kind=noise.kind, seed=image_noise_seed(noise.seed, index), conversion=noise.conversion
        )
        for index, image in enumerate(images)
    ]


def rollout_and_actor_images(
    images: list[Image.Image], noise: RolloutNoise
) -> tuple[list[Image.Image], list[Image.Image] | None]:
    """(the images the rollout sees, the images the actor sees or None for the clean ones)."""
    rollout_images = noisy_copies(images, noise) if noise.changes_rollout_images else images
    actor_noise = noise.actor_noise
    if actor_noise is None:
        return rollout_images, None
    if actor_noise == noise:  # session 0: its rollout image is the group's t = 0 copy
        return rollout_images, rollout_images
    return rollout_images, noisy_copies(images, actor_noise)


@functools.cache
def noise_executor() -> ThreadPoolExecutor:
    """The agent-loop worker's thread pool for image noise (one per process, shared by all rollouts)."""
    # numpy releases the GIL in the heavy array ops, so threads overlap with the event loop.
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix=NOISE_THREAD_PREFIX)


@dataclass
class _RunningRollout:
    """The rollout running in one asyncio task: its noise, and the actor images ``generate`` made."""

    noise: RolloutNoise
    actor_images: list[Image.Image] | None = None


# The rollout running in the current asyncio task (set by NoisyGRPOAgentLoop.run).
_ROLLOUT: contextvars.ContextVar[_RunningRollout | None] = contextvars.ContextVar("noisygrpo_rollout")


class NoisyImageClient:
    """Stands in for an agent loop's LLM server client; ``generate`` gets noisy ``image_data``.

    Every other attribute is the wrapped client's. The noise comes from the rollout running
    in the calling task (:data:`_ROLLOUT`); calling ``generate`` outside
    :meth:`NoisyGRPOAgentLoop.run` is an error rather than a silently clean rollout.
    """

    def __init__(self, client: Any):
        self.client = client

    async def generate(self, *args: Any, image_data: list[Image.Image] | None = None, **kwargs: Any) -> Any:
        running = _ROLLOUT.get(None)
        if running is None:
            raise RuntimeError(f"{type(self).__name__}.generate called outside NoisyGRPOAgentLoop.run")
        if not image_data:
            raise ValueError(
                f"the '{AGENT_NAME}' agent loop got a prompt without images: NoisyGRPO perturbs each rollout's "
                "image, so every training row needs one (check the data's image column and '<image>' placeholders)."
            )
        if kwargs.get("video_data"):
            raise ValueError(
                f"the '{AGENT_NAME}' agent loop adds noise to images only, but this prompt has videos; "
                "route video rows to another agent loop."
            )
        if running.noise.changes_rollout_images:
            loop = asyncio.get_running_loop()
            image_data, running.actor_images = await loop.run_in_executor(
                noise_executor(), rollout_and_actor_images, list(image_data), running.noise
            )
        return await self.client.generate(*args, image_data=image_data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@dataclass(frozen=True)
class _WorkerNoise:
    """What every loop of one agent-loop worker reads from the trainer config."""

    noise: NoiseConfig
    decay_total_steps: int | None
    seeded_sampling: bool


# Parsed once per worker: verl builds one loop per rollout, all from the same config object.
_PARSED_CONFIGS: dict[int, tuple[Any, _WorkerNoise]] = {}


def worker_noise(config: DictConfig) -> _WorkerNoise:
    """The ``noisygrpo.noise`` settings of a trainer config, parsed on the worker's first call."""
    cached = _PARSED_CONFIGS.get(id(config))
    if cached is None or cached[0] is not config:
        section = NoisyGRPOConfig.from_config(OmegaConf.select(config, "noisygrpo"))
        total = section.noise.resolve_decay_total_steps(OmegaConf.select(config, "trainer.total_training_steps"))
        cached = _PARSED_CONFIGS[id(config)] = (config, _WorkerNoise(section.noise, total, section.seeded_sampling))
    return cached[1]


@register(AGENT_NAME)
class NoisyGRPOAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn agent loop whose rollout sees a noisy image and whose output keeps the clean one.

    Constructed by verl's ``AgentLoopWorker`` (once per rollout) with the whole trainer config,
    from which it reads ``noisygrpo.noise``, ``actor_rollout_ref.rollout.n`` and
    ``trainer.total_training_steps`` (validated at start-up, before Ray starts).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        settings = worker_noise(self.config)
        self.noise, self.decay_total_steps = settings.noise, settings.decay_total_steps
        self.seeded_sampling = settings.seeded_sampling
        self.group_size = int(self.rollout_config.n)
        self.server_manager = NoisyImageClient(self.server_manager)

    def rollout_noise(self, kwargs: dict[str, Any]) -> RolloutNoise:
        """The noise of the rollout described by ``run``'s kwargs (the v1 trainer's per-session fields)."""
        if kwargs.get("session_id") is None:
            raise ValueError(
                f"the '{AGENT_NAME}' agent loop needs the 'session_id' (index of the rollout in its group) that only "
                "verl's v1 trainer passes; set trainer.use_v1=true."
            )
        if kwargs.get("global_steps") is None:
            raise ValueError(
                f"the '{AGENT_NAME}' agent loop needs 'global_steps' (the trainer step) in the row, which verl's v1 "
                "trainer adds; set trainer.use_v1=true."
            )
        if kwargs.get("noise_seed") is None:
            raise ValueError(
                f"the row has no 'noise_seed': the '{AGENT_NAME}' agent loop needs the rows of NoisyRLHFDataset "
                "(data.custom_cls.path=pkg://verl_ext.dataset, data.custom_cls.name=NoisyRLHFDataset)."
            )
        session_id, step, noise_seed = int(kwargs["session_id"]), int(kwargs["global_steps"]), int(kwargs["noise_seed"])
        if not 0 <= session_id < self.group_size:
            raise ValueError(
                f"session_id={session_id} is outside the group of actor_rollout_ref.rollout.n={self.group_size} "
                "rollouts; per-row rollout counts (__rollout_n__) are not supported by NoisyGRPO."
            )
        extent = rollout_noise_extent(self.noise, self.group_size, session_id, noise_seed, step, self.decay_total_steps)
        # Session 0 of every group is the clean anchor (level 0); its seed makes the group's t = 0 copy.
        actor_seed = int(rollout_noise_seed(noise_seed, 0, step)) if self.noise.conversion == "reference" else None
        return RolloutNoise(
            kind=self.noise.kind,
            extent=extent,
            seed=int(rollout_noise_seed(noise_seed, session_id, step)),
            conversion=self.noise.conversion,
            actor_seed=actor_seed,
        )

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs: Any) -> AgentLoopOutput:
        running = _RunningRollout(self.rollout_noise(kwargs))
        if self.seeded_sampling:  # a copy: the group's sessions share verl's dict
            seed = rollout_sampling_seed(
                int(kwargs["noise_seed"]), int(kwargs["session_id"]), int(kwargs["global_steps"])
            )
            sampling_params = {**sampling_params, "seed": seed}
        token = _ROLLOUT.set(running)
        try:
            output = await super().run(sampling_params, priority=priority, **kwargs)
        finally:
            _ROLLOUT.reset(token)
        if running.actor_images is not None:
            output.multi_modal_data["images"] = running.actor_images
        noise = running.noise
        output.extra_fields.update({"noise_extent": noise.extent, "noise_seed": noise.seed})
        return output


__all__ = [
    "AGENT_NAME",
    "NOISE_THREAD_PREFIX",
    "NoisyGRPOAgentLoop",
    "NoisyImageClient",
    "RolloutNoise",
    "noise_executor",
    "noisy_copies",
    "rollout_and_actor_images",
    "rollout_noise_extent",
]
