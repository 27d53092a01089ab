"""The bundle is also a valid openvino.genai model folder (how users scale out to serving)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
genai = pytest.importorskip("openvino_genai")

import numpy as np  # noqa: E402


@pytest.mark.parametrize("weights", ["fp16", "int8"])
def test_genai_loads_and_generates(export_tiny, weights):
    pipeline = genai.Text2ImagePipeline(str(export_tiny(weights)), "CPU")
    image = pipeline.generate("a photo of a cat", width=64, height=64, num_inference_steps=4, rng_seed=0).data
    assert image.shape == (1, 64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 5  # not one flat colour
    long_prompt = pipeline.generate(
        "a red fox in the snow, " * 30, width=64, height=64, num_inference_steps=2, rng_seed=0
    ).data
    assert long_prompt.shape == (1, 64, 64, 3)
