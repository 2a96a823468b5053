"""Image noise of NoisyGRPO (docs/algorithm.md section 2): diffusion-schedule Gaussian noise and masks.

A rollout sees ``add_noise(clean_image, noise_extent, seed=...)``. The default kind is the forward
diffusion process with T = 1000 steps::

    beta_t     = sigmoid(linspace(-6, 6, T))[t] * (5e-3 - 1e-5) + 1e-5
    alphabar_t = prod_{s <= t} (1 - beta_s)
    t          = min(int(noise_extent * T), T - 1)
    x_noisy    = sqrt(alphabar_t) * x0 + sqrt(1 - alphabar_t) * eps,    eps ~ N(0, I)

with x0 the colour channels scaled to [0, 1]. How the noisy values return to the image's integer
values is the ``conversion`` (docs/algorithm.md section 2):

* ``clamp`` (the method as the paper describes it): clamp to [0, 1], round; extent 0 returns the
  image unchanged;
* ``reference`` (the authors' released code, ``ToPILImage``'s ``x.mul(255).byte()``): truncate
  toward zero and wrap modulo 256, no clamp, and extent 0 still adds the t = 0 noise. At extents
  0.6 and 0.9 the result is content-free noise; at 0 about a fifth of saturated values flip 255 -> 0.

Size and mode are preserved.

Two samplers give the same per-value law:

* the generic float path (every mode; every kind in ``NOISE_KINDS``) draws exact float32 normals;
* the 8-bit fast path (RGB, RGBA, L, LA, P, 1 with kind ``gaussian``; kind ``gaussian_iid`` skips it) samples each output byte by
  inverse CDF: the law of ``clip(round(255 * (sqrt(ab) * x / 255 + sqrt(1 - ab) * eps)), 0, 255)``
  is tabulated for every input byte x at the 256 stratified probabilities ``(k + shift) / 256``,
  k being 8 fresh random bits per value and ``shift ~ U[0, 1)`` one random number per call (a
  Cranley-Patterson rotation). Every value therefore has exactly the law above; values of one call
  share only ``shift``, which correlates them by < 1e-4 and moves an image's mean grey level by at
  most 1 level. One table lookup per value and no float normals (drawing 1536 * 1536 * 3 of those
  takes longer than this whole path) makes it > 5x faster than a ToTensor/randn/ToPILImage
  implementation on one thread. On RGB and L images it runs on Pillow's own pixel memory (see
  "Storage path" below), so the image is neither unpacked into a numpy array nor packed back.

Everything random is a function of an integer seed; ``rollout_noise_seed`` derives the seed of one
rollout from (sample seed, rollout index, step) so a resumed run reproduces its noise.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

__all__ = [
    "CONVERSIONS",
    "NOISE_KINDS",
    "NUM_DIFFUSION_STEPS",
    "SUPPORTED_MODES",
    "add_noise",
    "alphabar",
    "decay_noise_extents",
    "group_noise_extents",
    "noise_scales",
    "noise_step",
    "prompt_noise_seed",
    "register_noise_kind",
    "rollout_noise_seed",
]

# ---------------------------------------------------------------------------------------------------
# Diffusion schedule, computed once at import (float64; matches the reference's float32 to ~1e-6).

NUM_DIFFUSION_STEPS = 1000
_BETA_START = 1e-5
_BETA_END = 5e-3


def _diffusion_alphabar(num_steps: int) -> np.ndarray:
    sigmoid = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, num_steps)))
    betas = sigmoid * (_BETA_END - _BETA_START) + _BETA_START
    alphabar_by_step = np.cumprod(1.0 - betas)
    alphabar_by_step.setflags(write=False)
    return alphabar_by_step


_ALPHABAR = _diffusion_alphabar(NUM_DIFFUSION_STEPS)


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
    if isinstance(noise_extent, (bool, np.bool_)) or not isinstance(noise_extent, numbers.Real):
        raise ValueError(f"{name} must be a real number in [0, 1], got {noise_extent!r}")
    value = float(noise_extent)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a finite number in [0, 1], got {noise_extent!r}")
    return value


def noise_step(noise_extent: float) -> int:
    """Diffusion step of a noise extent: t = int(extent * T), clamped to T - 1 (extent 1 -> T - 1)."""
    return min(int(_checked_extent(noise_extent) * NUM_DIFFUSION_STEPS), NUM_DIFFUSION_STEPS - 1)


def noise_scales(noise_extent: float) -> tuple[float, float]:
    """(signal_scale, noise_scale) = (sqrt(alphabar_t), sqrt(1 - alphabar_t)) of a noise extent in [0, 1]."""
    alphabar_t = float(_ALPHABAR[noise_step(noise_extent)])
    return math.sqrt(alphabar_t), math.sqrt(1.0 - alphabar_t)


# ---------------------------------------------------------------------------------------------------
# Noise kinds: functions on colour values in [0, 1].

NoiseKind = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
"""(pixels, noise_extent, rng) -> pixels. pixels: float32 (H, W, C) in [0, 1], may be modified in place.
The result may leave [0, 1]; ``add_noise`` clamps it. noise_extent is in (0, 1]."""

NOISE_KINDS: dict[str, NoiseKind] = {}

# Exact-in-law replacements of a kind for 8-bit channels:
# (values uint8 (H, W, C), extent, rng, conversion) -> uint8.
_UINT8_FAST_PATHS: dict[str, Callable[[np.ndarray, float, np.random.Generator, str], np.ndarray]] = {}

# How float results return to integer values: "clamp" (clip, round) or "reference" (truncate toward
# zero, wrap modulo 2**bits: the authors' ToPILImage round trip).
CONVERSIONS = ("clamp", "reference")
# The kinds the reference converts through ToPILImage; its masks write 8-bit values directly.
_CONVERTED_KINDS = {"gaussian", "gaussian_iid"}


def register_noise_kind(name: str) -> Callable[[NoiseKind], NoiseKind]:
    """Decorator adding a noise kind to ``NOISE_KINDS`` under ``name`` (names are unique)."""

    def register(noise_kind: NoiseKind) -> NoiseKind:
        if name in NOISE_KINDS:
            raise ValueError(f"noise kind {name!r} is already registered ({NOISE_KINDS[name]!r})")
        NOISE_KINDS[name] = noise_kind
        return noise_kind

    return register


@register_noise_kind("gaussian")
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


# 8-bit fast path of "gaussian" (see the module docstring).
_BYTE_LEVELS = 256
_FAST_PATH_CHUNK = 1 << 20  # values per table-lookup chunk: keeps index and output in cache


def _to_integer_levels(levels: np.ndarray, max_value: float, conversion: str) -> np.ndarray:
    """Noisy levels in units of the full scale ``max_value`` -> int64 output values (the conversion rule)."""
    if conversion == "clamp":
        return np.clip(np.rint(levels), 0, max_value).astype(np.int64)
    # reference: float -> uint8 in torch truncates toward zero and keeps the low byte (two's complement)
    return np.mod(np.trunc(levels).astype(np.int64), int(max_value) + 1)


def _stratified_output_table(signal_scale: float, noise_scale: float, shift: float, conversion: str) -> np.ndarray:
    """uint8 (256 * 256,), entry [x * 256 + k] = output byte of input byte x at probability (k + shift) / 256."""
    probabilities = (torch.arange(_BYTE_LEVELS, dtype=torch.float64) + shift) / _BYTE_LEVELS
    eps_quantiles = torch.special.ndtri(probabilities).numpy()  # -inf only for k = shift = 0
    # -inf maps to byte 0 under either rule (a probability-zero event); keep it finite for the cast.
    eps_quantiles = np.maximum(eps_quantiles, -40.0)
    clean_levels = np.arange(_BYTE_LEVELS) * signal_scale
    levels = clean_levels[:, None] + (255.0 * noise_scale) * eps_quantiles[None, :]  # noise_scale > 0
    return _to_integer_levels(levels, 255.0, conversion).astype(np.uint8).reshape(-1)


def _gaussian_uint8(
    values: np.ndarray, noise_extent: float, rng: np.random.Generator, conversion: str = "clamp"
) -> np.ndarray:
    """Gaussian noise on uint8 (H, W, C) values by stratified inverse-CDF lookup; returns a new uint8 array."""
    signal_scale, noise_scale = noise_scales(noise_extent)
    table = pa.array(_stratified_output_table(signal_scale, noise_scale, rng.random(), conversion))
    flat_values = np.ascontiguousarray(values).reshape(-1)
    num_values = flat_values.size
    noisy = np.empty(num_values, dtype=np.uint8)
    index = np.empty(min(num_values, _FAST_PATH_CHUNK), dtype=np.uint16)
    for start in range(0, num_values, _FAST_PATH_CHUNK):
        stop = min(start + _FAST_PATH_CHUNK, num_values)
        strata = rng.bit_generator.random_raw(-(-(stop - start) // 8)).view(np.uint8)[: stop - start]
        chunk_index = index[: stop - start]
        np.left_shift(flat_values[start:stop], 8, out=chunk_index, dtype=np.uint16)
        np.bitwise_or(chunk_index, strata, out=chunk_index)
        noisy[start:stop] = pc.take(table, pa.array(chunk_index), boundscheck=False).to_numpy(zero_copy_only=True)
    return noisy.reshape(values.shape)


_UINT8_FAST_PATHS["gaussian"] = _gaussian_uint8


# Storage path. Pillow keeps an RGB image as 4 bytes per pixel (R, G, B and a padding byte it never
# reads back) and an L image as 1. Unpacking RGB into a packed (H, W, 3) array and packing the result
# back are two passes over the image that together cost as much as the whole lookup at 1536^2. Pillow
# (>= 11.2.1) exports and imports that memory through the Arrow C data interface without a copy, so an
# 8-bit fast path, which treats every byte alike, runs on the storage itself: the padding bytes go
# through the lookup with the colour bytes, and Pillow ignores them (tobytes, numpy, convert, resize).
_STORAGE_BYTES_PER_PIXEL = {"RGB": 4, "L": 1}


def _storage_bytes(image: Image.Image) -> np.ndarray:
    """uint8 (H * W * bytes per pixel,) of Pillow's pixel storage: a read-only view, or a copy in the same layout."""
    try:
        exported = pa.array(image)
    except ValueError:
        # Pillow splits large images (> its 16 MiB block size) into blocks, which one Arrow buffer cannot
        # describe; the same layout is built instead, so the noise of an image does not depend on how it is stored.
        return _packed_storage_bytes(image)
    if pa.types.is_fixed_size_list(exported.type):
        exported = exported.flatten()
    return exported.to_numpy(zero_copy_only=True)


def _packed_storage_bytes(image: Image.Image) -> np.ndarray:
    packed = np.asarray(image)
    bytes_per_pixel = _STORAGE_BYTES_PER_PIXEL[image.mode]
    if bytes_per_pixel == 1:
        return packed.reshape(-1)
    storage = np.full((image.height, image.width, bytes_per_pixel), 255, dtype=np.uint8)
    storage[:, :, : packed.shape[2]] = packed
    return storage.reshape(-1)


def _image_from_storage_bytes(mode: str, size: tuple[int, int], storage: np.ndarray) -> Image.Image:
    """Image over ``storage`` (uint8, Pillow's layout of ``mode``) without a copy; read-only, copied on first write."""
    values = pa.array(storage)
    bytes_per_pixel = _STORAGE_BYTES_PER_PIXEL[mode]
    if bytes_per_pixel > 1:
        values = pa.FixedSizeListArray.from_arrays(values, bytes_per_pixel)
    return Image.fromarrow(values, mode, size)


# The same law drawn as independent float32 normals for every value, also on 8-bit images: the
# reference's sampler, for users who want i.i.d. noise over the ~3x speed of the stratified path.
register_noise_kind("gaussian_iid")(gaussian_noise)


def _noise_kind(kind: str) -> NoiseKind:
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; known kinds: {sorted(NOISE_KINDS)}")
    return NOISE_KINDS[kind]


# ---------------------------------------------------------------------------------------------------
# Modes: how the colour channels of each PIL mode are read, scaled and written back.


@dataclasses.dataclass(frozen=True)
class ChannelNoise:
    """The noise of one ``add_noise`` call, as the mode handlers apply it to colour values."""

    kind: str
    noise_extent: float
    rng: np.random.Generator
    conversion: str = "clamp"

    @property
    def per_value_uint8(self) -> Callable[[np.ndarray, float, np.random.Generator], np.ndarray] | None:
        """The kind's 8-bit fast path (every byte noised alike, independently of its neighbours), if it has one."""
        fast_path = _UINT8_FAST_PATHS.get(self.kind)
        if fast_path is None:
            return None
        return lambda values, extent, rng: fast_path(values, extent, rng, self.conversion)

    def __call__(self, values: np.ndarray, max_value: float, rounded: bool) -> np.ndarray:
        """values (H, W, C) of the mode's dtype with full scale ``max_value`` -> noisy values, same shape and dtype."""
        fast_path = self.per_value_uint8
        if fast_path is not None and values.dtype == np.uint8 and max_value == 255:
            return fast_path(values, self.noise_extent, self.rng)
        pixels = np.multiply(values, np.float32(1.0 / max_value), dtype=np.float32)
        pixels = NOISE_KINDS[self.kind](pixels, self.noise_extent, self.rng)
        if not rounded:  # float modes ("F"): clamped, never wrapped (checked in add_noise)
            np.clip(pixels, 0.0, 1.0, out=pixels)
            return np.multiply(pixels, np.float32(max_value), out=pixels).astype(values.dtype)
        np.multiply(pixels, np.float32(max_value), out=pixels)  # float32, as ToPILImage's x.mul(255)
        return _to_integer_levels(pixels, max_value, self.conversion).astype(values.dtype)


def _array_mode_handler(colour_channels: int, max_value: float, rounded: bool = True):
    """Handler of a mode that numpy reads directly: noise the leading channels, pass the rest (alpha)."""

    def handle(image: Image.Image, channel_noise: ChannelNoise) -> Image.Image:
        stored = np.asarray(image)  # (H, W) for single-band modes, (H, W, bands) otherwise
        values = stored[:, :, None] if stored.ndim == 2 else stored
        if values.dtype == np.int32 and values.size and (values.min() < 0 or values.max() > max_value):
            raise ValueError(
                f"mode {image.mode!r} images are treated as 16-bit (values 0..{max_value:.0f}); this one has "
                f"values in [{values.min()}, {values.max()}]: rescale it or convert it before adding noise"
            )
        if values.shape[2] == colour_channels:
            noisy = channel_noise(values, max_value, rounded)
        else:
            noisy = np.empty_like(values)
            noisy[:, :, :colour_channels] = channel_noise(
                np.ascontiguousarray(values[:, :, :colour_channels]), max_value, rounded
            )
            noisy[:, :, colour_channels:] = values[:, :, colour_channels:]
        noisy = np.ascontiguousarray(noisy.reshape(stored.shape))
        return Image.frombuffer(image.mode, image.size, noisy, "raw", image.mode, 0, 1)

    return handle


def _storage_mode_handler(array_handler: Callable[[Image.Image, ChannelNoise], Image.Image]):
    """Handler of RGB / L: kinds with an 8-bit fast path run on Pillow's storage, the others on ``array_handler``."""

    def handle(image: Image.Image, channel_noise: ChannelNoise) -> Image.Image:
        fast_path = channel_noise.per_value_uint8
        if fast_path is None:  # e.g. masks, whose mean colour must not see the padding bytes
            return array_handler(image, channel_noise)
        noisy_storage = fast_path(_storage_bytes(image), channel_noise.noise_extent, channel_noise.rng)
        return _image_from_storage_bytes(image.mode, image.size, noisy_storage)

    return handle


def _palette_alphas(image: Image.Image, num_entries: int) -> np.ndarray:
    """Alpha (uint8) of every palette entry: from an RGBA palette or the "transparency" info, else 255."""
    if image.palette is not None and image.palette.mode == "RGBA":
        return np.asarray(image.getpalette("RGBA"), dtype=np.uint8).reshape(-1, 4)[:num_entries, 3]
    alphas = np.full(num_entries, 255, dtype=np.uint8)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int) and transparency < num_entries:
        alphas[transparency] = 0
    elif isinstance(transparency, bytes):
        known = min(len(transparency), num_entries)
        alphas[:known] = np.frombuffer(transparency, dtype=np.uint8)[:known]
    return alphas


def _palette_handler(image: Image.Image, channel_noise: ChannelNoise) -> Image.Image:
    """P: noise in RGB, then map every pixel to the nearest colour of the image's own palette.

    Only entries with the pixel's original alpha are candidates, so transparency is kept.
    """
    colours = np.asarray(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    if len(colours) == 0:  # an empty palette cannot show any other colour
        return image.copy()
    entry_alphas = np.full(_BYTE_LEVELS, 255, dtype=np.uint8)
    entry_alphas[: len(colours)] = _palette_alphas(image, len(colours))
    indices = np.asarray(image)
    pixel_alphas = entry_alphas[indices]
    noisy_rgb = _MODE_HANDLERS["RGB"](image.convert("RGB"), channel_noise)
    noisy_indices = indices.copy()
    for alpha in np.unique(pixel_alphas):
        candidates = np.flatnonzero(entry_alphas[: len(colours)] == alpha)
        if len(candidates) == 0:  # pixels pointing past the palette end keep their index
            continue
        candidate_palette = Image.new("P", (1, 1))
        candidate_palette.putpalette(colours[candidates].tobytes())
        nearest = np.asarray(noisy_rgb.quantize(palette=candidate_palette, dither=Image.Dither.NONE))
        in_group = pixel_alphas == alpha
        noisy_indices[in_group] = candidates[nearest[in_group]]
    noisy = image.copy()
    noisy.frombytes(noisy_indices.tobytes())
    return noisy


def _bilevel_handler(image: Image.Image, channel_noise: ChannelNoise) -> Image.Image:
    """1: noise the 0/255 grey image, then threshold at 128 (no dithering)."""
    noisy_grey = _MODE_HANDLERS["L"](image.convert("L"), channel_noise)
    return noisy_grey.convert("1", dither=Image.Dither.NONE)


_MODE_HANDLERS: dict[str, Callable[[Image.Image, ChannelNoise], Image.Image]] = {
    "RGB": _storage_mode_handler(_array_mode_handler(3, 255)),
    "RGBA": _array_mode_handler(3, 255),
    "L": _storage_mode_handler(_array_mode_handler(1, 255)),
    "LA": _array_mode_handler(1, 255),
    "I;16": _array_mode_handler(1, 65535),
    "I;16L": _array_mode_handler(1, 65535),
    "I;16B": _array_mode_handler(1, 65535),
    # PIL decodes 16-bit PNG/TIFF to "I"; values outside 0..65535 are rejected.
    "I": _array_mode_handler(1, 65535),
    # "F" follows PIL's own convention (convert("F") of an "L" image keeps 0..255); not rounded.
    "F": _array_mode_handler(1, 255, rounded=False),
    "P": _palette_handler,
    "1": _bilevel_handler,
}
SUPPORTED_MODES = tuple(_MODE_HANDLERS)


def _checked_seed(seed: int, *, name: str = "seed") -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"{name} must be a non-negative int, got {seed!r}")
    return int(seed)


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
    """Return a noisy copy of ``image`` with the same size and mode; a function of (image, extent, kind, seed, conversion).

    extent: noise extent in [0, 1]. kind: a key of ``NOISE_KINDS``. conversion: ``clamp`` (clip and
    round; extent 0 returns an identical copy) or ``reference`` (truncate and wrap modulo 256 as the
    authors' code does, and extent 0 still adds the t = 0 noise; Gaussian kinds, integer modes).
    Colour channels get noise; alpha is kept. Supported modes: ``SUPPORTED_MODES``. With kind
    ``gaussian`` an RGB or L result wraps its own new buffer without a copy, so Pillow marks it
    read-only and copies it on the first in-place change (as for ``Image.frombuffer``).
    """
    _noise_kind(kind)
    check_conversion(conversion, kind)
    noise_extent = _checked_extent(extent, name="extent")
    rng = np.random.Generator(np.random.SFC64(_checked_seed(seed)))
    if image.mode not in _MODE_HANDLERS:
        raise ValueError(
            f"image mode {image.mode!r} is not supported; supported modes: {list(SUPPORTED_MODES)}. "
            "Convert the image (e.g. image.convert('RGB')) before adding noise"
        )
    if conversion == "reference" and image.mode == "F":
        raise ValueError("conversion 'reference' wraps integer values; mode 'F' has none (convert the image first)")
    if (noise_extent == 0.0 and conversion == "clamp") or image.width == 0 or image.height == 0:
        return image.copy()

    noisy = _MODE_HANDLERS[image.mode](image, ChannelNoise(kind, noise_extent, rng, conversion))
    noisy.info.update(image.info)
    return noisy


# ---------------------------------------------------------------------------------------------------
# Noise extents of a group and seeds.

DEFAULT_NOISE_LEVELS = (0.0, 0.3, 0.6, 0.9)


def _fixed_extents(group_size: int, levels: list[float], seed: int | None) -> list[float]:
    if len(levels) != group_size:
        raise ValueError(
            f"rollout.n must equal the number of noise levels: group_size={group_size} but {len(levels)} levels "
            f"{levels}; set actor_rollout_ref.rollout.n={len(levels)} or change the noise levels"
        )
    if levels[0] != 0.0:
        raise ValueError(f"the first noise level must be 0.0 (the clean anchor), got levels {levels}")
    return list(levels)


def _uniform_extents(group_size: int, levels: list[float], seed: int | None) -> list[float]:
    if seed is None:
        raise ValueError("group_noise_extents(mode='uniform') needs a seed (e.g. prompt_noise_seed(...))")
    rng = np.random.Generator(np.random.SFC64(_checked_seed(seed)))
    return [0.0] + [float(extent) for extent in rng.random(group_size - 1)]


_EXTENT_SAMPLERS: dict[str, Callable[[int, list[float], int | None], list[float]]] = {
    "fixed": _fixed_extents,
    "uniform": _uniform_extents,
}


def group_noise_extents(
    group_size: int,
    *,
    mode: str = "fixed",
    levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
    seed: int | None = None,
) -> list[float]:
    """Noise extent of each rollout of a group; index 0 is always 0.0 (the clean anchor).

    mode "fixed": the levels themselves (group_size must equal len(levels)). mode "uniform": index 0
    is 0.0, the others ~ U[0, 1) drawn from ``seed``.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size < 1:
        raise ValueError(f"group_size (rollout.n) must be a positive int, got {group_size!r}")
    if mode not in _EXTENT_SAMPLERS:
        raise ValueError(f"unknown noise extent mode {mode!r}; known modes: {sorted(_EXTENT_SAMPLERS)}")
    checked_levels = [_checked_extent(level, name="noise level") for level in levels]
    if not checked_levels:
        raise ValueError("noise levels must not be empty; the default is [0.0, 0.3, 0.6, 0.9]")
    return _EXTENT_SAMPLERS[mode](int(group_size), checked_levels, seed)


def decay_noise_extents(extents: Sequence[float], step: int, total_steps: int, rate: float = 0.5) -> list[float]:
    """Optional decay (off in the paper's scripts): each extent * (1 - rate * min(step / total_steps, 1))."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    decay_rate = _checked_extent(rate, name="decay rate")
    factor = 1.0 - decay_rate * min(step / total_steps, 1.0)
    return [_checked_extent(extent, name="noise extent") * factor for extent in extents]


# Domain tags keep the two seed families apart even for equal inputs.
_ROLLOUT_SEED_TAG = 0x6E6F6973  # "nois"
_PROMPT_SEED_TAG = 0x70726D74  # "prmt"
_UINT32_LIMIT = 1 << 32


def _derived_seed(entropy: int, spawn_key: tuple[int, ...]) -> int:
    # With a spawn key, SeedSequence pads the entropy to a fixed width, and every key word is < 2**32,
    # so distinct inputs give distinct assembled entropy.
    state = np.random.SeedSequence(entropy, spawn_key=spawn_key).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def _checked_uint32(value: int, *, name: str) -> int:
    checked = _checked_seed(value, name=name)
    if checked >= _UINT32_LIMIT:
        raise ValueError(f"{name} must be < 2**32, got {value!r}")
    return checked


def rollout_noise_seed(noise_seed: int, rollout_index: int, step: int) -> int:
    """63-bit seed of one rollout's noise, a deterministic function of (sample seed, rollout index, step)."""
    return _derived_seed(
        _checked_seed(noise_seed, name="noise_seed"),
        (
            _ROLLOUT_SEED_TAG,
            _checked_uint32(rollout_index, name="rollout_index"),
            _checked_uint32(step, name="step"),
        ),
    )


def prompt_noise_seed(base_seed: int, row_index: int) -> int:
    """63-bit per-prompt seed, a deterministic function of (run seed, dataset row index)."""
    return _derived_seed(
        _checked_seed(base_seed, name="base_seed"),
        (_PROMPT_SEED_TAG, _checked_uint32(row_index, name="row_index")),
    )
