"""Memory policy: how much a request needs, how much the machine has, and refusing what cannot fit.

The estimates are lower bounds of the working sets (the activations that must coexist), so a
request they refuse would certainly not fit; they are checked before anything is compiled.
"""

from __future__ import annotations

from .errors import InputError
from .loading import ModelFolder

MEMINFO = "/proc/meminfo"


def meminfo_bytes(field: str, path: str = MEMINFO) -> int | None:
    """One field of /proc/meminfo (e.g. "MemAvailable") in bytes, or None where there is none."""
    try:
        with open(path, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    return meminfo_bytes("MemAvailable")


def unet_working_set(folder: ModelFolder, batch: int, height: int, width: int) -> int:
    """A lower bound of the UNet's activations: its skip connections at the first block's width."""
    scale = folder.facts.vae_scale_factor
    latent_pixels = (height // scale) * (width // scale)
    return 16 * 4 * batch * latent_pixels * folder.unet_block_out_channels[0]


def vae_working_set(folder: ModelFolder, vae: str, height: int, width: int) -> int:
    """A lower bound of a VAE pass (decode, or encode: the same widths) on one image: a few
    full-resolution float32 activations of its widest full-resolution layer."""
    if vae == "full":
        widest = folder.vae_block_out_channels[0]
    else:
        widest = (folder.tiny_vae_config or {}).get("decoder_block_out_channels", [64])[-1]
    return 8 * 4 * height * width * widest


def check_fits(folder: ModelFolder, vae: str, batch: int, height: int, width: int, encode: bool = False) -> None:
    """Refuse a request whose UNet pass plus a (tiled, at worst native-size) VAE decode cannot fit,
    or (``encode``: image-to-image, inpainting) whose whole-picture VAE encode cannot."""
    native = folder.facts.default_image_size
    needed = unet_working_set(folder, batch, height, width) + vae_working_set(
        folder, vae, min(height, native), min(width, native))
    if encode:
        needed = max(needed, vae_working_set(folder, "full", height, width))
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(
            f"width={width}, height={height} with {batch} images needs about {needed / 2**30:.1f} GiB even with a tiled "
            f"decode, but only {available / 2**30:.1f} GiB is free; choose a smaller size or fewer images",
            argument="height",
        )


def whole_decode_fits(folder: ModelFolder, vae: str, height: int, width: int) -> bool:
    available = available_memory()
    return available is None or vae_working_set(folder, vae, height, width) <= available
