"""LCM scheduler in NumPy. Follows diffusers 0.42.1 ``schedulers/scheduling_lcm.py`` (LCMScheduler).

Bit-exact with diffusers when given the float32 tables that lcm-export computes with torch
(``scheduler/*.npy`` in a bundle); without them (a folder from optimum-cli) the tables are computed
here in NumPy, which drifts by ~2e-5 over 8 steps (see docs/numerics.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle import SCHEDULER_CONFIG, describe_value, is_finite_number
from ..errors import BundleError, InputError
from ..noise import NoiseSource, draw_normal

SIGMA_DATA = 0.5  # hard-coded in diffusers' LCMScheduler
LARGEST_SCALED_TIMESTEP = float(np.sqrt(np.finfo(np.float32).max)) / 2  # its square plus sigma^2 stays finite
# The tables hold one value per train timestep (diffusers' models: 1000): beyond this is garbage.
MAX_TRAIN_TIMESTEPS = 1_000_000
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")  # diffusers'; compute_tables does the first two
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Each field's rule and what it must be: where the scheduler's formulas are defined, not just "a number".
_FIELD_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "num_train_timesteps": (
        lambda v: _is_int(v) and 1 <= v <= MAX_TRAIN_TIMESTEPS,
        f"an integer from 1 to {MAX_TRAIN_TIMESTEPS}",
    ),
    "original_inference_steps": (
        lambda v: _is_int(v) and 1 <= v <= MAX_TRAIN_TIMESTEPS,
        f"an integer from 1 to {MAX_TRAIN_TIMESTEPS}",
    ),
    "beta_start": (lambda v: is_finite_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta_end": (lambda v: is_finite_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "beta_schedule": (lambda v: isinstance(v, str) and v in BETA_SCHEDULES, f"one of {', '.join(BETA_SCHEDULES)}"),
    "clip_sample": (lambda v: isinstance(v, bool), "true or false"),
    "clip_sample_range": (lambda v: is_finite_number(v) and v > 0, "a positive number"),
    "set_alpha_to_one": (lambda v: isinstance(v, bool), "true or false"),
    "prediction_type": (
        lambda v: isinstance(v, str) and v in PREDICTION_TYPES,
        f"one of {', '.join(PREDICTION_TYPES)}",
    ),
    "thresholding": (lambda v: isinstance(v, bool), "true or false"),
    "dynamic_thresholding_ratio": (lambda v: is_finite_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "sample_max_value": (lambda v: is_finite_number(v) and v > 0, "a positive number"),
    "timestep_scaling": (lambda v: is_finite_number(v) and v > 0, "a positive number"),
}


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
    def from_dict(
        cls, config: Mapping[str, Any], where: str = SCHEDULER_CONFIG, fix: str = "re-export the bundle"
    ) -> LCMSchedulerConfig:
        """The known fields of a diffusers scheduler config, each checked (BundleError naming the field).
        ``where`` names the config and ``fix`` says what to do, in the error: lcm-export checks a source's."""
        if not isinstance(config, Mapping):
            raise BundleError(f"{where} is {describe_value(config)}, not an object; {fix}")
        known = cls.__dataclass_fields__
        values = {key: value for key, value in config.items() if isinstance(key, str) and key in known}
        for key, value in values.items():
            accepts, wanted = _FIELD_RULES[key]
            if not accepts(value):
                raise BundleError(f"{where} has {key} = {describe_value(value)}, not {wanted}; {fix}")
        parsed = cls(**values)
        # The boundary condition squares timestep * timestep_scaling in float32, as diffusers does: past
        # this it overflows, and c_out becomes inf / inf, a NaN image (in diffusers too).
        if max(parsed.num_train_timesteps - 1, 1) * parsed.timestep_scaling > LARGEST_SCALED_TIMESTEP:
            raise BundleError(
                f"{where} has timestep_scaling = {describe_value(parsed.timestep_scaling)}, too large: "
                f"the boundary condition overflows float32 (LCM schedulers use 10.0); {fix}"
            )
        if parsed.original_inference_steps > parsed.num_train_timesteps:
            raise BundleError(
                f"{where} has original_inference_steps = {parsed.original_inference_steps}, "
                f"more than num_train_timesteps = {parsed.num_train_timesteps}; {fix}"
            )
        return parsed


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
        original = (
            original_inference_steps if original_inference_steps is not None else self.config.original_inference_steps
        )
        if not 1 <= original <= train_steps:
            raise InputError(
                f"original_inference_steps must be between 1 and {train_steps}, got {original}",
                argument="original_inference_steps",
            )
        if not 0.0 < strength <= 1.0:
            raise InputError(f"strength must be in (0, 1], got {strength}", argument="strength")
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
            chosen = custom[max(self.num_inference_steps - init_timestep, 0) :]
        else:
            most = self.max_inference_steps(original, strength)
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
                raise InputError(
                    f"num_inference_steps must be a whole number, got {num_inference_steps!r}",
                    argument="num_inference_steps",
                )
            if strength < 1 and 1 <= num_inference_steps <= self.max_inference_steps(original):
                if num_inference_steps > most:
                    raise InputError(
                        f"strength={strength:g} keeps int({original} x {strength:g}) = {most} of the model's "
                        f"{original} original steps, fewer than num_inference_steps={num_inference_steps}; "
                        f"use strength >= {num_inference_steps / original:g} or fewer steps",
                        argument="strength",
                    )
            elif not 1 <= num_inference_steps <= most:
                raise InputError(
                    f"num_inference_steps (steps) must be between 1 and {most} for this model "
                    f"(original_inference_steps {original}), got {num_inference_steps}",
                    argument="num_inference_steps",
                )
            origin = origin[::-1].copy()
            indices = np.floor(np.linspace(0, len(origin), num=num_inference_steps, endpoint=False)).astype(np.int64)
            chosen = origin[indices]
            self.num_inference_steps = num_inference_steps
        self.timesteps = chosen.astype(np.int64)
        self._step_index = 0

    def set_begin_index(self, begin_index: int) -> None:
        """Start at ``timesteps[begin_index]``, as diffusers' img2img and inpaint pipelines do when
        they keep only the last ``int(n * strength)`` steps of the full schedule: step() then still
        counts the skipped steps (the last step, the one that draws no noise, stays the last)."""
        if not 0 <= begin_index < len(self.timesteps):
            raise InputError(f"the schedule has {len(self.timesteps)} steps; cannot begin at step {begin_index}")
        self._step_index = begin_index

    @property
    def remaining_timesteps(self) -> np.ndarray:
        """The timesteps still to run, from the begin index on."""
        return self.timesteps[self._step_index :]

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: int) -> np.ndarray:
        """``original`` noised to ``timestep``: sqrt(a_t) x + sqrt(1 - a_t) noise, from torch's tables."""
        noisy: np.ndarray = (
            self.sqrt_alphas_cumprod[timestep] * original + self.sqrt_one_minus_alphas_cumprod[timestep] * noise
        )
        return noisy.astype(np.float32, copy=False)

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
        clipped: np.ndarray = np.clip(flat, -limit, limit) / limit
        return clipped.reshape(sample.shape)
