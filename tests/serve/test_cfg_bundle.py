"""A classifier-free guidance bundle (an SD1.5 checkpoint with LCM-LoRA fused) behind the server:
negative prompts and guidance_rescale reach the pipeline; the image is the Python API's."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from servers import start_server

openai = pytest.importorskip("openai")

from lcm_runtime import LCMPipeline


@pytest.fixture(scope="module")
def cfg_server(tiny_cfg_bundle, tmp_path_factory):
    running = start_server(tiny_cfg_bundle, tmp_path_factory.mktemp("serve-cfg") / "server.log")
    yield running
    running.stop()


def test_negative_prompt_and_rescale_give_the_python_apis_image(cfg_server, tiny_cfg_bundle):
    client = openai.OpenAI(base_url=f"{cfg_server.url}/v1", api_key="local", max_retries=0, timeout=120)
    extras = {"num_inference_steps": 2, "seed": 4, "guidance_scale": 2.5, "negative_prompt": "blurry"}
    served = client.images.generate(
        prompt="a red cube", size="64x64", extra_body={**extras, "guidance_rescale": 0.7}
    ).data[0]
    picture = Image.open(io.BytesIO(base64.b64decode(served.b64_json)))
    assert "\nNegative prompt: blurry\n" in picture.text["parameters"]
    pipe = LCMPipeline.from_pretrained(tiny_cfg_bundle, precision="f32")
    expected = pipe(
        "a red cube",
        num_inference_steps=2,
        guidance_scale=2.5,
        negative_prompt="blurry",
        guidance_rescale=0.7,
        height=64,
        width=64,
        generator=4,
        prompt_syntax="a1111",
    ).images[0]
    np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), np.asarray(expected))
    without = client.images.generate(prompt="a red cube", size="64x64", extra_body={**extras, "negative_prompt": ""})
    assert not np.array_equal(
        np.asarray(Image.open(io.BytesIO(base64.b64decode(without.data[0].b64_json))).convert("RGB")),
        np.asarray(expected),
    )
