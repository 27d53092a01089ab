"""--fast: lcm-export writes the INT8 UNet and a TAESD decoder, lcm-run and the API use both."""

import os
import subprocess
import sys

import numpy as np
import openvino as ov
import pytest
from image_bounds import assert_near

pytest.importorskip("torch")
pytest.importorskip("nncf")

from lcm_runtime import LCMPipeline
from lcm_runtime.bundle import (
    INT8_PTQ,
    TINY_VAE_DECODER,
    UNET_SHALLOW,
    component_xml,
    read_manifest,
    verify_files,
)
from lcm_runtime.errors import BundleError, InputError

# The INT8 TAESD's deviation from its float decoder on the tiny random model, in the decoder's [-1, 1] units:
# measured mean 0.0023, max 0.012-0.031 over three prompts (2026-12-07, Zen 4); the bounds leave room for other
# CPUs and NNCF versions.
TINY_VAE_INT8_MEAN = 0.02
TINY_VAE_INT8_MAX = 0.2
ENV = {**os.environ, "LCM_CACHE_DIR": "off", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def fast_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("fast") / "bundle"
    result = subprocess.run(
        [sys.executable, "-m", "lcm_export.entry", "--tiny-random", str(out), "--fast", "--calibration-size", "4"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return out


def test_export_fast_writes_int8_unet_and_tiny_vae(fast_bundle):
    manifest = read_manifest(fast_bundle)
    assert manifest.components["unet"]["precision"] == INT8_PTQ
    assert manifest.components[TINY_VAE_DECODER]["source"]["kind"] == "tiny-random"
    assert manifest.calibration["samples"] == 4 and manifest.calibration["model_type"] == "transformer"
    # The TAESD decoder is INT8 too, calibrated on the 4 steps' denoised latents of the same runs.
    assert manifest.components[TINY_VAE_DECODER]["precision"] == INT8_PTQ
    assert manifest.calibration["tiny_vae"]["samples"] == 4
    tiny_ir = ov.Core().read_model(fast_bundle / component_xml(TINY_VAE_DECODER))
    assert "FakeQuantize" in {node.get_type_name() for node in tiny_ir.get_ops()}
    # The tiny UNet's full-resolution blocks hold 1 (down) + 2 (up) self-attentions; SD1.5's, 2 + 3.
    assert manifest.components["unet"]["token_downsampling"] == {"factor": 2, "self_attentions": 3}
    # --fast adds DeepCache's shallow UNet (float: it is not calibrated), so lcm-run --deep-cache runs on it.
    assert manifest.components[UNET_SHALLOW]["precision"] == "fp16"
    assert verify_files(fast_bundle, manifest) == []
    info = subprocess.run(
        [sys.executable, "-m", "lcm_runtime.cli", "info", str(fast_bundle)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert "token downsampling: keys/values pooled 2x2 in 3 full-resolution self-attentions" in info.stdout, info.stderr
    assert "vae_decoder_tiny int8-ptq" in info.stdout


def test_fast_is_the_int8_unet_with_the_tiny_vae(fast_bundle):
    fast = LCMPipeline.from_pretrained(fast_bundle, cache_dir=False, fast=True)
    assert fast.vae == "tiny"
    same = LCMPipeline.from_pretrained(fast_bundle, cache_dir=False, vae="tiny")
    full = LCMPipeline.from_pretrained(fast_bundle, cache_dir=False)
    arguments = dict(num_inference_steps=2, height=64, width=64, output_type="np", generator=3)
    image = fast("a red cube", **arguments).images
    assert np.array_equal(image, same("a red cube", **arguments).images)
    # DeepCache on the INT8 UNet: its second step runs the shallow UNet on the INT8 UNet's deep feature.
    deep = LCMPipeline.from_pretrained(fast_bundle, cache_dir=False, fast=True, deep_cache_interval=2)
    assert not np.array_equal(image, deep("a red cube", **arguments).images)
    assert np.abs(image - full("a red cube", **arguments).images).max() > 0.05  # the full VAE was not used


def test_the_int8_tiny_vae_decodes_near_its_float_decoder(fast_bundle):
    """The quantized TAESD against the same random TAESD in float (tiny_random_vae(0), what --tiny-random --fast
    exports), both at f32 on latents like the calibration's: a decoder calibrated on the wrong inputs would
    clip them."""
    from lcm_export.calibration import run_calibration_prompts
    from lcm_export.tiny_vae import convert_tiny_vae_decoder, tiny_random_vae

    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    quantized = core.compile_model(fast_bundle / component_xml(TINY_VAE_DECODER), "CPU", f32)
    reference = core.compile_model(convert_tiny_vae_decoder(tiny_random_vae(0)), "CPU", f32)
    latents = run_calibration_prompts(fast_bundle, ["a red cube"], 4).denoised[-1]
    expected, image = reference(latents)[0], quantized(latents)[0]
    assert np.abs(expected).max() > 0.05  # the decoder's output is not flat
    assert not np.array_equal(image, expected)  # int8 is not the float decoder
    assert np.abs(image - expected).mean() < TINY_VAE_INT8_MEAN and np.abs(image - expected).max() < TINY_VAE_INT8_MAX


def test_the_fast_unet_makes_the_fp32_bundles_image_within_its_bound(fast_bundle, tiny_bundle_fp32):
    """Through the full VAE, at f32, the INT8 token-downsampled UNet stays within the bound measured for
    it (image_bounds.py) of the fp32 bundle's image: --tiny-random is the same seed-0 model."""
    arguments = dict(num_inference_steps=2, height=64, width=64, output_type="np", generator=3)
    full = LCMPipeline.from_pretrained(fast_bundle, cache_dir=False, precision="f32", vae="full")
    fp32 = LCMPipeline.from_pretrained(tiny_bundle_fp32, cache_dir=False, precision="f32")
    image, expected = full("a red cube", **arguments).images, fp32("a red cube", **arguments).images
    assert expected.std() > 0.02  # not one flat colour: not a comparison of two blank images
    assert_near(image, expected, "fast")


def test_long_a1111_prompts_run_on_the_int8_token_downsampled_unet(fast_bundle):
    """The INT8 UNet with token downsampling takes 77 x chunks text tokens (its sequence axis reshapes)."""
    from lcm_runtime.tokenizer import PromptTruncatedWarning

    fast = LCMPipeline.from_pretrained(fast_bundle, cache_dir=False, fast=True)
    head = " ".join(["cat"] * 75)  # one token a word
    arguments = dict(num_inference_steps=2, height=64, width=64, output_type="np", generator=3)
    with pytest.warns(PromptTruncatedWarning):
        plain = fast(head + " dog" * 75, **arguments).images
    weighted = fast(head + " (dog:1.3)" * 75, prompt_syntax="a1111", **arguments).images
    assert fast.models._loaded["unet"][1]["encoder_hidden_states"] == [1, 154, -1]
    assert np.isfinite(weighted).all() and np.abs(weighted - plain).max() > 1e-3


@pytest.mark.parametrize("task", ["text-to-image", "image-to-image"])
def test_a_side_below_the_pooling_window_is_one_input_error_and_the_smallest_runs(fast_bundle, task):
    """Token downsampling 2 pools 2x2 latents: an 8-pixel side (one latent) failed inside OpenVINO with a
    RuntimeError (a 500 from the server); it is refused naming the side, and 16 pixels run."""
    from lcm_runtime import LCMImg2ImgPipeline

    fast = LCMPipeline.from_pretrained(fast_bundle, cache_dir=False, fast=True)
    assert fast.folder.min_side == 16
    arguments = dict(num_inference_steps=1, output_type="np", generator=3)
    if task == "text-to-image":
        with pytest.raises(InputError, match="height must be at least 16 for this bundle") as error:
            fast("a cube", height=8, width=64, **arguments)
        assert error.value.argument == "height"
        images = fast("a cube", height=16, width=24, **arguments).images
    else:
        img2img = LCMImg2ImgPipeline.from_pipe(fast)
        with pytest.raises(InputError, match="width must be at least 16 for this bundle"):
            img2img("a cube", image=np.full((40, 8, 3), 0.5, np.float32), **arguments)
        images = img2img("a cube", image=np.full((24, 16, 3), 0.5, np.float32), **arguments).images
    assert images.shape[1:3] == ((16, 24) if task == "text-to-image" else (24, 16)) and np.isfinite(images).all()


def test_one_call_keeps_the_unet_before_a_tiny_vae_decode_unless_low_memory(fast_bundle, tmp_path):
    one_call = LCMPipeline.from_pretrained(fast_bundle, cache_dir=False, fast=True, release_after_use="one-call")
    one_call("a red cube", num_inference_steps=1, height=64, width=64, output_type="np", generator=3)
    assert sorted(one_call.models.in_memory()) == ["unet", "vae_decoder"]

    spy = (
        "import atexit, sys\nfrom lcm_runtime import cli\nfrom lcm_runtime.compiled_models import CompiledModels\n"
        "freed = []\noriginal = CompiledModels.release\n"
        "def spy(self, name):\n    original(self, name)\n"
        "    freed.extend(n for n in [name] if n not in self.in_memory())\n"
        "CompiledModels.release = spy\natexit.register(lambda: print('FREED', freed))\ncli.main(sys.argv[1:])\n"
    )
    for options, expected in (((), "['text_encoder']"), (("--low-memory",), "['text_encoder', 'unet']")):
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                spy,
                "a cat",
                "--fast",
                "--seed",
                "1",
                "--steps",
                "1",
                "--height",
                "64",
                "--width",
                "64",
                "--model",
                fast_bundle,
                "--output",
                tmp_path / "cat.png",
                "--overwrite",
                *options,
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        assert run.returncode == 0 and f"FREED {expected}" in run.stdout, (options, run.stdout, run.stderr)


def test_fast_needs_a_fast_bundle(tiny_bundle_fp32, fast_bundle, tmp_path):
    with pytest.raises(BundleError, match=r"an INT8 UNet and a tiny VAE.*lcm-export --fast"):
        LCMPipeline.from_pretrained(tiny_bundle_fp32, cache_dir=False, fast=True)
    with pytest.raises(InputError, match="drop --vae full"):
        LCMPipeline.from_pretrained(fast_bundle, cache_dir=False, fast=True, vae="full")

    run = [sys.executable, "-m", "lcm_runtime.cli", "a cat", "--fast", "--seed", "1", "--height", "64", "--width", "64"]
    ok = subprocess.run(
        [*run, "--model", fast_bundle, "--output", tmp_path / "fast.png"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    from PIL import Image

    assert "VAE: tiny" in Image.open(tmp_path / "fast.png").text["parameters"]
    refused = subprocess.run(
        [*run, "--model", tiny_bundle_fp32, "--output", tmp_path / "slow.png"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "lcm-export --fast" in refused.stderr
    assert not (tmp_path / "slow.png").exists()
