"""lcm_runtime: Latent Consistency Model text-to-image in NumPy over OpenVINO. No torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .pipeline import LCMPipeline, LCMPipelineOutput

__all__ = ["LCMPipeline", "LCMPipelineOutput", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `lcm-run --help` and `import lcm_runtime.bundle` never pay for importing openvino.
    if name in ("LCMPipeline", "LCMPipelineOutput"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
