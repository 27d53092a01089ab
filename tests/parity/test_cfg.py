"""The "cfg" guidance mode (an SD1.5 UNet without time_cond_proj_dim, as LCM-LoRA fused gives, with
LCMScheduler): the same images as diffusers' StableDiffusionPipeline, StableDiffusionImg2ImgPipeline and
StableDiffusionInpaintPipeline with ``LCMScheduler.from_config(pipe.scheduler.config)``, classifier-free
guidance, negative prompts and guidance_rescale included (FP32 IR at f32, torch's draws in diffusers' order).

The bar: uint8 images differ by at most 1 level on at most 0.1% of the values.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from pictures import box_mask, picture  # noqa: E402
from references import (  # noqa: E402
    assert_inpainting_is_the_reference,
    assert_same_image,
    components,
    diffusers_negatives,
    reference,
)

from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline, LCMPipeline  # noqa: E402
from lcm_runtime.guidance import rescale_noise_cfg  # noqa: E402
from lcm_runtime.image import to_uint8  # noqa: E402
from lcm_runtime.prompt_weighting import SpecialTokens, pad_to_chunk_count, prompt_chunks  # noqa: E402
from lcm_runtime.tokenizer import PromptTruncatedWarning  # noqa: E402

# 150 one-token words, no commas or brackets: two 75-token chunks in A1111's syntax, all weights 1.
WORDS = (
    "cat dog red blue house tree river sky moon sun star city road car boat bird fish horse green white "
    "black gold light dark night day rain snow fire water stone wood glass paper flower garden forest "
    "mountain lake sea cloud wind storm bridge tower castle window door wall roof street field farm "
    "village king queen girl boy man woman child old young small big tall short long round soft hard "
    "warm cold happy sad quiet loud fast slow bright clean wet dry sweet fresh wild calm"
).split()
LONG = " ".join(WORDS[:75] + WORDS[::-1][:75])


@pytest.fixture(scope="module")
def sd_components():
    """The tiny SD1.5-like pipeline the cfg bundle was exported from (same seed, same weights)."""
    from lcm_export.tiny import build_tiny_sd_pipeline

    return components(build_tiny_sd_pipeline(0))


@pytest.fixture(scope="module")
def reference_text(sd_components):
    return reference(diffusers.StableDiffusionPipeline, sd_components, lcm_scheduler=True)


@pytest.fixture(scope="module")
def text(tiny_cfg_bundle):
    return LCMPipeline.from_pretrained(tiny_cfg_bundle, precision="f32", cache_dir=False)


TEXT_CASES = [
    # (prompts, images per prompt, steps, guidance, negative prompt, guidance_rescale, height, width)
    (["a red car"], 1, 4, 1.0, None, 0.0, 64, 64),
    (["a red car"], 1, 4, 1.8, "blurry, low quality", 0.0, 64, 64),
    (["a red car"], 1, 4, 2.5, None, 0.7, 64, 96),
    (["a cat", "ein grünes Haus am See"], 2, 2, 1.8, ["blurry", "a dog"], 0.0, 64, 64),
    (["a castle on a hill"], 1, 8, 2.5, "fog", 0.7, 96, 64),
    (["a red car"], 1, 1, 7.5, "", 0.0, 64, 64),
]


@pytest.mark.parametrize("prompts,per_prompt,steps,guidance,negative,rescale,height,width", TEXT_CASES)
def test_text_to_image_is_diffusers_stable_diffusion_with_lcm_scheduler(
    reference_text, text, torch_draws, prompts, per_prompt, steps, guidance, negative, rescale, height, width
):
    kwargs = dict(
        num_inference_steps=steps,
        guidance_scale=guidance,
        guidance_rescale=rescale,
        height=height,
        width=width,
        num_images_per_prompt=per_prompt,
        output_type="np",
    )
    expected = reference_text(
        prompts,
        negative_prompt=diffusers_negatives(negative, prompts),
        generator=torch.Generator().manual_seed(7),
        **kwargs,
    ).images
    result = text(prompts, negative_prompt=negative, generator=torch_draws(7), **kwargs)
    assert result.images.shape == expected.shape and len(result.timings["unet"]) == steps
    # The UNet ran on [uncond, cond] exactly when the guidance scale is above 1.
    assert text.models._loaded["unet"][1]["sample"][0] == len(prompts) * per_prompt * (2 if guidance > 1 else 1)
    assert "timestep_cond" not in text.models._loaded["unet"][1]
    np.testing.assert_allclose(result.images, expected, atol=5e-3)
    assert_same_image(to_uint8(result.images), to_uint8(expected))
    assert to_uint8(expected).std() > 5


def test_guidance_negative_prompt_and_rescale_each_change_the_image(text, torch_draws):
    """So that the comparisons above are not of images guidance never touched."""
    call = dict(num_inference_steps=4, output_type="np")

    def image(**kwargs):
        return text("a red car", generator=torch_draws(3), **call, **kwargs).images

    plain = image(guidance_scale=1.0)
    guided = image(guidance_scale=2.0)
    negative = image(guidance_scale=2.0, negative_prompt="a blue boat")
    rescaled = image(guidance_scale=2.0, guidance_rescale=0.7)
    for one, other in ((plain, guided), (guided, negative), (guided, rescaled)):
        assert np.abs(one - other).max() > 1e-3
    # An empty negative prompt is diffusers' default unconditional prompt.
    np.testing.assert_array_equal(image(guidance_scale=2.0, negative_prompt=""), guided)


def test_at_guidance_1_or_below_the_negative_prompt_is_ignored_as_in_diffusers(text, torch_draws):
    call = dict(num_inference_steps=2, output_type="np", guidance_scale=1.0)
    alone = text("a red car", generator=torch_draws(4), **call).images
    with_negative = text(
        "a red car", generator=torch_draws(4), negative_prompt="a blue boat", guidance_rescale=0.7, **call
    )
    np.testing.assert_array_equal(with_negative.images, alone)
    assert text.models._loaded["unet"][1]["sample"][0] == 1  # one pass, no doubled batch


def test_rescale_noise_cfg_is_diffusers(torch_draws):
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg as theirs

    draws = torch_draws(11)
    guided, conditional = draws.standard_normal((3, 4, 9, 7)), draws.standard_normal((3, 4, 9, 7)) * 0.5
    for rescale in (0.0, 0.3, 0.7, 1.0):
        expected = theirs(torch.from_numpy(guided), torch.from_numpy(conditional), guidance_rescale=rescale).numpy()
        np.testing.assert_allclose(rescale_noise_cfg(guided, conditional, rescale), expected, rtol=1e-6, atol=1e-7)
    # Unbiased (ddof=1), as torch.std: a biased std would scale by sqrt((n-1)/n) per image.
    ours = rescale_noise_cfg(guided, conditional, 1.0)
    unbiased = (
        guided * (conditional.std(axis=(1, 2, 3), ddof=1) / guided.std(axis=(1, 2, 3), ddof=1))[:, None, None, None]
    )
    np.testing.assert_allclose(ours, unbiased, rtol=1e-5)


def test_a1111_long_prompt_and_negative_are_padded_to_one_chunk_count(reference_text, text, torch_draws):
    """A1111's syntax: a 150-token prompt (2 chunks) and a short negative prompt (1 chunk, padded with the
    empty chunk to 2, as A1111 pads cond and uncond). diffusers is handed the same chunks, encoded by its
    own text encoder, as prompt_embeds and negative_prompt_embeds."""
    negative = "blurry, low quality"
    special = SpecialTokens.of(text.tokenizer)
    chunked = pad_to_chunk_count(
        [prompt_chunks(LONG, text.tokenizer), prompt_chunks(negative, text.tokenizer)], special
    )
    assert [len(chunks) for chunks in chunked] == [2, 2]

    def embeddings(chunks):
        with torch.no_grad():
            return torch.cat([reference_text.text_encoder(torch.tensor([chunk.tokens]))[0] for chunk in chunks], dim=1)

    kwargs = dict(num_inference_steps=4, guidance_scale=2.0, output_type="np")
    expected = reference_text(
        prompt_embeds=embeddings(chunked[0]),
        negative_prompt_embeds=embeddings(chunked[1]),
        generator=torch.Generator().manual_seed(9),
        **kwargs,
    ).images
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)  # nothing is cut in A1111's syntax
        result = text(LONG, negative_prompt=negative, prompt_syntax="a1111", generator=torch_draws(9), **kwargs)
    assert text.models._loaded["unet"][1]["encoder_hidden_states"] == [2, 154, -1]
    assert_same_image(to_uint8(result.images), to_uint8(expected))
    # The negative prompt's padding chunk is the empty prompt's: "blurry, low quality BREAK BREAK" is the same.
    padded = text(
        LONG, negative_prompt=negative + " BREAK BREAK", prompt_syntax="a1111", generator=torch_draws(9), **kwargs
    )
    np.testing.assert_array_equal(padded.images, result.images)
    # And a negative prompt longer than the prompt pads the prompt instead.
    longer = text("a cat", negative_prompt=LONG, prompt_syntax="a1111", generator=torch_draws(9), **kwargs)
    assert longer.images.shape == (1, 64, 64, 3)
    assert text.models._loaded["unet"][1]["encoder_hidden_states"] == [2, 154, -1]


# --- image-to-image: StableDiffusionImg2ImgPipeline semantics (the last int(n * strength) steps) ---------


@pytest.fixture(scope="module")
def reference_img2img(sd_components):
    return reference(diffusers.StableDiffusionImg2ImgPipeline, sd_components, lcm_scheduler=True)


@pytest.fixture(scope="module")
def img2img(text):
    return LCMImg2ImgPipeline.from_pipe(text)


IMG2IMG_CASES = [
    # (prompts, pictures, images per prompt, steps, strength, guidance, negative prompt)
    (["a watercolor fox"], [picture(64, 64, 1)], 1, 4, 0.6, 1.8, "blurry"),  # 2 of 4 steps: [499, 259]
    (["a red barn in the snow"], [picture(96, 64, 3)], 1, 4, 1.0, 2.0, None),
    (["two cats", "a dog"], [picture(64, 64, 5), picture(64, 64, 6)], 2, 4, 0.8, 1.0, None),
    (["a castle"], [picture(75, 70, 7)], 1, 8, 0.5, 2.5, "ugly"),  # floored to 72x64 with LANCZOS
]


# More prompts than images: diffusers repeats the images, with a deprecation warning; compared on purpose.
@pytest.mark.filterwarnings("ignore:You have passed .* text prompts:FutureWarning")
@pytest.mark.parametrize("prompts,pictures,per_prompt,steps,strength,guidance,negative", IMG2IMG_CASES)
def test_image_to_image_is_diffusers_stable_diffusion_img2img(
    reference_img2img, img2img, torch_draws, prompts, pictures, per_prompt, steps, strength, guidance, negative
):
    kwargs = dict(
        image=pictures if len(pictures) > 1 else pictures[0],
        num_inference_steps=steps,
        strength=strength,
        guidance_scale=guidance,
        num_images_per_prompt=per_prompt,
        output_type="np",
    )
    expected = reference_img2img(
        prompts,
        negative_prompt=diffusers_negatives(negative, prompts),
        generator=torch.Generator().manual_seed(21),
        **kwargs,
    ).images
    result = img2img(prompts, negative_prompt=negative, generator=torch_draws(21), **kwargs)
    assert result.images.shape == expected.shape
    # diffusers' get_timesteps: int(n * strength) steps run, not the LCM img2img pipeline's n.
    assert len(result.timings["unet"]) == int(steps * strength)
    assert_same_image(to_uint8(result.images), to_uint8(expected))
    assert to_uint8(expected).std() > 5


def test_image_to_image_strength_too_small_names_the_minimum(img2img):
    from lcm_runtime.errors import InputError

    with pytest.raises(InputError, match=r"strength=0.2 runs int\(4 x 0.2\) = 0") as error:
        img2img("a fox", image=picture(64, 64, 1), num_inference_steps=4, strength=0.2)
    assert error.value.argument == "strength"


# --- inpainting: StableDiffusionInpaintPipeline with the 4-channel cfg UNet --------------------------


@pytest.fixture(scope="module")
def reference_inpaint(sd_components):
    return reference(diffusers.StableDiffusionInpaintPipeline, sd_components, lcm_scheduler=True)


@pytest.fixture(scope="module")
def inpaint(text):
    return LCMInpaintPipeline.from_pipe(text)


INPAINT_CASES = [
    # (prompts, images per prompt, picture size, mask box, height, width, steps, strength, guidance, negative)
    (["a red door"], 1, (64, 64), (16, 16, 48, 40), None, None, 4, 1.0, 1.8, "blurry"),
    (["a window"], 1, (80, 72), (0, 0, 30, 72), 64, 96, 4, 0.75, 2.0, None),
    (["a cat", "a dog"], 2, (64, 64), (30, 8, 64, 64), None, None, 2, 1.0, 1.5, ["fog", "rain"]),
    (["a boat"], 1, (64, 64), (8, 40, 56, 64), 64, 64, 4, 0.5, 1.0, None),
]


@pytest.mark.parametrize("prompts,per_prompt,size,box,height,width,steps,strength,guidance,negative", INPAINT_CASES)
def test_inpainting_is_diffusers_stable_diffusion_inpaint(
    reference_inpaint,
    inpaint,
    torch_draws,
    prompts,
    per_prompt,
    size,
    box,
    height,
    width,
    steps,
    strength,
    guidance,
    negative,
):
    assert_inpainting_is_the_reference(
        reference_inpaint,
        inpaint,
        torch_draws,
        prompts,
        negative,
        image=picture(*size, seed=11),
        mask_image=box_mask(*size, box),
        height=height,
        width=width,
        num_inference_steps=steps,
        strength=strength,
        guidance_scale=guidance,
        num_images_per_prompt=per_prompt,
    )
