"""Same image as diffusers: FP32 IR at f32 precision, fed torch's random draws.

The bar: uint8 images differ by at most 1 level on at most 0.1% of the values.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from references import assert_same_image, lcm_reference

from lcm_runtime import LCMPipeline
from lcm_runtime.image import to_uint8
from lcm_runtime.tokenizer import PromptTruncatedWarning

LONG_PROMPT = ", ".join(["a very detailed castle on a hill at sunset with dragons"] * 12)
CASES = [
    # (prompts, images per prompt, steps, guidance, height, width)
    (["a beautiful pink unicorn, 8k"], 1, 1, 8.0, 64, 64),
    (["a photo of a cat"], 1, 2, 1.0, 64, 96),
    (["a red car", "ein grünes Haus am See, 東京の夜 🌃"], 2, 4, 2.0, 96, 64),
    (["  spaced   out\tprompt\n"], 1, 8, 8.0, 64, 64),
    ([LONG_PROMPT], 1, 4, 8.0, 64, 64),
]


@pytest.fixture(scope="module")
def reference_pipeline(tiny_pipeline_dir):
    return lcm_reference(diffusers.LatentConsistencyModelPipeline, tiny_pipeline_dir)


@pytest.fixture(scope="module")
def runtime_pipeline(tiny_bundle_fp32):
    return LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)


@pytest.mark.parametrize("prompts,per_prompt,steps,guidance,height,width", CASES)
def test_same_image_as_diffusers(
    reference_pipeline, runtime_pipeline, torch_draws, prompts, per_prompt, steps, guidance, height, width
):
    expected = reference_pipeline(
        prompts,
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=height,
        width=width,
        num_images_per_prompt=per_prompt,
        output_type="np",
        generator=torch.Generator().manual_seed(1234),
    ).images
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runtime_pipeline(
            prompts,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            num_images_per_prompt=per_prompt,
            output_type="np",
            generator=torch_draws(1234),
        )
    assert result.images.dtype == np.float32 and result.images.shape == expected.shape
    assert len(result.timings["unet"]) == steps
    np.testing.assert_allclose(result.images, expected, atol=5e-3)
    assert_same_image(to_uint8(result.images), to_uint8(expected))
    # A random tiny model still draws something: the check above is not comparing two blank images.
    assert to_uint8(expected).std() > 5
    truncated = [w for w in caught if issubclass(w.category, PromptTruncatedWarning)]
    assert bool(truncated) == (prompts == [LONG_PROMPT])
    if truncated:
        assert "dragons" in str(truncated[0].message)


def test_pil_output_and_seed_reproducibility(runtime_pipeline):
    first = runtime_pipeline("a cat", num_inference_steps=2, generator=7).images
    second = runtime_pipeline("a cat", num_inference_steps=2, generator=7).images
    other = runtime_pipeline("a cat", num_inference_steps=2, generator=8).images
    assert first[0].size == (64, 64) and first[0].mode == "RGB"
    assert np.array_equal(np.asarray(first[0]), np.asarray(second[0]))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(other[0]))


def test_folder_without_manifest_loads_like_an_optimum_export(tiny_bundle_fp32, tmp_path, torch_draws):
    """optimum-cli folders have no manifest and no torch tables: the runtime computes them in NumPy."""
    import dataclasses
    import shutil

    folder = tmp_path / "optimum-like"
    shutil.copytree(tiny_bundle_fp32, folder)
    (folder / "manifest.json").unlink()
    for table in (folder / "scheduler").glob("*.npy"):
        table.unlink()
    plain = LCMPipeline.from_pretrained(folder, precision="f32", cache_dir=False)
    assert plain.folder.manifest is None and plain.folder.scheduler_tables is None
    bundled = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)
    # Without a manifest the runtime cannot know how the UNet was traced, so it asks for the strict multiple.
    assert plain.facts == dataclasses.replace(bundled.facts, latent_size_multiple=2)
    ours = plain("a cat", num_inference_steps=4, output_type="np", generator=torch_draws(3)).images
    exact = bundled("a cat", num_inference_steps=4, output_type="np", generator=torch_draws(3)).images
    np.testing.assert_allclose(ours, exact, atol=1e-3)


def test_tiled_vae_decode_is_close_to_the_whole_decode(runtime_pipeline, torch_draws):
    """Tiles of the native size (64 px here) at 192x128: bounded memory, no visible seams."""
    kwargs = dict(num_inference_steps=2, height=128, width=192, output_type="np")
    whole = runtime_pipeline("a cat", generator=torch_draws(5), tiled_vae=False, **kwargs).images
    tiled = runtime_pipeline("a cat", generator=torch_draws(5), tiled_vae=True, **kwargs).images
    assert tiled.shape == whole.shape == (1, 128, 192, 3)
    assert not np.array_equal(tiled, whole)  # it really decoded in tiles
    difference = np.abs(tiled - whole)
    assert difference.mean() < 0.05, difference.mean()
    # No seam: the jump across tile borders is no larger than between any neighbouring columns.
    jumps = np.abs(np.diff(tiled, axis=2)).mean(axis=(0, 1, 3))
    assert jumps.max() < 3 * np.median(jumps) + 0.05
