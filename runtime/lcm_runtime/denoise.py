"""The denoising loop every task shares: one UNet evaluation and one scheduler step per timestep.

Written once, used by the pipelines and by lcm-export's INT8 calibration (which records the UNet's
inputs through ``on_unet_input``). Each step's ``denoised`` is checked for NaN and infinity: a
reduced-precision overflow would otherwise become a black picture without a word.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import NonFiniteError
from .noise import NoiseSource
from .schedulers.scheduling_lcm import LCMScheduler

StepCallback = Callable[[int, int, int], None]  # (step index, number of steps, timestep)
# (step index, number of steps, the step's denoised latents): for previews; raising stops the call there.
StepEndCallback = Callable[[int, int, np.ndarray], None]
AfterStep = Callable[[int, np.ndarray], np.ndarray]  # (step index, latents) -> latents, e.g. the inpainting blend
UNetInputHook = Callable[[np.ndarray, int], None]  # (sample, timestep), before each UNet evaluation
NON_FINITE_ADVICE = 'try precision="f32", another device, or fewer steps'


@dataclass
class Denoised:
    latents: np.ndarray  # the last step's output (after after_step): what inpainting decodes
    denoised: np.ndarray  # the last step's denoised sample: what text- and image-to-image decode
    step_seconds: list[float] = field(default_factory=list)


def check_finite(values: np.ndarray, stage: str) -> None:
    if not np.isfinite(values).all():
        raise NonFiniteError(
            f"the {stage} produced NaN or infinite values, which would make a black image; {NON_FINITE_ADVICE}"
        )


def denoise(
    unet: Callable[[np.ndarray, int], np.ndarray],
    scheduler: LCMScheduler,
    latents: np.ndarray,
    noise: NoiseSource,
    callback: StepCallback | None = None,
    after_step: AfterStep | None = None,
    on_unet_input: UNetInputHook | None = None,
    callback_on_step_end: StepEndCallback | None = None,
) -> Denoised:
    """Run the scheduler's remaining timesteps from ``latents`` (the UNet's conditioning already bound)."""
    timesteps = [int(timestep) for timestep in scheduler.remaining_timesteps]
    denoised = latents
    step_seconds = []
    for index, timestep in enumerate(timesteps):
        started = time.perf_counter()
        if on_unet_input is not None:
            on_unet_input(latents, timestep)
        model_output = unet(latents, timestep)
        latents, denoised = scheduler.step(model_output, timestep, latents, noise)
        if after_step is not None:
            latents = after_step(index, latents)
        if not np.isfinite(denoised).all():
            raise NonFiniteError(
                f"the UNet produced NaN or infinite values at step {index + 1} of {len(timesteps)} "
                f"(timestep {timestep}), which would make a black image; {NON_FINITE_ADVICE}"
            )
        step_seconds.append(time.perf_counter() - started)
        if callback is not None:
            callback(index, len(timesteps), timestep)
        if callback_on_step_end is not None:
            callback_on_step_end(index, len(timesteps), denoised)
    return Denoised(latents=latents, denoised=denoised, step_seconds=step_seconds)
