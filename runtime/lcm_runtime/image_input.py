"""Input pictures and masks -> the arrays the VAE encoder, the inpainting blend and an inpainting UNet take.

Mirrors diffusers' VaeImageProcessor: sides floored to the VAE factor, LANCZOS resizing of PIL
images (nearest for float arrays, as torch's interpolate), ``2x - 1``; masks resized, made
grayscale, then binarised at 0.5 (white repaints). Unlike diffusers, every picture is converted to
RGB first, so RGBA, palette and grayscale files work (diffusers would hand 4 or 1 channels to the VAE).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, first_line

ImageLike = Image.Image | np.ndarray | str | os.PathLike[str]
ImageInput = ImageLike | Sequence[ImageLike]


def open_image(source: str | os.PathLike[str] | bytes, argument: str, max_pixels: int | None = None) -> Image.Image:
    """A picture file, or a file's bytes (an upload), fully decoded and turned upright by its EXIF
    orientation, as diffusers' ``load_image`` does; one-line errors for a missing, empty, unreadable
    or oversized picture. ``max_pixels`` refuses larger pictures before they are decoded."""
    if isinstance(source, bytes):
        if not source:
            raise InputError(f"{argument} is empty; pass a PNG, JPEG or WebP image", argument=argument)
        stream: io.BytesIO | Path = io.BytesIO(source)
        what = argument
    else:
        stream = Path(source).expanduser()
        if not stream.is_file():
            raise InputError(f"{argument}: {stream} does not exist or is not a file", argument=argument)
        what = f"{argument}: {stream}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as opened:
                if max_pixels is not None and opened.width * opened.height > max_pixels:
                    raise InputError(
                        f"{what} is {opened.width}x{opened.height}, over {max_pixels} pixels; resize it",
                        argument=argument,
                    )
                opened.load()
                picture: Image.Image = ImageOps.exif_transpose(opened) or opened.copy()
                return picture
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{what} has too many pixels to be a picture to edit; resize it", argument=argument) from None
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow raises many kinds for broken files
        # Pillow names an in-memory file by its repr ("<_io.BytesIO object at 0x...>"): not the client's business.
        detail = (
            "not a picture format Pillow reads"
            if isinstance(error, UnidentifiedImageError)
            else re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the image", first_line(error, 120))
        )
        unreadable = (
            f"{argument}: cannot read {stream} as an image"
            if isinstance(stream, Path)
            else f"{what} is not a readable image"
        )
        raise InputError(f"{unreadable} ({detail}); pass a PNG, JPEG or WebP file", argument=argument) from None


def as_items(image: ImageInput, argument: str) -> list[ImageLike]:
    """A picture or a list of pictures -> a list; a 4-d array is a batch."""
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return list(image)
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError(f"{argument} must be a picture or a non-empty list of pictures", argument=argument)
        return list(image)
    # Any other sequence is one item too: _as_pil_or_float rejects what is not a picture.
    return [cast(ImageLike, image)]


def _as_pil_or_float(item: ImageLike, argument: str) -> Image.Image | np.ndarray:
    """PIL stays PIL; a path is opened; a uint8 array becomes PIL; a float array stays float HWC."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        return open_image(item, argument)
    if isinstance(item, np.ndarray):
        array = item[..., None] if item.ndim == 2 else item
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < 1:
            raise InputError(
                f"{argument} arrays must be HxW, HxWxC or NxHxWxC with 1, 3 or 4 channels, got shape {item.shape}",
                argument=argument,
            )
        if array.dtype == np.uint8:
            return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(
                f"{argument} arrays must be uint8 or float in [0, 1], got {array.dtype}", argument=argument
            )
        array = array.astype(np.float32)
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise InputError(f"float {argument} arrays must hold finite values in [0, 1]", argument=argument)
        return array
    raise InputError(
        f"{argument} must be a PIL image, a NumPy array or a file path, got {type(item).__name__}", argument=argument
    )


def _size(item: Image.Image | np.ndarray) -> tuple[int, int]:
    return (item.height, item.width) if isinstance(item, Image.Image) else item.shape[:2]


def default_size(image: ImageInput, multiple: int, argument: str = "image") -> tuple[int, int]:
    """The first picture's height and width floored to ``multiple``, as diffusers sizes img2img."""
    first = _as_pil_or_float(as_items(image, argument)[0], argument)
    height, width = (side - side % multiple for side in _size(first))
    if height < multiple or width < multiple:
        raise InputError(
            f"{argument} is {_size(first)[1]}x{_size(first)[0]}; it must be at least {multiple}x{multiple}",
            argument=argument,
        )
    return height, width


def _nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """torch.nn.functional.interpolate(mode="nearest"): source index floor(i * in / out)."""
    rows = np.minimum((np.arange(height) * np.float32(array.shape[0] / height)).astype(np.int64), array.shape[0] - 1)
    columns = np.minimum((np.arange(width) * np.float32(array.shape[1] / width)).astype(np.int64), array.shape[1] - 1)
    picked: np.ndarray = array[rows][:, columns]
    return picked


def _resized_pil(picture: Image.Image, height: int, width: int) -> Image.Image:
    # Pillow returns a copy when the size is already right, as in diffusers.
    return picture.resize((width, height), resample=Image.Resampling.LANCZOS)


def preprocess_image(image: ImageInput, height: int, width: int, argument: str = "image") -> np.ndarray:
    """Pictures -> float32 NCHW in [-1, 1] at height x width (diffusers' image processor)."""
    batch = []
    for item in as_items(image, argument):
        picture = _as_pil_or_float(item, argument)
        if isinstance(picture, Image.Image):
            pixels = np.asarray(_resized_pil(picture.convert("RGB"), height, width)).astype(np.float32) / 255.0
        else:
            channels = picture.shape[-1]
            rgb = np.repeat(picture, 3, axis=-1) if channels == 1 else picture[..., :3]
            pixels = _nearest(rgb, height, width)
        batch.append(pixels)
    nchw = np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2), dtype=np.float32)
    scaled: np.ndarray = np.float32(2.0) * nchw - np.float32(1.0)
    return scaled


def preprocess_mask(mask: ImageInput, height: int, width: int, argument: str = "mask_image") -> np.ndarray:
    """Masks -> float32 N1HW of 0 and 1 at height x width: resized, grayscale, then binarised at 0.5."""
    batch = []
    for item in as_items(mask, argument):
        picture = _as_pil_or_float(item, argument)
        if isinstance(picture, Image.Image):
            values = np.asarray(_resized_pil(picture, height, width).convert("L")).astype(np.float32) / 255.0
        else:
            values = _nearest(picture, height, width).mean(axis=-1, dtype=np.float32)
        batch.append(np.where(values >= 0.5, np.float32(1), np.float32(0)))
    masks: np.ndarray = np.stack(batch)[:, None].astype(np.float32)
    return masks


def masked_picture(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The pictures where they are kept and 0 where they are repainted, as diffusers' ``image * (mask < 0.5)``
    (one picture and several masks, or the reverse, broadcast to the larger count)."""
    masked: np.ndarray = pixels * (mask < 0.5).astype(np.float32)
    return masked


def latent_mask(mask: np.ndarray, scale: int) -> np.ndarray:
    """The mask at latent resolution, as torch's nearest interpolate picks it: pixel (scale i, scale j)."""
    return np.ascontiguousarray(mask[:, :, ::scale, ::scale])


def digest(image: ImageInput) -> str:
    """The first 12 hex digits of a sha256 identifying the input: of the file for a path, else of
    the pixels (PNG metadata records it, A1111-style)."""
    hasher = hashlib.sha256()
    for item in as_items(image, "image"):
        if isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as handle:
                hasher.update(handle.read())
        elif isinstance(item, Image.Image):
            hasher.update(item.tobytes())
        else:
            hasher.update(np.ascontiguousarray(item).tobytes())
    return hasher.hexdigest()[:12]
