"""Image noise of NoisyGRPO (docs/algorithm.md §2): the diffusion forward process, masks, and seeds.

A rollout sees ``add_noise(image, n, seed=...)``, with T = 1000 diffusion steps:

    beta_t     = sigmoid(linspace(-6, 6, T))[t] * (5e-3 - 1e-5) + 1e-5
    alphabar_t = prod_{s <= t} (1 - beta_s)
    t          = min(int(n * T), T - 1)
    noisy      = sqrt(alphabar_t) * x0 + sqrt(1 - alphabar_t) * eps,    eps ~ N(0, 1)

x0 is the RGB image scaled to [0, 1]. The ``conversion`` returns the result to 8 bits: ``clamp``
(clip and round; level 0 returns the image unchanged: the method as the paper describes it) or
``reference`` (truncate toward zero, wrap modulo 256, as the authors' ``ToPILImage`` round trip
does; level 0 still adds the t = 0 noise). Kind ``gaussian`` samples that law per value on the
8-bit fast path (:mod:`verl_ext.noise_uint8`); ``gaussian_iid`` draws float normals as the
reference does; ``random_mask`` and ``random_patch_mask`` are the reference's ablations.

Images are noised as RGB: any other mode is converted to RGB first (verl's loader hands the agent
loop RGB images). Everything random is a function of an integer seed; the last section derives
every seed of a run from (run seed, row, rollout, step, image), so a resumed run reproduces its noise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from verl_ext.noise_uint8 import stratified_gaussian_rgb, to_integer_levels

__all__ = [
    "CONVERSIONS",
    "NOISE_KINDS",
    "NUM_DIFFUSION_STEPS",
    "add_noise",
    "alphabar",
    "check_conversion",
    "decay_noise_extents",
    "group_levels_seed",
    "group_noise_extents",
    "image_noise_seed",
    "noise_scales",
    "noise_step",
    "prompt_noise_seed",
    "register_noise_kind",
    "rollout_noise_seed",
    "rollout_sampling_seed",
]

NUM_DIFFUSION_STEPS = 1000


def _diffusion_alphabar(num_steps: int) -> np.ndarray:
    sigmoid = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, num_steps)))
    alphabar_by_step = np.cumprod(1.0 - (sigmoid * (5e-3 - 1e-5) + 1e-5))
    alphabar_by_step.setflags(write=False)
    return alphabar_by_step


_ALPHABAR = _diffusion_alphabar(NUM_DIFFUSION_STEPS)  # float64, once; matches the reference's float32 to ~1e-6


def noise_scales(noise_extent: float) -> tuple[float, float]:
    """(signal_scale, noise_scale) = (sqrt(alphabar_t), sqrt(1 - alphabar_t)) of a noise extent in [0, 1]."""
    alphabar_t = float(_ALPHABAR[noise_step(noise_extent)])
    return math.sqrt(alphabar_t), math.sqrt(1.0 - alphabar_t)


def noise_step(noise_extent: float) -> int:
    """Diffusion step of a noise extent: t = int(extent * T), clamped to T - 1 (extent 1 -> T - 1)."""
    return min(int(_checked_extent(noise_extent) * NUM_DIFFUSION_STEPS), NUM_DIFFUSION_STEPS - 1)


def alphabar(t: int | np.ndarray) -> float | np.ndarray:
    """Cumulative signal fraction alphabar_t of diffusion step(s) t (ints in [0, T-1]); float or float64 array."""
    steps = np.asarray(t)
    if steps.dtype == np.bool_ or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"alphabar: diffusion step t must be an int or an int array, got {t!r}")
    if steps.size and (steps.min() < 0 or steps.max() >= NUM_DIFFUSION_STEPS):
        raise ValueError(f"alphabar: diffusion step t must lie in [0, {NUM_DIFFUSION_STEPS - 1}], got {t!r}")
    values = _ALPHABAR[steps]
    return float(values) if steps.ndim == 0 else values


def _checked_extent(noise_extent: float, *, name: str = "noise_extent") -> float:
    if isinstance(noise_extent, bool | np.bool_) or not isinstance(noise_extent, numbers.Real):
        raise ValueError(f"{name} must be a real number in [0, 1], got {noise_extent!r}")
    value = float(noise_extent)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a finite number in [0, 1], got {noise_extent!r}")
    return value


# ---------------------------------------------------------------------------------------------------
# Noise kinds: functions on RGB colour values in [0, 1].

NoiseKind = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
"""(pixels, noise_extent, rng) -> pixels. pixels: float32 (H, W, 3) in [0, 1], may be modified in place.
The result may leave [0, 1]; the conversion brings it back. noise_extent is in [0, 1]."""

NOISE_KINDS: dict[str, NoiseKind] = {}

# How float results return to 8-bit values: "clamp" (clip, round) or "reference" (truncate, wrap).
CONVERSIONS = ("clamp", "reference")
# The kinds the reference converts through ToPILImage; its masks write 8-bit values directly.
_CONVERTED_KINDS = {"gaussian", "gaussian_iid"}
# Kind "gaussian" runs on the 8-bit fast path (same law as its float function below).
_FAST_PATH_KIND = "gaussian"


def register_noise_kind(name: str) -> Callable[[NoiseKind], NoiseKind]:
    """Decorator adding a noise kind to ``NOISE_KINDS`` under ``name`` (names are unique)."""

    def register(noise_kind: NoiseKind) -> NoiseKind:
        if name in NOISE_KINDS:
            raise ValueError(f"noise kind {name!r} is already registered ({NOISE_KINDS[name]!r})")
        NOISE_KINDS[name] = noise_kind
        return noise_kind

    return register


@register_noise_kind("gaussian")
@register_noise_kind("gaussian_iid")
def gaussian_noise(pixels: np.ndarray, noise_extent: float, rng: np.random.Generator) -> np.ndarray:
    """Forward diffusion: sqrt(ab_t) * pixels + sqrt(1 - ab_t) * eps, eps ~ N(0, 1) float32 per value."""
    signal_scale, noise_scale = noise_scales(noise_extent)
    # torch's vectorised normal_ is ~2.4x faster than numpy's float32 ziggurat on one thread.
    torch_generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
    eps = torch.empty(pixels.shape, dtype=torch.float32).normal_(generator=torch_generator).numpy()
    np.multiply(eps, np.float32(noise_scale), out=eps)
    np.multiply(pixels, np.float32(signal_scale), out=pixels)
    np.add(pixels, eps, out=pixels)
    return pixels


def _mean_colour(pixels: np.ndarray) -> np.ndarray:
    return pixels.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)


@register_noise_kind("random_mask")
def random_mask_noise(pixels: np.ndarray, noise_extent: float, rng: np.random.Generator) -> np.ndarray:
    """Replace round(extent * H * W) pixels, chosen uniformly without replacement, by the mean colour."""
    height, width, _ = pixels.shape
    num_masked = int(math.floor(noise_extent * height * width + 0.5))
    masked = rng.choice(height * width, size=num_masked, replace=False)
    flat_pixels = pixels.reshape(height * width, -1)
    flat_pixels[masked] = _mean_colour(pixels)
    return pixels


_PATCH_GRID = 8


@register_noise_kind("random_patch_mask")
def random_patch_mask_noise(pixels: np.ndarray, noise_extent: float, rng: np.random.Generator) -> np.ndarray:
    """Split the image into an 8x8 grid and fill round(extent * 64) random patches with the mean colour.

    Patch borders are ``linspace(0, size, 9)`` rounded down, so patches differ by at most one pixel
    (and some are empty in images smaller than 8 px).
    """
    height, width, _ = pixels.shape
    row_edges = np.linspace(0, height, _PATCH_GRID + 1).astype(int)
    col_edges = np.linspace(0, width, _PATCH_GRID + 1).astype(int)
    num_masked = int(math.floor(noise_extent * _PATCH_GRID**2 + 0.5))
    mean_colour = _mean_colour(pixels)
    for patch in rng.choice(_PATCH_GRID**2, size=num_masked, replace=False):
        row, col = divmod(int(patch), _PATCH_GRID)
        pixels[row_edges[row] : row_edges[row + 1], col_edges[col] : col_edges[col + 1]] = mean_colour
    return pixels


def check_conversion(conversion: str, kind: str) -> None:
    """Raises ValueError unless ``conversion`` is one of ``CONVERSIONS`` and applies to ``kind``."""
    if conversion not in CONVERSIONS:
        raise ValueError(f"unknown noise conversion {conversion!r}; choose one of {', '.join(CONVERSIONS)}")
    if conversion == "reference" and kind not in _CONVERTED_KINDS:
        raise ValueError(
            f"conversion 'reference' reproduces the reference's ToPILImage round trip of its Gaussian noise; "
            f"kind {kind!r} writes 8-bit values directly there, so use conversion 'clamp'"
        )


def add_noise(
    image: Image.Image, extent: float, *, kind: str = "gaussian", seed: int, conversion: str = "clamp"
) -> Image.Image:
    """A noisy RGB copy of ``image`` (same size), a function of (image, extent, kind, seed, conversion).

    extent: noise extent in [0, 1]. kind: a key of ``NOISE_KINDS``. conversion: ``clamp`` (extent 0
    returns an identical copy) or ``reference`` (Gaussian kinds; extent 0 still adds t = 0 noise).
    A non-RGB image is converted to RGB first. With kind ``gaussian`` the result wraps its own new
    buffer without a copy, so Pillow marks it read-only and copies it on the first in-place change.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; known kinds: {sorted(NOISE_KINDS)}")
    check_conversion(conversion, kind)
    noise_extent = _checked_extent(extent, name="extent")
    rng = np.random.Generator(np.random.SFC64(_checked_seed(seed)))
    image = image if image.mode == "RGB" else image.convert("RGB")
    if (noise_extent == 0.0 and conversion == "clamp") or image.width == 0 or image.height == 0:
        return image.copy()
    if kind == _FAST_PATH_KIND:
        noisy = stratified_gaussian_rgb(image, *noise_scales(noise_extent), rng, conversion)
    else:
        pixels = np.multiply(np.asarray(image), np.float32(1.0 / 255), dtype=np.float32)
        pixels = NOISE_KINDS[kind](pixels, noise_extent, rng)
        np.multiply(pixels, np.float32(255), out=pixels)  # float32, as ToPILImage's x.mul(255)
        noisy = Image.fromarray(to_integer_levels(pixels, 255.0, conversion).astype(np.uint8), "RGB")
    noisy.info.update(image.info)
    return noisy


# ---------------------------------------------------------------------------------------------------
# Noise levels of a group.


def group_noise_extents(
    group_size: int, *, mode: str = "fixed", levels: Sequence[float] = (0.0, 0.3, 0.6, 0.9), seed: int | None = None
) -> list[float]:
    """Noise extent of each rollout of a group; index 0 is always 0.0 (the clean anchor).

    ``fixed``: the levels themselves (the start-up checks make rollout.n equal their number).
    ``uniform``: index 0 is 0.0, the others ~ U[0, 1) drawn from ``seed``.
    """
    if mode == "fixed":
        return [float(level) for level in levels]
    rng = np.random.Generator(np.random.SFC64(_checked_seed(seed)))
    return [0.0] + [float(extent) for extent in rng.random(group_size - 1)]


def decay_noise_extents(extents: Sequence[float], step: int, total_steps: int, rate: float = 0.5) -> list[float]:
    """Optional decay (off in the paper's scripts): each extent * (1 - rate * min(step / total_steps, 1))."""
    factor = 1.0 - rate * min(step / total_steps, 1.0)
    return [extent * factor for extent in extents]


# ---------------------------------------------------------------------------------------------------
# Seeds. Every random number of the noise comes from one of these, each a function of its inputs only:
#
#   prompt_noise_seed(run seed, dataset row)            a row's seed (the dataset puts it in the row)
#   rollout_noise_seed(row seed, rollout index, step)   the first image of one rollout
#   image_noise_seed(rollout seed, image index)         image j of that rollout (j = 0: the rollout seed)
#   group_levels_seed(row seed, step)                   the group's levels under uniform sampling
#   rollout_sampling_seed(row seed, rollout, step)      the rollout's token sampling (noisygrpo.seeded_sampling)
#
# Each is numpy's SeedSequence of its first input with a spawn key (tag, other inputs): the tags keep
# the families apart for equal inputs, and every key word is < 2**32, so distinct inputs give
# distinct entropy.

_SEED_TAGS = {
    "prompt": 0x70726D74,
    "rollout": 0x6E6F6973,
    "image": 0x696D6167,
    "levels": 0x67727570,
    "sampling": 0x73616D70,
}
_UINT32_LIMIT = 1 << 32


def _derived_seed(entropy: int, tag: str, *words: int) -> int:
    """63-bit seed from ``entropy`` (a non-negative int) and the key ``(tag, *words)``, words in [0, 2**32)."""
    for word in words:
        if _checked_seed(word) >= _UINT32_LIMIT:
            raise ValueError(f"seed inputs must be < 2**32, got {word!r}")
    key = (_SEED_TAGS[tag], *(int(word) for word in words))
    state = np.random.SeedSequence(_checked_seed(entropy), spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def _checked_seed(seed: int) -> int:
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"a seed must be a non-negative int, got {seed!r}")
    return int(seed)


def prompt_noise_seed(base_seed: int, row_index: int) -> int:
    """63-bit per-prompt seed, a deterministic function of (run seed, dataset row index)."""
    return _derived_seed(base_seed, "prompt", row_index)


def rollout_noise_seed(noise_seed: int, rollout_index: int, step: int) -> int:
    """63-bit seed of one rollout's noise, a deterministic function of (row seed, rollout index, step)."""
    return _derived_seed(noise_seed, "rollout", rollout_index, step)


def image_noise_seed(rollout_seed: int, image_index: int) -> int:
    """Seed of the noise of the ``image_index``-th image of a rollout; image 0 uses the rollout seed itself."""
    return int(rollout_seed) if image_index == 0 else _derived_seed(rollout_seed, "image", image_index)


def group_levels_seed(noise_seed: int, step: int) -> int:
    """Seed of a group's level draw under uniform sampling: shared by the group's sessions, new each step."""
    return _derived_seed(noise_seed, "levels", step)


def rollout_sampling_seed(noise_seed: int, rollout_index: int, step: int) -> int:
    """Seed of one rollout's token sampling, a function of (row seed, rollout index, step), as its noise is."""
    return _derived_seed(noise_seed, "sampling", rollout_index, step)
