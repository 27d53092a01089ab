"""Text-to-image with a Latent Consistency Model: prompt -> embeddings -> latents -> image.

Mirrors diffusers' LatentConsistencyModelPipeline (0.42.1) step for step, so that with the same
random draws, FP32 weights and f32 precision it produces the same image; a "cfg" bundle (LCM-LoRA)
mirrors StableDiffusionPipeline with LCMScheduler, classifier-free guidance included (guidance.py).
The stages are core.py's.
"""

from __future__ import annotations

from collections.abc import Sequence

from .core import LCMPipelineBase, LCMPipelineOutput, Run
from .denoise import StepCallback, StepEndCallback
from .noise import GeneratorLike, as_noise_source, draw_normal
from .release import ONE_CALL, one_call_releases
from .vae_choice import VAE_CHOICES, choose_vae

__all__ = ["LCMPipeline", "LCMPipelineOutput", "ONE_CALL", "VAE_CHOICES", "choose_vae", "one_call_releases"]


class LCMPipeline(LCMPipelineBase):
    def __call__(
        self,
        prompt: str | Sequence[str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
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
        """Generate images, as diffusers' LatentConsistencyModelPipeline.__call__ (a cfg bundle: as
        StableDiffusionPipeline.__call__ with LCMScheduler).

        ``tiled_vae``: decode in overlapping tiles of the model's native size to bound memory;
        None tiles only when an untiled decode would not fit in the free memory.
        ``prompt_syntax="a1111"`` reads the prompt as AUTOMATIC1111 does: ``(word:1.3)``, ``(word)``,
        ``[word]`` weights, ``BREAK``, and no 77-token limit (chunks of 75 tokens); the default
        ``"diffusers"`` truncates at 77 tokens and reads brackets as text, as diffusers.
        ``callback(index, steps, timestep)`` runs after each step; ``callback_on_step_end(index, steps,
        denoised)`` also gets the step's denoised latents (for previews), and an exception it raises
        stops the call there.
        ``negative_prompt`` and ``guidance_rescale`` (diffusers' rescale_noise_cfg) apply to a cfg bundle
        with ``guidance_scale`` > 1; an embedded-guidance bundle (an LCM) refuses them.
        """
        self.check_unet_runs("text-to-image")
        prompts, per_prompt, guidance = self.check_request(
            prompt, num_images_per_prompt, guidance_scale, output_type, prompt_syntax, negative_prompt, guidance_rescale
        )
        batch = len(prompts) * per_prompt
        height, width = self.check_size(height, width, batch, unet_batch=guidance.unet_batch(batch))
        self.scheduler.set_timesteps(
            self.default_steps(num_inference_steps, timesteps), original_inference_steps, timesteps
        )
        noise = as_noise_source(generator)
        run = Run(self.models)

        embeddings = self.encode_prompt(prompts, per_prompt, run, prompt_syntax, guidance)
        latents = draw_normal(noise, self.latent_shape(batch, height, width))
        result = self.denoise(
            latents, embeddings, guidance, noise, callback, run, callback_on_step_end=callback_on_step_end
        )
        decoded = self.decode(result.denoised, tiled_vae, run)
        return self.postprocess(decoded, output_type, run)
