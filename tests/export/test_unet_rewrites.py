"""The UNet as traced: GEGLU split in two projections (the same numbers) and, on request, token
downsampling of the full-resolution self-attentions (an approximation, exported as traced)."""

import numpy as np
import openvino as ov
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from lcm_export.convert import (
    DownsampledSelfAttention,
    SplitGEGLU,
    convert_component,
    downsampled_self_attentions,
    unet_rewrites,
)
from lcm_export.tiny import build_tiny_pipeline


@pytest.fixture(scope="module")
def pipeline():
    return build_tiny_pipeline(seed=0).to(torch.float32)


def unet_inputs(pipeline, height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    config = pipeline.unet.config
    return (
        torch.randn(1, config.in_channels, height, width, generator=generator),
        torch.tensor([999]),
        torch.randn(1, 77, config.cross_attention_dim, generator=generator),
        torch.randn(1, config.time_cond_proj_dim, generator=generator),
    )


def torch_unet(pipeline, inputs):
    sample, timestep, text, cond = inputs
    with torch.no_grad():
        return pipeline.unet(sample, timestep, text, timestep_cond=cond, return_dict=False)[0].numpy()


def openvino_unet(pipeline, inputs, token_downsampling):
    model = convert_component(pipeline, "unet", token_downsampling)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled([tensor.numpy() for tensor in inputs])[0], model


def test_rewrites_are_in_place_only_while_tracing(pipeline):
    unet = pipeline.unet
    modules_before = list(unet.modules())
    with unet_rewrites(unet, token_downsampling=2):
        rewritten = list(unet.modules())
        assert any(isinstance(module, SplitGEGLU) for module in rewritten)
        assert (
            sum(isinstance(module, DownsampledSelfAttention) for module in rewritten)
            == downsampled_self_attentions(unet, 2)
            > 0
        )
    assert list(unet.modules()) == modules_before


def test_split_geglu_computes_the_same_numbers(pipeline):
    inputs = unet_inputs(pipeline, 9, 7)
    reference = torch_unet(pipeline, inputs)
    with unet_rewrites(pipeline.unet):
        np.testing.assert_allclose(torch_unet(pipeline, inputs), reference, atol=1e-5, rtol=0)
    exported, model = openvino_unet(pipeline, inputs, 1)
    np.testing.assert_allclose(exported, reference, atol=1e-4, rtol=0)
    assert not [op for op in model.get_ops() if op.get_type_name() == "AvgPool"]


@pytest.mark.parametrize("height, width", [(8, 8), (9, 7)])  # odd sides keep their last row and column
def test_token_downsampling_is_exported_as_traced_and_changes_the_output(pipeline, height, width):
    inputs = unet_inputs(pipeline, height, width)
    exact = torch_unet(pipeline, inputs)
    with unet_rewrites(pipeline.unet, token_downsampling=2):
        approximate = torch_unet(pipeline, inputs)
    assert np.abs(approximate - exact).max() > 1e-3  # the keys really were pooled
    exported, model = openvino_unet(pipeline, inputs, 2)
    np.testing.assert_allclose(exported, approximate, atol=1e-4, rtol=0)
    pools = [op for op in model.get_ops() if op.get_type_name() == "AvgPool"]
    assert len(pools) == downsampled_self_attentions(pipeline.unet, 2)


def test_unknown_factor_is_refused(pipeline):
    with pytest.raises(ValueError, match="token downsampling must be one of"):
        with unet_rewrites(pipeline.unet, token_downsampling=3):
            pass
