"""Every kind of bundle the export writes runs in our own runtime (the reason bundles exist)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import numpy as np  # noqa: E402


@pytest.mark.parametrize(
    "options",
    [
        {"weights": "fp16"},
        {"weights": "int8"},
        {"weights": "int4"},
        {"weights": "fp16", "quantize_unet": "int8", "calibration_size": 4},
    ],
    ids=["fp16", "int8", "int4", "int8-ptq"],
)
def test_runtime_generates_from_each_bundle(export_tiny, options):
    from lcm_runtime import LCMPipeline

    pipeline = LCMPipeline.from_pretrained(export_tiny(**options), cache_dir=False)
    images = pipeline("a photo of a cat", num_inference_steps=2, generator=0, output_type="np").images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert images.std() > 0.02


def test_runtime_accepts_sizes_the_unet_was_not_traced_at(tiny_bundle_fp32):
    """The UNet IR takes any latent size (the manifest says so), as diffusers' UNet does."""
    import openvino as ov

    from lcm_runtime.bundle import component_xml, read_manifest

    assert read_manifest(tiny_bundle_fp32).components["unet"]["latent_size_multiple"] == 1
    compiled = ov.Core().compile_model(tiny_bundle_fp32 / component_xml("unet"), "CPU")
    for height, width in [(5, 7), (9, 9), (10, 6)]:
        out = compiled(
            {
                "sample": np.zeros((1, 4, height, width), np.float32),
                "timestep": np.array([999], np.int64),
                "encoder_hidden_states": np.zeros((1, 77, 32), np.float32),
                "timestep_cond": np.zeros((1, 32), np.float32),
            }
        )[0]
        assert out.shape == (1, 4, height, width)
