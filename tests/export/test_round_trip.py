"""Each FP32 IR computes what diffusers/transformers compute, at f32, on shapes it was not traced with."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402

from lcm_runtime.bundle import component_xml  # noqa: E402

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
ATOL, RTOL = 1e-4, 1e-4


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _run_ir(bundle, component, inputs):
    compiled = ov.Core().compile_model(bundle / component_xml(component), "CPU", F32)
    return compiled({name: value.numpy() for name, value in inputs.items()})[0]


def test_text_encoder(tiny_bundle_fp32, reference_pipeline):
    prompts = ["a photo of a cat", "an astronaut riding a horse on the moon, 8k, highly detailed " * 6]
    ids = reference_pipeline.tokenizer(
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        expected = reference_pipeline.text_encoder(ids).last_hidden_state.numpy()
    actual = _run_ir(tiny_bundle_fp32, "text_encoder", {"input_ids": ids})
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("batch,height,width", [(1, 8, 8), (2, 12, 16), (1, 9, 7)])
@pytest.mark.parametrize("timestep", [999, 259])
def test_unet(tiny_bundle_fp32, reference_pipeline, batch, height, width, timestep):
    unet = reference_pipeline.unet
    inputs = {
        "sample": _randn(batch, unet.config.in_channels, height, width, seed=1),
        "timestep": torch.tensor([timestep], dtype=torch.int64),
        "encoder_hidden_states": _randn(batch, 77, unet.config.cross_attention_dim, seed=2),
        "timestep_cond": _randn(batch, unet.config.time_cond_proj_dim, seed=3),
    }
    with torch.no_grad():
        expected = unet(
            inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"], timestep_cond=inputs["timestep_cond"]
        ).sample.numpy()
    actual = _run_ir(tiny_bundle_fp32, "unet", inputs)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("batch,height,width", [(1, 8, 8), (2, 6, 10)])
def test_vae_decoder(tiny_bundle_fp32, reference_pipeline, batch, height, width):
    latents = _randn(batch, reference_pipeline.vae.config.latent_channels, height, width, seed=4)
    with torch.no_grad():
        expected = reference_pipeline.vae.decode(latents).sample.numpy()
    actual = _run_ir(tiny_bundle_fp32, "vae_decoder", {"latent_sample": latents})
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("batch,height,width", [(1, 64, 64), (2, 48, 80)])
def test_vae_encoder_gives_posterior_parameters(tiny_bundle_fp32, reference_pipeline, batch, height, width):
    images = _randn(batch, 3, height, width, seed=5).clamp(-1, 1)
    with torch.no_grad():
        posterior = reference_pipeline.vae.encode(images).latent_dist
    expected = torch.cat([posterior.mean, posterior.logvar], dim=1).numpy()
    actual = _run_ir(tiny_bundle_fp32, "vae_encoder", {"sample": images})
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL)
