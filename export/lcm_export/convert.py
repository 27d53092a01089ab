"""torch modules -> OpenVINO models with the bundle's input/output names and dynamic shapes.

Each diffusers/transformers module is wrapped so that its forward takes exactly the bundle's
inputs (bundle.COMPONENT_IO) positionally and returns one tensor; the traced graph then has
one output we can name. Batch, sequence, height and width stay dynamic so the runtime can
reshape to any size and batch without re-exporting.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable

import torch

from lcm_runtime.bundle import COMPONENT_IO

if TYPE_CHECKING:
    import openvino as ov
    from diffusers import LatentConsistencyModelPipeline


class TextEncoderIO(torch.nn.Module):
    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, return_dict=True).last_hidden_state


class UNetIO(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep_cond: torch.Tensor,
    ) -> torch.Tensor:
        return self.unet(
            sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond, return_dict=False
        )[0]


class VaeDecoderIO(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]


class VaeEncoderIO(torch.nn.Module):
    """Returns the posterior's mean and logvar concatenated on channels, as
    diffusers' DiagonalGaussianDistribution.parameters (sampling happens in the runtime)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(sample, return_dict=True).latent_dist.parameters


def _example_and_shapes(pipeline: "LatentConsistencyModelPipeline", component: str) -> tuple[tuple[torch.Tensor, ...], list[Any]]:
    """Small example inputs to trace with, and the dynamic shapes/types of each input."""
    import openvino as ov

    unet_config = pipeline.unet.config
    latent_channels = int(unet_config.in_channels)
    text_dim = int(pipeline.text_encoder.config.hidden_size)
    max_length = int(pipeline.text_encoder.config.max_position_embeddings)
    cond_dim = int(unet_config.time_cond_proj_dim)
    vae_scale = 2 ** (len(pipeline.vae.config.block_out_channels) - 1)
    # The UNet is traced at a latent side that is NOT a multiple of its total up-sampling factor:
    # diffusers then passes each skip connection's size to the up-samplers, and the traced graph
    # keeps that general path, so the IR accepts any latent size (any image side multiple of 8),
    # like diffusers does. Traced at a multiple, it would only accept multiples (64 px for SD1.5).
    up_factor = 2 ** (len(unet_config.block_out_channels) - 1)
    unet_side = 2 * up_factor + 1
    latent_side = 8
    image_channels = int(pipeline.vae.config.in_channels)
    dynamic = -1

    if component == "text_encoder":
        example = (torch.full((1, max_length), pipeline.tokenizer.pad_token_id or 0, dtype=torch.int64),)
        shapes = [(ov.PartialShape([dynamic, dynamic]), ov.Type.i64)]
    elif component == "unet":
        example = (
            torch.randn(1, latent_channels, unet_side, unet_side, generator=torch.Generator().manual_seed(0)),
            torch.tensor([999], dtype=torch.int64),
            torch.randn(1, max_length, text_dim, generator=torch.Generator().manual_seed(1)),
            torch.randn(1, cond_dim, generator=torch.Generator().manual_seed(2)),
        )
        shapes = [
            (ov.PartialShape([dynamic, latent_channels, dynamic, dynamic]), ov.Type.f32),
            (ov.PartialShape([1]), ov.Type.i64),
            (ov.PartialShape([dynamic, dynamic, text_dim]), ov.Type.f32),
            (ov.PartialShape([dynamic, cond_dim]), ov.Type.f32),
        ]
    elif component == "vae_decoder":
        latent_channels = int(pipeline.vae.config.latent_channels)
        example = (torch.randn(1, latent_channels, latent_side, latent_side, generator=torch.Generator().manual_seed(3)),)
        shapes = [(ov.PartialShape([dynamic, latent_channels, dynamic, dynamic]), ov.Type.f32)]
    elif component == "vae_encoder":
        side = latent_side * vae_scale
        example = (torch.rand(1, image_channels, side, side, generator=torch.Generator().manual_seed(4)) * 2 - 1,)
        shapes = [(ov.PartialShape([dynamic, image_channels, dynamic, dynamic]), ov.Type.f32)]
    else:
        raise ValueError(f"unknown component {component!r}")
    return example, shapes


WRAPPERS: dict[str, Callable[["LatentConsistencyModelPipeline"], torch.nn.Module]] = {
    "text_encoder": lambda pipeline: TextEncoderIO(pipeline.text_encoder),
    "unet": lambda pipeline: UNetIO(pipeline.unet),
    "vae_decoder": lambda pipeline: VaeDecoderIO(pipeline.vae),
    "vae_encoder": lambda pipeline: VaeEncoderIO(pipeline.vae),
}


def wrap_component(pipeline: "LatentConsistencyModelPipeline", component: str) -> torch.nn.Module:
    """The torch module whose forward is exactly the component's bundle signature (float32, eval)."""
    module = WRAPPERS[component](pipeline)
    return module.float().eval()


def example_inputs(pipeline: "LatentConsistencyModelPipeline", component: str) -> tuple[torch.Tensor, ...]:
    return _example_and_shapes(pipeline, component)[0]


def convert_component(pipeline: "LatentConsistencyModelPipeline", component: str) -> "ov.Model":
    """Trace one component into an ov.Model named per bundle.COMPONENT_IO."""
    import openvino as ov

    module = wrap_component(pipeline, component)
    example, shapes = _example_and_shapes(pipeline, component)
    input_names, output_names = COMPONENT_IO[component]
    with torch.no_grad(), warnings.catch_warnings():
        # diffusers' shape checks (sizes divisible by the up-sampling factor, batch >= 64) become
        # constants in the trace; that is intended, since they only pick contiguous() or
        # an explicit upsample size, so the warnings are noise.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = ov.convert_model(module, example_input=example, input=shapes)
    if len(model.inputs) != len(input_names) or len(model.outputs) != len(output_names):
        raise RuntimeError(
            f"{component}: traced {len(model.inputs)} inputs/{len(model.outputs)} outputs, "
            f"expected {len(input_names)}/{len(output_names)}"
        )
    for port, name in zip(model.inputs, input_names):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, output_names):
        port.get_tensor().set_names({name})
    # A stable friendly name: the default one can carry a process-dependent counter.
    model.set_friendly_name(component)
    return model
