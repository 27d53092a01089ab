"""Text-to-image with a Latent Consistency Model: prompt -> tokens -> embeddings -> latents -> image.

Mirrors diffusers' LatentConsistencyModelPipeline (0.42.1) step for step, so that with the same
random draws, FP32 weights and f32 precision it produces the same image.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

import numpy as np
from PIL import Image

from .bundle import INT8_PTQ, TINY_VAE_DECODER
from .compile_cache import CompileCache
from .compiled_models import CompiledModels
from .errors import BundleError, InputError
from .guidance import guidance_scale_embedding
from .image import to_pil, to_unit_range
from .loading import ModelFolder, open_model_folder
from .models import check_device, compile_config, resolve_cache_dir
from .noise import GeneratorLike, as_noise_source, draw_normal
from .openvino_runtime import ov
from .schedulers.scheduling_lcm import LCMScheduler, LCMSchedulerConfig
from .tokenizer import PromptTokenizer
from .vae_tiling import decode_tiled

StepCallback = Callable[[int, int, int], None]  # (step index, number of steps, timestep)
VAE_CHOICES = ("full", "tiny")
ONE_CALL = "one-call"  # release_after_use for a process that makes a single call, as lcm-run does


def one_call_releases(vae: str) -> tuple[str, ...]:
    """What a process making one call frees once used. The text encoder always: it is never needed
    again after the prompt. The UNet before a full-VAE decode: the peak drops by the UNet's weights,
    and the decode's ~400 MB of activations reuse the UNet's just-freed pages. On a VM slow to hand
    out memory the process never had, that saves up to 0.8 s; otherwise it costs the free, 0.12 s.
    TAESD needs little memory and the UNet sets the peak anyway: freeing it would only cost."""
    return ("text_encoder", "unet") if vae == "full" else ("text_encoder",)


@dataclass
class LCMPipelineOutput:
    images: list[Image.Image] | np.ndarray
    timings: dict[str, float | list[float]] = field(default_factory=dict)


def choose_vae(folder: ModelFolder, vae: str | None, fast: bool) -> str:
    """The VAE to decode with; ``fast`` is the preset of the levers that pay: the bundle's INT8 UNet
    (lcm-export --quantize-unet int8) and the TAESD decoder (lcm-export --tiny-vae)."""
    if vae is not None and vae not in VAE_CHOICES:
        raise InputError(f"vae must be 'full' or 'tiny', got {vae!r}")
    if fast:
        if vae == "full":
            raise InputError("--fast decodes with the tiny VAE; drop --vae full, or drop --fast")
        missing = [what for what, present in (("an INT8 UNet", folder.unet_precision == INT8_PTQ),
                                              ("a tiny VAE", folder.tiny_vae_config is not None)) if not present]
        if missing:
            raise BundleError(f"--fast needs {' and '.join(missing)}, which {folder.root} lacks; "
                              "re-export it with `lcm-export --fast SOURCE OUT`, or drop --fast")
        return "tiny"
    if vae == "tiny" and folder.tiny_vae_config is None:
        raise BundleError(f"{folder.root} has no tiny VAE; re-export with `lcm-export --tiny-vae madebyollin/taesd`, "
                          "or use --vae full")
    return vae or "full"


class LCMPipeline:
    def __init__(self, folder: ModelFolder, device: str = "CPU", precision: str = "auto",
                 cache_dir: str | os.PathLike | bool | None = None, vae: str | None = None, fast: bool = False,
                 release_after_use: Collection[str] | str = ()) -> None:
        self.folder = folder
        self.facts = folder.facts
        vae = choose_vae(folder, vae, fast)
        self.vae = vae
        if release_after_use == ONE_CALL:
            release_after_use = one_call_releases(vae)
        # diffusers divides by the decoding VAE's own scaling_factor: 1.0 for TAESD.
        self.vae_scaling_factor = (self.facts.vae_scaling_factor if vae == "full"
                                   else float(folder.tiny_vae_config.get("scaling_factor", 1.0)))
        self.device = device
        self.core = ov.Core()
        check_device(self.core, device)
        self.compile_config = compile_config(precision)
        self.precision = precision
        self.cache_dir = resolve_cache_dir(cache_dir)
        if self.cache_dir is not None:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                self.core.set_property({"CACHE_DIR": str(self.cache_dir)})
            except OSError:
                self.cache_dir = None  # an unwritable cache only costs start-up time
        self.compile_cache = CompileCache(self.cache_dir) if self.cache_dir is not None else None
        self.tokenizer = PromptTokenizer.from_file(folder.tokenizer_file, self.facts.text_max_length)
        self.scheduler = LCMScheduler(LCMSchedulerConfig.from_dict(folder.scheduler_config), folder.scheduler_tables)
        self.models = CompiledModels(folder, self.core, device, self.compile_config, self.compile_cache,
                                     vae_component="vae_decoder" if vae == "full" else TINY_VAE_DECODER,
                                     release_after_use=release_after_use)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "CPU", precision: str = "auto",
                        cache_dir: str | os.PathLike | bool | None = None, vae: str | None = None,
                        fast: bool = False, release_after_use: Collection[str] | str = ()) -> "LCMPipeline":
        """Open a bundle from lcm-export (or a folder from optimum-cli). ``cache_dir=False`` disables
        OpenVINO's compiled-model cache; None uses $LCM_CACHE_DIR or ~/.cache/lcm-openvino.
        ``vae="tiny"`` decodes with the bundle's TAESD decoder (lcm-export --tiny-vae): much faster.
        ``fast=True`` needs a bundle from ``lcm-export --fast`` (INT8 UNet and TAESD) and uses both.
        ``release_after_use`` names models ("text_encoder", "unet", "vae_decoder") to free as soon as
        a call is done with them, for processes that make one call; ``"one-call"`` frees what pays
        (``one_call_releases``: the text encoder, and the UNet before a full-VAE decode), as lcm-run
        does. A further call imports the released ones again (the UNet: about 1.3 s with a filled
        compile cache)."""
        return cls(open_model_folder(path), device=device, precision=precision, cache_dir=cache_dir, vae=vae, fast=fast,
                   release_after_use=release_after_use)

    def __call__(
        self,
        prompt: str | Sequence[str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        generator: GeneratorLike = None,
        output_type: str = "pil",
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        callback: StepCallback | None = None,
        tiled_vae: bool | None = None,
    ) -> LCMPipelineOutput:
        """Generate images, as diffusers' LatentConsistencyModelPipeline.__call__.

        ``tiled_vae``: decode in overlapping tiles of the model's native size to bound memory;
        None tiles only when an untiled decode would not fit in the free memory.
        """
        facts = self.facts
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        height = facts.default_image_size if height is None else height
        width = facts.default_image_size if width is None else width
        guidance_scale = facts.default_guidance_scale if guidance_scale is None else guidance_scale
        if num_inference_steps is None and timesteps is None:
            num_inference_steps = facts.default_steps
        self.check_inputs(prompts, height, width, guidance_scale, num_images_per_prompt, output_type)
        vae_tile = self._choose_vae_tile(height, width, tiled_vae)
        self.scheduler.set_timesteps(num_inference_steps, original_inference_steps, timesteps)
        noise = as_noise_source(generator)
        batch = len(prompts) * num_images_per_prompt
        timings: dict[str, float | list[float]] = {}

        latent_h, latent_w = height // facts.vae_scale_factor, width // facts.vae_scale_factor
        models = self.models
        compiled_before = models.compile_seconds

        # prompt -> tokens -> embeddings (one text-encoder pass per prompt, repeated per image)
        text_encoder = models.text_encoder()
        started = time.perf_counter()
        token_ids = self.tokenizer(prompts)
        embeddings = np.concatenate([text_encoder(ids[None]) for ids in token_ids])
        embeddings = np.repeat(embeddings, num_images_per_prompt, axis=0)
        guidance = np.full(batch, guidance_scale + facts.guidance_offset, dtype=np.float32)
        timestep_cond = guidance_scale_embedding(guidance, facts.time_cond_proj_dim)
        timings["text_encoder"] = time.perf_counter() - started
        del text_encoder
        models.release("text_encoder")

        # latents: initial noise, then one consistency step per timestep
        unet = models.unet(batch, latent_h, latent_w)
        unet.bind_conditioning(embeddings, timestep_cond)
        latents = draw_normal(noise, (batch, facts.latent_channels, latent_h, latent_w))
        step_times = []
        for index, timestep in enumerate(self.scheduler.timesteps):
            started = time.perf_counter()
            model_output = unet(latents, int(timestep))
            latents, denoised = self.scheduler.step(model_output, int(timestep), latents, noise)
            step_times.append(time.perf_counter() - started)
            if callback is not None:
                callback(index, len(self.scheduler.timesteps), int(timestep))
        timings["unet"] = step_times
        del unet
        models.release("unet")

        # latents -> image, one image at a time to bound peak memory
        vae_decoder = models.vae_decoder(*((latent_h, latent_w) if vae_tile is None
                                           else (min(vae_tile, latent_h), min(vae_tile, latent_w))))
        started = time.perf_counter()
        scaled = denoised / np.float32(self.vae_scaling_factor)
        if vae_tile is None:
            decoded = np.concatenate([vae_decoder(latent[None]) for latent in scaled])
        else:
            decoded = np.concatenate([decode_tiled(vae_decoder, latent[None], vae_tile, vae_tile // 4,
                                                   facts.vae_scale_factor) for latent in scaled])
        timings["vae_decode"] = time.perf_counter() - started
        del vae_decoder
        models.release("vae_decoder")
        timings["compile"] = models.compile_seconds - compiled_before

        started = time.perf_counter()
        images = to_unit_range(decoded)
        images = to_pil(images) if output_type == "pil" else images
        timings["to_image"] = time.perf_counter() - started
        return LCMPipelineOutput(images=images, timings=timings)

    def execution_precision(self) -> dict[str, str]:
        """The precision each compiled model runs at ("auto" resolves per device: bf16 on AMX CPUs).

        Empty until the first call compiles the models.
        """
        return {name: facts.precision for name, facts in self.models.facts.items()}

    def started_from_cache_index(self) -> dict[str, bool]:
        """Per compiled model: whether it was imported through the compile cache's index (no IR read,
        no model hash) rather than compiled. Empty until the first call compiles the models."""
        return {name: facts.from_cache_index for name, facts in self.models.facts.items()}

    def check_inputs(self, prompts: list[str], height: int, width: int, guidance_scale: float,
                     num_images_per_prompt: int, output_type: str) -> None:
        if not prompts or not all(isinstance(text, str) for text in prompts):
            raise InputError("prompt must be a string or a non-empty list of strings")
        multiple = self.folder.size_multiple
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, (int, np.integer)) or value < multiple or value % multiple:
                raise InputError(f"{name} must be a positive multiple of {multiple} for this model, got {value}")
        if guidance_scale < 0:
            raise InputError(f"guidance scale must be 0 or more (8.0 is typical), got {guidance_scale}")
        if not isinstance(num_images_per_prompt, (int, np.integer)) or num_images_per_prompt < 1:
            raise InputError(f"number of images must be 1 or more, got {num_images_per_prompt}")
        if output_type not in ("pil", "np"):
            raise InputError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        native = self.facts.default_image_size
        batch = len(prompts) * num_images_per_prompt
        needed = self.unet_memory_estimate(batch, height, width) + self.memory_estimate(min(height, native), min(width, native))
        available = _available_memory()
        if available is not None and needed > available:
            raise InputError(
                f"{width}x{height} x{batch} needs about {needed / 2**30:.1f} GiB even with a tiled decode, but only "
                f"{available / 2**30:.1f} GiB is free; choose a smaller size or fewer images"
            )

    def _choose_vae_tile(self, height: int, width: int, tiled_vae: bool | None) -> int | None:
        """The latent tile side for the VAE decode, or None to decode whole (diffusers' way)."""
        tile = self.facts.sample_size
        latent_side = max(height, width) // self.facts.vae_scale_factor
        if tiled_vae is False or latent_side <= tile:
            return None
        if tiled_vae is None:
            available = _available_memory()
            if available is None or self.memory_estimate(height, width) <= available:
                return None
        return tile

    def unet_memory_estimate(self, batch: int, height: int, width: int) -> int:
        """A lower bound of the UNet's activations: its skip connections at the first block's width."""
        latent_pixels = (height // self.facts.vae_scale_factor) * (width // self.facts.vae_scale_factor)
        return 16 * 4 * batch * latent_pixels * self.folder.unet_block_out_channels[0]

    def memory_estimate(self, height: int, width: int) -> int:
        """A lower bound of the VAE decoder's working set: a few full-resolution float32 activations."""
        widest_full_resolution = (self.folder.vae_block_out_channels[0] if self.vae == "full"
                                  else self.folder.tiny_vae_config.get("decoder_block_out_channels", [64])[-1])
        return 8 * 4 * height * width * widest_full_resolution


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
