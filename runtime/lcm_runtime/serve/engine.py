"""The server's engine: one bundle loaded once, three tasks sharing its compiled models, and one worker
thread that runs the queued generations one at a time.

No web framework here: the API modules turn HTTP requests into ``GenerationRequest`` and wait for
the ``Job``. One generation at a time, because OpenVINO already spreads one inference over every
core: two at once only split the cores and double the memory (docs/serving.md).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core import LCMPipelineOutput
from ..deep_cache import check_interval
from ..denoise import StepEndCallback
from ..errors import InputError, LCMError
from ..guidance import Guidance
from ..img2img import DEFAULT_STRENGTH as IMG2IMG_STRENGTH
from ..img2img import LCMImg2ImgPipeline
from ..inpaint import DEFAULT_STRENGTH as INPAINT_STRENGTH
from ..inpaint import LCMInpaintPipeline
from ..loading import open_model_folder
from ..models import check_device, compile_config
from ..noise import SEED_LIMIT, image_seed
from ..openvino_runtime import ov
from ..outputs import png_parameters
from ..pipeline import LCMPipeline
from ..vae_choice import choose_vae
from .preview import Previewer

PROMPT_SYNTAX = "a1111"  # what a prompt box's users expect, as lcm-run


class QueueFull(LCMError):
    """Too many requests are waiting; the client should retry later."""


class Cancelled(LCMError):
    """The job was cancelled (client gone, timeout, interrupt or shutdown) before it finished."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class GenerationRequest:
    """One request in the APIs' common terms. ``mask``: white repaints (the APIs convert theirs)."""

    prompt: str
    negative_prompt: str | None = None
    guidance_rescale: float = 0.0  # classifier-free guidance bundles only (lcm-export --lcm-lora)
    n: int = 1
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None  # None: random; image k gets seed + k, as A1111
    strength: float | None = None
    image: Image.Image | None = None
    image_hash: str | None = None
    mask: Image.Image | None = None
    mask_hash: str | None = None
    previews: bool = False  # send a preview of every step's denoised latents to the listener


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    parameters: str  # the A1111 parameters text lcm-run writes into its PNGs
    flagged: bool | None


@dataclass
class Result:
    images: list[GeneratedImage]
    steps: int
    guidance: float
    width: int
    height: int
    strength: float | None
    seconds: float


@dataclass
class StepEvent:
    image_index: int  # which of the request's n images
    step: int  # 0-based
    steps: int
    preview: Image.Image | None


Listener = Callable[[StepEvent | GeneratedImage], None]


@dataclass
class Job:
    request: GenerationRequest
    listener: Listener | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    future: Future[Result] = field(default_factory=Future)
    state: str = "queued"  # queued, running, done, failed, cancelled
    cancel_reason: str | None = None
    image_index: int = 0
    step: int = 0
    steps: int = 0
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self, reason: str) -> None:
        """Stop the job: dropped if still queued, stopped at its next step if running."""
        if self.cancel_reason is None:
            self.cancel_reason = reason


def image_digest(data: bytes) -> str:
    """The 12 hex digits of a sha256 that lcm-run's PNG metadata records for an input picture."""
    return hashlib.sha256(data).hexdigest()[:12]


class Engine:
    """Loads a bundle and runs generations from a bounded queue, one at a time, on a worker thread."""

    def __init__(
        self,
        bundle: str | Path,
        device: str = "CPU",
        precision: str = "auto",
        max_queue: int = 16,
        max_images: int = 4,
        max_side: int = 2048,
        safety_checker: bool = True,
        cache_dir: str | Path | bool | None = None,
        on_step_seconds: Callable[[float], None] | None = None,
        threads: int | None = None,
        vae: str | None = None,
        fast: bool = False,
        deep_cache_interval: int = 1,
    ) -> None:
        self.bundle, self.device, self.precision = Path(bundle), device, precision
        self.folder = open_model_folder(self.bundle)  # a bad bundle fails here, before the server starts
        # So do a precision or a device the pipeline would refuse: a server that can never load would
        # otherwise answer every request 503.
        compile_config(precision)
        check_device(ov.Core(), device)
        # So do options the bundle cannot run (--fast without its INT8 UNet, --deep-cache without unet_shallow).
        self.vae = choose_vae(self.folder, vae, fast)
        self.fast = fast
        self.deep_cache_interval = check_interval(self.folder, deep_cache_interval)
        self.max_queue, self.max_images, self.max_side = max_queue, max_images, max_side
        self.safety_checker, self.cache_dir = safety_checker, cache_dir
        self.on_step_seconds = on_step_seconds
        self.threads = threads  # OpenVINO's inference threads; None: every core (a replica of several gets fewer)
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.text: LCMPipeline | None = None
        self.img2img: LCMImg2ImgPipeline | None = None
        self.inpaint: LCMInpaintPipeline | None = None
        self.previewer: Previewer | None = None
        self.images_made = 0
        self.running: Job | None = None
        self._queue: deque[Job] = deque()
        self._lock = threading.Condition()
        self._accepting = True
        self._worker = threading.Thread(target=self._work, name="lcm-engine", daemon=True)

    # --- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load and compile in the worker thread; ``ready`` is set once the first request can run."""
        self._worker.start()

    def load(self) -> None:
        self.text = LCMPipeline(
            self.folder,
            device=self.device,
            precision=self.precision,
            cache_dir=self.cache_dir,
            safety_checker=self.safety_checker,
            max_images_per_call=self.max_images,
            vae=self.vae,
            fast=self.fast,
            deep_cache_interval=self.deep_cache_interval,
        )
        if self.threads is not None:
            self.text.core.set_property(self.device, {"INFERENCE_NUM_THREADS": self.threads})
        self.img2img = LCMImg2ImgPipeline.from_pipe(self.text)
        self.inpaint = LCMInpaintPipeline.from_pipe(self.text)
        self.previewer = Previewer(self.text)
        self._compile_default_shapes()

    def _compile_default_shapes(self) -> None:
        """Compile every model at the bundle's native size, so the first request only runs."""
        assert self.text is not None
        pipe, facts = self.text, self.text.facts
        latent = facts.default_image_size // facts.vae_scale_factor
        pipe.models.text_encoder()
        pipe.models.unet(1, latent, latent)
        if pipe.deep_cache_interval > 1:
            pipe.models.unet_shallow(1, latent, latent)
        pipe.models.vae_decoder(latent, latent)
        if pipe.folder.xml("vae_encoder").is_file():
            pipe.models.vae_encoder(facts.default_image_size, facts.default_image_size)
        if pipe.safety_checker and pipe.parts.safety is not None:
            from ..safety_checker import clip_input_shape

            pipe.models.safety_checker(clip_input_shape(pipe.parts.safety.preprocessor, 1))

    def alive(self) -> bool:
        """The worker thread runs (or has not been started yet)."""
        return self._worker.is_alive() or not self.ready.is_set()

    def drain(self, reason: str = "the server is shutting down") -> None:
        """Stop taking jobs and cancel the queued ones; the running job finishes."""
        with self._lock:
            self._accepting = False
            queued = list(self._queue)
            self._queue.clear()
            self._lock.notify_all()
        for job in queued:
            job.cancel(reason)
            self._finish(job, exception=Cancelled(reason))

    # --- jobs --------------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, listener: Listener | None = None) -> Job:
        """Queue a request, after the checks that need no model; raises InputError or QueueFull."""
        self.check(request)
        job = Job(request, listener)
        with self._lock:
            if not self._accepting:
                raise Cancelled("the server is shutting down")
            # max_queue counts requests that wait: one that runs at once (nothing running or queued) is taken.
            busy = self.running is not None or bool(self._queue) or not self.ready.is_set()
            if busy and len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting, the most this server queues; retry later")
            self._queue.append(job)
            self._lock.notify_all()
        return job

    def check(self, request: GenerationRequest) -> None:
        # An empty prompt is an image of nothing in particular, as in diffusers and A1111 (img2img touch-ups);
        # the OpenAI routes ask for one, as OpenAI does.
        if not isinstance(request.prompt, str):
            raise InputError("prompt must be a string", argument="prompt")
        # The bundle's guidance mode decides: a distilled LCM refuses a negative prompt, a cfg one takes it.
        Guidance.plan(self.folder.facts, request.guidance, request.guidance_rescale, request.negative_prompt or None)
        if not 1 <= request.n <= self.max_images:
            raise InputError(f"n must be from 1 to {self.max_images}, got {request.n}", argument="n")
        for name in ("width", "height"):
            side = getattr(request, name)
            if side is not None and side > self.max_side:
                raise InputError(f"{name} must be at most {self.max_side} on this server, got {side}", argument=name)
        if request.image is not None and request.width is None and request.height is None:
            # Image-to-image makes a picture of the image's own size: it is bounded as a requested size is.
            width, height = request.image.size
            if max(width, height) > self.max_side:
                raise InputError(
                    f"the image is {width}x{height}, and this server makes pictures of at most {self.max_side} "
                    "pixels a side; send a smaller image or ask for a size",
                    argument="image",
                )
        if request.seed is not None and not 0 <= request.seed < SEED_LIMIT:
            raise InputError(f"seed must be from 0 to {SEED_LIMIT - 1} (or -1 for random)", argument="seed")
        if request.mask is not None and request.image is None:
            raise InputError("a mask needs an image to repaint", argument="mask")
        if request.image is not None and request.mask is not None and request.image.size != request.mask.size:
            raise InputError(
                f"the mask is {request.mask.width}x{request.mask.height} but the image is "
                f"{request.image.width}x{request.image.height}; send a mask of the image's size",
                argument="mask",
            )

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def remove(self, job: Job, reason: str) -> None:
        """Cancel a job: out of the queue now, or stopped at the running job's next step."""
        job.cancel(reason)
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                removed = True
            else:
                removed = False
        if removed:
            self._finish(job, exception=Cancelled(reason))

    def interrupt(self) -> bool:
        """Stop the running job at its next step (A1111's interrupt); False if none runs."""
        job = self.running
        if job is None:
            return False
        job.cancel("interrupted")
        return True

    # --- the worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self.load()
        except Exception as error:  # noqa: BLE001 - reported on /health and by every request
            from ..errors import first_line

            self.load_error = first_line(error)
            self.ready.set()
            self.drain(f"the model did not load: {self.load_error}")
            return
        self.ready.set()
        while True:
            with self._lock:
                while not self._queue:
                    if not self._accepting:
                        return
                    self._lock.wait()
                job = self._queue.popleft()
                self.running = job
            try:
                if job.cancel_reason is not None:
                    raise Cancelled(job.cancel_reason)
                job.state = "running"
                result = self._run(job)
            except BaseException as error:  # noqa: BLE001 - every failure goes to the waiting request
                self._finish(job, exception=error)
            else:
                self._finish(job, result=result)
            finally:
                with self._lock:
                    self.running = None

    def _finish(self, job: Job, result: Result | None = None, exception: BaseException | None = None) -> None:
        if job.future.done():
            return
        if exception is not None:
            job.state = "cancelled" if isinstance(exception, Cancelled) else "failed"
            job.future.set_exception(exception)
        else:
            job.state = "done"
            job.future.set_result(result)  # type: ignore[arg-type]

    def _run(self, job: Job) -> Result:
        assert self.text is not None and self.img2img is not None and self.inpaint is not None
        request = job.request
        started = time.perf_counter()
        base_seed = secrets.randbelow(SEED_LIMIT) if request.seed is None else request.seed
        steps = request.steps if request.steps is not None else self.text.facts.default_steps
        guidance = request.guidance if request.guidance is not None else self.text.facts.default_guidance_scale
        strength = None
        if request.image is not None:
            default = INPAINT_STRENGTH if request.mask is not None else IMG2IMG_STRENGTH
            strength = default if request.strength is None else request.strength
        job.steps = steps
        images = []
        for index in range(request.n):
            job.image_index, job.step = index, 0
            seed = image_seed(base_seed, index)
            output = self._one_image(job, index, seed, strength)
            picture = output.images[0]
            flagged = output.nsfw_content_detected[0] if output.nsfw_content_detected else None
            generated = GeneratedImage(
                image=picture,
                seed=seed,
                parameters=self._parameters(request, picture, seed, steps, guidance, strength, index, flagged),
                flagged=flagged,
            )
            images.append(generated)
            self.images_made += 1
            if job.listener is not None:
                job.listener(generated)
        width, height = images[0].image.size
        return Result(images, steps, guidance, width, height, strength, time.perf_counter() - started)

    def _one_image(self, job: Job, index: int, seed: int, strength: float | None) -> LCMPipelineOutput:
        """Image ``index`` of the job, by the task its inputs call for."""
        assert self.text is not None and self.img2img is not None and self.inpaint is not None
        request = job.request
        common: dict[str, Any] = dict(
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            negative_prompt=request.negative_prompt or None,
            guidance_rescale=request.guidance_rescale,
            generator=seed,
            prompt_syntax=PROMPT_SYNTAX,
            callback_on_step_end=self._step_end(job, index),
        )
        if request.image is None:
            return self.text(request.prompt, height=request.height, width=request.width, **common)
        assert strength is not None
        if request.mask is None:
            return self.img2img(request.prompt, image=request.image, strength=strength, **common)
        return self.inpaint(
            request.prompt,
            image=request.image,
            mask_image=request.mask,
            height=request.height,
            width=request.width,
            strength=strength,
            **common,
        )

    def _step_end(self, job: Job, index: int) -> StepEndCallback:
        """After each step: the step time to the metrics, progress, a cancellation check, the preview."""
        last_step = time.perf_counter()

        def step_end(step: int, total: int, denoised: np.ndarray) -> None:
            nonlocal last_step
            now = time.perf_counter()
            if self.on_step_seconds is not None:
                self.on_step_seconds(now - last_step)
            last_step = now
            job.step, job.steps = step + 1, total
            if job.cancel_reason is not None:
                raise Cancelled(job.cancel_reason)
            if job.listener is not None:
                wanted = job.request.previews and self.previewer is not None
                preview = self.previewer(denoised) if wanted and self.previewer is not None else None
                job.listener(StepEvent(index, step, total, preview))

        return step_end

    def _parameters(
        self,
        request: GenerationRequest,
        picture: Image.Image,
        seed: int,
        steps: int,
        guidance: float,
        strength: float | None,
        index: int,
        flagged: bool | None,
    ) -> str:
        pipe = self.text
        assert pipe is not None
        return png_parameters(
            request.prompt,
            steps=steps,
            guidance=guidance,
            seed=seed,
            width=picture.width,
            height=picture.height,
            model=pipe.folder.name,
            model_hash=pipe.folder.identity(),
            precision=pipe.execution_precision().get("unet", self.precision),
            device=self.device,
            vae=pipe.vae,
            index=index,
            count=request.n,
            strength=strength,
            image_hash=request.image_hash,
            mask_hash=request.mask_hash,
            safety_checker=("on" if pipe.safety_checker else "off" if pipe.parts.safety else None),
            flagged=flagged,
            prompt_syntax=PROMPT_SYNTAX,
            negative_prompt=request.negative_prompt or None,
            guidance_rescale=request.guidance_rescale,
            loras=pipe.folder.loras,
            deep_cache_interval=pipe.deep_cache_interval,
        )

    # --- what the APIs describe --------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.folder.name

    def defaults(self) -> dict[str, Any]:
        """The bundle's defaults, as the APIs and the page describe them."""
        facts = self.folder.facts
        return {
            "steps": facts.default_steps,
            "guidance": facts.default_guidance_scale,
            "size": facts.default_image_size,
        }
