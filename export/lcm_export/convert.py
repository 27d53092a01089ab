"""torch modules -> OpenVINO models with the bundle's input/output names and dynamic shapes.

Each diffusers/transformers module is wrapped so that its forward takes exactly the bundle's
inputs (bundle.COMPONENT_IO) positionally and returns one tensor; the traced graph then has
one output we can name. Batch, sequence, height and width stay dynamic so the runtime can
reshape to any size and batch without re-exporting.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import torch

from lcm_runtime.bundle import CFG, DEEP_FEATURE, EMBEDDED, UNET_SHALLOW, component_io

from .options import TOKEN_DOWNSAMPLING_FACTORS

if TYPE_CHECKING:
    import openvino as ov
    from diffusers import LatentConsistencyModelPipeline


class TextEncoderIO(torch.nn.Module):
    def __init__(self, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, return_dict=True).last_hidden_state


def deep_feature_module(unet: torch.nn.Module) -> torch.nn.Module:
    """The module whose output DeepCache (branch 0) caches: the last up block's second-to-last layer,
    whose output enters its last resnet together with conv_in's skip connection."""
    last = unet.up_blocks[-1]
    layers = getattr(last, "attentions", None) or last.resnets
    return layers[-2]


def deep_feature_name(unet: torch.nn.Module) -> str:
    """deep_feature_module's path in the UNet, for the manifest (``up_blocks.3.attentions.1`` in SD1.5)."""
    module = deep_feature_module(unet)
    return next(name for name, candidate in unet.named_modules() if candidate is module)


class DeepFeature:
    """Records deep_feature_module's output during a forward (a forward hook, so the trace keeps it)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = deep_feature_module(unet).register_forward_hook(self.record)

    def record(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.value = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)


class UNetIO(torch.nn.Module):
    """The UNet with the bundle's inputs; ``deep_feature``: also returns DeepCache's cached feature."""

    def __init__(self, unet: torch.nn.Module, deep_feature: bool = False) -> None:
        super().__init__()
        self.unet, self.deep_feature = unet, deep_feature

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep_cond: torch.Tensor,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.run(sample, timestep, encoder_hidden_states, timestep_cond)

    def run(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep_cond: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        recorder = DeepFeature(self.unet) if self.deep_feature else None
        try:
            out = self.unet(sample, timestep, encoder_hidden_states, timestep_cond=timestep_cond, return_dict=False)[0]
        finally:
            if recorder is not None:
                recorder.handle.remove()
        if recorder is None:
            return out
        assert recorder.value is not None
        return out, recorder.value


class CfgUNetIO(UNetIO):
    """A "cfg" bundle's UNet (no time_cond_proj_dim): no timestep_cond input; the runtime runs
    classifier-free guidance around it."""

    def forward(  # type: ignore[override]
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.run(sample, timestep, encoder_hidden_states)


class ShallowUNetIO(torch.nn.Module):
    """DeepCache's skip step (branch 0), as DeepCacheSDHelper runs diffusers' UNet: every block returns its
    cached output except conv_in, the time embedding, the last up block's last resnet and transformer
    (on the cached deep feature concatenated with conv_in's fresh skip connection) and conv_out."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        last = unet.up_blocks[-1]
        self.resnet = last.resnets[-1]
        self.attention = last.attentions[-1] if getattr(last, "attentions", None) else None

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep_cond: torch.Tensor,
        deep_feature: torch.Tensor,
    ) -> torch.Tensor:
        return self.run(sample, timestep, encoder_hidden_states, deep_feature, timestep_cond)

    def run(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        deep_feature: torch.Tensor,
        timestep_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        unet = self.unet
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), timestep_cond)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        hidden = self.resnet(torch.cat([deep_feature, unet.conv_in(sample)], dim=1), emb)
        if self.attention is not None:
            hidden = self.attention(hidden, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
        if unet.conv_norm_out is not None:
            hidden = unet.conv_act(unet.conv_norm_out(hidden))
        return unet.conv_out(hidden)


class CfgShallowUNetIO(ShallowUNetIO):
    """A cfg bundle's shallow UNet: no timestep_cond input."""

    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        deep_feature: torch.Tensor,
    ) -> torch.Tensor:
        return self.run(sample, timestep, encoder_hidden_states, deep_feature)


def hide_deep_feature_output(model: ov.Model) -> None:
    """The deep feature stays a named tensor, not an output: openvino.genai and optimum-intel run a UNet with
    exactly one output; lcm_runtime makes it an output when DeepCache runs (models.CompiledComponent)."""
    (result,) = [port.get_node() for port in model.outputs if DEEP_FEATURE in port.get_names()]
    source = result.input_value(0)
    model.remove_result(result)
    source.get_tensor().add_names({DEEP_FEATURE})  # a Result's names go with it


def check_deep_cache_supported(unet: torch.nn.Module) -> None:
    """ShallowUNetIO's shortcut of UNet2DConditionModel.forward holds for SD1.5-like UNets only."""
    config = unet.config
    unsupported = [
        name
        for name, present in (
            ("center_input_sample", bool(config.center_input_sample)),
            ("class_embedding", unet.class_embedding is not None),
            ("add_embedding", getattr(unet, "add_embedding", None) is not None),
            ("encoder_hid_proj", getattr(unet, "encoder_hid_proj", None) is not None),
        )
        if present
    ]
    if unsupported:
        from lcm_runtime.errors import InputError

        raise InputError(
            f"--deep-cache supports SD1.5-like UNets; this one has {', '.join(unsupported)}; drop --deep-cache"
        )


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


class SplitGEGLU(torch.nn.Module):
    """diffusers' GEGLU as two projections instead of one twice as wide, then split in halves.

    The same numbers: each output is the same dot product. OpenVINO's CPU plugin runs the split
    (VariadicSplit) with a reference kernel, about 20 ms of every SD1.5 UNet step here.
    """

    def __init__(self, geglu: torch.nn.Module) -> None:
        super().__init__()
        weight, bias = geglu.proj.weight, geglu.proj.bias
        half = weight.shape[0] // 2
        self.value = torch.nn.Linear(weight.shape[1], half, bias=bias is not None)
        self.gate = torch.nn.Linear(weight.shape[1], half, bias=bias is not None)
        with torch.no_grad():
            self.value.weight.copy_(weight[:half])
            self.gate.weight.copy_(weight[half:])
            if bias is not None:
                self.value.bias.copy_(bias[:half])
                self.gate.bias.copy_(bias[half:])

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.value(hidden_states) * torch.nn.functional.gelu(self.gate(hidden_states))


class LatentGrid:
    """The height and width of the token grid a transformer runs on, recorded as it starts."""

    size: tuple[Any, Any] | None = None

    def record(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.size = tuple(args[0].shape[-2:])


class DownsampledSelfAttention(torch.nn.Module):
    """Self-attention whose keys and values come from the token grid average-pooled by ``factor``
    in each direction (Token Downsampling, "ToDo"): ``factor**2`` times fewer keys. Queries, and so
    the output's resolution, are untouched. An approximation: it changes the image."""

    def __init__(self, attention: torch.nn.Module, grid: LatentGrid, factor: int) -> None:
        super().__init__()
        self.attention, self.grid, self.factor = attention, grid, factor

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        batch, _tokens, channels = hidden_states.shape
        height, width = self.grid.size
        tokens = hidden_states.transpose(1, 2).reshape(batch, channels, height, width)
        # ceil_mode without padding in the average: odd sides keep their last row/column.
        pooled = torch.nn.functional.avg_pool2d(
            tokens, self.factor, self.factor, ceil_mode=True, count_include_pad=False
        )
        keys_values = pooled.flatten(2).transpose(1, 2)
        return self.attention(hidden_states, encoder_hidden_states=keys_values, attention_mask=attention_mask, **kwargs)


def full_resolution_transformers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's transformers at the latent's own resolution: the first down block's and the last up block's."""
    return [
        transformer
        for block in (unet.down_blocks[0], unet.up_blocks[-1])
        for transformer in (getattr(block, "attentions", None) or [])
    ]


def downsampled_self_attentions(unet: torch.nn.Module, token_downsampling: int) -> int:
    """How many self-attentions unet_rewrites gives pooled keys and values (0 when the factor is 1)."""
    if token_downsampling == 1:
        return 0
    return sum(len(transformer.transformer_blocks) for transformer in full_resolution_transformers(unet))


@contextmanager
def unet_rewrites(unet: torch.nn.Module, token_downsampling: int = 1) -> Iterator[None]:
    """Rewrite the UNet's modules for tracing (restored after): GEGLU split always; with
    ``token_downsampling`` > 1, the self-attentions at the latent's own resolution (the first down
    block and the last up block, 4096 tokens at 512x512) attend to pooled keys and values."""
    from diffusers.models.activations import GEGLU

    if token_downsampling not in TOKEN_DOWNSAMPLING_FACTORS:
        raise ValueError(f"token downsampling must be one of {TOKEN_DOWNSAMPLING_FACTORS}, got {token_downsampling}")
    swaps: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    hooks = []

    def swap(parent: torch.nn.Module, name: str, replacement: torch.nn.Module) -> None:
        swaps.append((parent, name, getattr(parent, name)))
        setattr(parent, name, replacement)

    try:
        for parent in list(unet.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, GEGLU):
                    swap(parent, name, SplitGEGLU(child))
        if token_downsampling > 1:
            for transformer in full_resolution_transformers(unet):
                grid = LatentGrid()
                hooks.append(transformer.register_forward_pre_hook(grid.record))
                for transformer_block in transformer.transformer_blocks:
                    swap(
                        transformer_block,
                        "attn1",
                        DownsampledSelfAttention(transformer_block.attn1, grid, token_downsampling),
                    )
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for parent, name, original in reversed(swaps):
            setattr(parent, name, original)


def _example_and_shapes(
    pipeline: LatentConsistencyModelPipeline, component: str, guidance_mode: str = EMBEDDED
) -> tuple[tuple[torch.Tensor, ...], list[Any]]:
    """Small example inputs to trace with, and the dynamic shapes/types of each input (a cfg UNet's
    without timestep_cond)."""
    import openvino as ov

    unet_config = pipeline.unet.config
    sample_channels = int(unet_config.in_channels)  # the latents' 4, or an inpainting UNet's 9
    text_dim = int(pipeline.text_encoder.config.hidden_size)
    max_length = int(pipeline.text_encoder.config.max_position_embeddings)
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
    elif component in ("unet", UNET_SHALLOW):
        example = (
            torch.randn(1, sample_channels, unet_side, unet_side, generator=torch.Generator().manual_seed(0)),
            torch.tensor([999], dtype=torch.int64),
            torch.randn(1, max_length, text_dim, generator=torch.Generator().manual_seed(1)),
        )
        shapes = [
            (ov.PartialShape([dynamic, sample_channels, dynamic, dynamic]), ov.Type.f32),
            (ov.PartialShape([1]), ov.Type.i64),
            (ov.PartialShape([dynamic, dynamic, text_dim]), ov.Type.f32),
        ]
        if guidance_mode == EMBEDDED:
            cond_dim = int(unet_config.time_cond_proj_dim)
            example += (torch.randn(1, cond_dim, generator=torch.Generator().manual_seed(2)),)
            shapes.append((ov.PartialShape([dynamic, cond_dim]), ov.Type.f32))
        if component == UNET_SHALLOW:
            feature_channels = int(deep_feature_module(pipeline.unet).out_channels)
            example += (
                torch.randn(1, feature_channels, unet_side, unet_side, generator=torch.Generator().manual_seed(5)),
            )
            shapes.append((ov.PartialShape([dynamic, feature_channels, dynamic, dynamic]), ov.Type.f32))
    elif component == "vae_decoder":
        latent_channels = int(pipeline.vae.config.latent_channels)
        example = (
            torch.randn(1, latent_channels, latent_side, latent_side, generator=torch.Generator().manual_seed(3)),
        )
        shapes = [(ov.PartialShape([dynamic, latent_channels, dynamic, dynamic]), ov.Type.f32)]
    elif component == "vae_encoder":
        side = latent_side * vae_scale
        example = (torch.rand(1, image_channels, side, side, generator=torch.Generator().manual_seed(4)) * 2 - 1,)
        shapes = [(ov.PartialShape([dynamic, image_channels, dynamic, dynamic]), ov.Type.f32)]
    else:
        raise ValueError(f"unknown component {component!r}")
    return example, shapes


WRAPPERS: dict[str, Callable[[LatentConsistencyModelPipeline], torch.nn.Module]] = {
    "text_encoder": lambda pipeline: TextEncoderIO(pipeline.text_encoder),
    "vae_decoder": lambda pipeline: VaeDecoderIO(pipeline.vae),
    "vae_encoder": lambda pipeline: VaeEncoderIO(pipeline.vae),
}


def wrap_component(
    pipeline: LatentConsistencyModelPipeline, component: str, guidance_mode: str = EMBEDDED, deep_cache: bool = False
) -> torch.nn.Module:
    """The torch module whose forward is exactly the component's bundle signature (float32, eval)."""
    cfg = guidance_mode == CFG
    if component == "unet":
        module: torch.nn.Module = (CfgUNetIO if cfg else UNetIO)(pipeline.unet, deep_feature=deep_cache)
    elif component == UNET_SHALLOW:
        module = (CfgShallowUNetIO if cfg else ShallowUNetIO)(pipeline.unet)
    else:
        module = WRAPPERS[component](pipeline)
    return module.float().eval()


def example_inputs(
    pipeline: LatentConsistencyModelPipeline, component: str, guidance_mode: str = EMBEDDED
) -> tuple[torch.Tensor, ...]:
    return _example_and_shapes(pipeline, component, guidance_mode)[0]


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """No gradients, and none of the warnings that tracing a module for OpenVINO raises but that say
    nothing to whoever exports: the shape checks of diffusers and CLIP (sizes divisible by the
    up-sampling factor, batch >= 64, image size against the position embeddings) become constants of
    the trace, which is intended since the IR's input shapes fix them; OpenVINO's PyTorch frontend
    traces with torch.jit, which torch 2.13 deprecates; and the trace reads transformers' deprecated
    ``is_gradient_checkpointing``."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.trace(_method)?` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        yield


def convert_component(
    pipeline: LatentConsistencyModelPipeline,
    component: str,
    token_downsampling: int = 1,
    guidance_mode: str = EMBEDDED,
    deep_cache: bool = False,
    hide_deep_feature: bool = True,
) -> ov.Model:
    """Trace one component into an ov.Model named per bundle.component_io (the UNet through
    unet_rewrites, with ``token_downsampling``; a ``guidance_mode="cfg"`` UNet without timestep_cond;
    ``deep_cache``: the UNet names DeepCache's deep feature, as an output until hide_deep_feature_output when
    ``hide_deep_feature`` is False)."""
    import openvino as ov
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder
    from openvino.tools.ovc.moc_frontend.pytorch_frontend_utils import prepare_torch_inputs

    module = wrap_component(pipeline, component, guidance_mode, deep_cache)
    example, shapes = _example_and_shapes(pipeline, component, guidance_mode)
    input_names, output_names = component_io(component, guidance_mode)
    if component == "unet" and deep_cache:
        output_names = (*output_names, DEEP_FEATURE)
    in_unet = component in ("unet", UNET_SHALLOW)
    rewrites = unet_rewrites(pipeline.unet, token_downsampling) if in_unet else nullcontext()
    with quiet_tracing(), rewrites:
        # convert_model's own decoder, but without torch.jit.trace's check_trace: that runs the module
        # once more and compares the two traces, which doubled the tracing time of every export (the
        # parity tests compare the IR's outputs with diffusers' anyway).
        decoder = TorchScriptPythonDecoder(
            module, example_input=prepare_torch_inputs(example), trace_kwargs={"check_trace": False}
        )
        model = ov.convert_model(decoder, input=shapes)
    if len(model.inputs) != len(input_names) or len(model.outputs) != len(output_names):
        raise RuntimeError(
            f"{component}: traced {len(model.inputs)} inputs/{len(model.outputs)} outputs, "
            f"expected {len(input_names)}/{len(output_names)}"
        )
    for port, name in zip(model.inputs, input_names, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, output_names, strict=True):
        port.get_tensor().set_names({name})
    if component == "unet" and deep_cache and hide_deep_feature:
        hide_deep_feature_output(model)
    # A stable friendly name: the default one can carry a process-dependent counter.
    model.set_friendly_name(component)
    return model
