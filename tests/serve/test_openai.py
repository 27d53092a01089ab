"""The OpenAI images API, driven by the official `openai` client as users' tools drive it."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

openai = pytest.importorskip("openai")

SIZE = "64x64"
LCM = {"num_inference_steps": 2, "seed": 7}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="local", max_retries=0, timeout=120)


def decode(b64: str) -> Image.Image:
    picture = Image.open(io.BytesIO(base64.b64decode(b64)))
    picture.load()
    return picture


def png_file(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def test_generate_b64_with_metadata_and_per_image_seeds(client):
    result = client.images.generate(prompt="a red cube", n=2, size=SIZE, response_format="b64_json", extra_body=LCM)
    assert isinstance(result.created, int) and result.created > 0
    assert len(result.data) == 2
    first, second = (decode(item.b64_json) for item in result.data)
    assert first.size == second.size == (64, 64)
    # lcm-run's PNG metadata, with the seeds A1111 assigns: seed, seed + 1.
    assert "Seed: 7," in first.text["parameters"] and "Seed: 8," in second.text["parameters"]
    assert "Steps: 2," in first.text["parameters"]
    assert not np.array_equal(np.asarray(first), np.asarray(second))


def test_same_seed_same_image_and_image_k_equals_its_own_seed(client):
    pair = client.images.generate(prompt="a red cube", n=2, size=SIZE, extra_body=LCM)
    alone = client.images.generate(prompt="a red cube", n=1, size=SIZE, extra_body={**LCM, "seed": 8})
    np.testing.assert_array_equal(np.asarray(decode(pair.data[1].b64_json)), np.asarray(decode(alone.data[0].b64_json)))


def test_defaults_are_the_bundles_steps_not_50(client):
    result = client.images.generate(prompt="a red cube", size=SIZE)
    assert "Steps: 4," in decode(result.data[0].b64_json).text["parameters"]


def test_url_response_serves_the_image_from_the_server(client, server):
    result = client.images.generate(prompt="a red cube", size=SIZE, response_format="url", extra_body=LCM)
    item = result.data[0]
    assert item.url.startswith(server.url) and item.b64_json  # b64_json is always there too
    fetched = httpx.get(item.url, timeout=30)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.content == base64.b64decode(item.b64_json)


@pytest.mark.parametrize("output_format, pil_format", [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_formats(client, output_format, pil_format):
    result = client.images.generate(
        prompt="a red cube", size=SIZE, output_format=output_format, output_compression=20, extra_body=LCM
    )
    picture = decode(result.data[0].b64_json)
    assert picture.format == pil_format and picture.size == (64, 64)
    assert b"Seed: 7" in picture.getexif().get_ifd(0x8769)[0x9286].decode("utf-16-be", "ignore").encode()


def test_fields_that_do_not_apply_are_accepted_and_ignored(client):
    result = client.images.generate(
        prompt="a red cube",
        size=SIZE,
        quality="hd",
        style="vivid",
        user="someone",
        background="opaque",
        moderation="low",
        model="dall-e-3",
        extra_body={**LCM, "something_new": {"nested": True}},
    )
    assert len(result.data) == 1


def test_edit_without_mask_is_image_to_image(client):
    start = Image.new("RGB", (64, 64), (200, 30, 30))
    result = client.images.edit(
        image=("start.png", png_file(start), "image/png"),
        prompt="a blue cube",
        size=SIZE,
        extra_body={"num_inference_steps": 2, "seed": 1, "strength": 0.5},
    )
    picture = decode(result.data[0].b64_json)
    assert picture.size == (64, 64)
    assert "Denoising strength: 0.5" in picture.text["parameters"] and "Mask hash" not in picture.text["parameters"]


def test_edit_with_an_alpha_mask_is_inpainting(client):
    start = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3)))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))  # the left half is transparent: edit it
    result = client.images.edit(
        image=("start.png", png_file(start), "image/png"),
        mask=("mask.png", png_file(mask), "image/png"),
        prompt="a blue cube",
        size=SIZE,
        extra_body={"num_inference_steps": 2, "seed": 1},
    )
    picture = decode(result.data[0].b64_json)
    assert "Mask hash" in picture.text["parameters"]


def test_alpha_and_white_masks_mean_the_same_edit(client):
    start = Image.new("RGB", (64, 64), (30, 160, 30))
    alpha = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    alpha.paste((0, 0, 0, 0), (16, 16, 48, 48))
    white = Image.new("L", (64, 64), 0)
    white.paste(255, (16, 16, 48, 48))
    common = dict(prompt="a cube", size=SIZE, extra_body={"num_inference_steps": 2, "seed": 3})
    opaque = white.convert("RGBA")  # what a browser canvas saves: RGBA, every pixel opaque: white = edit
    by_alpha = client.images.edit(image=png_file(start), mask=png_file(alpha), **common)
    by_white = client.images.edit(image=png_file(start), mask=png_file(white), **common)
    by_opaque = client.images.edit(image=png_file(start), mask=png_file(opaque), **common)
    unmasked = client.images.edit(image=png_file(start), mask=png_file(Image.new("L", (64, 64), 0)), **common)
    pixels = [np.asarray(decode(answer.data[0].b64_json)) for answer in (by_alpha, by_white, by_opaque, unmasked)]
    np.testing.assert_array_equal(pixels[0], pixels[1])
    np.testing.assert_array_equal(pixels[0], pixels[2])
    assert not np.array_equal(pixels[0], pixels[3])


def test_streaming_sends_a_partial_image_per_step_then_completed(client):
    events = list(
        client.images.generate(
            prompt="a red cube",
            size=SIZE,
            stream=True,
            partial_images=2,
            extra_body={"num_inference_steps": 3, "seed": 5},
        )
    )
    kinds = [event.type for event in events]
    assert kinds == ["image_generation.partial_image"] * 3 + ["image_generation.completed"]
    assert [event.partial_image_index for event in events[:3]] == [0, 1, 2]
    assert decode(events[0].b64_json).size[0] > 0
    final = decode(events[-1].b64_json)
    assert final.size == (64, 64) and "Seed: 5," in final.text["parameters"]


def test_streaming_edit_uses_the_edit_event_names(client):
    start = Image.new("RGB", (64, 64), (30, 30, 160))
    events = list(
        client.images.edit(
            image=png_file(start),
            prompt="a cube",
            size=SIZE,
            stream=True,
            partial_images=1,
            extra_body={"num_inference_steps": 2, "seed": 5, "strength": 1.0},
        )
    )
    assert events[-1].type == "image_edit.completed"
    assert {event.type for event in events[:-1]} == {"image_edit.partial_image"}


def test_bad_requests_raise_bad_request_error_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a red cube", size="7x64", extra_body=LCM)
    error = raised.value
    assert error.status_code == 400 and error.body["param"] == "size"
    assert error.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(prompt="a red cube", size=SIZE, extra_body={**LCM, "negative_prompt": "blurry"})
    assert raised.value.body["param"] == "negative_prompt" and "distilled" in raised.value.body["message"]


def test_models_lists_the_bundle(client, tiny_bundle_fp32):
    models = client.models.list()
    assert [model.id for model in models.data] == [tiny_bundle_fp32.name]
    assert client.models.retrieve(tiny_bundle_fp32.name).id == tiny_bundle_fp32.name
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("dall-e-3")
    assert missing.value.body["param"] == "model" and tiny_bundle_fp32.name in missing.value.body["message"]


@pytest.mark.parametrize(
    "body, param",
    [({"size": "65x64"}, "size"), ({"size": "64x64", "num_inference_steps": 0}, "num_inference_steps")],
)
def test_a_streamed_request_the_pipeline_refuses_is_a_400_not_a_200_error_event(server, body, param):
    """The stream starts with the job's first event: a refusal before the first step is the same 4xx as
    without streaming (it was a 200 with an error event, counted as a success)."""
    with server.client() as http:
        streamed = http.post(
            "/v1/images/generations", json={"prompt": "a cube", "stream": True, "partial_images": 1, **body}
        )
        plain = http.post("/v1/images/generations", json={"prompt": "a cube", **body})
    assert streamed.status_code == plain.status_code == 400, streamed.text
    assert streamed.json()["error"]["param"] == plain.json()["error"]["param"] == param


def test_edits_are_bounded_by_max_side_before_resizing_and_by_their_own_size(server):
    """An edit makes a picture of the requested size, or of the image's: both bounded by --max-side (2048),
    checked before the server resizes anything (a 4096x2048 edit ran for minutes)."""
    with server.client() as http:
        start = png_file(Image.new("RGB", (64, 64), (90, 90, 90)))
        too_big = http.post("/v1/images/edits", data={"prompt": "x", "size": "4096x2048"}, files={"image": start})
        assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "size"
        assert "2048x2048" in too_big.json()["error"]["message"]
        tall = png_file(Image.new("RGB", (8, 3000), (90, 90, 90)))
        own_size = http.post("/v1/images/edits", data={"prompt": "x"}, files={"image": tall})
        assert own_size.status_code == 400 and own_size.json()["error"]["param"] == "image"
        assert "8x3000" in own_size.json()["error"]["message"]


def test_a_mask_sent_as_a_text_field_is_read_as_base64_not_dropped(server):
    start = png_file(Image.new("RGB", (64, 64), (200, 30, 30)))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    fields = {"prompt": "x", "size": SIZE, "num_inference_steps": "2", "seed": "1"}
    with server.client() as http:
        masked = http.post(
            "/v1/images/edits",
            data={**fields, "mask": base64.b64encode(png_file(mask)).decode()},
            files={"image": start},
        )
        assert masked.status_code == 200, masked.text
        assert "Mask hash" in decode(masked.json()["data"][0]["b64_json"]).text["parameters"]
        garbage = http.post("/v1/images/edits", data={**fields, "mask": "hello"}, files={"image": start})
        assert garbage.status_code == 400 and garbage.json()["error"]["param"] == "mask"
        two = http.post(
            "/v1/images/edits", data=fields, files=[("image", start), ("mask", png_file(mask)), ("mask", start)]
        )
        assert two.status_code == 400 and two.json()["error"]["param"] == "mask"
