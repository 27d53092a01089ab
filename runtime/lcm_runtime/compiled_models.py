"""A pipeline's compiled models: each compiled (or imported from the cache) when a call first needs it
at its shapes, and those named in ``release_after_use`` freed as soon as the call is done with them.

With every model held, the peak comes during the VAE decode. A process that makes one call (lcm-run)
never needs the text encoder again once the prompt is encoded, nor the UNet once the latents are
denoised; freeing them costs that process only the free itself, where a process making more calls
would import them again.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .bundle import DEEP_FEATURE, EMBEDDED, TIMESTEP_COND, UNET_SHALLOW
from .compile_cache import CompileCache
from .errors import BundleError, InputError
from .file_pages import released_while_running
from .loading import ModelFolder
from .models import CompiledComponent, ShallowUNet, TextEncoder, UNet, VAEDecoder, VAEEncoder
from .openvino_runtime import ov
from .safety_checker import SafetyCheckerModel

Component = TypeVar("Component", bound=CompiledComponent)
MODEL_NAMES = ("text_encoder", "unet", "vae_decoder", "vae_encoder", "safety_checker")


@dataclass(frozen=True)
class CompiledFacts:
    precision: str  # what the model runs at, e.g. bf16
    from_cache_index: bool  # imported through the compile cache's index


class CompiledModels:
    def __init__(
        self,
        folder: ModelFolder,
        core: ov.Core,
        device: str,
        config: Mapping[str, Any],
        cache: CompileCache | None,
        vae_component: str,
        release_after_use: Collection[str] = (),
        deep_cache: bool = False,
    ) -> None:
        unknown = (
            [release_after_use]
            if isinstance(release_after_use, str)
            else sorted(set(release_after_use) - set(MODEL_NAMES))
        )
        if unknown:
            raise InputError(
                "release_after_use takes 'one-call' or a list of model names from "
                f"{', '.join(MODEL_NAMES)}, got {unknown}"
            )
        self.folder, self.core, self.device, self.config, self.cache = folder, core, device, config, cache
        self.vae_component = vae_component  # the full VAE decoder or the tiny one
        self.release_after_use = frozenset(release_after_use)
        self.deep_cache = deep_cache  # the shallow UNet runs between full steps
        # DeepCache: the UNet also outputs its deep feature (a named tensor of the IR).
        self.unet_outputs: tuple[str, ...] = (DEEP_FEATURE,) if deep_cache else ()
        self.compile_seconds = 0.0
        self.facts: dict[str, CompiledFacts] = {}  # per model compiled so far, kept after a release
        self._loaded: dict[str, tuple[CompiledComponent, dict[str, list[int]]]] = {}

    def text_encoder(self) -> TextEncoder:
        # Batch 1 whatever the request: one pass per prompt.
        return self._get(
            "text_encoder", TextEncoder, "text_encoder", {"input_ids": [1, self.folder.facts.text_max_length]}
        )

    def unet(self, batch: int, latent_h: int, latent_w: int, sequence_length: int | None = None) -> UNet:
        """``sequence_length``: of the text embeddings, 77 (the default) or 77 x chunks for long prompts;
        a new length compiles the UNet again, once, and the old one is freed."""
        shapes = self._unet_shapes(batch, latent_h, latent_w, sequence_length)
        unet = self._get("unet", UNet, "unet", shapes, self.unet_outputs)
        facts = self.folder.facts
        if (TIMESTEP_COND in unet.input_types) != (facts.guidance_mode == EMBEDDED):
            raise BundleError(
                f"{self.folder.root}: the UNet IR {'has' if TIMESTEP_COND in unet.input_types else 'lacks'} a "
                f"{TIMESTEP_COND} input, but the bundle says its guidance is {facts.guidance_mode!r}; "
                "re-export the bundle"
            )
        return unet

    def unet_shallow(self, batch: int, latent_h: int, latent_w: int, sequence_length: int | None = None) -> ShallowUNet:
        """DeepCache's shallow UNet (deep_cache.py), at the UNet's shapes."""
        shapes = self._unet_shapes(batch, latent_h, latent_w, sequence_length)
        shapes[DEEP_FEATURE] = [batch, -1, latent_h, latent_w]
        return self._get(UNET_SHALLOW, ShallowUNet, UNET_SHALLOW, shapes)

    def _unet_shapes(
        self, batch: int, latent_h: int, latent_w: int, sequence_length: int | None
    ) -> dict[str, list[int]]:
        facts = self.folder.facts
        shapes = {
            "sample": [batch, facts.unet_channels, latent_h, latent_w],  # 9 for an inpainting UNet
            "timestep": [1],
            "encoder_hidden_states": [batch, sequence_length or facts.text_max_length, -1],
        }
        if facts.time_cond_proj_dim is not None:
            shapes[TIMESTEP_COND] = [batch, facts.time_cond_proj_dim]
        return shapes

    def vae_decoder(self, latent_h: int, latent_w: int) -> VAEDecoder:
        shapes = {"latent_sample": [1, self.folder.facts.latent_channels, latent_h, latent_w]}
        return self._get("vae_decoder", VAEDecoder, self.vae_component, shapes)

    def vae_encoder(self, height: int, width: int) -> VAEEncoder:
        """Batch 1 whatever the request: one pass per input picture bounds the peak memory."""
        if not self.folder.xml("vae_encoder").is_file():
            raise BundleError(
                f"{self.folder.root} has no vae_encoder, which image-to-image and inpainting need; "
                "re-export the bundle with lcm-export"
            )
        return self._get("vae_encoder", VAEEncoder, "vae_encoder", {"sample": [1, 3, height, width]})

    def safety_checker(self, clip_input_shape: list[int]) -> SafetyCheckerModel:
        return self._get("safety_checker", SafetyCheckerModel, "safety_checker", {"clip_input": clip_input_shape})

    def component_of(self, name: str) -> str:
        """The bundle folder a model name is compiled from (the decoder may be the tiny VAE's)."""
        return self.vae_component if name == "vae_decoder" else name

    def in_memory(self) -> list[str]:
        """The models compiled and held right now."""
        return list(self._loaded)

    def release(self, name: str) -> None:
        """The call is done with this model: free it if it is one to release after use (the UNet's
        release frees DeepCache's shallow UNet too)."""
        if name in self.release_after_use:
            self._loaded.pop(name, None)
            if name == "unet":
                self._loaded.pop(UNET_SHALLOW, None)

    def _get(
        self,
        name: str,
        kind: type[Component],
        component: str,
        shapes: dict[str, list[int]],
        extra_outputs: tuple[str, ...] = (),
    ) -> Component:
        loaded = self._loaded.get(name)
        if loaded is not None and loaded[1] == shapes:
            return cast(Component, loaded[0])  # each name is always compiled as the same kind
        self._loaded.pop(name, None)  # free the old compiled model before compiling the new one
        del loaded
        started = time.perf_counter()
        mapped = [self.folder.root] + ([self.cache.folder] if self.cache is not None else [])
        with released_while_running(mapped):
            compiled = kind(
                self.core, self.folder.xml(component), shapes, self.device, self.config, self.cache, extra_outputs
            )
        self._loaded[name] = (compiled, shapes)
        self.facts[name] = CompiledFacts(
            precision=compiled.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            from_cache_index=compiled.from_cache_index,
        )
        self.compile_seconds += time.perf_counter() - started
        return compiled
