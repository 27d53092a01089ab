"""Inpainting UNets: SD1.5 inpainting's 9 input channels (the latents, the mask at latent size, the masked
picture's latents), in cfg mode as sd-1.5-inpainting with LCM-LoRA fused is. The same images as diffusers'
StableDiffusionInpaintPipeline with ``LCMScheduler.from_config(pipe.scheduler.config)`` (FP32 IR at f32,
torch's draws in diffusers' order: the picture's posterior sample only when strength < 1, the initial noise,
the masked picture's posterior sample, then the steps), and likewise for an LCM with a 9-channel UNet
(embedded guidance; no public model is one, but diffusers runs it the same way).

The bar: uint8 images differ by at most 1 level on at most 0.1% of the values.
"""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from pictures import box_mask, picture  # noqa: E402
from references import assert_inpainting_is_the_reference, components, reference  # noqa: E402

from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline, LCMPipeline  # noqa: E402
from lcm_runtime.bundle import MANIFEST_FILE, component_xml, read_json, read_manifest, verify_files  # noqa: E402
from lcm_runtime.errors import BundleError, InputError  # noqa: E402

INPAINTING_CHANNELS = 9


def export(loaded, out, **options):
    from lcm_export.exporter import ExportOptions, export_bundle

    export_bundle(loaded, out, ExportOptions(weights="fp32", **options))
    return out


@pytest.fixture(scope="module")
def cfg9_bundle(tmp_path_factory):
    """The tiny SD1.5-like pipeline with a 9-channel UNet (seed 0), exported at fp32 in cfg mode."""
    from lcm_export.tiny import load_tiny_sd_random

    out = tmp_path_factory.mktemp("cfg9") / "bundle"
    return export(load_tiny_sd_random(0, in_channels=INPAINTING_CHANNELS), out, guidance_mode="cfg")


@pytest.fixture(scope="module")
def reference_cfg9():
    from lcm_export.tiny import build_tiny_sd_pipeline

    sd = build_tiny_sd_pipeline(0, in_channels=INPAINTING_CHANNELS)
    return reference(diffusers.StableDiffusionInpaintPipeline, components(sd), lcm_scheduler=True)


@pytest.fixture(scope="module")
def inpaint9(cfg9_bundle):
    return LCMInpaintPipeline.from_pretrained(cfg9_bundle, precision="f32", cache_dir=False)


def inputs(pictures, boxes):
    """The pictures (seeded) and their box masks, one or a list each, as both pipelines take them."""
    images = [picture(*size, seed=11 + index) for index, size in enumerate(pictures)]
    masks = [box_mask(*size, box) for size, box in zip(pictures, boxes, strict=True)]
    return (images[0], masks[0]) if len(images) == 1 else (images, masks)


CFG_CASES = [
    # (prompts, images per prompt, picture sizes, mask boxes, height, width, steps, strength, guidance, negative)
    (["a red door"], 1, [(64, 64)], [(16, 16, 48, 40)], None, None, 4, 1.0, 1.0, None),
    (["a red door"], 1, [(64, 64)], [(16, 16, 48, 40)], None, None, 4, 0.6, 2.0, "blurry"),  # 2 of 4 steps
    (["a cat", "a dog"], 1, [(64, 64)], [(30, 8, 64, 64)], None, None, 4, 1.0, 2.0, ["fog", "rain"]),
    (["a window"], 2, [(80, 72)], [(0, 0, 30, 72)], 64, 96, 4, 0.6, 1.0, None),  # resized; touches the border
    (["a cat", "a dog"], 1, [(64, 64), (64, 64)], [(8, 8, 40, 40), (24, 0, 64, 32)], None, None, 4, 0.6, 2.0, "fog"),
    (["a boat"], 1, [(64, 64)], [(8, 40, 56, 64)], None, None, 1, 1.0, 2.5, "ugly"),
]


def compare(
    reference, ours, draws, prompts, per_prompt, pictures, boxes, height, width, steps, strength, guidance, negative
):
    image, mask = inputs(pictures, boxes)
    return assert_inpainting_is_the_reference(
        reference,
        ours,
        draws,
        prompts,
        negative,
        image=image,
        mask_image=mask,
        height=height,
        width=width,
        num_inference_steps=steps,
        strength=strength,
        guidance_scale=guidance,
        num_images_per_prompt=per_prompt,
    )


@pytest.mark.parametrize("case", CFG_CASES)
def test_cfg_inpainting_unet_is_diffusers_stable_diffusion_inpaint(reference_cfg9, inpaint9, torch_draws, case):
    compare(reference_cfg9, inpaint9, torch_draws, *case)
    prompts, per_prompt, *_, guidance, _negative = case
    # The UNet ran on 9 channels, on [uncond, cond] exactly when the guidance is above 1.
    batch = len(prompts) * per_prompt
    sample = inpaint9.models._loaded["unet"][1]["sample"]
    assert sample[:2] == [batch * (2 if guidance > 1 else 1), INPAINTING_CHANNELS]


@pytest.mark.parametrize("strength,steps_run", [(1.0, 4), (0.6, 2)])
def test_the_draws_are_diffusers_order(inpaint9, torch_draws, strength, steps_run):
    """The picture's sample only when strength < 1, then the noise (batch 2), the masked pictures' sample (1
    picture), then one per step but the last."""

    class RecordedDraws(torch_draws):
        def __init__(self, seed):
            super().__init__(seed)
            self.shapes = []

        def standard_normal(self, size, dtype=np.float32):
            self.shapes.append(tuple(size))
            return super().standard_normal(size, dtype)

    image, mask = inputs([(64, 64)], [(16, 16, 48, 40)])
    draws = RecordedDraws(3)
    inpaint9("a door", image=image, mask_image=mask, num_images_per_prompt=2, strength=strength, generator=draws)
    latent = (4, 8, 8)
    first = [(1, *latent)] if strength < 1 else []
    assert draws.shapes == first + [(2, *latent), (1, *latent)] + [(2, *latent)] * (steps_run - 1)


def test_the_mask_and_the_kept_picture_reach_the_unet(inpaint9, torch_draws):
    """Without a blend, only the UNet's extra channels can tell it the mask and what is kept: change the
    picture outside the mask, or the mask, and the repainted pixels change too."""

    def repainted(image, mask):
        return inpaint9(
            "a door", image=image, mask_image=mask, num_inference_steps=2, output_type="np", generator=torch_draws(8)
        ).images[0, 24:40, 24:40]

    box = (16, 16, 48, 48)
    base = repainted(picture(64, 64, seed=1), box_mask(64, 64, box))
    assert np.abs(base - repainted(picture(64, 64, seed=2), box_mask(64, 64, box))).max() > 1e-3
    assert np.abs(base - repainted(picture(64, 64, seed=1), box_mask(64, 64, (8, 8, 56, 56)))).max() > 1e-3


# --- the bundle ---------------------------------------------------------------------------------------


def test_the_bundle_records_an_inpainting_unet(cfg9_bundle, tiny_cfg_bundle):
    import openvino as ov

    manifest = read_manifest(cfg9_bundle)
    assert verify_files(cfg9_bundle, manifest) == []
    facts = manifest.model
    assert (facts.latent_channels, facts.unet_in_channels, facts.unet_channels) == (4, 9, 9)
    assert facts.inpainting_unet and facts.guidance_mode == "cfg" and manifest.format_version == 2
    unet = ov.Core().read_model(cfg9_bundle / component_xml("unet"))
    assert unet.input("sample").get_partial_shape()[1].get_length() == INPAINTING_CHANNELS
    assert [port.get_any_name() for port in unet.inputs] == ["sample", "timestep", "encoder_hidden_states"]
    assert list(unet.output(0).get_partial_shape())[1].get_length() == 4
    assert read_json(cfg9_bundle / "model_index.json")["_class_name"] == "StableDiffusionInpaintPipeline"
    # The field is derivable from unet/config.json, which the bundle ships; absent for a UNet on latents alone,
    # so every other bundle's manifest is what it was (and a runtime without the field still reads it).
    assert json.loads((cfg9_bundle / MANIFEST_FILE).read_text())["model"]["unet_in_channels"] == 9
    assert "unet_in_channels" not in json.loads((tiny_cfg_bundle / MANIFEST_FILE).read_text())["model"]
    assert read_manifest(tiny_cfg_bundle).model.unet_channels == 4
    assert (
        read_json(cfg9_bundle / "model_index.json")["_class_name"]
        != read_json(tiny_cfg_bundle / "model_index.json")["_class_name"]
    )


def test_text_and_image_to_image_refuse_an_inpainting_unet_as_diffusers_fails(cfg9_bundle, inpaint9, reference_cfg9):
    """diffusers' StableDiffusionPipeline and Img2ImgPipeline fail on a 9-channel UNet with a shape error; here
    it is one line naming inpainting, before any model runs."""
    text = LCMPipeline.from_pipe(inpaint9)
    img2img = LCMImg2ImgPipeline.from_pipe(inpaint9)
    for task, call in (
        ("text-to-image", lambda: text("a door", num_inference_steps=1)),
        ("image-to-image", lambda: img2img("a door", image=picture(64, 64, seed=1), num_inference_steps=1)),
    ):
        with pytest.raises(BundleError, match=f"inpainting UNet .*not {task}") as error:
            call()
        assert "\n" not in str(error.value) and str(cfg9_bundle) in str(error.value)
    parts = {name: getattr(reference_cfg9, name) for name in ("vae", "text_encoder", "tokenizer", "unet")}
    parts["scheduler"] = diffusers.LCMScheduler.from_config(reference_cfg9.scheduler.config)
    common = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with pytest.raises(RuntimeError, match="size of tensor"):
        diffusers.StableDiffusionPipeline(**parts, **common)("a door", num_inference_steps=1, height=64, width=64)
    with pytest.raises(RuntimeError, match="channels"):
        diffusers.StableDiffusionImg2ImgPipeline(**parts, **common)("a door", image=picture(64, 64, 1))


def test_int8_calibration_is_refused_for_an_inpainting_unet(tmp_path):
    from lcm_export.tiny import load_tiny_sd_random

    with pytest.raises(InputError, match="--quantize-unet int8 .*inpainting UNet") as error:
        export(
            load_tiny_sd_random(0, in_channels=INPAINTING_CHANNELS),
            tmp_path / "out",
            guidance_mode="cfg",
            quantize_unet="int8",
        )
    assert "\n" not in str(error.value) and "--weights int8" in str(error.value)
    # The tiny VAE's calibration runs the same text-to-image prompts.
    with pytest.raises(InputError, match="--quantize-tiny-vae int8 .*inpainting UNet.*drop --quantize-tiny-vae"):
        export(
            load_tiny_sd_random(0, in_channels=INPAINTING_CHANNELS),
            tmp_path / "out",
            guidance_mode="cfg",
            quantize_tiny_vae="int8",
        )
    assert list(tmp_path.iterdir()) == []  # refused before anything is staged


def test_a_manifest_that_disagrees_with_the_unet_config_is_refused(cfg9_bundle, tmp_path):
    """As an older lcm-export would have written it: the 9 input channels recorded as the latents'."""
    from lcm_runtime.loading import open_model_folder

    root = tmp_path / "bundle"
    shutil.copytree(cfg9_bundle, root)
    data = json.loads((root / MANIFEST_FILE).read_text())
    del data["model"]["unet_in_channels"]
    data["model"]["latent_channels"] = 9
    (root / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="takes 9 channels and predicts 9.*out_channels 4; re-export") as error:
        open_model_folder(root)
    assert "\n" not in str(error.value)
    assert open_model_folder(cfg9_bundle).facts.unet_channels == 9


# --- embedded guidance: an LCM whose UNet has 9 channels -----------------------------------------------


@pytest.fixture(scope="module")
def embedded9_bundle(tmp_path_factory):
    from lcm_export.source import LoadedSource
    from lcm_export.tiny import build_tiny_pipeline

    loaded = LoadedSource(pipeline=build_tiny_pipeline(0, in_channels=INPAINTING_CHANNELS), info={"kind": "test"})
    return export(loaded, tmp_path_factory.mktemp("embedded9") / "bundle")


@pytest.fixture(scope="module")
def reference_embedded9():
    from lcm_export.tiny import build_tiny_pipeline

    lcm = build_tiny_pipeline(0, in_channels=INPAINTING_CHANNELS)
    return reference(diffusers.StableDiffusionInpaintPipeline, components(lcm))


EMBEDDED_CASES = [
    (["a red door"], 1, [(64, 64)], [(16, 16, 48, 40)], None, None, 4, 1.0, 8.0, None),
    (["a cat", "a dog"], 1, [(64, 64)], [(30, 8, 64, 64)], None, None, 4, 0.6, 6.0, None),
]


@pytest.mark.parametrize("case", EMBEDDED_CASES)
def test_embedded_inpainting_unet_is_diffusers_stable_diffusion_inpaint(
    reference_embedded9, embedded9_bundle, torch_draws, case
):
    ours = LCMInpaintPipeline.from_pretrained(embedded9_bundle, precision="f32", cache_dir=False)
    assert ours.facts.guidance_mode == "embedded" and ours.facts.unet_channels == INPAINTING_CHANNELS
    compare(reference_embedded9, ours, torch_draws, *case)
    prompts, per_prompt = case[:2]
    assert ours.models._loaded["unet"][1]["sample"][:2] == [len(prompts) * per_prompt, INPAINTING_CHANNELS]
