"""lcm_runtime: Latent Consistency Models (text-to-image, image-to-image, inpainting) in NumPy over
OpenVINO. No torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .core import LCMPipelineOutput
    from .img2img import LCMImg2ImgPipeline
    from .inpaint import LCMInpaintPipeline
    from .pipeline import LCMPipeline

__all__ = ["LCMImg2ImgPipeline", "LCMInpaintPipeline", "LCMPipeline", "LCMPipelineOutput", "__version__"]

_HOMES = {
    "LCMPipeline": "pipeline",
    "LCMPipelineOutput": "core",
    "LCMImg2ImgPipeline": "img2img",
    "LCMInpaintPipeline": "inpaint",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that `lcm-run --help` and `import lcm_runtime.bundle` never pay for importing openvino.
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(name)
