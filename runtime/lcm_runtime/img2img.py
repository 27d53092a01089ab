"""Image-to-image: a picture, noised part of the way, then denoised towards the prompt.

Mirrors diffusers' LatentConsistencyModelImg2ImgPipeline (0.42.1): all n steps run on a schedule
shortened by ``strength`` (the model's original_inference_steps x strength), the VAE posterior is
sampled, then noised to the first timestep. Random draws in its order: the posterior sample, the
add-noise draw, then one per step except the last. A "cfg" bundle (LCM-LoRA) mirrors
StableDiffusionImg2ImgPipeline with LCMScheduler instead: the same draws, but only the last
``int(n * strength)`` steps of the n-step schedule run, with classifier-free guidance (guidance.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import validation
from .core import LCMPipelineBase, LCMPipelineOutput, Run
from .denoise import StepCallback, StepEndCallback
from .errors import InputError
from .image_input import ImageInput, default_size, preprocess_image
from .noise import GeneratorLike, as_noise_source, draw_normal

DEFAULT_STRENGTH = 0.8  # diffusers' default


def repeat_to_batch(latents: np.ndarray, batch: int, argument: str) -> np.ndarray:
    """Pictures' latents tiled to the batch, as diffusers does (pictures a, b for 4 images: a b a b)."""
    if batch % latents.shape[0]:
        raise InputError(
            f"{argument} has {latents.shape[0]} pictures for {batch} images; pass one picture, or one "
            "per prompt (a number that divides prompts x num_images_per_prompt)",
            argument=argument,
        )
    return np.concatenate([latents] * (batch // latents.shape[0])) if batch > latents.shape[0] else latents


class LCMImg2ImgPipeline(LCMPipelineBase):
    def __call__(
        self,
        prompt: str | Sequence[str],
        image: ImageInput,
        num_inference_steps: int | None = None,
        strength: float = DEFAULT_STRENGTH,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        generator: GeneratorLike = None,
        output_type: str = "pil",
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        tiled_vae: bool | None = None,
        prompt_syntax: str = "diffusers",
        negative_prompt: str | Sequence[str] | None = None,
        guidance_rescale: float = 0.0,
    ) -> LCMPipelineOutput:
        """Turn ``image`` (PIL, uint8 or float [0, 1] NHWC array, a path, or a list of them) into a
        picture of ``prompt``. The size is the first picture's, floored to the model's multiple.
        ``prompt_syntax="a1111"`` reads the prompt as AUTOMATIC1111 does: ``(word:1.3)``, ``(word)``,
        ``[word]`` weights, ``BREAK``, and no 77-token limit (chunks of 75 tokens); the default
        ``"diffusers"`` truncates at 77 tokens and reads brackets as text, as diffusers.
        ``callback(index, steps, timestep)`` runs after each step; ``callback_on_step_end(index, steps,
        denoised)`` also gets the step's denoised latents (for previews), and an exception it raises
        stops the call there.
        ``negative_prompt`` and ``guidance_rescale`` apply to a cfg bundle with ``guidance_scale`` > 1 (as
        the text-to-image pipeline; diffusers' img2img pipeline has no guidance_rescale)."""
        self.check_unet_runs("image-to-image")
        prompts, per_prompt, guidance = self.check_request(
            prompt, num_images_per_prompt, guidance_scale, output_type, prompt_syntax, negative_prompt, guidance_rescale
        )
        batch = len(prompts) * per_prompt
        strength = validation.strength(strength)
        height, width = self.check_size(
            *default_size(image, self.folder.size_multiple), batch, encode=True, unet_batch=guidance.unet_batch(batch)
        )
        pixels = preprocess_image(image, height, width)
        self.schedule_img2img(
            guidance, self.default_steps(num_inference_steps, timesteps), strength, original_inference_steps, timesteps
        )
        noise = as_noise_source(generator)
        run = Run(self.models)

        embeddings = self.encode_prompt(prompts, per_prompt, run, prompt_syntax, guidance)
        image_latents = repeat_to_batch(self.encode_images(pixels, noise, run), batch, "image")
        latents = self.scheduler.add_noise(
            image_latents, draw_normal(noise, image_latents.shape), int(self.scheduler.remaining_timesteps[0])
        )
        result = self.denoise(
            latents, embeddings, guidance, noise, callback, run, callback_on_step_end=callback_on_step_end
        )
        decoded = self.decode(result.denoised, tiled_vae, run)
        return self.postprocess(decoded, output_type, run)
