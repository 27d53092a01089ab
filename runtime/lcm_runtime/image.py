"""VAE output -> images, and PNG files written atomically with their generation parameters."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .errors import InputError


def to_unit_range(vae_output: np.ndarray) -> np.ndarray:
    """[-1, 1] NCHW float -> [0, 1] NHWC float32, as diffusers' VaeImageProcessor (output_type="np")."""
    images = np.clip(vae_output * np.float32(0.5) + np.float32(0.5), np.float32(0), np.float32(1))
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1), dtype=np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    # Round half to even in NumPy like diffusers; OpenVINO's f32->u8 Convert would truncate.
    pixels: np.ndarray = (images * np.float32(255)).round().astype(np.uint8)
    return pixels


def to_pil(images: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(image) for image in to_uint8(images)]


def save_png(image: Image.Image, path: Path, text: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write through a temporary file in the same folder, so a crash never leaves a broken PNG.

    Without ``overwrite`` an existing file is never replaced (the final link fails instead).
    """
    path = Path(path)
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format="PNG", pnginfo=info)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise InputError(f"{path} already exists; pass --overwrite or choose another --output") from None
            os.unlink(temporary)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path
