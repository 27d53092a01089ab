"""Inpainting: repaint where the mask is white, keep the rest.

Mirrors diffusers' StableDiffusionInpaintPipeline (0.42.1) with LCMScheduler: only the last
``int(n * strength)`` steps of the n-step schedule run, from noise at strength 1, else from the
picture's latents noised to the first of them. What follows depends on the UNet, in one place
(``__call__``), as in diffusers:

* a 4-channel UNet (an LCM's, or SD1.5's with LCM-LoRA) runs on the latents alone; after each step the
  latents outside the mask are replaced by the picture's latents noised (with the first noise draw) to
  the next timestep, and the blended latents are decoded. Random draws in order: the picture's
  posterior sample, the initial noise, the masked picture's posterior sample (which a 4-channel UNet
  never uses: drawn, not computed), then one per step except the last.
* an inpainting UNet (SD1.5 inpainting's 9 channels) takes the latents, the mask at latent size
  (nearest) and the masked picture's latents (``image * (mask < 0.5)``, VAE-encoded), concatenated on
  channels at every step (doubled with the batch for classifier-free guidance); there is no blend. Random
  draws in order: the picture's posterior sample only when strength < 1 (at strength 1 diffusers does
  not encode the picture), the initial noise, the masked picture's posterior sample, then the steps.

A "cfg" bundle (LCM-LoRA) runs either with classifier-free guidance (guidance.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import validation
from .core import LCMPipelineBase, LCMPipelineOutput, Run, steps_to_run
from .denoise import AfterStep, StepCallback, StepEndCallback
from .errors import InputError
from .image_input import ImageInput, latent_mask, masked_picture, preprocess_image, preprocess_mask
from .img2img import repeat_to_batch
from .noise import GeneratorLike, as_noise_source, draw_normal
from .schedulers.scheduling_lcm import LCMScheduler

DEFAULT_STRENGTH = 1.0  # diffusers' default

__all__ = ["DEFAULT_STRENGTH", "LCMInpaintPipeline", "blend_outside", "paste_original", "steps_to_run"]


class LCMInpaintPipeline(LCMPipelineBase):
    def __call__(
        self,
        prompt: str | Sequence[str],
        image: ImageInput,
        mask_image: ImageInput,
        height: int | None = None,
        width: int | None = None,
        strength: float = DEFAULT_STRENGTH,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        generator: GeneratorLike = None,
        output_type: str = "pil",
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        tiled_vae: bool | None = None,
        paste_back: bool = False,
        prompt_syntax: str = "diffusers",
        negative_prompt: str | Sequence[str] | None = None,
        guidance_rescale: float = 0.0,
    ) -> LCMPipelineOutput:
        """Repaint ``image`` where ``mask_image`` is white (>= 0.5 after resizing to height x width,
        the model's native size by default, as diffusers). ``paste_back`` copies the original pixels
        back outside the mask (diffusers' apply_overlay, without its crop); off by default.
        ``prompt_syntax="a1111"`` reads the prompt as AUTOMATIC1111 does: ``(word:1.3)``, ``(word)``,
        ``[word]`` weights, ``BREAK``, and no 77-token limit (chunks of 75 tokens); the default
        ``"diffusers"`` truncates at 77 tokens and reads brackets as text, as diffusers.
        ``callback(index, steps, timestep)`` runs after each step; ``callback_on_step_end(index, steps,
        denoised)`` also gets the step's denoised latents (for previews), and an exception it raises
        stops the call there.
        ``negative_prompt`` and ``guidance_rescale`` apply to a cfg bundle with ``guidance_scale`` > 1 (as
        the text-to-image pipeline; diffusers' inpaint pipeline has no guidance_rescale)."""
        prompts, per_prompt, guidance = self.check_request(
            prompt, num_images_per_prompt, guidance_scale, output_type, prompt_syntax, negative_prompt, guidance_rescale
        )
        batch = len(prompts) * per_prompt
        strength = validation.strength(strength)
        height, width = self.check_size(height, width, batch, encode=True, unet_batch=guidance.unet_batch(batch))
        pixels = preprocess_image(image, height, width)
        mask = preprocess_mask(mask_image, height, width)
        if len(mask) not in (1, len(pixels)) and len(pixels) != 1:
            raise InputError(
                f"mask_image has {len(mask)} masks for {len(pixels)} pictures; pass one mask, or one per picture",
                argument="mask_image",
            )
        self.schedule_last_steps(self.default_steps(num_inference_steps, None), strength)
        timesteps = [int(timestep) for timestep in self.scheduler.remaining_timesteps]
        noise = as_noise_source(generator)
        run = Run(self.models)
        # The one choice: an inpainting UNet takes the mask and the masked picture; a 4-channel one is blended.
        concatenated = self.facts.inpainting_unet

        embeddings = self.encode_prompt(prompts, per_prompt, run, prompt_syntax, guidance)
        # diffusers encodes the picture for the first latents (strength < 1) or the blend (4 channels).
        encoded = not concatenated or strength < 1.0
        image_latents = repeat_to_batch(self.encode_images(pixels, noise, run), batch, "image") if encoded else None
        initial_noise = draw_normal(noise, self.latent_shape(batch, height, width))
        latents = (
            initial_noise
            if image_latents is None or strength == 1.0
            else self.scheduler.add_noise(image_latents, initial_noise, timesteps[0])
        )
        repaint = repeat_to_batch(latent_mask(mask, self.facts.vae_scale_factor), batch, "mask_image")
        masked = masked_picture(pixels, mask)
        if concatenated:
            masked_latents = repeat_to_batch(self.encode_images(masked, noise, run), batch, "image")
            extra_channels: np.ndarray | None = np.concatenate([repaint, masked_latents], axis=1)
            after_step: AfterStep | None = None
        else:
            draw_normal(noise, self.latent_shape(len(masked), height, width))  # the masked picture's sample
            assert image_latents is not None  # encoded: the blend needs it
            extra_channels = None
            after_step = blend_outside(self.scheduler, repaint, image_latents, initial_noise, timesteps)

        result = self.denoise(
            latents,
            embeddings,
            guidance,
            noise,
            callback,
            run,
            after_step=after_step,
            callback_on_step_end=callback_on_step_end,
            extra_channels=extra_channels,
        )
        decoded = self.decode(result.latents, tiled_vae, run)
        if paste_back:
            decoded = paste_original(decoded, pixels, mask)
        return self.postprocess(decoded, output_type, run)


def blend_outside(
    scheduler: LCMScheduler,
    repaint: np.ndarray,
    image_latents: np.ndarray,
    initial_noise: np.ndarray,
    timesteps: list[int],
) -> AfterStep:
    """A 4-channel UNet's step: outside the mask, the picture's latents noised with the first noise to the
    next timestep (un-noised after the last step); inside, the step's latents."""

    def blend(index: int, stepped: np.ndarray) -> np.ndarray:
        last = index == len(timesteps) - 1
        original = image_latents if last else scheduler.add_noise(image_latents, initial_noise, timesteps[index + 1])
        blended: np.ndarray = (np.float32(1) - repaint) * original + repaint * stepped
        return blended

    return blend


def paste_original(decoded: np.ndarray, pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The input pixels outside the mask, the generated ones inside (all in [-1, 1] NCHW)."""
    batch = decoded.shape[0]
    original = np.concatenate([pixels] * (batch // len(pixels))) if batch > len(pixels) else pixels
    repaint = np.concatenate([mask] * (batch // len(mask))) if batch > len(mask) else mask
    return np.where(repaint > 0, decoded, original).astype(np.float32)
