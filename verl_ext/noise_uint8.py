"""The 8-bit fast path of the ``gaussian`` noise kind: the same per-value law, about 3x faster.

:func:`verl_ext.noise.add_noise` sends kind ``gaussian`` here (kind ``gaussian_iid`` draws float
normals instead). For an RGB image, each output byte is sampled by inverse CDF: the law of
``convert(255 * (sqrt(ab) * x / 255 + sqrt(1 - ab) * eps))`` is tabulated for every input byte x at
the 256 probabilities ``(k + shift) / 256``, k being 8 fresh random bits per value and
``shift ~ U[0, 1)`` one random number per call (a Cranley-Patterson rotation), so every value has
exactly that law; the values of one call share only ``shift``, which correlates them by < 1e-4
and moves an image's mean grey level by at most one level. One table lookup per value and no
float normals (drawing 1536 * 1536 * 3 of those takes longer than this whole path).

It runs on Pillow's own pixel memory: Pillow stores an RGB image as 4 bytes per pixel (R, G, B
and a padding byte it never reads back) and exports and imports that memory through the Arrow C
data interface without a copy (Pillow >= 11.2.1), so the image is neither unpacked into a numpy
array nor packed back; the padding bytes go through the lookup with the colour bytes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

_BYTE_LEVELS = 256
_CHUNK = 1 << 20  # values per table-lookup chunk: keeps index and output in cache
_BYTES_PER_RGB_PIXEL = 4


def to_integer_levels(levels: np.ndarray, max_value: float, conversion: str) -> np.ndarray:
    """Noisy levels in units of the full scale ``max_value`` -> int64 output values.

    ``clamp``: round and clip to [0, max_value]. ``reference``: truncate toward zero and keep the
    low byte (two's complement), as torch's float -> uint8 cast in ``ToPILImage`` does.
    """
    if conversion == "clamp":
        return np.clip(np.rint(levels), 0, max_value).astype(np.int64)
    return np.mod(np.trunc(levels).astype(np.int64), int(max_value) + 1)


def stratified_output_table(signal_scale: float, noise_scale: float, shift: float, conversion: str) -> np.ndarray:
    """uint8 (256 * 256,), entry [x * 256 + k] = output byte of input byte x at probability (k + shift) / 256."""
    probabilities = (torch.arange(_BYTE_LEVELS, dtype=torch.float64) + shift) / _BYTE_LEVELS
    eps_quantiles = torch.special.ndtri(probabilities).numpy()  # -inf only for k = shift = 0
    # -inf maps to byte 0 under either rule (a probability-zero event); keep it finite for the cast.
    eps_quantiles = np.maximum(eps_quantiles, -40.0)
    clean_levels = np.arange(_BYTE_LEVELS) * signal_scale
    levels = clean_levels[:, None] + (255.0 * noise_scale) * eps_quantiles[None, :]  # noise_scale > 0
    return to_integer_levels(levels, 255.0, conversion).astype(np.uint8).reshape(-1)


def stratified_bytes(
    values: np.ndarray, signal_scale: float, noise_scale: float, rng: np.random.Generator, conversion: str
) -> np.ndarray:
    """Noisy copy (new uint8 array, same shape) of uint8 ``values``, every byte noised alike."""
    table = pa.array(stratified_output_table(signal_scale, noise_scale, rng.random(), conversion))
    flat_values = np.ascontiguousarray(values).reshape(-1)
    num_values = flat_values.size
    noisy = np.empty(num_values, dtype=np.uint8)
    index = np.empty(min(num_values, _CHUNK), dtype=np.uint16)
    for start in range(0, num_values, _CHUNK):
        stop = min(start + _CHUNK, num_values)
        strata = rng.bit_generator.random_raw(-(-(stop - start) // 8)).view(np.uint8)[: stop - start]
        chunk_index = index[: stop - start]
        np.left_shift(flat_values[start:stop], 8, out=chunk_index, dtype=np.uint16)
        np.bitwise_or(chunk_index, strata, out=chunk_index)
        noisy[start:stop] = pc.take(table, pa.array(chunk_index), boundscheck=False).to_numpy(zero_copy_only=True)
    return noisy.reshape(values.shape)


def stratified_gaussian_rgb(
    image: Image.Image, signal_scale: float, noise_scale: float, rng: np.random.Generator, conversion: str
) -> Image.Image:
    """The noisy RGB image, computed on Pillow's pixel storage; read-only until first written (copy on write)."""
    noisy = stratified_bytes(_storage_bytes(image), signal_scale, noise_scale, rng, conversion)
    storage = pa.FixedSizeListArray.from_arrays(pa.array(noisy), _BYTES_PER_RGB_PIXEL)
    return Image.fromarrow(storage, "RGB", image.size)


def _storage_bytes(image: Image.Image) -> np.ndarray:
    """uint8 (H * W * 4,) of Pillow's RGB storage: a read-only view, or a copy in the same layout."""
    try:
        exported = pa.array(image)
    except ValueError:
        # Pillow splits large images (> its 16 MiB block size) into blocks, which one Arrow buffer cannot
        # describe; the same layout is built instead, so the noise of an image does not depend on how it is stored.
        return _packed_storage_bytes(image)
    return exported.flatten().to_numpy(zero_copy_only=True)


def _packed_storage_bytes(image: Image.Image) -> np.ndarray:
    storage = np.full((image.height, image.width, _BYTES_PER_RGB_PIXEL), 255, dtype=np.uint8)
    storage[:, :, :3] = np.asarray(image)
    return storage.reshape(-1)
