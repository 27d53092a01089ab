"""Models compiled when a call first needs them; those in release_after_use freed once used."""

import subprocess
import sys

import numpy as np
import pytest

from lcm_runtime import LCMPipeline
from lcm_runtime.errors import InputError
from lcm_runtime.release import one_call_releases

COMPONENTS = ["text_encoder", "unet", "vae_decoder"]
CALL = dict(num_inference_steps=2, height=64, width=64, generator=0, output_type="np")


def test_released_models_give_the_same_image_call_after_call(tiny_bundle_fp32, tmp_path):
    kept = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=tmp_path / "cache")
    reference = kept("a red cube", **CALL).images
    assert sorted(kept.models.in_memory()) == COMPONENTS

    released = LCMPipeline.from_pretrained(
        tiny_bundle_fp32, precision="f32", cache_dir=tmp_path / "cache", release_after_use=COMPONENTS
    )
    for _ in range(2):  # the second call imports all three again
        result = released("a red cube", **CALL)
        np.testing.assert_array_equal(result.images, reference)
        assert released.models.in_memory() == []
        assert result.timings["compile"] > 0
    assert released.started_from_cache_index() == dict.fromkeys(COMPONENTS, True)
    assert released.execution_precision() == kept.execution_precision()


def test_releasing_the_text_encoder_keeps_the_others(tiny_bundle_fp32):
    pipe = LCMPipeline.from_pretrained(
        tiny_bundle_fp32, precision="f32", cache_dir=False, release_after_use=["text_encoder"]
    )
    first = pipe("a red cube", **CALL)
    assert sorted(pipe.models.in_memory()) == ["unet", "vae_decoder"]
    second = pipe("a red cube", **CALL)
    np.testing.assert_array_equal(second.images, first.images)


def test_kept_models_compile_once_per_size(tiny_bundle_fp32):
    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)
    first = pipe("a red cube", **CALL)
    assert first.timings["compile"] > 0
    text_encoder = pipe.models.text_encoder()
    assert pipe("a red cube", **CALL).timings["compile"] == 0
    resized = pipe("a red cube", **{**CALL, "height": 48})
    assert resized.images.shape[1] == 48 and resized.timings["compile"] > 0
    assert pipe.models.text_encoder() is text_encoder  # the text encoder does not depend on the size
    assert sorted(pipe.models.in_memory()) == COMPONENTS


def test_one_call_frees_the_text_encoder_and_before_a_full_vae_decode_the_unet(tiny_bundle_fp32):
    kept = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)
    one_call = LCMPipeline.from_pretrained(
        tiny_bundle_fp32, precision="f32", cache_dir=False, release_after_use="one-call"
    )
    np.testing.assert_array_equal(one_call("a red cube", **CALL).images, kept("a red cube", **CALL).images)
    assert one_call.models.in_memory() == ["vae_decoder"]
    assert one_call_releases("full") == ("text_encoder", "vae_encoder", "unet")
    assert one_call_releases("tiny") == (
        "text_encoder",
        "vae_encoder",
    )  # TAESD's few pages do not repay freeing the UNet


@pytest.mark.parametrize("names", [["vae"], "unet"])
def test_unknown_model_names_are_refused(tiny_bundle_fp32, names):
    with pytest.raises(InputError, match="release_after_use"):
        LCMPipeline.from_pretrained(tiny_bundle_fp32, cache_dir=False, release_after_use=names)


SPY = (
    "import sys\nfrom lcm_runtime import cli\nfrom lcm_runtime.pipeline import LCMPipeline\n"
    "opened = []\noriginal = LCMPipeline.from_pretrained.__func__\n"
    "def spy(cls, *args, **kwargs):\n    opened.append(original(cls, *args, **kwargs))\n    return opened[-1]\n"
    "LCMPipeline.from_pretrained = classmethod(spy)\n"
    "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
    "print('IN MEMORY', sorted(opened[0].models.in_memory()))\n"
)


@pytest.mark.parametrize("options", [(), ("--low-memory",)], ids=["default", "low-memory"])
def test_lcm_run_frees_what_its_one_call_no_longer_needs(tiny_bundle_fp32, tmp_path, options):
    """With the full VAE only the VAE decoder, used last, is left, --low-memory or not."""
    held = ["vae_decoder"]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SPY,
            "a cat",
            "--model",
            str(tiny_bundle_fp32),
            "--seed",
            "1",
            "--steps",
            "1",
            "--no-cache",
            "--output",
            str(tmp_path / "cat.png"),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"IN MEMORY {held}" in result.stdout and (tmp_path / "cat.png").is_file()
