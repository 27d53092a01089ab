"""The two guidance modes through the API: what an embedded-guidance bundle (an LCM) refuses, how a
cfg bundle checks its arguments, and bundles whose manifest and UNet disagree, or predate the mode."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pictures import box_mask, picture

from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline, LCMPipeline
from lcm_runtime.errors import BundleError, InputError

CALL = dict(num_inference_steps=1, output_type="np", generator=1)


@pytest.fixture(scope="module")
def embedded(tiny_bundle_fp32):
    return LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)


@pytest.fixture(scope="module")
def cfg(tiny_cfg_bundle):
    return LCMPipeline.from_pretrained(tiny_cfg_bundle, precision="f32", cache_dir=False)


def tasks(pipe):
    """Each task with the inputs it needs."""
    return [
        (pipe, {}),
        (LCMImg2ImgPipeline.from_pipe(pipe), {"image": picture(64, 64, 1), "strength": 1.0}),
        (
            LCMInpaintPipeline.from_pipe(pipe),
            {"image": picture(64, 64, 2), "mask_image": box_mask(64, 64, (8, 8, 40, 40))},
        ),
    ]


def test_a_negative_prompt_on_an_embedded_bundle_is_one_input_error_in_every_task(embedded):
    for task, inputs in tasks(embedded):
        for negative in ("blurry", ["blurry"]):
            with pytest.raises(InputError, match="no unconditional branch") as error:
                task("a cat", negative_prompt=negative, **inputs, **CALL)
            assert error.value.argument == "negative_prompt" and "\n" not in str(error.value)
        with pytest.raises(InputError, match="guidance_rescale") as error:
            task("a cat", guidance_rescale=0.7, **inputs, **CALL)
        assert error.value.argument == "guidance_rescale"
    # An empty negative prompt asks for nothing: the same image as none.
    np.testing.assert_array_equal(
        embedded("a cat", negative_prompt="", **CALL).images, embedded("a cat", **CALL).images
    )


def test_a_cfg_bundle_checks_its_guidance_arguments(cfg):
    assert (cfg.facts.guidance_mode, cfg.facts.default_steps, cfg.facts.default_guidance_scale) == ("cfg", 4, 1.0)
    cases = [
        (dict(negative_prompt=["a", "b"]), "negative_prompt", "2 prompts for 1 prompts"),
        (dict(negative_prompt=7), "negative_prompt", "a string or a list of strings"),
        (dict(negative_prompt=[None]), "negative_prompt", "a string or a list of strings"),
        (dict(guidance_rescale=1.5), "guidance_rescale", r"guidance_rescale must be in \[0, 1\]"),
        (dict(guidance_rescale=float("nan")), "guidance_rescale", "finite"),
        (dict(guidance_scale=-1.0), "guidance_scale", "guidance_scale"),
    ]
    for kwargs, argument, words in cases:
        with pytest.raises(InputError, match=words) as error:
            cfg("a cat", **{**CALL, **kwargs, "guidance_scale": kwargs.get("guidance_scale", 2.0)})
        assert error.value.argument == argument and "\n" not in str(error.value)


def test_every_cfg_task_runs_the_doubled_batch_above_guidance_1(cfg):
    for task, inputs in tasks(cfg):
        images = task(["a cat", "a dog"], negative_prompt=["fog", ""], guidance_scale=2.0, **inputs, **CALL).images
        assert images.shape == (2, 64, 64, 3) and np.isfinite(images).all()
        assert task.models._loaded["unet"][1]["sample"][0] == 4


def rewrite_manifest(folder, change):
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_version_1_bundle_without_the_mode_loads_as_embedded(tiny_bundle_fp32, embedded, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle_fp32, old)

    def as_version_1(data):
        data["format_version"] = 1
        del data["model"]["guidance_mode"]

    rewrite_manifest(old, as_version_1)
    pipe = LCMPipeline.from_pretrained(old, precision="f32", cache_dir=False)
    assert pipe.folder.manifest.format_version == 1 and pipe.facts.guidance_mode == "embedded"
    np.testing.assert_array_equal(pipe("a cat", **CALL).images, embedded("a cat", **CALL).images)


def test_a_manifest_that_contradicts_its_unet_is_refused(tiny_bundle_fp32, tiny_cfg_bundle, tmp_path):
    def as_cfg(data):
        data["model"].update(guidance_mode="cfg", time_cond_proj_dim=None)

    def as_embedded(data):
        data["model"].update(guidance_mode="embedded", time_cond_proj_dim=32)

    for source, change, words in (
        (tiny_bundle_fp32, as_cfg, "has a timestep_cond input, but the bundle says its guidance is 'cfg'"),
        (tiny_cfg_bundle, as_embedded, "lacks a timestep_cond input, but the bundle says its guidance is 'embedded'"),
    ):
        folder = tmp_path / source.parent.name
        shutil.copytree(source, folder)
        rewrite_manifest(folder, change)
        pipe = LCMPipeline.from_pretrained(folder, precision="f32", cache_dir=False)
        with pytest.raises(BundleError, match=words) as error:
            pipe("a cat", **CALL)
        assert "\n" not in str(error.value) and "re-export" in str(error.value)


GARBAGE = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    negative=st.one_of(st.text(max_size=12), st.lists(st.text(max_size=6), max_size=3), GARBAGE),
    rescale=st.one_of(st.floats(0, 1), st.floats(-2, 3), GARBAGE),
    guidance=st.one_of(st.none(), st.floats(0, 4), GARBAGE),
)
def test_any_guidance_arguments_give_finite_images_or_one_line_errors(cfg, negative, rescale, guidance):
    from lcm_runtime.errors import LCMError

    try:
        images = cfg(
            ["a cat", "a dog"], negative_prompt=negative, guidance_rescale=rescale, guidance_scale=guidance, **CALL
        ).images
    except LCMError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert images.shape == (2, 64, 64, 3) and np.isfinite(images).all()


def test_the_memory_check_counts_the_doubled_unet_batch(tiny_cfg_bundle, monkeypatch):
    """A request that fits with one UNet pass is refused when classifier-free guidance doubles the batch."""
    from lcm_runtime import memory

    pipe = LCMPipeline.from_pretrained(tiny_cfg_bundle, precision="f32", cache_dir=False)
    to_compile = ["text_encoder", "unet", "vae_decoder"]
    args = (pipe.folder, "full", 1, 1024, 1024, "f32", to_compile)
    single = memory.estimate_peak(*args, decode_side=64)
    doubled = memory.estimate_peak(*args, decode_side=64, unet_batch=2)
    assert doubled > single
    monkeypatch.setattr(memory, "available_memory", lambda: (single + doubled) // 2)

    class PastTheCheck(Exception):
        pass

    def stop(*args, **kwargs):
        raise PastTheCheck

    monkeypatch.setattr(pipe, "encode_prompt", stop)
    with pytest.raises(PastTheCheck):
        pipe("a cat", height=1024, width=1024, guidance_scale=1.0, negative_prompt="fog")
    with pytest.raises(InputError, match="needs about"):
        pipe("a cat", height=1024, width=1024, guidance_scale=2.0, negative_prompt="fog")
    assert pipe.models.in_memory() == []
