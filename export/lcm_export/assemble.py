"""The one place an LCM pipeline object is put together from its components (a loaded folder, the
tiny random model, the benchmark's real-size random model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import LatentConsistencyModelPipeline


def assemble_pipeline(
    unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any
) -> LatentConsistencyModelPipeline:
    """An LCM pipeline of these components, in eval mode, without safety checker."""
    from diffusers import LatentConsistencyModelPipeline

    pipeline = LatentConsistencyModelPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for module in (unet, vae, text_encoder):
        module.eval()
    return pipeline
