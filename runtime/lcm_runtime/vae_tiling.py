"""Tiled VAE decode: bounded memory for large images.

The decoder's working set grows with the image (several full-resolution activations of 128+
channels), so a large image is decoded as overlapping latent tiles of one fixed size (one compiled
shape) and the tiles are blended with linear ramps across each overlap. Tiles see only their own
latents (GroupNorm statistics are per tile), which the wide overlap and blending keep seam-free.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length``; the last tile ends flush."""
    if length <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


def _axis_weights(starts: list[int], tile: int, scale: int) -> list[np.ndarray]:
    """Per-tile pixel weights along one axis: ramps over the actual overlap with each neighbour."""
    weights = []
    for index, start in enumerate(starts):
        weight = np.ones(tile * scale, dtype=np.float32)
        if index > 0:
            fade = (starts[index - 1] + tile - start) * scale
            weight[:fade] = np.linspace(0.0, 1.0, fade + 2, dtype=np.float32)[1:-1]
        if index + 1 < len(starts):
            fade = (start + tile - starts[index + 1]) * scale
            weight[tile * scale - fade :] = np.minimum(
                weight[tile * scale - fade :], np.linspace(1.0, 0.0, fade + 2, dtype=np.float32)[1:-1]
            )
        weights.append(weight)
    return weights


def decode_tiled(
    decode: Callable[[np.ndarray], np.ndarray], latents: np.ndarray, tile: int, overlap: int, scale: int
) -> np.ndarray:
    """Decode one latent [1, C, h, w] with ``decode`` applied to [1, C, tile, tile] pieces.

    ``scale`` is the VAE's upscaling factor. Returns [1, 3, h * scale, w * scale].
    """
    _, _, height, width = latents.shape
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, columns = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    row_weights, column_weights = _axis_weights(rows, tile_h, scale), _axis_weights(columns, tile_w, scale)
    output = None
    total = np.zeros((height * scale, width * scale), dtype=np.float32)
    for top, row_weight in zip(rows, row_weights, strict=True):
        for left, column_weight in zip(columns, column_weights, strict=True):
            piece = decode(latents[:, :, top : top + tile_h, left : left + tile_w])
            if output is None:
                output = np.zeros((1, piece.shape[1], height * scale, width * scale), dtype=np.float32)
            weight = row_weight[:, None] * column_weight[None, :]
            window = (slice(top * scale, (top + tile_h) * scale), slice(left * scale, (left + tile_w) * scale))
            output[:, :, window[0], window[1]] += piece * weight
            total[window] += weight
    return output / total
