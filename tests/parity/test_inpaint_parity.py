"""Inpainting: the same image as diffusers' StableDiffusionInpaintPipeline built from the LCM pipeline's
components (4-channel UNet, LCMScheduler; FP32 IR at f32, torch's draws in diffusers' order)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from pictures import box_mask, picture  # noqa: E402
from references import assert_inpainting_is_the_reference, lcm_inpaint_reference  # noqa: E402

from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline  # noqa: E402
from lcm_runtime.errors import InputError  # noqa: E402

CASES = [
    # (prompts, images per prompt, picture size, mask box, height, width, steps, strength, guidance)
    (["a red door"], 1, (64, 64), (16, 16, 48, 40), None, None, 4, 1.0, 8.0),
    (["a red door"], 1, (64, 64), (16, 16, 48, 40), None, None, 4, 0.5, 8.0),
    (["a window"], 1, (80, 72), (0, 0, 30, 72), 64, 96, 4, 0.75, 6.0),  # touches the border; resized
    (["a cat", "a dog"], 2, (64, 64), (30, 8, 64, 64), None, None, 2, 1.0, 8.5),
    (["a boat"], 1, (64, 64), (8, 40, 56, 64), 64, 64, 1, 1.0, 2.0),
]


@pytest.fixture(scope="module")
def reference_inpaint(tiny_pipeline_dir):
    return lcm_inpaint_reference(tiny_pipeline_dir)


@pytest.fixture(scope="module")
def inpaint(tiny_bundle_fp32):
    return LCMInpaintPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)


@pytest.mark.parametrize("prompts,per_prompt,size,box,height,width,steps,strength,guidance", CASES)
def test_same_image_as_diffusers(
    reference_inpaint, inpaint, torch_draws, prompts, per_prompt, size, box, height, width, steps, strength, guidance
):
    assert_inpainting_is_the_reference(
        reference_inpaint,
        inpaint,
        torch_draws,
        prompts,
        image=picture(*size, seed=11),
        mask_image=box_mask(*size, box),
        height=height,
        width=width,
        num_inference_steps=steps,
        strength=strength,
        guidance_scale=guidance,
        num_images_per_prompt=per_prompt,
    )


def test_outside_the_mask_stays_close_to_the_picture(inpaint, torch_draws):
    """Not a parity check: the kept region is the picture's VAE reconstruction, the masked one is new."""
    source, mask = picture(64, 64, seed=12), box_mask(64, 64, (16, 16, 48, 48))
    out = inpaint(
        "a door", image=source, mask_image=mask, num_inference_steps=4, output_type="np", generator=torch_draws(1)
    ).images[0]
    pasted = inpaint(
        "a door",
        image=source,
        mask_image=mask,
        num_inference_steps=4,
        output_type="np",
        generator=torch_draws(1),
        paste_back=True,
    ).images[0]
    original = np.asarray(source).astype(np.float32) / 255
    repaint = np.asarray(mask) >= 128
    assert np.abs(pasted - original)[~repaint].max() < 1 / 255 + 1e-6  # pasted back exactly (up to rounding)
    np.testing.assert_array_equal(pasted[repaint], out[repaint])


def test_bad_masks_and_strengths(inpaint):
    source = picture(64, 64, seed=1)
    with pytest.raises(InputError, match=r"strength=0.2 runs int\(4 x 0.2\) = 0") as error:
        inpaint("a door", image=source, mask_image=box_mask(64, 64, (0, 0, 8, 8)), num_inference_steps=4, strength=0.2)
    assert error.value.argument == "strength"
    with pytest.raises(InputError) as error:
        inpaint("a door", image=source, mask_image="/nonexistent/mask.png")
    assert error.value.argument == "mask_image"
    with pytest.raises(InputError, match="2 masks for 3 pictures"):
        inpaint(["a", "b", "c"], image=[source] * 3, mask_image=[box_mask(64, 64, (0, 0, 8, 8))] * 2)


def test_all_three_tasks_share_one_set_of_models(tiny_bundle_fp32):
    img2img = LCMImg2ImgPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)
    img2img("a door", image=picture(64, 64, seed=1), num_inference_steps=1)
    seconds = img2img.models.compile_seconds
    inpaint = LCMInpaintPipeline.from_pipe(img2img)
    inpaint("a door", image=picture(64, 64, seed=1), mask_image=box_mask(64, 64, (0, 0, 8, 8)), num_inference_steps=1)
    assert inpaint.models is img2img.models and inpaint.models.compile_seconds == seconds
