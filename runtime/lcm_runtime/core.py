"""What every task shares: the opened bundle, its compiled models, and the stages of a recipe
(encode the prompt, encode pictures, denoise, decode, check, postprocess), each written once.

A task (pipeline.py, img2img.py, inpaint.py) is a thin subclass whose ``__call__`` lists the stages
in order. Policies live beside, not in the recipe: memory (memory.py), model release (release.py),
the VAE and tiling (vae_choice.py), argument checks (validation.py), guidance by the bundle's mode
(guidance.py: the guidance embedding, or classifier-free guidance with negative prompts).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import numpy as np
from PIL import Image

from . import validation
from .bundle import CFG, TINY_VAE_DECODER, UNET_SHALLOW
from .compile_cache import CompileCache, precision_folder
from .compiled_models import CompiledModels
from .deep_cache import DeepCacheUNet, check_interval
from .denoise import AfterStep, Denoised, StepCallback, StepEndCallback, check_finite, denoise
from .errors import BundleError, InputError
from .guidance import Guidance, UNetCall
from .image import to_pil, to_uint8, to_unit_range
from .loading import ModelFolder, open_model_folder
from .memory import check_fits
from .models import check_device, compile_config, resolve_cache_dir
from .noise import NoiseSource, draw_normal
from .openvino_runtime import ov
from .prompt_weighting import encode_prompts
from .release import resolve_release
from .safety_checker import (
    SafetyConcepts,
    black_out,
    clip_input_shape,
    clip_preprocess,
    load_preprocessor_config,
    nsfw_flags,
)
from .schedulers.scheduling_lcm import LCMScheduler
from .tokenizer import PromptTokenizer
from .vae_choice import choose_vae, choose_vae_tile, decoder_scaling_factor
from .vae_tiling import decode_tiled

Pipeline = TypeVar("Pipeline", bound="LCMPipelineBase")


def steps_to_run(num_inference_steps: int, strength: float) -> int:
    """diffusers' get_timesteps: the last int(n * strength) steps of the n-step schedule."""
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    if kept < 1:
        raise InputError(
            f"strength={strength:g} runs int({num_inference_steps} x {strength:g}) = 0 of "
            f"num_inference_steps={num_inference_steps} steps; use strength >= "
            f"{1 / num_inference_steps:.3g} or more steps",
            argument="strength",
        )
    return kept


def with_extra_channels(unet: UNetCall, extra: np.ndarray) -> UNetCall:
    """The UNet on the sample with ``extra`` concatenated after it on the channel axis, as diffusers' inpaint
    pipeline feeds a 9-channel UNet each step; ``extra`` is tiled to the sample's batch, so classifier-free
    guidance's [uncond; cond] gets [extra; extra], as diffusers doubles the mask and masked-picture latents."""
    tiled: dict[int, np.ndarray] = {}

    def unet_with_extra(sample: np.ndarray, timestep: int) -> np.ndarray:
        batch = sample.shape[0]
        if batch not in tiled:
            tiled[batch] = np.concatenate([extra] * (batch // len(extra))) if batch > len(extra) else extra
        return unet(np.concatenate([sample, tiled[batch]], axis=1), timestep)

    return unet_with_extra


@dataclass
class LCMPipelineOutput:
    images: list[Image.Image] | np.ndarray
    timings: dict[str, float | list[float]] = field(default_factory=dict)
    nsfw_content_detected: list[bool] | None = None  # None when the bundle has no safety checker or it is off


@dataclass(frozen=True, eq=False)
class SafetyParts:
    concepts: SafetyConcepts
    preprocessor: dict[str, Any]


@dataclass
class SharedParts:
    """What pipelines made with ``from_pipe`` share: one bundle, one OpenVINO core, one set of compiled models."""

    folder: ModelFolder
    core: Any
    device: str
    precision: str
    cache_dir: Any
    models: CompiledModels
    tokenizer: PromptTokenizer
    vae: str
    execution_default: str  # the precision the models will run at: "auto" resolved for the device
    safety: SafetyParts | None = None  # the bundle's safety checker, if it has one
    deep_cache_interval: int = 1  # DeepCache (deep_cache.py): a full UNet step every this many; 1 = off


def execution_precision_of(core: Any, device: str, precision: str) -> str:
    """What "auto" means on this device (bf16 on CPUs with AMX or avx512_bf16); f32 when unknown,
    which makes the memory estimate err on the large side."""
    if precision != "auto":
        return precision
    try:
        return str(core.get_property(device, "INFERENCE_PRECISION_HINT").get_type_name())
    except Exception:  # virtual devices (AUTO, HETERO) have no such property
        return "f32"


class Run:
    """One call's timings, and the compile time spent during it."""

    def __init__(self, models: CompiledModels) -> None:
        self.models = models
        self.timings: dict[str, float | list[float]] = {}
        self._compiled_before = models.compile_seconds

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.timings[stage] = float(self.timings.get(stage, 0.0)) + time.perf_counter() - started  # type: ignore[arg-type]

    def finish(self) -> dict[str, float | list[float]]:
        self.timings["compile"] = self.models.compile_seconds - self._compiled_before
        return self.timings


class LCMPipelineBase:
    def __init__(
        self,
        folder: ModelFolder,
        device: str = "CPU",
        precision: str = "auto",
        cache_dir: str | os.PathLike[str] | bool | None = None,
        vae: str | None = None,
        fast: bool = False,
        release_after_use: Collection[str] | str = (),
        safety_checker: bool = True,
        max_images_per_call: int = validation.DEFAULT_MAX_IMAGES,
        deep_cache_interval: int = 1,
    ) -> None:
        vae = choose_vae(folder, vae, fast)
        deep_cache_interval = check_interval(folder, deep_cache_interval)
        core = ov.Core()
        check_device(core, device)
        config = compile_config(precision)
        execution_default = execution_precision_of(core, device, precision)
        resolved_cache = resolve_cache_dir(cache_dir)
        if resolved_cache is not None:
            resolved_cache = precision_folder(resolved_cache, execution_default)
            try:
                resolved_cache.mkdir(parents=True, exist_ok=True)
                core.set_property({"CACHE_DIR": str(resolved_cache)})
            except OSError:
                resolved_cache = None  # an unwritable cache only costs start-up time
        compile_cache = CompileCache(resolved_cache) if resolved_cache is not None else None
        models = CompiledModels(
            folder,
            core,
            device,
            config,
            compile_cache,
            vae_component="vae_decoder" if vae == "full" else TINY_VAE_DECODER,
            release_after_use=resolve_release(release_after_use, vae),
            deep_cache=deep_cache_interval > 1,
        )
        tokenizer = PromptTokenizer.from_file(folder.tokenizer_file, folder.facts.text_max_length)
        self._adopt(
            SharedParts(
                folder=folder,
                core=core,
                device=device,
                precision=precision,
                cache_dir=resolved_cache,
                models=models,
                tokenizer=tokenizer,
                vae=vae,
                execution_default=execution_default,
                safety=self._load_safety(folder),
                deep_cache_interval=deep_cache_interval,
            ),
            safety_checker,
            max_images_per_call,
        )

    def _adopt(self, parts: SharedParts, safety_checker: bool, max_images_per_call: int) -> None:
        self.parts = parts
        self.folder, self.facts, self.models = parts.folder, parts.folder.facts, parts.models
        self.core, self.device, self.precision, self.cache_dir = (
            parts.core,
            parts.device,
            parts.precision,
            parts.cache_dir,
        )
        self.tokenizer, self.vae = parts.tokenizer, parts.vae
        self.deep_cache_interval = parts.deep_cache_interval
        self.execution_default = parts.execution_default
        self.vae_scaling_factor = decoder_scaling_factor(self.folder, self.vae)
        self.safety_checker = bool(safety_checker) and parts.safety is not None
        self.max_images_per_call = validation.whole_number(max_images_per_call, "max_images_per_call", 1, 1024)
        # A scheduler per pipeline: it holds the state of a call (timesteps, step index).
        self.scheduler = LCMScheduler(self.folder.scheduler, self.folder.scheduler_tables)

    @staticmethod
    def _load_safety(folder: ModelFolder) -> SafetyParts | None:
        concepts = SafetyConcepts.load(folder.root)
        return None if concepts is None else SafetyParts(concepts, load_preprocessor_config(folder.root))

    @classmethod
    def from_pretrained(
        cls: type[Pipeline],
        path: str | os.PathLike[str],
        device: str = "CPU",
        precision: str = "auto",
        cache_dir: str | os.PathLike[str] | bool | None = None,
        vae: str | None = None,
        fast: bool = False,
        release_after_use: Collection[str] | str = (),
        safety_checker: bool = True,
        max_images_per_call: int = validation.DEFAULT_MAX_IMAGES,
        deep_cache_interval: int = 1,
    ) -> Pipeline:
        """Open a bundle from lcm-export (or a folder from optimum-cli). ``cache_dir=False`` disables
        OpenVINO's compiled-model cache; None uses $LCM_CACHE_DIR or ~/.cache/lcm-openvino.
        ``vae="tiny"`` decodes with the bundle's TAESD decoder (lcm-export --tiny-vae): much faster.
        ``fast=True`` needs a bundle from ``lcm-export --fast`` (INT8 UNet and TAESD) and uses both.
        ``release_after_use`` names models ("text_encoder", "unet", "vae_decoder", "vae_encoder") to
        free as soon as a call is done with them, for processes that make one call; ``"one-call"``
        frees what pays (``release.one_call_releases``: the text encoder, and the UNet before a
        full-VAE decode), as lcm-run does. A further call imports the released ones again (the UNet:
        about 1.3 s with a filled compile cache). ``safety_checker=False`` skips the bundle's
        safety checker. ``max_images_per_call`` bounds prompts x images per prompt (16).
        ``deep_cache_interval=N`` (N > 1, a bundle from ``lcm-export --deep-cache`` or ``--fast``) runs the
        full UNet every N-th step and between them only its shallow path on the deep features the last
        full step left (DeepCache, deep_cache.py): faster, approximate."""
        return cls(
            open_model_folder(path),
            device=device,
            precision=precision,
            cache_dir=cache_dir,
            vae=vae,
            fast=fast,
            release_after_use=release_after_use,
            safety_checker=safety_checker,
            max_images_per_call=max_images_per_call,
            deep_cache_interval=deep_cache_interval,
        )

    @classmethod
    def from_pipe(
        cls: type[Pipeline],
        pipe: LCMPipelineBase,
        safety_checker: bool | None = None,
        max_images_per_call: int | None = None,
    ) -> Pipeline:
        """Another task on the same bundle, sharing ``pipe``'s compiled models: nothing is compiled
        or loaded twice (``LCMImg2ImgPipeline.from_pipe(text_pipe)``, and every other direction)."""
        other = cls.__new__(cls)
        other._adopt(
            pipe.parts,
            pipe.safety_checker if safety_checker is None else safety_checker,
            pipe.max_images_per_call if max_images_per_call is None else max_images_per_call,
        )
        return other

    def execution_precision(self) -> dict[str, str]:
        """The precision each compiled model runs at ("auto" resolves per device: bf16 on CPUs with
        AMX or avx512_bf16). Empty until the first call compiles the models."""
        return {name: facts.precision for name, facts in self.models.facts.items()}

    def started_from_cache_index(self) -> dict[str, bool]:
        """Per compiled model: whether it was imported through the compile cache's index (no IR read,
        no model hash) rather than compiled. Empty until the first call compiles the models."""
        return {name: facts.from_cache_index for name, facts in self.models.facts.items()}

    # --- argument checks shared by the tasks -------------------------------------------------------

    def check_request(
        self,
        prompt: str | Sequence[str],
        num_images_per_prompt: int,
        guidance_scale: float | None,
        output_type: str,
        prompt_syntax: str = "diffusers",
        negative_prompt: str | Sequence[str] | None = None,
        guidance_rescale: float = 0.0,
    ) -> tuple[list[str], int, Guidance]:
        """The prompts, images per prompt and the call's guidance (guidance.py: the scale, the bundle's
        default when None, and for classifier-free guidance the negative prompts)."""
        validation.prompt_syntax(prompt_syntax)
        prompts = validation.prompt_list(prompt, self.max_images_per_call)
        per_prompt = validation.image_count(num_images_per_prompt, len(prompts), self.max_images_per_call)
        guidance = Guidance.plan(self.facts, guidance_scale, guidance_rescale, negative_prompt, len(prompts))
        validation.output_type(output_type)
        return prompts, per_prompt, guidance

    def check_unet_runs(self, task: str) -> None:
        """An inpainting UNet (the mask and the masked picture's latents as extra inputs) runs inpainting
        only: diffusers' text-to-image and image-to-image pipelines fail on one with a shape error."""
        if self.facts.inpainting_unet:
            raise BundleError(
                f"{self.folder.root} has an inpainting UNet ({self.facts.unet_channels} input channels: the "
                f"latents, the mask and the masked picture), which runs inpainting only, not {task}; pass an image "
                "and a mask (LCMInpaintPipeline, lcm-run --image --mask), or use a bundle of a non-inpainting model"
            )

    def check_size(
        self, height: int | None, width: int | None, batch: int, encode: bool = False, unet_batch: int | None = None
    ) -> tuple[int, int]:
        """The image size (the model's native one when None), refused when the call would not fit in
        memory; ``unet_batch``: the UNet's batch when it is not ``batch`` (classifier-free guidance)."""
        height = self.facts.default_image_size if height is None else height
        width = self.facts.default_image_size if width is None else width
        height, width = validation.image_size(height, width, self.folder.size_multiple, self.folder.min_side)
        needed = ["text_encoder", "unet", self.models.vae_component] + (["vae_encoder"] if encode else [])
        if self.safety_checker:
            needed.append("safety_checker")
        if self.models.deep_cache:
            needed.append(UNET_SHALLOW)
        loaded = {self.models.component_of(name) for name in self.models.in_memory()}
        check_fits(
            self.folder,
            self.vae,
            batch,
            height,
            width,
            self.execution_default,
            [component for component in needed if component not in loaded],
            encode=encode,
            unet_batch=unet_batch,
        )
        return height, width

    @overload
    def default_steps(self, num_inference_steps: int | None, timesteps: None) -> int: ...
    @overload
    def default_steps(self, num_inference_steps: int | None, timesteps: Sequence[int] | None) -> int | None: ...
    def default_steps(self, num_inference_steps: int | None, timesteps: Sequence[int] | None) -> int | None:
        if num_inference_steps is None and timesteps is None:
            return self.facts.default_steps
        return num_inference_steps

    def schedule_last_steps(
        self,
        num_inference_steps: int | None,
        strength: float,
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """diffusers' get_timesteps (StableDiffusionImg2Img/InpaintPipeline): the full n-step schedule, of
        which only the last int(n * strength) steps run."""
        self.scheduler.set_timesteps(num_inference_steps, original_inference_steps, timesteps)
        steps = self.scheduler.num_inference_steps
        self.scheduler.set_begin_index(steps - steps_to_run(steps, strength))

    def schedule_img2img(
        self,
        guidance: Guidance,
        num_inference_steps: int | None,
        strength: float,
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """Image-to-image's schedule, as the diffusers pipeline of the bundle's guidance mode: embedded
        (LatentConsistencyModelImg2ImgPipeline), all n steps on the origin grid shortened by strength;
        cfg (StableDiffusionImg2ImgPipeline with LCMScheduler), the last int(n * strength) steps."""
        if guidance.mode == CFG:
            self.schedule_last_steps(num_inference_steps, strength, original_inference_steps, timesteps)
        else:
            self.scheduler.set_timesteps(num_inference_steps, original_inference_steps, timesteps, strength=strength)

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        scale = self.facts.vae_scale_factor
        return (batch, self.facts.latent_channels, height // scale, width // scale)

    # --- the stages --------------------------------------------------------------------------------

    def encode_prompt(
        self,
        prompts: list[str],
        per_prompt: int,
        run: Run,
        prompt_syntax: str = "diffusers",
        guidance: Guidance | None = None,
    ) -> np.ndarray:
        """Prompt -> tokens -> embeddings: one text-encoder pass per prompt, repeated per image. With
        ``prompt_syntax="a1111"``, one pass per 77-token chunk, weighted (prompt_weighting.py): the
        embeddings are 77 x chunks long, every prompt padded to the longest's chunk count. With
        classifier-free guidance the negative prompts are encoded too (padded to the same chunk count,
        as A1111) and come first, [uncond; cond], as diffusers concatenates them."""
        negatives = list(guidance.negative_prompts or ()) if guidance is not None else []
        texts = prompts + negatives
        text_encoder = self.models.text_encoder()
        with run.timed("text_encoder"):
            if prompt_syntax == "a1111":
                embeddings = encode_prompts(texts, self.tokenizer, text_encoder)
            else:
                token_ids = self.tokenizer(texts)
                embeddings = np.concatenate([text_encoder(ids[None]) for ids in token_ids])
            embeddings = np.repeat(embeddings, per_prompt, axis=0)
            if negatives:
                conditional, unconditional = np.split(embeddings, [len(prompts) * per_prompt])
                embeddings = np.concatenate([unconditional, conditional])
        del text_encoder
        self.models.release("text_encoder")
        return embeddings

    def encode_images(self, pixels: np.ndarray, noise: NoiseSource, run: Run) -> np.ndarray:
        """Pictures in [-1, 1] -> latents: the VAE posterior's sample (one draw for the whole batch,
        as diffusers' retrieve_latents), times the VAE's scaling factor. One picture per pass."""
        encoder = self.models.vae_encoder(pixels.shape[2], pixels.shape[3])
        with run.timed("vae_encode"):
            parameters = np.concatenate([encoder(picture[None]) for picture in pixels])
            mean, logvar = np.split(parameters, 2, axis=1)
            std = np.exp(np.float32(0.5) * np.clip(logvar, np.float32(-30), np.float32(20)))
            sample = mean + std * draw_normal(noise, mean.shape)
            latents: np.ndarray = np.float32(self.facts.vae_scaling_factor) * sample
        del encoder
        self.models.release("vae_encoder")
        check_finite(latents, "VAE encoder")
        return latents.astype(np.float32, copy=False)

    def denoise(
        self,
        latents: np.ndarray,
        embeddings: np.ndarray,
        guidance: Guidance,
        noise: NoiseSource,
        callback: StepCallback | None,
        run: Run,
        after_step: AfterStep | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        extra_channels: np.ndarray | None = None,
    ) -> Denoised:
        """The consistency steps from ``latents`` with the prompt's embeddings, guided as ``guidance`` says:
        the guidance embedding bound (embedded), or the UNet on [uncond, cond] combined per step (cfg).
        ``extra_channels`` (one per image) follow the latents into the UNet at every step (with_extra_channels).
        With DeepCache, the steps between full ones run the shallow UNet (deep_cache.py)."""
        batch, _, latent_h, latent_w = latents.shape
        shapes = (guidance.unet_batch(batch), latent_h, latent_w, embeddings.shape[1])
        full = self.models.unet(*shapes)
        full.bind_conditioning(embeddings, guidance.timestep_cond(batch))
        unet: UNetCall = full
        if self.deep_cache_interval > 1:
            shallow = self.models.unet_shallow(*shapes)
            shallow.bind_conditioning(embeddings, guidance.timestep_cond(batch))
            unet = DeepCacheUNet(full, shallow, self.deep_cache_interval)
            del shallow
        del full
        result = denoise(
            guidance.guided(unet if extra_channels is None else with_extra_channels(unet, extra_channels)),
            self.scheduler,
            latents,
            noise,
            callback=callback,
            after_step=after_step,
            callback_on_step_end=callback_on_step_end,
        )
        run.timings["unet"] = result.step_seconds
        del unet
        self.models.release("unet")
        return result

    def decode(self, latents: np.ndarray, tiled_vae: bool | None, run: Run) -> np.ndarray:
        """Latents -> pictures in [-1, 1], one at a time to bound peak memory; tiled when large."""
        _, _, latent_h, latent_w = latents.shape
        scale = self.facts.vae_scale_factor
        tile = choose_vae_tile(
            self.folder, self.vae, latent_h * scale, latent_w * scale, tiled_vae, self.execution_default
        )
        decoder = self.models.vae_decoder(
            *((latent_h, latent_w) if tile is None else (min(tile, latent_h), min(tile, latent_w)))
        )
        with run.timed("vae_decode"):
            scaled = latents / np.float32(self.vae_scaling_factor)
            if tile is None:
                decoded = np.concatenate([decoder(latent[None]) for latent in scaled])
            else:
                decoded = np.concatenate(
                    [decode_tiled(decoder, latent[None], tile, tile // 4, scale) for latent in scaled]
                )
        del decoder
        self.models.release("vae_decoder")
        check_finite(decoded, "VAE decoder")
        return decoded

    def check(self, images: np.ndarray, run: Run) -> tuple[np.ndarray, list[bool] | None]:
        """The bundle's safety checker (diffusers' StableDiffusionSafetyChecker) on the uint8 images, as
        diffusers runs it; flagged images become black. One image per pass: one compiled shape."""
        safety = self.parts.safety
        if not self.safety_checker or safety is None:
            return images, None
        checker = self.models.safety_checker(clip_input_shape(safety.preprocessor, 1))
        with run.timed("safety_checker"):
            clip_input = clip_preprocess(to_uint8(images), safety.preprocessor)
            embeddings = np.concatenate([checker(picture[None]) for picture in clip_input])
            flagged = nsfw_flags(embeddings, safety.concepts)
        del checker
        self.models.release("safety_checker")
        return black_out(images, flagged), flagged

    def postprocess(self, decoded: np.ndarray, output_type: str, run: Run) -> LCMPipelineOutput:
        """Decoded [-1, 1] NCHW -> checked images, as PIL or float32 NHWC in [0, 1] like diffusers."""
        with run.timed("to_image"):
            images = to_unit_range(decoded)
        images, flagged = self.check(images, run)
        with run.timed("to_image"):
            output = to_pil(images) if output_type == "pil" else images
        return LCMPipelineOutput(images=output, timings=run.finish(), nsfw_content_detected=flagged)
