"""Image loading and normalisation to 8-bit RGB, run inside the pipeline's worker processes.

Why normalise here rather than leave it to the loader: verl hands images to
`qwen_vl_utils.fetch_image`, which ignores EXIF orientation and turns 16-bit images into
saturated white with a plain `convert("RGB")`. So every image is decoded once, rotated
upright, converted to RGB, and only re-encoded (lossless PNG) when that changed something;
images that are already upright 8-bit RGB keep their original bytes.

This module imports only PIL and numpy so worker processes start quickly.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from data_prep.records import ImageSource, Problem

# qwen_vl_utils.vision_process.MAX_RATIO: smart_resize raises above this aspect ratio.
MAX_ASPECT_RATIO = 200
# Formats the loader reads directly; anything else (TIFF, BMP, ...) is re-encoded as PNG.
PASSTHROUGH_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
_EXIF_ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "La", "RGBa", "PA"})
# Bytes; a larger image file is refused unread. A 1536^2 RGB PNG (the paper's pixel cap) is under
# 10 MiB, and the cap keeps a worker's memory bounded whatever a path points at.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ImageSettings:
    """How the worker stores images.

    embed: put the image bytes in the parquet; else store a file path (`image_dir` receives
        the files that have no usable path of their own: in-memory inputs and normalised copies).
    image_root: an absolute, resolved folder; image files must resolve (symlinks followed) inside it
        unless `allow_outside_root`. None = not confined (only for callers that build paths themselves).
    max_bytes: the largest image file read, in bytes.
    """

    embed: bool
    image_dir: Path | None = None
    image_root: Path | None = None
    allow_outside_root: bool = False
    max_bytes: int = MAX_IMAGE_BYTES


@dataclass(frozen=True)
class PreparedImage:
    """A decoded, upright RGB image ready for the parquet.

    Exactly one of `data` (embedded bytes) and `file` (absolute path) is set, following
    `ImageSettings.embed`. `width`, `height` are in pixels after EXIF rotation.
    """

    name: str
    width: int
    height: int
    data: bytes | None = None
    file: str | None = None


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy of `image`; alpha is composited on white (as qwen_vl_utils does)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode == "F":
        return _float_to_rgb(image)
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Scale a 16-bit (or 32-bit integer) grey image to 8 bits.

    Values are taken on the 16-bit scale (0..65535 -> 0..255) — PNG's 16-bit grey opens as
    "I;16" or "I" — unless they are already all <= 255, in which case they are kept.
    """
    values = np.asarray(image, dtype=np.float64)
    if values.size and values.max() > 255:
        values = values / 257.0
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _float_to_rgb(image: Image.Image) -> Image.Image:
    """Map a float grey image to 8 bits: [0, 1] data is scaled by 255, larger data clipped to 255."""
    values = np.asarray(image, dtype=np.float64)
    if values.size and np.nanmax(values) <= 1.0:
        values = values * 255.0
    grey = np.clip(np.nan_to_num(np.rint(values)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not make a decodable image unusable
        return 1


def normalise(encoded: bytes) -> tuple[Image.Image, bool]:
    """Decode `encoded` fully and return (upright RGB image, whether it differs from the input).

    Raises whatever PIL raises for unreadable data (callers turn that into a problem).
    """
    with Image.open(io.BytesIO(encoded)) as opened:
        opened.load()
        image_format = opened.format
        orientation = _orientation(opened)
        image = ImageOps.exif_transpose(opened) if orientation != 1 else opened
        rgb = to_rgb(image)
        changed = orientation != 1 or rgb is not opened or image_format not in PASSTHROUGH_FORMATS
        if rgb is opened:
            rgb = opened.copy()  # detach from the file handle closed on exit
    return rgb, changed


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Level 3 is several times faster than the default 6 and only a few % larger.
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


class ImageRefused(Exception):
    """An image file that is not read; `reason` is one of records.REASONS, `detail` names the file."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def confined_path(path: Path, root: Path | None, allow_outside_root: bool) -> Path:
    """`path` resolved (symlinks followed), if it lies inside `root`; raises `ImageRefused` otherwise.

    The one rule for image paths of every converter. Nothing is opened: resolving reads only
    metadata (lstat, readlink, stat), so a path to a FIFO or a secret is refused unread.
    """
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as error:  # RuntimeError: a symlink loop; ValueError: a NUL byte
        raise ImageRefused("missing_image", f"cannot resolve {str(path)!r}: {error}") from error
    if root is not None and not allow_outside_root and not resolved.is_relative_to(root):
        raise ImageRefused("image_outside_root", f"{path} resolves to {resolved}, outside the image root {root}")
    return resolved


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"))
    kinds += ((stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_image_file(path: Path, resolved: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file `resolved` (`path` as the input wrote it, for messages).

    Raises `ImageRefused` for a missing file, anything but a regular file (a FIFO would block,
    /dev/zero never ends), or more than `max_bytes` bytes.
    """
    shown = str(path) if path == resolved else f"{path} (-> {resolved})"
    try:
        info = os.stat(resolved)
    except FileNotFoundError as error:
        raise ImageRefused("missing_image", f"no file at {shown}") from error
    except OSError as error:  # ELOOP: a symlink loop, which resolve() passes on since Python 3.13
        reason = "missing_image" if error.errno == errno.ELOOP else "undecodable_image"
        raise ImageRefused(reason, f"cannot read {shown}: {error}") from error
    if not stat.S_ISREG(info.st_mode):
        raise ImageRefused("not_a_file", f"{shown} is {_kind(info.st_mode)}")
    if info.st_size > max_bytes:
        raise ImageRefused("image_too_large", f"{shown} is {info.st_size} bytes, over the limit of {max_bytes}")
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the stat, opening it does not hang.
        with open(os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb", buffering=0) as file:
            # One byte more than allowed: getting it means the file grew or reports a wrong size.
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise ImageRefused("undecodable_image", f"cannot read {shown}: {error}") from error
    if len(data) > max_bytes:
        raise ImageRefused(
            "image_too_large", f"{shown} holds more than {max_bytes} bytes (its size said {info.st_size})"
        )
    return data


def _read_source(source: ImageSource, settings: ImageSettings, row: int, record_source: str) -> bytes | Problem:
    if source.data is not None:
        return source.data
    assert source.path is not None
    try:
        resolved = confined_path(source.path, settings.image_root, settings.allow_outside_root)
        return read_image_file(source.path, resolved, settings.max_bytes)
    except ImageRefused as refused:
        return Problem(row, record_source, source.field, refused.reason, refused.detail)


def prepare_image(
    source: ImageSource, settings: ImageSettings, row: int, record_source: str, position: int
) -> PreparedImage | Problem:
    """Decode and normalise one image; return what the parquet stores, or why it cannot.

    `position` (the image's index in its row) only names the file written in path mode.
    """
    encoded = _read_source(source, settings, row, record_source)
    if isinstance(encoded, Problem):
        return encoded
    try:
        image, changed = normalise(encoded)
    except Exception as error:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        where = source.path if source.path is not None else f"{len(encoded)} bytes"
        return Problem(
            row, record_source, source.field, "undecodable_image", f"{where}: {type(error).__name__}: {error}"
        )
    width, height = image.size
    if min(width, height) == 0 or max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        return Problem(row, record_source, source.field, "bad_aspect_ratio", f"size {width}x{height}")
    if settings.embed:
        return PreparedImage(source.name, width, height, data=encode_png(image) if changed else encoded)
    if source.path is not None and not changed:
        return PreparedImage(source.name, width, height, file=str(source.path.resolve()))
    if settings.image_dir is None:
        raise ValueError("path mode needs ImageSettings.image_dir for in-memory or normalised images")
    target = settings.image_dir / f"{_safe(record_source)}-{row}-{position}.png"
    target.write_bytes(encode_png(image))
    return PreparedImage(source.name, width, height, file=str(target.resolve()))


def _safe(text: str) -> str:
    return "".join(char if char.isalnum() or char in "-_" else "_" for char in text) or "input"


@dataclass(frozen=True)
class ImageJob:
    """The picklable unit of work for one row: its images and where they come from."""

    row: int
    source: str
    images: tuple[ImageSource, ...]
    settings: ImageSettings


def prepare_row_images(job: ImageJob) -> list[PreparedImage | Problem]:
    """Worker entry point: prepare every image of one row, in order (shape: len(job.images))."""
    return [
        prepare_image(source, job.settings, job.row, job.source, position) for position, source in enumerate(job.images)
    ]
