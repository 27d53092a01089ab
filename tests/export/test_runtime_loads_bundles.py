"""Every kind of bundle the export writes runs in our own runtime (the reason bundles exist)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import numpy as np  # noqa: E402
from image_bounds import BOUNDS, assert_near  # noqa: E402


def _image(bundle, seed: int = 0) -> np.ndarray:
    """At f32, so that only what the bundle stores differs from the fp32 bundle's image."""
    from lcm_runtime import LCMPipeline

    pipeline = LCMPipeline.from_pretrained(bundle, cache_dir=False, precision="f32")
    return pipeline("a photo of a cat", num_inference_steps=2, generator=seed, output_type="np").images


@pytest.fixture(scope="module")
def fp32_image(tiny_bundle_fp32):
    image = _image(tiny_bundle_fp32)
    assert image.std() > 0.02  # not one flat colour: the comparisons below are not of two blank images
    return image


@pytest.mark.parametrize(
    "options,kind",
    [
        ({"weights": "fp16"}, "fp16"),
        ({"weights": "int8"}, "int8"),
        ({"weights": "int4"}, "int4"),
        ({"weights": "fp16", "quantize_unet": "int8", "calibration_size": 4}, "int8-ptq"),
    ],
    ids=["fp16", "int8", "int4", "int8-ptq"],
)
def test_runtime_generates_from_each_bundle(export_tiny, fp32_image, options, kind):
    """Each bundle's image is the fp32 bundle's within the bound measured for its kind (image_bounds.py)."""
    images = _image(export_tiny(**options))
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert_near(images, fp32_image, kind)


def test_the_bounds_refuse_another_seeds_image(tiny_bundle_fp32, fp32_image):
    """Every bound, even the loosest, tells a wrong image from a quantized one: another seed's fails it."""
    other_seed = _image(tiny_bundle_fp32, seed=1)
    for kind in BOUNDS:
        with pytest.raises(AssertionError, match=kind):
            assert_near(other_seed, fp32_image, kind)


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
