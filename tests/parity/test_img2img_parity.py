"""Image-to-image: the same image as diffusers' LatentConsistencyModelImg2ImgPipeline (FP32 IR at f32,
torch's draws in diffusers' order: the posterior sample, the add-noise draw, then the step noises)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from pictures import picture  # noqa: E402
from references import assert_same_image, lcm_reference  # noqa: E402

from lcm_runtime import LCMImg2ImgPipeline, LCMPipeline  # noqa: E402
from lcm_runtime.errors import InputError  # noqa: E402
from lcm_runtime.image import to_uint8  # noqa: E402

CASES = [
    # (prompts, pictures, images per prompt, steps, strength, guidance)
    (["a watercolor fox"], [picture(64, 64, 1)], 1, 4, 0.3, 8.5),
    (["a watercolor fox"], [picture(64, 64, 2)], 1, 2, 0.5, 8.0),
    (["a red barn in the snow"], [picture(96, 64, 3)], 1, 4, 0.8, 6.0),
    (["a red barn in the snow"], [picture(64, 96, 4)], 1, 1, 1.0, 8.5),
    (["two cats", "a dog"], [picture(64, 64, 5), picture(64, 64, 6)], 2, 2, 0.8, 8.5),
    (["a castle"], [picture(75, 70, 7)], 3, 4, 0.5, 2.0),  # floored to 72x64 with LANCZOS
]


@pytest.fixture(scope="module")
def reference_img2img(tiny_pipeline_dir):
    return lcm_reference(diffusers.LatentConsistencyModelImg2ImgPipeline, tiny_pipeline_dir)


@pytest.fixture(scope="module")
def img2img(tiny_bundle_fp32):
    return LCMImg2ImgPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)


def diffusers_images(reference_img2img, prompts, pictures, per_prompt, steps, strength, guidance, seed):
    image = pictures if len(pictures) > 1 else pictures[0]
    return reference_img2img(
        prompts,
        image=image,
        num_inference_steps=steps,
        strength=strength,
        guidance_scale=guidance,
        num_images_per_prompt=per_prompt,
        output_type="np",
        generator=torch.Generator().manual_seed(seed),
    ).images


# More prompts than images: diffusers repeats the images, with a deprecation warning; compared on purpose.
@pytest.mark.filterwarnings("ignore:You have passed .* text prompts:FutureWarning")
@pytest.mark.parametrize("prompts,pictures,per_prompt,steps,strength,guidance", CASES)
def test_same_image_as_diffusers(
    reference_img2img, img2img, torch_draws, prompts, pictures, per_prompt, steps, strength, guidance
):
    expected = diffusers_images(reference_img2img, prompts, pictures, per_prompt, steps, strength, guidance, 21)
    image = pictures if len(pictures) > 1 else pictures[0]
    result = img2img(
        prompts,
        image=image,
        num_inference_steps=steps,
        strength=strength,
        guidance_scale=guidance,
        num_images_per_prompt=per_prompt,
        output_type="np",
        generator=torch_draws(21),
    )
    assert result.images.shape == expected.shape and len(result.timings["unet"]) == steps
    assert "vae_encode" in result.timings
    assert_same_image(to_uint8(result.images), to_uint8(expected))
    assert to_uint8(expected).std() > 5


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_other_modes_are_converted_to_rgb_first(reference_img2img, img2img, torch_draws, mode):
    """diffusers would hand 4 or 1 channels to the VAE; the runtime converts to RGB, like diffusers given RGB."""
    source = (
        picture(64, 64, 8, mode="RGBA" if mode == "RGBA" else "RGB").convert(mode)
        if mode != "RGBA"
        else picture(64, 64, 8, mode="RGBA")
    )
    expected = diffusers_images(reference_img2img, ["a fox"], [source.convert("RGB")], 1, 2, 0.6, 8.0, 3)
    ours = img2img(
        "a fox",
        image=source,
        num_inference_steps=2,
        strength=0.6,
        guidance_scale=8.0,
        output_type="np",
        generator=torch_draws(3),
    ).images
    assert_same_image(to_uint8(ours), to_uint8(expected))


def test_arrays_and_paths_give_the_pil_image(img2img, tmp_path, torch_draws):
    source = picture(64, 64, 9)
    path = tmp_path / "in.png"
    source.save(path)
    kwargs = dict(num_inference_steps=2, strength=0.5, output_type="np")
    from_pil = img2img("a fox", image=source, generator=torch_draws(4), **kwargs).images
    from_path = img2img("a fox", image=str(path), generator=torch_draws(4), **kwargs).images
    from_uint8 = img2img("a fox", image=np.asarray(source), generator=torch_draws(4), **kwargs).images
    from_float = img2img(
        "a fox", image=np.asarray(source)[None].astype(np.float32) / 255, generator=torch_draws(4), **kwargs
    ).images
    for other in (from_path, from_uint8, from_float):
        np.testing.assert_array_equal(other, from_pil)


def test_strength_too_small_for_the_steps_names_the_minimum(img2img):
    with pytest.raises(InputError, match=r"strength=0.05 .* use strength >= 0.08") as error:
        img2img("a fox", image=picture(64, 64, 1), num_inference_steps=4, strength=0.05)
    assert error.value.argument == "strength"
    for strength in (0.0, -0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(InputError, match="strength"):
            img2img("a fox", image=picture(64, 64, 1), strength=strength)


def test_bad_pictures_are_one_line_errors(img2img, tmp_path):
    (tmp_path / "not.png").write_text("hello")
    cases = [
        str(tmp_path / "not.png"),
        str(tmp_path / "missing.png"),
        picture(4, 4, 1),
        np.zeros((8, 8, 2)),
        np.full((64, 64, 3), 2.0),
        [],
        object(),
    ]
    for image in cases:
        with pytest.raises(InputError) as error:
            img2img("a fox", image=image, num_inference_steps=1)
        assert "\n" not in str(error.value) and error.value.argument == "image"
    with pytest.raises(InputError, match="3 pictures for 2 images"):
        img2img(["a", "b"], image=[picture(64, 64, k) for k in range(3)], num_inference_steps=1)


def test_from_pipe_shares_the_compiled_models(tiny_bundle_fp32):
    """The second task compiles nothing new: the compiled models are the same objects."""
    text = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)
    text("a fox", num_inference_steps=1)
    compiled = {name: text.models._loaded[name][0] for name in text.models.in_memory()}
    seconds = text.models.compile_seconds
    img2img = LCMImg2ImgPipeline.from_pipe(text)
    img2img("a fox", image=picture(64, 64, 1), num_inference_steps=1)
    assert img2img.models is text.models and img2img.tokenizer is text.tokenizer
    assert img2img.scheduler is not text.scheduler  # per-call state stays per pipeline
    for name, model in compiled.items():
        assert img2img.models._loaded[name][0] is model, name
    assert set(img2img.models.in_memory()) == set(compiled) | {"vae_encoder"}
    # Only the VAE encoder, which text-to-image never needs, was compiled by the second task.
    assert set(img2img.models.facts) == set(compiled) | {"vae_encoder"}
    again = LCMPipeline.from_pipe(img2img)
    before = again.models.compile_seconds
    again("a fox", num_inference_steps=1)
    assert again.models.compile_seconds == before and before > seconds
