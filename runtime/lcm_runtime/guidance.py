"""Guidance, the one place that decides how a call guides the UNet, by the bundle's guidance mode.

* ``embedded`` (an LCM-distilled UNet, diffusers' LatentConsistencyModelPipeline): the guidance scale is
  an input of the UNet, ``timestep_cond``, its sinusoidal embedding; one UNet pass per step and no
  unconditional branch, so a negative prompt has nothing to act on.
* ``cfg`` (an SD1.5 UNet with LCM-LoRA fused, diffusers' StableDiffusion*Pipeline with LCMScheduler):
  classifier-free guidance. A guidance scale above 1 runs the UNet on the doubled batch
  [unconditional, conditional] (the negative prompts' embeddings first, "" when none is given), then
  ``uncond + scale * (cond - uncond)``, optionally rescaled (``rescale_noise_cfg``). At 1 or below, one
  pass on the prompt alone, and the negative prompt is ignored, as diffusers does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import validation
from .bundle import CFG, EMBEDDED, ModelFacts
from .errors import InputError

UNetCall = Callable[[np.ndarray, int], np.ndarray]  # (sample, timestep) -> the UNet's prediction


def guidance_scale_embedding(w: np.ndarray, embedding_dim: int) -> np.ndarray:
    """Sinusoidal embedding of w * 1000, sin half first, as diffusers' LCM pipeline (float32 throughout).

    ``w`` is the value the model was distilled with: guidance_scale - 1 in diffusers' convention.
    NumPy's sin/cos of arguments up to ~1e4 rad differ from torch's by up to ~5e-4.
    """
    w = np.asarray(w, dtype=np.float32).reshape(-1) * np.float32(1000.0)
    half = embedding_dim // 2
    step = np.log(np.float32(10000.0)) / np.float32(half - 1)
    frequencies = np.exp(np.arange(half, dtype=np.float32) * -step)
    angles = w[:, None] * frequencies[None, :]
    embedding = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    if embedding_dim % 2 == 1:
        embedding = np.pad(embedding, ((0, 0), (0, 1)))
    return embedding.astype(np.float32, copy=False)


def rescale_noise_cfg(guided: np.ndarray, conditional: np.ndarray, guidance_rescale: float) -> np.ndarray:
    """diffusers' rescale_noise_cfg ("Common Diffusion Noise Schedules and Sample Steps are Flawed", 3.4):
    the guided prediction scaled to the conditional one's standard deviation (per image, over every other
    axis, unbiased as torch.std), mixed with the unscaled one by ``guidance_rescale``."""
    axes = tuple(range(1, guided.ndim))
    # torch accumulates a float32 std in double on the CPU; so does this, then rounds to float32.
    std_conditional = np.std(conditional, axis=axes, ddof=1, keepdims=True, dtype=np.float64).astype(np.float32)
    std_guided = np.std(guided, axis=axes, ddof=1, keepdims=True, dtype=np.float64).astype(np.float32)
    rescaled = guided * (std_conditional / std_guided)
    mixed: np.ndarray = np.float32(guidance_rescale) * rescaled + np.float32(1 - guidance_rescale) * guided
    return mixed.astype(np.float32, copy=False)


def classifier_free_guidance(
    unconditional: np.ndarray, conditional: np.ndarray, guidance_scale: float, guidance_rescale: float = 0.0
) -> np.ndarray:
    """``uncond + scale * (cond - uncond)`` in float32, then rescaled when ``guidance_rescale`` > 0."""
    guided: np.ndarray = unconditional + np.float32(guidance_scale) * (conditional - unconditional)
    if guidance_rescale > 0:
        guided = rescale_noise_cfg(guided, conditional, guidance_rescale)
    return guided.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Guidance:
    """How one call guides the UNet (``Guidance.plan`` builds it from the bundle's facts and the call)."""

    mode: str  # the bundle's: EMBEDDED or CFG
    scale: float
    rescale: float = 0.0
    # One per prompt when the UNet runs the doubled batch [uncond, cond] (cfg with scale > 1); else None.
    negative_prompts: tuple[str, ...] | None = None
    embedding_dim: int | None = None  # embedded: the UNet's time_cond_proj_dim
    embedding_offset: float = -1.0  # embedded: the model embeds w = scale + offset

    @classmethod
    def plan(
        cls,
        facts: ModelFacts,
        guidance_scale: float | None,
        guidance_rescale: float = 0.0,
        negative_prompt: str | Sequence[str] | None = None,
        prompt_count: int = 1,
    ) -> Guidance:
        """Check the call's guidance arguments against the bundle's mode (InputError naming the argument)."""
        scale = validation.guidance(facts.default_guidance_scale if guidance_scale is None else guidance_scale)
        rescale = validation.guidance_rescale(guidance_rescale)
        negatives = validation.negative_prompt_list(negative_prompt, prompt_count)
        if facts.guidance_mode == EMBEDDED:
            if negatives is not None and any(negatives):
                raise InputError(
                    "negative_prompt does not apply to this bundle: its model is distilled with the guidance "
                    "embedded and has no unconditional branch to steer away from; drop the negative prompt, "
                    "or use a bundle exported with --lcm-lora (classifier-free guidance)",
                    argument="negative_prompt",
                )
            if rescale > 0:
                raise InputError(
                    f"guidance_rescale={rescale:g} rescales classifier-free guidance, which this bundle's model "
                    "does not run (its guidance is embedded); drop guidance_rescale",
                    argument="guidance_rescale",
                )
            return cls(EMBEDDED, scale, embedding_dim=facts.time_cond_proj_dim, embedding_offset=facts.guidance_offset)
        doubled = scale > 1  # diffusers' do_classifier_free_guidance
        return cls(
            CFG,
            scale,
            rescale=rescale,
            negative_prompts=tuple(negatives or [""] * prompt_count) if doubled else None,
        )

    @property
    def classifier_free(self) -> bool:
        """Whether the UNet runs on [uncond, cond]: cfg mode with a scale above 1."""
        return self.negative_prompts is not None

    def unet_batch(self, batch: int) -> int:
        """The UNet's batch for ``batch`` images."""
        return 2 * batch if self.classifier_free else batch

    def timestep_cond(self, batch: int) -> np.ndarray | None:
        """The UNet's ``timestep_cond`` input for ``batch`` images (embedded mode; None in cfg mode)."""
        if self.mode != EMBEDDED or self.embedding_dim is None:
            return None
        w = np.full(batch, self.scale + self.embedding_offset, dtype=np.float32)
        return guidance_scale_embedding(w, self.embedding_dim)

    def guided(self, unet: UNetCall) -> UNetCall:
        """The noise prediction the scheduler steps with: the UNet's own, or classifier-free guided."""
        if not self.classifier_free:
            return unet
        scale, rescale = self.scale, self.rescale

        def guided_unet(sample: np.ndarray, timestep: int) -> np.ndarray:
            unconditional, conditional = np.split(unet(np.concatenate([sample, sample]), timestep), 2)
            return classifier_free_guidance(unconditional, conditional, scale, rescale)

        return guided_unet
