"""Per-step previews of a running generation: the step's ``denoised`` latents as a picture.

With the bundle's TAESD decoder (lcm-export --tiny-vae) the preview is a real decode at a small cost;
without it, each latent pixel is mapped to RGB by a fixed linear approximation of the SD1.5 VAE
(the factors every SD front end uses for "latent previews"), which costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..bundle import TINY_VAE_DECODER
from ..models import VAEDecoder
from ..vae_choice import decoder_scaling_factor

if TYPE_CHECKING:
    from ..core import LCMPipelineBase

# SD1.5 latent channels -> approximate RGB in [-1, 1] (rows: latent channels; columns: R, G, B).
LATENT_RGB_FACTORS = np.array(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ],
    dtype=np.float32,
)


class Previewer:
    """Turns one image's denoised latents (1, C, h, w) into a small RGB picture."""

    def __init__(self, pipe: LCMPipelineBase) -> None:
        self.pipe = pipe
        self.has_tiny_vae = pipe.folder.xml(TINY_VAE_DECODER).is_file()
        self.scaling = decoder_scaling_factor(pipe.folder, "tiny") if self.has_tiny_vae else 1.0
        self._decoder: VAEDecoder | None = None
        self._shape: tuple[int, ...] | None = None

    @property
    def kind(self) -> str:
        return "taesd" if self.has_tiny_vae else "latent"

    def __call__(self, denoised: np.ndarray) -> Image.Image:
        latents = denoised[:1]
        if self.has_tiny_vae:
            return self._taesd(latents)
        return latent_preview(latents)

    def _taesd(self, latents: np.ndarray) -> Image.Image:
        if self._decoder is None or self._shape != latents.shape:
            self._decoder = None  # free the old shape's compiled decoder first
            models = self.pipe.models
            self._decoder = VAEDecoder(
                models.core,
                self.pipe.folder.xml(TINY_VAE_DECODER),
                {"latent_sample": list(latents.shape)},
                models.device,
                models.config,
                models.cache,
            )
            self._shape = latents.shape
        decoded = self._decoder(latents / np.float32(self.scaling))
        return _to_picture(decoded[0])


def latent_preview(latents: np.ndarray) -> Image.Image:
    """The linear latent-to-RGB approximation, at half the image's size (4x the latents')."""
    channels = latents.shape[1]
    factors = LATENT_RGB_FACTORS[:channels] if channels <= len(LATENT_RGB_FACTORS) else None
    if factors is None or channels != len(LATENT_RGB_FACTORS):
        rgb = np.repeat(latents[0, :1], 3, axis=0) / np.float32(4)  # not SD1.5 latents: a gray view
    else:
        rgb = np.einsum("chw,cr->rhw", latents[0], factors)
    picture = _to_picture(rgb)
    return picture.resize((picture.width * 4, picture.height * 4), Image.Resampling.BILINEAR)


def _to_picture(chw: np.ndarray) -> Image.Image:
    pixels = np.clip((chw.transpose(1, 2, 0) + 1) * 127.5, 0, 255).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels))
