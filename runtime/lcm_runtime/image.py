"""VAE output -> images, and PNG files written atomically with their generation parameters."""

from __future__ import annotations

import io
import os
import secrets
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


def png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    """The PNG file ``save_png`` writes, in memory (with its text chunks)."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    stream = io.BytesIO()
    image.save(stream, format="PNG", pnginfo=info)
    return stream.getvalue()


def save_png(image: Image.Image, path: Path, text: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write through a temporary file in the same folder, so a crash never leaves a broken PNG.

    Without ``overwrite`` an existing file is never replaced (the final link fails instead).
    """
    return write_atomically(Path(path), png_bytes(image, text), overwrite=overwrite)


def write_atomically(path: Path, data: bytes, overwrite: bool = False) -> Path:
    """``data`` to ``path`` through ``.NAME.XXXX.SUFFIX.part`` in the same folder, flushed to disk
    before it takes the name: a crash (even kill -9) leaves the old file or the new, never half.

    Without ``overwrite`` an existing file is never replaced (the final link fails instead).
    """
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
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


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new ``.NAME.XXXXXXXX.SUFFIX.part`` beside ``path``, created exclusively as mkstemp does, but with
    the mode any new file gets (0666 less the umask): mkstemp's 0600 made every image unreadable to the
    user's group, and to a web server serving the folder."""
    for _ in range(100):
        temporary = str(path.parent / f".{path.stem}.{secrets.token_hex(4)}{path.suffix}.part")
        try:
            return os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            ), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")
