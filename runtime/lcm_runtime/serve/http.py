"""What both API families share: errors as HTTP answers, pictures in and out, waiting for a job."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import Request
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..errors import BundleError, InputError, LCMError, NonFiniteError, first_line
from ..image_input import open_image
from .engine import Cancelled, Engine, GeneratedImage, Job, QueueFull, Result
from .metrics import Metrics

log = logging.getLogger("lcm_runtime.serve")

MAX_INPUT_PIXELS = 4096 * 4096  # an uploaded picture larger than this is refused before decoding
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXIF_USER_COMMENT, EXIF_IFD = 0x9286, 0x8769


@dataclass
class ApiError(Exception):
    """An answer that is not an image: the status, and the fields of OpenAI's error body."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Set where a generation request's answer is counted in the metrics, so the error handler that
    # renders it does not count it again.
    counted: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return self.message


def answered_failure(
    metrics: Metrics, api: str, error: BaseException, params: Mapping[str, str], started: float
) -> ApiError:
    """``error`` as the client's answer, counted in the metrics as a generation request's (and marked so)."""
    failure = api_error(error, params)
    metrics.answered(api, failure.status, time.perf_counter() - started)
    failure.counted = True
    return failure


def api_error(error: BaseException, params: Mapping[str, str]) -> ApiError:
    """A library error as the answer a client gets; ``params`` maps Python arguments to API fields."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, InputError):
        argument = error.argument or ""
        param = params.get(argument, argument) or None
        return ApiError(400, str(error), param=param, headers={"x-should-retry": "false"})
    if isinstance(error, QueueFull):
        return ApiError(429, str(error), type="rate_limit_error", code="queue_full", headers={"Retry-After": "5"})
    if isinstance(error, Cancelled):
        if error.reason == "interrupted":
            return ApiError(409, "the generation was interrupted", type="interrupted", code="interrupted")
        retry = {"Retry-After": "5"} if "timed out" in error.reason or "shutting down" in error.reason else {}
        return ApiError(503, error.reason, type="server_error", code="unavailable", headers=retry)
    if isinstance(error, BundleError):
        # What this bundle cannot do (no VAE encoder for image-to-image, ...): asking again won't help.
        return ApiError(400, str(error), code="unsupported", headers={"x-should-retry": "false"})
    if isinstance(error, NonFiniteError):
        return ApiError(500, str(error), type="server_error", code="non_finite", headers={"x-should-retry": "false"})
    if isinstance(error, LCMError):
        return ApiError(500, str(error), type="server_error", headers={"x-should-retry": "false"})
    log.exception("generation failed unexpectedly", exc_info=error)
    return ApiError(
        500,
        f"the server failed unexpectedly ({first_line(error)})",
        type="server_error",
        headers={"x-should-retry": "false"},
    )


def openai_error_body(error: ApiError) -> dict[str, object]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


# --- pictures in ----------------------------------------------------------------------------------


def decode_base64(text: object, param: str) -> bytes:
    """A base64 string, with or without a ``data:image/...;base64,`` prefix, as bytes."""
    if not isinstance(text, str) or not text:
        raise ApiError(400, f"{param} must be a base64-encoded image", param=param)
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{param} is not valid base64", param=param) from None


def open_picture(data: bytes, param: str) -> Image.Image:
    """Uploaded bytes -> a fully decoded, upright picture (``image_input.open_image``); a 400 for anything
    that is not a picture, or one larger than this server edits."""
    try:
        return open_image(data, param, max_pixels=MAX_INPUT_PIXELS)
    except InputError as error:
        raise ApiError(400, str(error), param=param) from None


def mask_from_alpha_or_white(mask: Image.Image) -> Image.Image:
    """OpenAI's mask convention (alpha 0 = edit) where the mask has transparent pixels; else white = edit.
    Returns white-repaints grayscale, what the inpainting pipeline takes."""
    try:
        has_alpha = mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info)
        if has_alpha:
            alpha = mask.convert("RGBA").getchannel("A")
            # A fully opaque alpha says nothing (a browser canvas always saves RGBA): read the colours then.
            if min(alpha.getdata()) < 255:
                return alpha.point(lambda value: 255 if value == 0 else 0)
        return mask.convert("L")
    except ValueError:  # a mode Pillow cannot convert (LAB, ...)
        raise ApiError(400, f"mask has the colour mode {mask.mode}; send a PNG mask", param="mask") from None


def fit_to_size(picture: Image.Image, width: int | None, height: int | None, mask: bool = False) -> Image.Image:
    if width is None or height is None or picture.size == (width, height):
        return picture
    return picture.resize((width, height), Image.Resampling.NEAREST if mask else Image.Resampling.LANCZOS)


# --- pictures out ---------------------------------------------------------------------------------


def output_format(value: object, param: str = "output_format") -> str:
    if value is None:
        return "PNG"
    if not isinstance(value, str) or value.lower() not in OUTPUT_FORMATS:
        raise ApiError(400, f"{param} must be png, jpeg or webp, got {value!r}", param=param)
    return OUTPUT_FORMATS[value.lower()]


def encode_image(generated: GeneratedImage, image_format: str = "PNG", compression: int | None = None) -> bytes:
    """The picture in ``image_format`` with lcm-run's parameters: a PNG text chunk, or EXIF UserComment
    (as A1111 writes JPEG and WebP). ``compression`` 0-100 (OpenAI's): quality = 100 - compression."""
    buffer = io.BytesIO()
    if image_format == "PNG":
        info = PngInfo()
        info.add_text("parameters", generated.parameters)
        level = 6 if compression is None else max(0, min(9, round(compression / 100 * 9)))
        generated.image.save(buffer, format="PNG", pnginfo=info, compress_level=level)
    else:
        exif = Image.Exif()
        exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = b"UNICODE\0" + generated.parameters.encode("utf-16-be")
        quality = 90 if compression is None else max(1, 100 - compression)
        generated.image.convert("RGB").save(buffer, format=image_format, quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def preview_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class ImageStore:
    """The last few images in memory, for ``response_format=url``: nothing is read from disk by name."""

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()

    def put(self, data: bytes, image_format: str) -> str:
        name = f"{secrets.token_urlsafe(12)}.{image_format.lower()}"
        self._items[name] = (data, MEDIA_TYPES[image_format])
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return name

    def get(self, name: str) -> tuple[bytes, str] | None:
        return self._items.get(name)


# --- waiting for a job ----------------------------------------------------------------------------


class ClientGone(Exception):
    """The client disconnected while its job waited or ran; nobody is left to answer."""


async def wait_for_job(engine: Engine, job: Job, request: Request, timeout: float) -> Result:
    """The job's result; its job is dropped (or stopped at the next step) if the client goes away
    or ``timeout`` seconds pass first."""
    waiting = asyncio.wrap_future(job.future)
    deadline = time.monotonic() + timeout
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=0.2)
        if done:
            return waiting.result()
        if await request.is_disconnected():
            engine.remove(job, "the client disconnected")
            raise ClientGone()
        if time.monotonic() > deadline:
            engine.remove(job, f"timed out after {timeout:g} s (--timeout)")
            raise ApiError(
                503,
                f"the request timed out after {timeout:g} s waiting for the model; retry later",
                type="server_error",
                code="timeout",
                headers={"Retry-After": "10"},
            )
