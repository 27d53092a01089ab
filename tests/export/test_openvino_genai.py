"""The bundle is also a valid openvino.genai model folder (how users scale out to serving)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
genai = pytest.importorskip("openvino_genai")

import numpy as np  # noqa: E402
from image_bounds import assert_near  # noqa: E402

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # as lcm-run --precision f32: only the stored weights differ
CALL = dict(width=64, height=64, num_inference_steps=4, rng_seed=0)


def generate(pipeline, prompt: str, **call: object) -> np.ndarray:
    # .data views openvino.genai's output tensor, which the next generate() overwrites: keep a copy.
    return np.array(pipeline.generate(prompt, **{**CALL, **call}).data)


@pytest.fixture(scope="module")
def genai_fp32_image(tiny_bundle_fp32):
    image = generate(genai.Text2ImagePipeline(str(tiny_bundle_fp32), "CPU", **F32), "a photo of a cat")
    assert image.std() > 5  # not one flat colour: the comparisons below are not of two blank images
    return image


@pytest.mark.parametrize("weights", ["fp16", "int8"])
def test_genai_loads_and_generates(export_tiny, genai_fp32_image, weights):
    """openvino.genai's image from the bundle is its image from the fp32 bundle, within the bound
    measured for the weights (image_bounds.py)."""
    pipeline = genai.Text2ImagePipeline(str(export_tiny(weights)), "CPU", **F32)
    image = generate(pipeline, "a photo of a cat")
    assert image.shape == (1, 64, 64, 3) and image.dtype == np.uint8
    assert_near(image, genai_fp32_image, weights)


def test_genai_reads_a_long_prompt_as_its_first_77_tokens(export_tiny):
    """openvino.genai truncates a prompt to the text encoder's 77 tokens: the image of a 262-token prompt
    is, bit for bit, the image of its first 77 tokens. (Its truncation keeps <|startoftext|> and 76
    tokens of text, no <|endoftext|>; diffusers keeps 75 and the end token. The prefix here is longer
    than 77 tokens once tokenized, so either way it is cut where the long prompt is.)"""
    from tokenizers import Tokenizer

    bundle = export_tiny("fp16")
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer" / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    long_prompt = "a red fox in the snow, " * 30 + "a lighthouse at dusk, " * 10
    encoding = tokenizer.encode(long_prompt)
    assert len(encoding.ids) == 262
    prefix = long_prompt[: encoding.offsets[76][1]]  # the text of the first 77 tokens, <|startoftext|> first
    assert tokenizer.encode(prefix).ids == encoding.ids[:77] + [tokenizer.token_to_id("<|endoftext|>")]

    pipeline = genai.Text2ImagePipeline(str(bundle), "CPU", **F32)
    image = generate(pipeline, long_prompt, num_inference_steps=2)
    assert image.shape == (1, 64, 64, 3)
    np.testing.assert_array_equal(image, generate(pipeline, prefix, num_inference_steps=2))
    # Not equal because the text is ignored: one word changed at the start makes another image.
    assert not np.array_equal(image, generate(pipeline, "the" + prefix[1:], num_inference_steps=2))
