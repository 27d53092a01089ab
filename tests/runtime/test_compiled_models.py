"""Models compiled when a call first needs them; those in release_after_use freed once used."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from lcm_runtime import LCMPipeline, compiled_models
from lcm_runtime.errors import BundleError, InputError
from lcm_runtime.models import TextEncoder
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


AHEAD_THREADS = ["lcm-import-ahead-unet", "lcm-import-ahead-vae_decoder"]


@pytest.fixture
def threads_started(monkeypatch):
    """The names of the import-ahead threads started from here on."""
    names = []
    original = threading.Thread.start

    def start(thread):
        if thread.name.startswith("lcm-import-ahead-"):
            names.append(thread.name)
        original(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    return names


def filled_cache(bundle, cache, **call):
    """The reference image, made by a pipeline that compiled (and indexed) every model."""
    pipe = LCMPipeline.from_pretrained(bundle, precision="f32", cache_dir=cache)
    return pipe("a red cube", **{**CALL, **call}).images


@pytest.mark.parametrize("prompt_syntax", ["a1111", "diffusers"])
def test_with_a_filled_cache_the_unet_and_vae_decoder_import_while_the_prompt_is_encoded(
    tiny_bundle_fp32, tmp_path, monkeypatch, threads_started, prompt_syntax
):
    call = {**CALL, "prompt_syntax": prompt_syntax}
    reference = filled_cache(tiny_bundle_fp32, tmp_path / "cache", **call)
    pipe = LCMPipeline.from_pretrained(
        tiny_bundle_fp32, precision="f32", cache_dir=tmp_path / "cache", release_after_use="one-call"
    )
    under_way = []
    original_init = TextEncoder.__init__

    def text_encoder_init(self, *args, **kwargs):
        under_way.append(set(pipe.models._ahead))
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(TextEncoder, "__init__", text_encoder_init)
    for _ in range(2):  # one-call released the UNet (not the decoder): the second call imports it ahead again
        result = pipe("a red cube", **call)
        np.testing.assert_array_equal(result.images, reference)
    assert threads_started == AHEAD_THREADS + AHEAD_THREADS[:1]
    # the text encoder's import began with the others on their way
    assert under_way == [{"unet", "vae_decoder"}, {"unet"}]
    assert pipe.started_from_cache_index() == {"text_encoder": True, "unet": True, "vae_decoder": True}
    assert pipe.models._ahead == {}


LONG_PROMPT = "a red cube BREAK on a blue table"  # two chunks: embeddings 154 long


@pytest.mark.parametrize("case", ["no cache", "empty cache", "held already", "a longer prompt"])
def test_no_import_ahead_without_a_blob_to_import(tiny_bundle_fp32, tmp_path, threads_started, case):
    """A compile stays on the caller's thread."""
    cache = {"no cache": False, "empty cache": tmp_path / "empty"}.get(case, tmp_path / "cache")
    if case in ("held already", "a longer prompt"):
        filled_cache(tiny_bundle_fp32, cache, prompt_syntax="a1111")
    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=cache)
    if case == "held already":
        pipe("a red cube", **CALL)
    threads_started.clear()
    pipe(LONG_PROMPT if case == "a longer prompt" else "a red cube", **CALL, prompt_syntax="a1111")
    assert "lcm-import-ahead-unet" not in threads_started
    # The decoder's shapes do not depend on the prompt: it goes ahead when it has a blob and is not held.
    decoder_ahead = case == "a longer prompt"
    assert ("lcm-import-ahead-vae_decoder" in threads_started) == decoder_ahead


def test_an_import_ahead_at_other_shapes_is_dropped(tiny_bundle_fp32, tmp_path):
    reference = filled_cache(tiny_bundle_fp32, tmp_path / "cache")
    filled_cache(tiny_bundle_fp32, tmp_path / "cache", height=48)
    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=tmp_path / "cache")
    pipe.models.unet_ahead(1, 6, 8)  # a 48x64 image's latents
    np.testing.assert_array_equal(pipe("a red cube", **CALL).images, reference)
    assert pipe.models._ahead == {} and "unet" in pipe.models.in_memory()


def test_an_import_ahead_that_fails_fails_the_call(tiny_bundle_fp32, tmp_path, monkeypatch):
    filled_cache(tiny_bundle_fp32, tmp_path / "cache")
    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=tmp_path / "cache")

    def broken(*args, **kwargs):
        raise BundleError("the UNet is broken; re-export the bundle")

    monkeypatch.setattr(compiled_models, "UNet", broken)
    with pytest.raises(BundleError, match="the UNet is broken"):
        pipe("a red cube", **CALL)
    assert "unet" not in pipe.models._ahead and "unet" not in pipe.models.in_memory()


@pytest.mark.parametrize("tiled_vae", [True, False])
def test_a_tiled_decode_imports_its_decoder_when_it_starts(tiny_bundle_fp32, tmp_path, threads_started, tiled_vae):
    """Tiling is chosen when memory is short: no decoder import ahead then, nor one at the whole
    latents' shapes that the tiles would not use (the cache holds both decoders)."""
    call = {**CALL, "height": 128, "width": 128}  # latents 16x16, over the tiny model's sample size
    for tiled in (True, False):
        filled_cache(tiny_bundle_fp32, tmp_path / "cache", **call, tiled_vae=tiled)
    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=tmp_path / "cache")
    threads_started.clear()
    pipe("a red cube", **call, tiled_vae=tiled_vae)
    assert threads_started == ["lcm-import-ahead-unet"] + ([] if tiled_vae else ["lcm-import-ahead-vae_decoder"])
    assert pipe.started_from_cache_index()["vae_decoder"]
