"""callback_on_step_end: every step's denoised latents (for previews), and a way to stop a call."""

from __future__ import annotations

import numpy as np
import pytest

from lcm_runtime import LCMPipeline

CALL = dict(num_inference_steps=3, height=64, width=64, generator=0, output_type="np")


class Stop(Exception):
    pass


def test_each_step_hands_its_denoised_latents_and_an_exception_stops_the_call(tiny_bundle_fp32):
    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)
    seen: list[tuple[int, int, np.ndarray]] = []
    plain = pipe("a red cube", **CALL).images
    with_hook = pipe("a red cube", **CALL, callback_on_step_end=lambda i, n, d: seen.append((i, n, d.copy()))).images
    np.testing.assert_array_equal(plain, with_hook)  # watching changes nothing
    assert [(index, total) for index, total, _ in seen] == [(0, 3), (1, 3), (2, 3)]
    assert all(latents.shape == (1, pipe.facts.latent_channels, 8, 8) for *_, latents in seen)
    assert not np.array_equal(seen[0][2], seen[-1][2])

    def stop_at_second(index: int, total: int, denoised: np.ndarray) -> None:
        if index == 1:
            raise Stop()

    with pytest.raises(Stop):
        pipe("a red cube", **CALL, callback_on_step_end=stop_at_second)
    np.testing.assert_array_equal(pipe("a red cube", **CALL).images, plain)  # the pipeline still works
