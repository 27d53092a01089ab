"""AUTOMATIC1111's /sdapi/v1: the subset SillyTavern, Open WebUI's automatic1111 engine and the
``webuiapi`` client call: txt2img, img2img, options, progress, interrupt and the discovery lists.

Request bodies are A1111's, so every field those clients send is accepted; the ones that have no
meaning for an LCM bundle (sampler_name, scheduler, hires fix, restore_faces, override_settings,
alwayson_scripts, ...) are ignored, and ``info`` says what actually ran (sampler LCM, the steps and
guidance used). Unset steps, cfg_scale and size are the bundle's defaults, not A1111's 50 steps at
512x512: a distilled model needs a handful of steps.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from .engine import GenerationRequest, Job, Result
from .http import (
    ApiError,
    ClientGone,
    answered_failure,
    decode_base64,
    encode_image,
    fit_to_size,
    open_picture,
    wait_for_job,
)
from .state import ServerState, image_digest

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"])
log = logging.getLogger("lcm_runtime.serve")

API = "a1111"  # the metrics' label
SAMPLER = "LCM"
TIMESTAMP = "%Y%m%d%H%M%S"  # A1111's job_timestamp

# Python arguments (the library's errors name them) -> this API's fields.
PARAMS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "num_inference_steps": "steps",
    "guidance_scale": "cfg_scale",
    "height": "height",
    "width": "width",
    "num_images_per_prompt": "batch_size",
    "n": "batch_size",
    "generator": "seed",
    "seed": "seed",
    "strength": "denoising_strength",
    "image": "init_images",
    "mask_image": "mask",
    "mask": "mask",
}


class TextToImageBody(BaseModel):
    """POST /sdapi/v1/txt2img. A1111 makes every field optional, so null is taken as unset; unknown
    fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str | None = ""
    negative_prompt: str | None = ""
    seed: int | None = Field(default=-1, description="-1: random; image k of the batch gets seed + k")
    steps: int | None = Field(default=None, ge=1, description="unset: the bundle's default (a few steps)")
    cfg_scale: float | None = Field(default=None, description="unset: the bundle's default guidance")
    width: int | None = Field(default=None, description="unset: the bundle's native size")
    height: int | None = Field(default=None, description="unset: the bundle's native size")
    batch_size: int | None = Field(default=1, ge=1)
    n_iter: int | None = Field(default=1, ge=1)


class ImageToImageBody(TextToImageBody):
    """Only the first of ``init_images`` is used: one picture per request, as the OpenAI edits route."""

    init_images: list[str] | None = None
    mask: str | None = None
    inpainting_mask_invert: int | None = 0
    denoising_strength: float | None = 0.75
    include_init_images: bool | None = False


class TextToImageResponse(BaseModel):
    images: list[str]
    parameters: dict[str, Any]
    info: str


def generation_request(body: TextToImageBody, **task: Any) -> GenerationRequest:
    """The fields both routes share, in the engine's terms; ``task`` adds the picture and its size."""
    count = (1 if body.batch_size is None else body.batch_size) * (1 if body.n_iter is None else body.n_iter)
    return GenerationRequest(
        prompt=body.prompt or "",
        negative_prompt=body.negative_prompt or None,
        n=count,
        steps=body.steps,
        guidance=body.cfg_scale,
        seed=None if body.seed is None or body.seed == -1 else body.seed,
        **task,
    )


@router.post("/txt2img", response_model=TextToImageResponse)
async def txt2img(body: TextToImageBody, request: Request) -> Response:
    state: ServerState = request.app.state.server
    generation = generation_request(body, width=body.width, height=body.height)
    return await answer(state, request, body, generation, body.model_dump(mode="json"))


@router.post("/img2img", response_model=TextToImageResponse)
async def img2img(body: ImageToImageBody, request: Request) -> Response:
    state: ServerState = request.app.state.server
    if not body.init_images:
        raise ApiError(400, "init_images is required: send the picture to edit as a base64 PNG", param="init_images")
    if body.width is not None and body.height is not None:
        # Checked before resizing, so no request makes the server allocate a picture of any size.
        for name, side in (("width", body.width), ("height", body.height)):
            if not 1 <= side <= state.engine.max_side:
                raise ApiError(400, f"{name} must be from 1 to {state.engine.max_side}, got {side}", param=name)
    data = decode_base64(body.init_images[0], "init_images")
    picture = fit_to_size(converted(open_picture(data, "init_images"), "RGB", "init_images"), body.width, body.height)
    mask: Image.Image | None = None
    mask_hash = None
    if body.mask:
        mask_data = decode_base64(body.mask, "mask")
        mask = fit_to_size(binary_mask(open_picture(mask_data, "mask")), *picture.size, mask=True)
        mask = ImageOps.invert(mask) if body.inpainting_mask_invert else mask
        mask_hash = image_digest(mask_data)
    generation = generation_request(
        body,
        width=picture.width if mask is not None else None,
        height=picture.height if mask is not None else None,
        strength=body.denoising_strength,
        image=picture,
        image_hash=image_digest(data),
        mask=mask,
        mask_hash=mask_hash,
    )
    # A1111 echoes the pictures only with include_init_images; echoing megabytes back helps nobody.
    parameters = {**body.model_dump(mode="json"), "init_images": None, "mask": None}
    return await answer(state, request, body, generation, parameters)


def converted(picture: Image.Image, mode: str, param: str) -> Image.Image:
    """Pillow opens pictures it cannot convert (a LAB TIFF, ...): the client's mistake, not a 500."""
    try:
        return picture.convert(mode)
    except ValueError:
        raise ApiError(
            400, f"{param} is a {picture.mode} picture, which this server cannot read; send RGB PNG", param=param
        ) from None


def binary_mask(mask: Image.Image) -> Image.Image:
    """A1111's reading of a mask: the alpha channel if an RGBA mask has any transparency, else its
    gray levels; white repaints."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        return mask.getchannel("A")
    return converted(mask, "L", "mask")


async def answer(
    state: ServerState,
    request: Request,
    body: TextToImageBody,
    generation: GenerationRequest,
    parameters: dict[str, Any],
) -> Response:
    started = time.perf_counter()
    timestamp = time.strftime(TIMESTAMP)
    try:
        job = state.engine.submit(generation)
        result = await wait_for_job(state.engine, job, request, state.settings.timeout)
    except ClientGone:
        state.metrics.answered(API, 499, time.perf_counter() - started)
        return Response(status_code=499)
    except Exception as error:  # noqa: BLE001 - answered in A1111's error shape
        failure = answered_failure(state.metrics, API, error, PARAMS, started)
        raise failure from None
    state.metrics.images.inc(len(result.images))
    images = [base64.b64encode(encode_image(generated, "PNG")).decode("ascii") for generated in result.images]
    info = json.dumps(info_of(state, body, generation, result, timestamp))
    state.metrics.answered(API, 200, time.perf_counter() - started)
    return JSONResponse({"images": images, "parameters": parameters, "info": info})


def info_of(
    state: ServerState, body: TextToImageBody, generation: GenerationRequest, result: Result, timestamp: str
) -> dict[str, Any]:
    """A1111's ``processed.js()``, saying what ran rather than what was asked for."""
    count = len(result.images)
    negative = generation.negative_prompt or ""
    return {
        "prompt": generation.prompt,
        "all_prompts": [generation.prompt] * count,
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * count,
        "seed": result.images[0].seed,
        "all_seeds": [generated.seed for generated in result.images],
        "subseed": -1,
        "all_subseeds": [-1] * count,
        "subseed_strength": 0,
        "width": result.width,
        "height": result.height,
        "sampler_name": SAMPLER,
        "cfg_scale": result.guidance,
        "steps": result.steps,
        "batch_size": 1 if body.batch_size is None else body.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": state.engine.model_name,
        "sd_model_hash": state.engine.folder.identity(),
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": result.strength if result.strength is not None else 0,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": [generated.parameters for generated in result.images],
        "styles": [],
        "job_timestamp": timestamp,
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": __version__,
    }


# --- options and the lists clients read before their first request ---------------------------------


def model_title(state: ServerState) -> str:
    """A1111's checkpoint title, ``name [hash]``: what clients compare options and sd-models by."""
    return f"{state.engine.model_name} [{state.engine.folder.identity()}]"


@router.get("/options")
async def get_options(request: Request) -> dict[str, Any]:
    state: ServerState = request.app.state.server
    return {
        "sd_model_checkpoint": model_title(state),
        "sd_checkpoint_hash": state.engine.folder.identity(),
        "sd_vae": "Automatic",
        "samples_format": "png",
        "CLIP_stop_at_last_layers": 1,
        "sd_checkpoint_cache": 0,
        "sd_vae_checkpoint_cache": 0,
    }


@router.post("/options")
async def set_options(options: Annotated[dict[str, Any], Body()], request: Request) -> None:
    """Accepted and ignored: clients set the checkpoint before generating, and this server has one."""
    state: ServerState = request.app.state.server
    wanted = options.get("sd_model_checkpoint")
    if wanted is not None and wanted not in (model_title(state), state.engine.model_name):
        log.info("ignored a switch to checkpoint %.200r: this server serves %s only", wanted, model_title(state))


@router.get("/sd-models")
async def sd_models(request: Request) -> list[dict[str, Any]]:
    state: ServerState = request.app.state.server
    identity = state.engine.folder.identity()
    return [
        {
            "title": model_title(state),
            "model_name": state.engine.model_name,
            "hash": identity,
            "sha256": None,  # the bundle's identity is a short manifest hash, not a file's sha256
            "filename": str(state.engine.bundle),
            "config": None,
        }
    ]


@router.get("/samplers")
async def samplers() -> list[dict[str, Any]]:
    return [{"name": SAMPLER, "aliases": ["lcm"], "options": {}}]


@router.get("/schedulers")
async def schedulers() -> list[dict[str, Any]]:
    return [{"name": "lcm", "label": SAMPLER, "aliases": None, "default_rho": -1, "need_inner_model": False}]


@router.get("/upscalers")
async def upscalers() -> list[dict[str, Any]]:
    """Only A1111's "None": there is no hires fix here, and clients offer this list's names as choices."""
    return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}]


@router.get("/latent-upscale-modes")
async def latent_upscale_modes() -> list[dict[str, Any]]:
    return []


@router.get("/sd-vae")
async def sd_vae() -> list[dict[str, Any]]:
    return []


@router.get("/loras")
async def loras() -> list[dict[str, Any]]:
    return []


@router.get("/scripts")
async def scripts() -> dict[str, list[str]]:
    """None here; webuiapi's client asks for this list when it connects."""
    return {"txt2img": [], "img2img": []}


# --- progress and interrupting ----------------------------------------------------------------------


@router.get("/progress")
async def progress(request: Request) -> dict[str, Any]:
    """The running job's progress; 0 and job_count 0 when idle, which SillyTavern polls for."""
    state: ServerState = request.app.state.server
    job = state.engine.running
    waiting = state.engine.queued()
    done = total = 0
    if job is not None and job.steps:
        done, total = job.image_index * job.steps + job.step, job.request.n * job.steps
    return {
        "progress": min(1.0, done / total) if total else 0.0,
        "eta_relative": (total - done) * seconds_per_step(state) if total else 0.0,
        "state": {
            "skipped": False,
            "interrupted": job is not None and job.cancel_reason == "interrupted",
            "job": job.id if job is not None else "",
            "job_count": waiting + int(job is not None),
            "job_timestamp": job_timestamp(job) if job is not None else "0",
            "job_no": job.image_index if job is not None else 0,
            "sampling_step": job.step if job is not None else 0,
            "sampling_steps": job.steps if job is not None else 0,
        },
        "current_image": None,
        "textinfo": None,
    }


def seconds_per_step(state: ServerState) -> float:
    """The mean of every step timed so far (the metrics' histogram), for the ETA."""
    values = {sample.name: sample.value for metric in state.metrics.step_seconds.collect() for sample in metric.samples}
    count = values.get("lcm_step_seconds_count", 0.0)
    return values.get("lcm_step_seconds_sum", 0.0) / count if count else 0.0


def job_timestamp(job: Job) -> str:
    submitted = time.time() - (time.monotonic() - job.submitted)
    return time.strftime(TIMESTAMP, time.localtime(submitted))


@router.post("/interrupt")
async def interrupt(request: Request) -> dict[str, Any]:
    """Stops the running job at its next step; its request is answered 409."""
    state: ServerState = request.app.state.server
    state.engine.interrupt()
    return {}


@router.post("/skip")
async def skip(request: Request) -> dict[str, Any]:
    """As interrupt: A1111 would go on to the batch's next image, but a job here is one unit."""
    state: ServerState = request.app.state.server
    state.engine.interrupt()
    return {}
