"""VAE policy: which decoder a pipeline uses, and whether a decode runs whole or in tiles."""

from __future__ import annotations

from .bundle import INT8_PTQ
from .errors import BundleError, InputError
from .loading import ModelFolder
from .memory import whole_decode_fits

VAE_CHOICES = ("full", "tiny")


def choose_vae(folder: ModelFolder, vae: str | None, fast: bool) -> str:
    """The VAE to decode with; ``fast`` is the preset of the levers that pay: the bundle's INT8 UNet
    (lcm-export --quantize-unet int8) and the TAESD decoder (lcm-export --tiny-vae)."""
    if vae is not None and vae not in VAE_CHOICES:
        raise InputError(f"vae must be 'full' or 'tiny', got {vae!r}", argument="vae")
    if fast:
        if vae == "full":
            raise InputError("--fast decodes with the tiny VAE; drop --vae full, or drop --fast", argument="vae")
        missing = [
            what
            for what, present in (
                ("an INT8 UNet", folder.unet_precision == INT8_PTQ),
                ("a tiny VAE", folder.tiny_vae_config is not None),
            )
            if not present
        ]
        if missing:
            raise BundleError(
                f"--fast needs {' and '.join(missing)}, which {folder.root} lacks; "
                "re-export it with `lcm-export --fast SOURCE OUT`, or drop --fast"
            )
        return "tiny"
    if vae == "tiny" and folder.tiny_vae_config is None:
        raise BundleError(
            f"{folder.root} has no tiny VAE; re-export with `lcm-export --tiny-vae madebyollin/taesd`, "
            "or use --vae full"
        )
    return vae or "full"


def decoder_scaling_factor(folder: ModelFolder, vae: str) -> float:
    """diffusers divides the latents by the decoding VAE's own scaling_factor: 1.0 for TAESD."""
    if vae == "full":
        return folder.facts.vae_scaling_factor
    return float((folder.tiny_vae_config or {}).get("scaling_factor", 1.0))


def choose_vae_tile(
    folder: ModelFolder, vae: str, height: int, width: int, tiled_vae: bool | None, execution_precision: str = "f32"
) -> int | None:
    """The latent tile side for the decode, or None to decode whole (diffusers' way). None for
    ``tiled_vae`` tiles only when the whole decode would not fit in free memory."""
    tile = folder.facts.sample_size
    latent_side = max(height, width) // folder.facts.vae_scale_factor
    if tiled_vae is False or latent_side <= tile:
        return None
    if tiled_vae is None and whole_decode_fits(folder, vae, height, width, execution_precision):
        return None
    return tile
