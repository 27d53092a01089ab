"""Random draws. Anything with ``standard_normal(size, dtype)`` is a noise source, so a caller can
hand the runtime torch's draws (parity tests) or a NumPy Generator; an int seed makes one."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .errors import InputError


class NoiseSource(Protocol):
    def standard_normal(self, size: tuple[int, ...], dtype: type) -> np.ndarray: ...


MAX_SEED = 2**64
# The seeds lcm-run picks itself (a server request's random seed, a batch row's derived one) are
# A1111's 32-bit ones, so that they can be typed back into either.
SEED_LIMIT = 2**32
GeneratorLike = int | np.random.Generator | NoiseSource | None


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index`` (from 0) of a request or batch row seeded ``seed``: seed + index, as
    A1111 seeds a batch (wrapping at MAX_SEED). The server and ``lcm-run batch`` both follow it."""
    return (seed + index) % MAX_SEED


def as_noise_source(generator: GeneratorLike) -> NoiseSource:
    if generator is None:
        return np.random.default_rng()
    if isinstance(generator, (bool, float)):
        raise InputError(
            f"generator must be an integer seed or a random generator, got {generator!r}", argument="generator"
        )
    if isinstance(generator, (int, np.integer)):
        if not 0 <= generator < MAX_SEED:
            raise InputError(f"seed must be an integer from 0 to 2**64 - 1, got {generator}", argument="generator")
        return np.random.default_rng(int(generator))
    if callable(getattr(generator, "standard_normal", None)):
        return generator
    raise InputError(
        f"generator must be an integer seed or have standard_normal(size, dtype), got {type(generator).__name__}",
        argument="generator",
    )


def draw_normal(source: NoiseSource | None, shape: tuple[int, ...]) -> np.ndarray:
    source = source if source is not None else np.random.default_rng()
    values = np.asarray(source.standard_normal(tuple(shape), dtype=np.float32), dtype=np.float32)
    if values.shape != tuple(shape):
        raise InputError(f"the generator returned shape {values.shape}, expected {tuple(shape)}", argument="generator")
    return values
