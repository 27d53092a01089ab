"""The guidance-scale embedding fed to the UNet as ``timestep_cond`` (LCM has no classifier-free
guidance pass: the guidance strength is an input of the distilled UNet)."""

from __future__ import annotations

import numpy as np


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
