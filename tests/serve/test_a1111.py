"""AUTOMATIC1111's /sdapi/v1 on a real `lcm-run serve` (the tiny bundle), driven by the webuiapi
client where it covers the route, and by plain HTTP where the exact body matters."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest

webuiapi = pytest.importorskip("webuiapi")

import httpx
import requests
from pictures import box_mask, picture
from PIL import Image, ImageOps

from lcm_runtime.loading import open_model_folder

SIZE = 64  # the tiny bundle's native size: every shape is compiled at start, so requests only run
ERROR_KEYS = {"error", "detail", "body", "errors"}


class BoundedSession(requests.Session):
    """webuiapi's session with a timeout, so that no test can hang on a stuck server."""

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("timeout", 120)
        return super().request(*args, **kwargs)


@pytest.fixture
def api(server, monkeypatch) -> webuiapi.WebUIApi:
    """steps=None: webuiapi then sends steps null, which must mean the bundle's default."""
    monkeypatch.setattr(requests, "Session", BoundedSession)
    return webuiapi.WebUIApi(host="127.0.0.1", port=urlsplit(server.url).port, steps=None)


@pytest.fixture(scope="module")
def facts(tiny_bundle_fp32):
    return open_model_folder(tiny_bundle_fp32).facts


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def assert_healthy(client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "still alive", "width": SIZE, "height": SIZE})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["images"]) == 1


# --- txt2img ----------------------------------------------------------------------------------------


def test_txt2img_batches_get_consecutive_seeds_and_info_says_what_ran(api, facts):
    result = api.txt2img(prompt="a red fox", seed=1000, batch_size=2, n_iter=2, width=SIZE, height=SIZE)
    assert len(result.images) == 4  # batch_size x n_iter
    assert all(image.size == (SIZE, SIZE) for image in result.images)
    assert isinstance(result.json["info"], str)  # A1111's info is JSON in a string (Open WebUI parses it)
    info = result.info
    assert isinstance(info, dict), f"info is not JSON: {info!r}"  # webuiapi keeps what it cannot parse
    assert info["seed"] == 1000
    assert info["all_seeds"] == [1000, 1001, 1002, 1003]
    assert info["all_prompts"] == ["a red fox"] * 4
    assert info["sampler_name"] == "LCM"  # webuiapi asked for "Euler a"
    assert result.parameters["sampler_name"] == "Euler a"  # the request, echoed as A1111 does
    assert info["steps"] == facts.default_steps  # steps null: the bundle's, not A1111's 50
    assert info["cfg_scale"] == 7.0  # webuiapi's default cfg_scale, sent and used
    assert info["batch_size"] == 2
    assert (info["width"], info["height"]) == (SIZE, SIZE)
    assert info["denoising_strength"] == 0
    assert [text.count("Seed: ") for text in info["infotexts"]] == [1] * 4
    assert "Seed: 1002," in info["infotexts"][2]
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))  # each its own seed


def test_txt2img_defaults_are_the_bundles(server, facts):
    with server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a lighthouse"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    info = json.loads(body["info"])
    size = facts.default_image_size
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).size == (size, size)
    assert (info["width"], info["height"], info["steps"]) == (size, size, facts.default_steps)
    assert info["cfg_scale"] == facts.default_guidance_scale
    assert 0 <= info["seed"] < 2**32 and info["all_seeds"] == [info["seed"]]  # seed -1: a random one


def test_same_seed_gives_the_same_pixels(api):
    def run(seed: int) -> np.ndarray:
        result = api.txt2img(prompt="a teapot", seed=seed, width=SIZE, height=SIZE)
        return pixels(result.images[0])

    first = run(42)
    assert np.array_equal(first, run(42))
    assert not np.array_equal(first, run(43))


def test_png_carries_a1111_parameters_and_metrics_count_it(server):
    with server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a boat", "seed": 7, "width": SIZE, "height": SIZE})
        metrics = client.get("/metrics").text
    assert answer.status_code == 200, answer.text
    body = answer.json()
    encoded = body["images"][0]
    assert not encoded.startswith("data:")
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert image.format == "PNG"
    text = image.text["parameters"]
    assert text == json.loads(body["info"])["infotexts"][0]
    assert text.startswith("a boat\n") and "Seed: 7," in text and "Sampler: LCM" in text
    assert 'lcm_requests_total{api="a1111",status="200"}' in metrics


def test_unknown_a1111_fields_are_accepted_and_ignored(server):
    request = {
        "prompt": "a castle",
        "seed": 3,
        "width": SIZE,
        "height": SIZE,
        "steps": 2,
        "sampler_name": "Euler a",
        "sampler_index": "Euler",
        "scheduler": "Karras",
        "restore_faces": True,
        "enable_hr": True,
        "hr_scale": 2,
        "hr_upscaler": "Latent",
        "denoising_strength": 0.7,
        "override_settings": {"sd_model_checkpoint": "other.safetensors [abc]", "CLIP_stop_at_last_layers": 2},
        "override_settings_restore_afterwards": True,
        "alwayson_scripts": {},
        "styles": [],
        "subseed": 5,
        "subseed_strength": 0.3,
        "send_images": True,
        "save_images": False,
    }
    with server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 1
    assert info["sampler_name"] == "LCM" and info["restore_faces"] is False
    assert info["steps"] == 2 and info["all_seeds"] == [3]
    assert info["denoising_strength"] == 0  # a hires-fix setting: txt2img ran no image-to-image
    assert body["parameters"]["override_settings"] == request["override_settings"]
    assert body["parameters"]["enable_hr"] is True


def test_nan_in_an_ignored_field_is_echoed_as_null(server):
    """Python's JSON reader takes NaN; the echo must still be JSON (a NaN there would be a 500)."""
    request = '{"prompt": "a moon", "width": 64, "height": 64, "steps": 1, "eta": NaN, "s_noise": [Infinity]}'
    with server.client() as client:
        answer = client.post("/sdapi/v1/txt2img", content=request, headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["parameters"]["eta"] is None and answer.json()["parameters"]["s_noise"] == [None]
        refused = client.post(
            "/sdapi/v1/txt2img",
            content=request.replace('"eta"', '"cfg_scale"'),
            headers={"Content-Type": "application/json"},
        )
        assert refused.status_code == 422 and set(refused.json()) == ERROR_KEYS


# --- img2img ----------------------------------------------------------------------------------------


def test_img2img_resizes_the_init_image_and_uses_it(api):
    def run(seed: int) -> tuple[np.ndarray, dict]:
        init = picture(80, 48, seed=seed)
        result = api.img2img(
            images=[init], prompt="a painting", seed=11, denoising_strength=0.5, width=SIZE, height=SIZE, steps=2
        )
        assert len(result.images) == 1
        assert result.images[0].size == (SIZE, SIZE)
        return pixels(result.images[0]), result.info

    first, info = run(1)
    assert info["denoising_strength"] == 0.5
    assert info["steps"] == 2 and info["all_seeds"] == [11]
    assert "Init image hash: " in info["infotexts"][0] and "Mask hash" not in info["infotexts"][0]
    second, _ = run(2)
    assert not np.array_equal(first, second)  # same seed, another picture: the picture mattered


def test_img2img_with_a_mask_inpaints_and_inverts(api):
    init = picture(SIZE, SIZE, seed=4)
    mask = box_mask(SIZE, SIZE, (16, 16, 48, 48))

    def run(mask_image: Image.Image, invert: int) -> tuple[np.ndarray, dict]:
        result = api.img2img(
            images=[init],
            mask_image=mask_image,
            inpainting_mask_invert=invert,
            prompt="a window",
            seed=5,
            steps=2,
            width=SIZE,
            height=SIZE,
        )
        assert len(result.images) == 1 and result.images[0].size == (SIZE, SIZE)
        return pixels(result.images[0]), result.info

    masked, info = run(mask, 0)
    assert "Mask hash: " in info["infotexts"][0]
    assert info["denoising_strength"] == 0.75  # A1111's default for img2img
    inverted, _ = run(mask, 1)
    assert np.array_equal(inverted, run(ImageOps.invert(mask), 0)[0])
    assert not np.array_equal(masked, inverted)


# --- options and discovery ----------------------------------------------------------------------------


def test_discovery_routes_have_a1111_shapes(server):
    with server.client() as client:
        models = client.get("/sdapi/v1/sd-models").json()
        assert len(models) == 1
        assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert models[0]["title"] == f"{models[0]['model_name']} [{models[0]['hash']}]"
        assert client.get("/sdapi/v1/samplers").json() == [{"name": "LCM", "aliases": ["lcm"], "options": {}}]
        schedulers = client.get("/sdapi/v1/schedulers").json()
        assert [scheduler["name"] for scheduler in schedulers] == ["lcm"]
        assert set(schedulers[0]) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
        upscalers = client.get("/sdapi/v1/upscalers").json()
        assert [upscaler["name"] for upscaler in upscalers] == ["None"]
        assert set(upscalers[0]) == {"name", "model_name", "model_path", "model_url", "scale"}
        for path in ("latent-upscale-modes", "sd-vae", "loras"):
            answer = client.get(f"/sdapi/v1/{path}")
            assert answer.status_code == 200 and isinstance(answer.json(), list), path


def test_options_report_the_model_and_accept_a_checkpoint_switch(server, api):
    options = api.get_options()
    models = api.get_sd_models()
    assert options["sd_model_checkpoint"] == models[0]["title"]  # what Open WebUI compares
    assert options["sd_checkpoint_hash"] == models[0]["hash"]
    assert (options["samples_format"], options["CLIP_stop_at_last_layers"], options["sd_vae"]) == (
        "png",
        1,
        "Automatic",
    )
    assert "forge_preset" not in options  # SillyTavern would take the server for Forge
    with server.client() as client:
        switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "another-model.safetensors [1234]"})
        assert switched.status_code == 200 and switched.json() is None
        assert (
            client.post("/sdapi/v1/options", json={"sd_model_checkpoint": options["sd_model_checkpoint"]}).json()
            is None
        )
        refused = client.post("/sdapi/v1/options", json=["sd_model_checkpoint"])
        assert refused.status_code == 422
        assert set(refused.json()) == ERROR_KEYS
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == options["sd_model_checkpoint"]


def test_progress_is_zero_when_idle(server):
    with server.client() as client:
        answer = client.get("/sdapi/v1/progress")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert body["progress"] == 0 and body["eta_relative"] == 0
    assert body["state"]["job_count"] == 0 and body["state"]["sampling_steps"] == 0
    assert body["state"]["interrupted"] is False and body["state"]["skipped"] is False


# --- bad input ----------------------------------------------------------------------------------------

NOT_A_PICTURE = base64.b64encode(b"this is text, not a picture").decode("ascii")


def lab_tiff() -> str:
    """A picture Pillow opens but cannot convert to grayscale (a mask's mode)."""
    buffer = io.BytesIO()
    Image.new("LAB", (SIZE, SIZE)).save(buffer, format="TIFF")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


BAD_REQUESTS = {
    "init image not base64": ("img2img", {"prompt": "x", "init_images": ["not base64!!"]}, 400, "init_images"),
    "init image not a picture": ("img2img", {"prompt": "x", "init_images": [NOT_A_PICTURE]}, 400, "not a readable"),
    "mask LAB": (
        "img2img",
        {"prompt": "x", "init_images": [b64_png(picture(SIZE, SIZE, seed=1))], "mask": lab_tiff()},
        400,
        "LAB",
    ),
    "no init image": ("img2img", {"prompt": "x", "init_images": []}, 400, "init_images"),
    "mask not a picture": (
        "img2img",
        {"prompt": "x", "init_images": [b64_png(picture(SIZE, SIZE, seed=1))], "mask": NOT_A_PICTURE},
        400,
        "mask",
    ),
    "img2img width 0": (
        "img2img",
        {"prompt": "x", "init_images": [b64_png(picture(SIZE, SIZE, seed=1))], "width": 0, "height": SIZE},
        400,
        "width",
    ),
    "negative prompt": ("txt2img", {"prompt": "x", "negative_prompt": "blurry", "width": SIZE}, 400, "negative_prompt"),
    "steps 0": ("txt2img", {"prompt": "x", "steps": 0}, 422, "steps"),
    "width 7": ("txt2img", {"prompt": "x", "width": 7, "height": SIZE}, 400, "width"),
    "too many images": ("txt2img", {"prompt": "x", "batch_size": 3, "n_iter": 2}, 400, "n must be"),
    "seed -2": ("txt2img", {"prompt": "x", "seed": -2}, 400, "seed"),
    "body not an object": ("txt2img", ["prompt"], 422, "dictionary"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS), ids=list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_in_a1111_shape(server, case):
    route, request, status, mentioned = BAD_REQUESTS[case]
    with server.client() as client:
        answer = client.post(f"/sdapi/v1/{route}", json=request)
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert set(body) == ERROR_KEYS
        assert mentioned in body["detail"]
        assert "Traceback" not in answer.text and 'File "' not in answer.text
        assert_healthy(client)


# --- interrupting -------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["interrupt", "skip"])
def test_interrupt_stops_the_running_job_with_409(server, route):
    answers: list[httpx.Response] = []

    def long_job() -> None:
        with server.client() as client:
            request = {"prompt": "a long one", "steps": 50, "width": 256, "height": 256, "batch_size": 4}
            answers.append(client.post("/sdapi/v1/txt2img", json=request))

    worker = threading.Thread(target=long_job, daemon=True)
    with server.client() as client:
        assert client.post(f"/sdapi/v1/{route}").status_code == 200  # nothing runs: still fine
        worker.start()
        deadline = time.monotonic() + 60
        running = None
        while time.monotonic() < deadline and worker.is_alive():
            running = client.get("/sdapi/v1/progress").json()
            if running["progress"] > 0:
                break
            time.sleep(0.02)
        assert running is not None and running["progress"] > 0, f"the job never ran: {running}"
        assert 0 < running["progress"] < 1 and running["eta_relative"] > 0
        assert running["state"]["job_count"] == 1 and running["state"]["sampling_steps"] == 50
        stopped = client.post(f"/sdapi/v1/{route}")
        assert stopped.status_code == 200 and stopped.json() in ({}, None)
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert answers[0].status_code == 409, answers[0].text
        assert set(answers[0].json()) == ERROR_KEYS and answers[0].json()["error"] == "interrupted"
        idle = client.get("/sdapi/v1/progress").json()
        deadline = time.monotonic() + 10
        while idle["state"]["job_count"] and time.monotonic() < deadline:
            time.sleep(0.05)
            idle = client.get("/sdapi/v1/progress").json()
        assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
        assert_healthy(client)


@pytest.mark.parametrize("route", ["txt2img", "img2img"])
def test_an_empty_prompt_makes_an_image_as_in_a1111(server, route):
    """A1111 takes an empty (or absent) prompt, an img2img touch-up's usual one; the OpenAI routes refuse it."""
    request = {"width": SIZE, "height": SIZE, "steps": 1, "seed": 3}
    if route == "img2img":
        request["init_images"] = [b64_png(picture(SIZE, SIZE, seed=1))]
    with server.client() as client:
        for body in (request, {**request, "prompt": ""}):
            answer = client.post(f"/sdapi/v1/{route}", json=body)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["images"]) == 1
        refused = client.post("/v1/images/generations", json={"prompt": " ", "size": f"{SIZE}x{SIZE}"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "prompt"
