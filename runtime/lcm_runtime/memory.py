"""Memory policy: how much a request needs, how much the machine has, and refusing what cannot fit.

The estimate of a call's peak, checked before anything is compiled: the weights of the models it
still has to compile, plus the activations OpenVINO keeps for each compiled model (a model's infer
request holds its intermediate buffers after it ran, so the UNet's stay while the VAE decodes), plus
a fixed overhead. Activations scale with the pixels a model runs at and with the width of its first
block; the factors were fitted to peak RSS measured on the SD1.5 LCM architecture (512-768 px, 1-4
images, bf16) and on the tiny test model (512-1536 px, 1-4 images, f32 and bf16): the estimate was
between 10% under and 16% over the measured peak, so it is stated as within 20%
(docs/performance.md; tests/runtime/test_memory_estimate.py checks it).
"""

from __future__ import annotations

from collections.abc import Collection

from . import bundle
from .errors import InputError
from .loading import ModelFolder
from .meminfo import meminfo_bytes

ESTIMATE_ERROR = 0.20  # the estimate's stated relative error against the measured peak
UNET_ELEMENTS = 60  # activation elements kept per latent pixel, per image, per channel of the UNet's first block
VAE_ELEMENTS = 7  # per image pixel, per channel of the VAE's first (widest) block, decode or encode
OVERHEAD = 64 << 20  # OpenVINO's per-model bookkeeping and the call's own arrays
STORED_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int8-ptq": 1.0, "int4": 0.5}


def available_memory() -> int | None:
    return meminfo_bytes("MemAvailable")


def element_bytes(execution_precision: str) -> int:
    """Bytes per activation element at the precision the models run at (bf16/f16: 2, f32: 4)."""
    return 4 if execution_precision == "f32" else 2


def unet_activations(folder: ModelFolder, batch: int, height: int, width: int, element: int) -> int:
    scale = folder.facts.vae_scale_factor
    latent_pixels = (height // scale) * (width // scale)
    return UNET_ELEMENTS * element * batch * latent_pixels * folder.unet_block_out_channels[0]


def vae_activations(folder: ModelFolder, vae: str, height: int, width: int, element: int) -> int:
    """One picture's VAE pass (decode, or encode: the same widths), at height x width pixels."""
    if vae == "full":
        widest = folder.vae_block_out_channels[0]
    else:
        widest = (folder.tiny_vae_config or {}).get("decoder_block_out_channels", [64])[-1]
    return VAE_ELEMENTS * element * height * width * widest


def weights_bytes(folder: ModelFolder, components: Collection[str], execution_precision: str) -> int:
    """What the models' weights take once compiled: their files, widened to f32 when they run at f32."""
    total = 0.0
    for component in components:
        path = folder.root / component / bundle.MODEL_BIN
        try:
            size = path.stat().st_size
        except OSError:
            continue
        entry = folder.manifest.components.get(component, {}) if folder.manifest else {}
        stored = STORED_BYTES.get(str(entry.get("precision", "fp16")), 2.0)
        widened = 4.0 / stored if execution_precision == "f32" and stored in (2.0,) else 1.0
        total += size * widened
    return int(total)


def estimate_peak(
    folder: ModelFolder,
    vae: str,
    batch: int,
    height: int,
    width: int,
    execution_precision: str,
    to_compile: Collection[str],
    encode: bool = False,
    decode_side: int | None = None,
    unet_batch: int | None = None,
) -> int:
    """The extra memory a call needs: the weights of ``to_compile``, the UNet's activations (at
    ``unet_batch``, default ``batch``: classifier-free guidance doubles it), and the larger of the VAE
    decode (whole, or in tiles of ``decode_side`` pixels) and the whole-picture encode."""
    element = element_bytes(execution_precision)
    decode_h, decode_w = (height, width) if decode_side is None else (min(height, decode_side), min(width, decode_side))
    vae_pass = vae_activations(folder, vae, decode_h, decode_w, element)
    if encode:
        vae_pass = max(vae_pass, vae_activations(folder, "full", height, width, element))
    return (
        weights_bytes(folder, to_compile, execution_precision)
        + unet_activations(folder, batch if unet_batch is None else unet_batch, height, width, element)
        + vae_pass
        + OVERHEAD
    )


def check_fits(
    folder: ModelFolder,
    vae: str,
    batch: int,
    height: int,
    width: int,
    execution_precision: str,
    to_compile: Collection[str],
    encode: bool = False,
    unet_batch: int | None = None,
) -> None:
    """Refuse a request whose estimated peak exceeds the free memory even with a tiled decode (tiles of
    the native size), before anything is compiled."""
    needed = estimate_peak(
        folder,
        vae,
        batch,
        height,
        width,
        execution_precision,
        to_compile,
        encode,
        decode_side=folder.facts.default_image_size,
        unet_batch=unet_batch,
    )
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(
            f"width={width}, height={height} with {batch} images needs about {needed / 2**30:.1f} GiB "
            f"even with a tiled decode, but only {available / 2**30:.1f} GiB is free; "
            "choose a smaller size or fewer images",
            argument="height",
        )


def whole_decode_fits(folder: ModelFolder, vae: str, height: int, width: int, execution_precision: str) -> bool:
    available = available_memory()
    return (
        available is None
        or vae_activations(folder, vae, height, width, element_bytes(execution_precision)) <= available
    )
