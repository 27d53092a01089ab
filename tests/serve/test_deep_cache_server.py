"""`lcm-run serve --deep-cache N`: the resident server runs DeepCache, records it in the PNG, and gives
the Python API's image; a bundle without the shallow UNet is refused before the server starts."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, lcm_run
from PIL import Image
from servers import start_server

openai = pytest.importorskip("openai")

from lcm_runtime import LCMPipeline


def test_the_server_runs_deep_cache_as_the_python_api(tiny_deep_cache_bundle, tmp_path):
    server = start_server(tiny_deep_cache_bundle, tmp_path / "server.log", "--deep-cache", "2")
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="local", max_retries=0, timeout=120)
        served = client.images.generate(
            prompt="a red cube", size="64x64", extra_body={"num_inference_steps": 4, "seed": 4}
        ).data[0]
    finally:
        server.stop()
    picture = Image.open(io.BytesIO(base64.b64decode(served.b64_json)))
    assert "DeepCache interval: 2" in picture.text["parameters"]
    arguments = dict(num_inference_steps=4, height=64, width=64, generator=4, prompt_syntax="a1111")
    cached = LCMPipeline.from_pretrained(tiny_deep_cache_bundle, precision="f32", deep_cache_interval=2)
    expected = cached("a red cube", **arguments).images[0]
    np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), np.asarray(expected))
    every = LCMPipeline.from_pretrained(tiny_deep_cache_bundle, precision="f32")("a red cube", **arguments).images[0]
    assert not np.array_equal(np.asarray(every), np.asarray(expected))


def test_a_bundle_without_the_shallow_unet_is_refused_before_serving(tiny_bundle_fp32):
    result = lcm_run("serve", "--model", tiny_bundle_fp32, "--port", "1", "--deep-cache", "2", timeout=120)
    assert_one_line_error(result, "unet_shallow", "lcm-export --deep-cache", "--deep-cache")
