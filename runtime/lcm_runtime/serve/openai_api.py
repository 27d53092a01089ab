"""The OpenAI images API: POST /v1/images/generations, POST /v1/images/edits, GET /v1/models.

Fields as the official SDK sends them (docs/serving.md); the LCM settings come as top-level extras
(the SDK's ``extra_body``). Fields that do not apply here (quality, style, user, background,
moderation, input_fidelity, ...) are accepted and ignored, as generic clients need.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .engine import GeneratedImage, GenerationRequest, Job, Result, StepEvent
from .http import (
    ApiError,
    ClientGone,
    answered_failure,
    decode_base64,
    encode_image,
    fit_to_size,
    mask_from_alpha_or_white,
    open_picture,
    openai_error_body,
    output_format,
    preview_bytes,
    wait_for_job,
)
from .state import ServerState, image_digest

router = APIRouter(prefix="/v1", tags=["OpenAI"])

# Python arguments (the library's errors name them) -> this API's fields.
PARAMS = {
    "prompt": "prompt",
    "num_inference_steps": "num_inference_steps",
    "guidance_scale": "guidance_scale",
    "height": "size",
    "width": "size",
    "num_images_per_prompt": "n",
    "generator": "seed",
    "seed": "seed",
    "strength": "strength",
    "image": "image",
    "mask_image": "mask",
    "mask": "mask",
    "negative_prompt": "negative_prompt",
    "guidance_rescale": "guidance_rescale",
    "n": "n",
}


class ImageGenerationBody(BaseModel):
    """POST /v1/images/generations. Unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1, pattern=r"\S")  # OpenAI's: a prompt is required
    model: str | None = None
    n: int | None = Field(default=1, ge=1)
    size: str | None = Field(default=None, description="WxH, or auto for the model's native size")
    response_format: Literal["b64_json", "url"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    stream: bool | None = False
    partial_images: int | None = Field(default=None, ge=0)
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    background: str | None = None
    moderation: str | None = None
    # LCM settings, as extras; the bundle's defaults (4 steps) when absent.
    num_inference_steps: int | None = Field(default=None, ge=1, le=50)
    guidance_scale: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=-1, lt=2**32)
    rng_seed: int | None = Field(default=None, ge=-1, lt=2**32, description="OpenVINO Model Server's name for seed")
    negative_prompt: str | None = None
    guidance_rescale: float | None = Field(default=None, ge=0, le=1, description="cfg bundles only")
    strength: float | None = Field(default=None, gt=0, le=1)


class ImageData(BaseModel):
    b64_json: str
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: str
    size: str


def parse_size(size: object, state: ServerState) -> tuple[int | None, int | None]:
    if size is None or size == "" or size == "auto":
        return None, None
    if isinstance(size, str):
        width, separator, height = size.lower().partition("x")
        if separator and width.isascii() and height.isascii() and width.isdigit() and height.isdigit():
            if int(width) > 0 and int(height) > 0:
                # Checked before an edit resizes its picture to it: no request makes the server allocate more.
                if max(int(width), int(height)) > state.engine.max_side:
                    limit = state.engine.max_side
                    raise ApiError(
                        400, f"size must be at most {limit}x{limit} on this server, got {size!r}", param="size"
                    )
                return int(width), int(height)
    raise ApiError(400, f"size must be WIDTHxHEIGHT (e.g. 512x512) or auto, got {size!r}", param="size")


def seed_of(seed: int | None, rng_seed: int | None) -> int | None:
    chosen = seed if seed is not None else rng_seed
    return None if chosen is None or chosen == -1 else chosen


def model_entry(state: ServerState) -> dict[str, Any]:
    return {"id": state.engine.model_name, "object": "model", "created": state.started, "owned_by": "local"}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(request.app.state.server)]}


@router.get("/models/{model}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    """The OpenAI SDK's ``client.models.retrieve``: this server's one model, by its name."""
    state: ServerState = request.app.state.server
    if model != state.engine.model_name:
        raise ApiError(
            404,
            f"this server has one model, {state.engine.model_name!r}, not {model!r}",
            param="model",
            code="not_found",
        )
    return model_entry(state)


@router.post("/images/generations", response_model=ImagesResponse)
async def generations(body: ImageGenerationBody, request: Request) -> Response:
    state: ServerState = request.app.state.server
    width, height = parse_size(body.size, state)
    generation = GenerationRequest(
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        guidance_rescale=body.guidance_rescale or 0.0,
        n=body.n or 1,
        width=width,
        height=height,
        steps=body.num_inference_steps,
        guidance=body.guidance_scale,
        seed=seed_of(body.seed, body.rng_seed),
        strength=None,
        previews=bool(body.stream and body.partial_images),
    )
    options = Answer(
        image_format=output_format(body.output_format),
        compression=body.output_compression,
        url=body.response_format == "url",
        stream=bool(body.stream),
        event_prefix="image_generation",
    )
    return await answer(state, request, generation, options)


EDIT_FIELDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["prompt", "image"],
    "properties": {
        "image": {"type": "string", "format": "binary"},
        "mask": {"type": "string", "format": "binary"},
        "prompt": {"type": "string"},
        "n": {"type": "integer"},
        "size": {"type": "string"},
        "response_format": {"type": "string", "enum": ["b64_json", "url"]},
        "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
        "output_compression": {"type": "integer"},
        "stream": {"type": "boolean"},
        "partial_images": {"type": "integer"},
        "num_inference_steps": {"type": "integer"},
        "guidance_scale": {"type": "number"},
        "seed": {"type": "integer"},
        "negative_prompt": {"type": "string"},
        "strength": {"type": "number"},
    },
}


@router.post(
    "/images/edits",
    response_model=ImagesResponse,
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": EDIT_FIELDS_SCHEMA}}}
    },
)
async def edits(request: Request) -> Response:
    """Multipart: ``image`` (or ``image[]``), optional ``mask`` (alpha 0 = edit, OpenAI's convention;
    a mask without alpha: white = edit), and the fields of generations as form fields."""
    state: ServerState = request.app.state.server
    try:
        form = await request.form(max_files=8, max_fields=64, max_part_size=state.settings.max_body_bytes)
    except ApiError:
        raise
    except Exception as error:  # noqa: BLE001 - python-multipart's errors are the client's malformed body
        raise ApiError(400, f"the body is not a readable multipart form ({error})") from None
    fields: dict[str, str] = {}
    files: dict[str, list[bytes]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            fields[key] = value
        else:
            files.setdefault(key.removesuffix("[]"), []).append(await value.read())
    images = files.get("image") or ([decode_base64(fields["image"], "image")] if "image" in fields else [])
    if not images:
        raise ApiError(400, "image is required: send the picture to edit as the multipart file 'image'", param="image")
    if len(images) > 1:
        raise ApiError(400, f"this server edits one image per request, got {len(images)}", param="image")
    picture = open_picture(images[0], "image")
    # A mask sent as a text field is base64, as the image: dropping it would quietly make an image-to-image.
    masks = files.get("mask") or ([decode_base64(fields["mask"], "mask")] if "mask" in fields else [])
    if len(masks) > 1:
        raise ApiError(400, f"an edit takes one mask, got {len(masks)}", param="mask")
    mask = mask_from_alpha_or_white(open_picture(masks[0], "mask")) if masks else None
    width, height = parse_size(fields.get("size"), state)
    picture = fit_to_size(picture.convert("RGB"), width, height)
    if mask is not None:
        mask = fit_to_size(mask, width, height, mask=True) if width else fit_to_size(mask, *picture.size, mask=True)
    stream = form_bool(fields.get("stream"), "stream")
    if not fields.get("prompt", "").strip():
        raise ApiError(400, "prompt is required: describe the edit", param="prompt")
    generation = GenerationRequest(
        prompt=fields["prompt"],
        negative_prompt=fields.get("negative_prompt") or None,
        guidance_rescale=form_number(fields.get("guidance_rescale"), "guidance_rescale", float) or 0.0,
        n=form_number(fields.get("n"), "n", int) or 1,
        width=picture.width if mask is not None else None,
        height=picture.height if mask is not None else None,
        steps=form_number(fields.get("num_inference_steps"), "num_inference_steps", int),
        guidance=form_number(fields.get("guidance_scale"), "guidance_scale", float),
        seed=seed_of(form_number(fields.get("seed"), "seed", int), form_number(fields.get("rng_seed"), "seed", int)),
        strength=form_number(fields.get("strength"), "strength", float),
        image=picture,
        image_hash=image_digest(images[0]),
        mask=mask,
        mask_hash=image_digest(masks[0]) if masks else None,
        previews=bool(stream and form_number(fields.get("partial_images"), "partial_images", int)),
    )
    compression = form_number(fields.get("output_compression"), "output_compression", int)
    if compression is not None and not 0 <= compression <= 100:
        raise ApiError(400, "output_compression must be from 0 to 100", param="output_compression")
    options = Answer(
        image_format=output_format(fields.get("output_format")),
        compression=compression,
        url=fields.get("response_format") == "url",
        stream=stream,
        event_prefix="image_edit",
    )
    return await answer(state, request, generation, options)


def form_number(value: str | None, param: str, kind: type[int] | type[float]) -> Any:
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise ApiError(400, f"{param} must be a number, got {value!r}", param=param) from None


def form_bool(value: str | None, param: str) -> bool:
    if value is None or value.lower() in ("", "false", "0", "no"):
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    raise ApiError(400, f"{param} must be true or false, got {value!r}", param=param)


class Answer:
    """How the images go back: format, compression, b64 or url, streamed or not."""

    def __init__(self, image_format: str, compression: int | None, url: bool, stream: bool, event_prefix: str):
        self.image_format, self.compression, self.url = image_format, compression, url
        self.stream, self.event_prefix = stream, event_prefix


def image_data(state: ServerState, request: Request, generated: GeneratedImage, options: Answer) -> dict[str, Any]:
    data = encode_image(generated, options.image_format, options.compression)
    item: dict[str, Any] = {"b64_json": base64.b64encode(data).decode("ascii"), "revised_prompt": None}
    if options.url:
        name = state.store.put(data, options.image_format)
        item["url"] = str(request.url_for("image_file", name=name))
    return item


async def answer(state: ServerState, request: Request, generation: GenerationRequest, options: Answer) -> Response:
    started = time.perf_counter()
    if options.stream:
        return await stream_answer(state, request, generation, options, started)
    try:
        job = state.engine.submit(generation)
        result = await wait_for_job(state.engine, job, request, state.settings.timeout)
    except ClientGone:
        state.metrics.answered("openai", 499, time.perf_counter() - started)
        return Response(status_code=499)
    except Exception as error:  # noqa: BLE001 - answered in OpenAI's error shape
        failure = answered_failure(state.metrics, "openai", error, PARAMS, started)
        raise failure from None
    state.metrics.images.inc(len(result.images))
    body = {
        "created": int(time.time()),
        "data": [image_data(state, request, generated, options) for generated in result.images],
        "output_format": options.image_format.lower(),
        "size": f"{result.width}x{result.height}",
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
    }
    state.metrics.answered("openai", 200, time.perf_counter() - started)
    return JSONResponse(body)


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def stream_answer(
    state: ServerState, request: Request, generation: GenerationRequest, options: Answer, started: float
) -> Response:
    """Server-sent events, once the job has sent its first one: a request the pipeline refuses before its
    first step (a size, a strength) is answered 4xx as without streaming, not 200 and an ``error`` event."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[StepEvent | GeneratedImage] = asyncio.Queue()

    def listener(event: StepEvent | GeneratedImage) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    try:
        job = state.engine.submit(generation, listener)
    except Exception as error:  # noqa: BLE001 - answered in OpenAI's error shape
        failure = answered_failure(state.metrics, "openai", error, PARAMS, started)
        raise failure from None
    waiting = asyncio.ensure_future(wait_for_job(state.engine, job, request, state.settings.timeout))
    first = asyncio.ensure_future(events.get())
    try:
        await asyncio.wait({first, waiting}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        first.cancel()
        waiting.cancel()
        state.engine.remove(job, "the client disconnected")
        raise
    refused = None if first.done() else waiting.exception()
    if refused is not None:
        first.cancel()
        if isinstance(refused, ClientGone):
            state.metrics.answered("openai", 499, time.perf_counter() - started)
            return Response(status_code=499)
        failure = answered_failure(state.metrics, "openai", refused, PARAMS, started)
        raise failure from None
    return StreamingResponse(
        stream_events(state, request, job, events, first, waiting, options, started),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def stream_events(
    state: ServerState,
    request: Request,
    job: Job,
    events: asyncio.Queue[StepEvent | GeneratedImage],
    getter: asyncio.Future[StepEvent | GeneratedImage],
    waiting: asyncio.Future[Result],
    options: Answer,
    started: float,
) -> AsyncIterator[bytes]:
    """The events as the OpenAI SDK parses them: a partial image per step (when asked), then one
    completed event per image; an error after the stream began is an ``error`` event."""
    base = {"quality": "auto", "background": "opaque", "output_format": options.image_format.lower()}
    partial_index = 0
    try:
        while True:
            either: set[asyncio.Future[Any]] = {getter, waiting}
            done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                while not events.empty():
                    done_event = events.get_nowait()
                    async for chunk in _emit(state, request, done_event, options, base, partial_index):
                        yield chunk
                break
            event = getter.result()
            async for chunk in _emit(state, request, event, options, base, partial_index):
                yield chunk
            if isinstance(event, StepEvent) and event.preview is not None:
                partial_index += 1
            getter = asyncio.ensure_future(events.get())
        result = waiting.result()
        state.metrics.images.inc(len(result.images))
        state.metrics.answered("openai", 200, time.perf_counter() - started)
    except ClientGone:
        state.metrics.answered("openai", 499, time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001
        failure = answered_failure(state.metrics, "openai", error, PARAMS, started)
        yield sse("error", {"type": "error", **openai_error_body(failure)})
    finally:
        getter.cancel()
        if not job.future.done():
            state.engine.remove(job, "the client disconnected")
        waiting.cancel()


async def _emit(
    state: ServerState,
    request: Request,
    event: StepEvent | GeneratedImage,
    options: Answer,
    base: dict[str, Any],
    partial_index: int,
) -> AsyncIterator[bytes]:
    now = int(time.time())
    if isinstance(event, StepEvent):
        if event.preview is None:
            return
        data = preview_bytes(event.preview)
        yield sse(
            f"{options.event_prefix}.partial_image",
            {
                "type": f"{options.event_prefix}.partial_image",
                "b64_json": base64.b64encode(data).decode("ascii"),
                "partial_image_index": partial_index,
                "created_at": now,
                "size": f"{event.preview.width}x{event.preview.height}",
                "step": event.step + 1,
                "steps": event.steps,
                "image_index": event.image_index,
                **base,
            },
        )
    else:
        item = image_data(state, request, event, options)
        yield sse(
            f"{options.event_prefix}.completed",
            {
                "type": f"{options.event_prefix}.completed",
                "created_at": now,
                "size": f"{event.image.width}x{event.image.height}",
                "seed": event.seed,
                "usage": {
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "total_tokens": 0,
                    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                },
                **item,
                **base,
            },
        )


@router.get("/images/files/{name}", name="image_file", include_in_schema=False)
async def image_file(name: str, request: Request) -> Response:
    state: ServerState = request.app.state.server
    found = state.store.get(name)
    if found is None:
        raise ApiError(404, "no such image (the server keeps the last few images only)", code="not_found")
    data, media_type = found
    return Response(data, media_type=media_type)
