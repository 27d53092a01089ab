"""DeepCache (lcm-export --deep-cache, deep_cache_interval): the same image as diffusers run under the
``deepcache`` package's DeepCacheSDHelper (cache_branch_id=0, uniform skipping) at the same interval,
in both guidance modes and for image-to-image, FP32 IR at f32 with torch's draws in diffusers' order.

The bar: uint8 images differ by at most 1 level on at most 0.1% of the values.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
DeepCache = pytest.importorskip("DeepCache")

from pictures import box_mask, picture  # noqa: E402
from references import (  # noqa: E402
    assert_inpainting_is_the_reference,
    assert_same_image,
    components,
    lcm_inpaint_reference,
    lcm_reference,
    reference,
)

from lcm_export.exporter import ExportOptions, export_bundle  # noqa: E402
from lcm_export.tiny import build_tiny_sd_pipeline, load_tiny_sd_random  # noqa: E402
from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline, LCMPipeline  # noqa: E402
from lcm_runtime.bundle import DEEP_FEATURE, UNET_SHALLOW, read_manifest  # noqa: E402
from lcm_runtime.image import to_uint8  # noqa: E402
from lcm_runtime.openvino_runtime import ov  # noqa: E402


@pytest.fixture(scope="module")
def deep_cache_bundle(tiny_deep_cache_bundle):
    return tiny_deep_cache_bundle


@pytest.fixture(scope="module")
def deep_cache_cfg_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("deep-cache-cfg") / "bundle"
    export_bundle(load_tiny_sd_random(0), out, ExportOptions(weights="fp32", guidance_mode="cfg", deep_cache=True))
    return out


def under_deep_cache(pipe, interval):
    helper = DeepCache.DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=0)
    helper.enable()
    return helper


def reference_images(pipe, interval, seed, **kwargs):
    helper = under_deep_cache(pipe, interval)
    try:
        return pipe(output_type="np", generator=torch.Generator().manual_seed(seed), **kwargs).images
    finally:
        helper.disable()


def test_the_bundle_holds_the_shallow_unet_and_the_deep_feature(deep_cache_bundle):
    manifest = read_manifest(deep_cache_bundle)
    assert manifest.components[UNET_SHALLOW]["deep_cache"] == {"branch": 0, "feature_of": "up_blocks.1.attentions.0"}
    core = ov.Core()
    unet = core.read_model(deep_cache_bundle / "unet" / "openvino_model.xml")
    # One output, as openvino.genai and optimum-intel need; the deep feature is a named tensor made an
    # output by the runtime when DeepCache runs.
    assert [port.get_any_name() for port in unet.outputs] == ["out_sample"]
    unet.add_outputs([DEEP_FEATURE])
    assert [port.get_any_name() for port in unet.outputs] == ["out_sample", DEEP_FEATURE]
    shallow = core.read_model(deep_cache_bundle / UNET_SHALLOW / "openvino_model.xml")
    assert DEEP_FEATURE in {port.get_any_name() for port in shallow.inputs}
    # The shallow path is a small part of the UNet (here: a resnet and a transformer of two).
    assert (deep_cache_bundle / UNET_SHALLOW / "openvino_model.bin").stat().st_size < 0.5 * (
        deep_cache_bundle / "unet" / "openvino_model.bin"
    ).stat().st_size


@pytest.mark.parametrize("interval,steps,height,width", [(2, 4, 64, 64), (3, 6, 64, 96), (2, 1, 64, 64)])
def test_text_to_image_is_diffusers_under_deep_cache(
    tiny_pipeline_dir, deep_cache_bundle, torch_draws, interval, steps, height, width
):
    pipe = lcm_reference(diffusers.LatentConsistencyModelPipeline, tiny_pipeline_dir)
    kwargs = dict(num_inference_steps=steps, guidance_scale=8.0, height=height, width=width)
    expected = reference_images(pipe, interval, 3, prompt="a cat", **kwargs)
    ours = LCMPipeline.from_pretrained(
        deep_cache_bundle, precision="f32", cache_dir=False, deep_cache_interval=interval
    )
    result = ours("a cat", output_type="np", generator=torch_draws(3), **kwargs).images
    assert_same_image(to_uint8(result), to_uint8(expected))
    assert to_uint8(expected).std() > 2
    exact = LCMPipeline.from_pretrained(deep_cache_bundle, precision="f32", cache_dir=False)
    full = exact("a cat", output_type="np", generator=torch_draws(3), **kwargs).images
    if steps > 1:  # the skip steps really changed the image
        assert np.abs(full - result).max() > 0.01
    else:  # one step is always a full one
        assert_same_image(to_uint8(full), to_uint8(result))


def test_image_to_image_counts_steps_from_its_first(tiny_pipeline_dir, deep_cache_bundle, torch_draws):
    pipe = lcm_reference(diffusers.LatentConsistencyModelImg2ImgPipeline, tiny_pipeline_dir)
    kwargs = dict(image=picture(64, 64, 1), num_inference_steps=6, strength=0.7, guidance_scale=8.0)
    expected = reference_images(pipe, 2, 5, prompt="a fox", **kwargs)
    ours = LCMImg2ImgPipeline.from_pretrained(
        deep_cache_bundle, precision="f32", cache_dir=False, deep_cache_interval=2
    )
    assert_same_image(
        to_uint8(ours("a fox", output_type="np", generator=torch_draws(5), **kwargs).images), to_uint8(expected)
    )


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_classifier_free_guidance_under_deep_cache(deep_cache_cfg_bundle, torch_draws, guidance):
    pipe = reference(diffusers.StableDiffusionPipeline, components(build_tiny_sd_pipeline(0)), lcm_scheduler=True)
    kwargs = dict(num_inference_steps=4, guidance_scale=guidance, height=64, width=64)
    expected = reference_images(pipe, 2, 7, prompt="a red car", negative_prompt="blurry", **kwargs)
    ours = LCMPipeline.from_pretrained(deep_cache_cfg_bundle, precision="f32", cache_dir=False, deep_cache_interval=2)
    result = ours(
        "a red car",
        negative_prompt="blurry" if guidance > 1 else None,
        output_type="np",
        generator=torch_draws(7),
        **kwargs,
    )
    assert_same_image(to_uint8(result.images), to_uint8(expected))
    assert to_uint8(expected).std() > 2


def test_inpainting_under_deep_cache(tiny_pipeline_dir, deep_cache_bundle, torch_draws):
    pipe = lcm_inpaint_reference(tiny_pipeline_dir)
    ours = LCMInpaintPipeline.from_pretrained(
        deep_cache_bundle, precision="f32", cache_dir=False, deep_cache_interval=2
    )
    helper = under_deep_cache(pipe, 2)
    try:
        assert_inpainting_is_the_reference(
            pipe,
            ours,
            torch_draws,
            ["a red door"],
            image=picture(64, 64, seed=11),
            mask_image=box_mask(64, 64, (16, 16, 48, 40)),
            num_inference_steps=4,
            strength=1.0,
            guidance_scale=8.0,
        )
    finally:
        helper.disable()
