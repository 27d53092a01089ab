"""Tiled VAE decode: tiles cover the image, blending weights sum to one, a pointwise decoder is exact."""

import numpy as np
import pytest

from lcm_runtime.vae_tiling import decode_tiled, tile_starts


@pytest.mark.parametrize("length,tile,overlap", [(8, 8, 2), (20, 8, 2), (65, 16, 4), (17, 16, 4), (100, 64, 16)])
def test_tiles_cover_everything_and_end_flush(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + min(tile, length)] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))  # neighbours overlap


def upsample_decoder(scale):
    """A decoder whose output pixel depends only on its own latent: tiling must not change it."""

    def decode(latents):
        rgb = np.tanh(latents[:, :3] * 0.7 + latents[:, 3:4])
        return np.repeat(np.repeat(rgb, scale, axis=2), scale, axis=3)

    return decode


@pytest.mark.parametrize("height,width", [(24, 40), (9, 33), (16, 16)])
def test_pointwise_decoder_is_reproduced_exactly(height, width):
    latents = np.random.default_rng(0).standard_normal((1, 4, height, width)).astype(np.float32)
    decode = upsample_decoder(8)
    whole = decode(latents)
    tiled = decode_tiled(decode, latents, tile=8, overlap=2, scale=8)
    assert tiled.shape == whole.shape == (1, 3, height * 8, width * 8)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_each_tile_is_decoded_at_one_fixed_shape():
    shapes = set()

    def decode(latents):
        shapes.add(latents.shape)
        return upsample_decoder(2)(latents)

    decode_tiled(decode, np.zeros((1, 4, 30, 50), np.float32), tile=16, overlap=4, scale=2)
    assert shapes == {(1, 4, 16, 16)}
