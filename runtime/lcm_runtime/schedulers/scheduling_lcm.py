"""LCM scheduler in NumPy. Follows diffusers 0.42.1 ``schedulers/scheduling_lcm.py`` (LCMScheduler).

Bit-exact with diffusers when given the float32 tables that lcm-export computes with torch
(``scheduler/*.npy`` in a bundle); without them (a folder from optimum-cli) the tables are computed
here in NumPy, which drifts by ~2e-5 over 8 steps (see lcm-numerics.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..noise import NoiseSource, draw_normal

SIGMA_DATA = 0.5  # hard-coded in diffusers' LCMScheduler


@dataclass(frozen=True)
class LCMSchedulerConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    original_inference_steps: int = 50
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    prediction_type: str = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    timestep_scaling: float = 10.0

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "LCMSchedulerConfig":
        known = cls.__dataclass_fields__
        return cls(**{key: value for key, value in config.items() if key in known})


def compute_tables(config: LCMSchedulerConfig) -> dict[str, np.ndarray]:
    """The scheduler tables computed in NumPy, for folders that do not ship torch's own."""
    steps = config.num_train_timesteps
    if config.beta_schedule == "scaled_linear":
        betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, steps, dtype=np.float32) ** 2
    elif config.beta_schedule == "linear":
        betas = np.linspace(config.beta_start, config.beta_end, steps, dtype=np.float32)
    else:
        raise InputError(f"beta_schedule {config.beta_schedule!r} is not supported; re-export with lcm-export")
    alphas_cumprod = np.cumprod(1.0 - betas.astype(np.float64)).astype(np.float32)
    scaled = np.arange(steps, dtype=np.float32) * np.float32(config.timestep_scaling)
    sigma2 = np.float32(SIGMA_DATA**2)
    return {
        "alphas_cumprod": alphas_cumprod,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(np.float32(1) - alphas_cumprod),
        "c_skip": sigma2 / (scaled**2 + sigma2),
        "c_out": scaled / np.sqrt(scaled**2 + sigma2),
    }


class LCMScheduler:
    """Multistep consistency sampling, one ``step()`` per UNet evaluation, as diffusers does it."""

    order = 1

    def __init__(self, config: LCMSchedulerConfig, tables: Mapping[str, np.ndarray] | None = None) -> None:
        self.config = config
        tables = dict(tables) if tables is not None else compute_tables(config)
        self.alphas_cumprod = tables["alphas_cumprod"]
        self.sqrt_alphas_cumprod = tables["sqrt_alphas_cumprod"]
        self.sqrt_one_minus_alphas_cumprod = tables["sqrt_one_minus_alphas_cumprod"]
        self.c_skip = tables["c_skip"]
        self.c_out = tables["c_out"]
        self.timesteps = np.zeros(0, dtype=np.int64)
        self.num_inference_steps = 0
        self._step_index = 0

    def max_inference_steps(self, original_inference_steps: int | None = None, strength: float = 1.0) -> int:
        original = original_inference_steps or self.config.original_inference_steps
        return min(int(original * strength), original, self.config.num_train_timesteps)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        strength: float = 1.0,
    ) -> None:
        if (num_inference_steps is None) == (timesteps is None):
            raise InputError("give either a number of steps or a list of timesteps, not both")
        train_steps = self.config.num_train_timesteps
        original = original_inference_steps if original_inference_steps is not None else self.config.original_inference_steps
        if not 1 <= original <= train_steps:
            raise InputError(f"original_inference_steps must be between 1 and {train_steps}, got {original}")
        if not 0.0 < strength <= 1.0:
            raise InputError(f"strength must be in (0, 1], got {strength}")
        k = train_steps // original
        origin = np.asarray(list(range(1, int(original * strength) + 1))) * k - 1

        if timesteps is not None:
            custom = np.array(list(timesteps), dtype=np.int64)
            if custom.ndim != 1 or custom.size == 0:
                raise InputError("timesteps must be a non-empty list of integers")
            if np.any(np.diff(custom) >= 0):
                raise InputError("timesteps must be in strictly descending order")
            if custom[0] >= train_steps or custom[-1] < 0:
                raise InputError(f"timesteps must lie in [0, {train_steps - 1}]")
            self.num_inference_steps = len(custom)
            init_timestep = min(int(self.num_inference_steps * strength), self.num_inference_steps)
            chosen = custom[max(self.num_inference_steps - init_timestep, 0):]
        else:
            most = self.max_inference_steps(original, strength)
            if not 1 <= num_inference_steps <= most:
                raise InputError(
                    f"steps must be between 1 and {most} for this model "
                    f"(original_inference_steps {original}, strength {strength}), got {num_inference_steps}"
                )
            origin = origin[::-1].copy()
            indices = np.floor(np.linspace(0, len(origin), num=num_inference_steps, endpoint=False)).astype(np.int64)
            chosen = origin[indices]
            self.num_inference_steps = num_inference_steps
        self.timesteps = chosen.astype(np.int64)
        self._step_index = 0

    def step(
        self,
        model_output: np.ndarray,
        timestep: int,
        sample: np.ndarray,
        generator: NoiseSource | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One consistency step. Returns (prev_sample, denoised); noise is drawn except on the last step."""
        index = self._step_index
        prev_timestep = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else timestep

        sqrt_alpha_t = self.sqrt_alphas_cumprod[timestep]
        sqrt_beta_t = self.sqrt_one_minus_alphas_cumprod[timestep]
        c_skip, c_out = self.c_skip[timestep], self.c_out[timestep]

        prediction = self.config.prediction_type
        if prediction == "epsilon":
            original = (sample - sqrt_beta_t * model_output) / sqrt_alpha_t
        elif prediction == "sample":
            original = model_output
        elif prediction == "v_prediction":
            original = sqrt_alpha_t * sample - sqrt_beta_t * model_output
        else:
            raise InputError(f"prediction_type {prediction!r} is not supported (epsilon, sample, v_prediction)")

        if self.config.thresholding:
            original = self._threshold(original)
        elif self.config.clip_sample:
            limit = np.float32(self.config.clip_sample_range)
            original = np.clip(original, -limit, limit)

        denoised = c_out * original + c_skip * sample

        if index != self.num_inference_steps - 1:
            noise = draw_normal(generator, model_output.shape)
            prev_sample = (
                self.sqrt_alphas_cumprod[prev_timestep] * denoised
                + self.sqrt_one_minus_alphas_cumprod[prev_timestep] * noise
            )
        else:
            prev_sample = denoised
        self._step_index += 1
        return prev_sample.astype(np.float32, copy=False), denoised.astype(np.float32, copy=False)

    def _threshold(self, sample: np.ndarray) -> np.ndarray:
        batch = sample.shape[0]
        flat = sample.reshape(batch, -1)
        limit = np.quantile(np.abs(flat), self.config.dynamic_thresholding_ratio, axis=1)
        limit = np.clip(limit, 1.0, self.config.sample_max_value).astype(np.float32)[:, None]
        return (np.clip(flat, -limit, limit) / limit).reshape(sample.shape)
