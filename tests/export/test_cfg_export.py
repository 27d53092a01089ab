"""Exporting in the "cfg" guidance mode: an SD1.5-like UNet without time_cond_proj_dim, the LCMScheduler
LCM-LoRA's recipe makes of SD1.5's scheduler config, a UNet IR without timestep_cond, INT8 calibration
through the runtime's guidance, and deterministic bytes."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402
from image_bounds import assert_near  # noqa: E402

from lcm_runtime.bundle import (  # noqa: E402
    SCHEDULER_TABLES,
    component_xml,
    read_json,
    read_manifest,
    scheduler_table_file,
    verify_files,
)
from lcm_runtime.errors import BundleError, InputError  # noqa: E402


def test_a_cfg_bundle_records_its_mode_and_has_no_timestep_cond(tiny_cfg_bundle):
    from diffusers import LCMScheduler

    from lcm_export.scheduler_tables import compute_scheduler_tables
    from lcm_export.tiny import build_tiny_sd_pipeline
    from lcm_export.writer import clean_config

    manifest = read_manifest(tiny_cfg_bundle)
    assert verify_files(tiny_cfg_bundle, manifest) == []
    assert manifest.format_version == 2 and manifest.source == {"kind": "tiny-random-sd", "seed": 0}
    facts = manifest.model
    assert (facts.guidance_mode, facts.time_cond_proj_dim) == ("cfg", None)
    assert (facts.default_steps, facts.default_guidance_scale) == (4, 1.0)
    unet = ov.Core().read_model(tiny_cfg_bundle / component_xml("unet"))
    assert [port.get_any_name() for port in unet.inputs] == ["sample", "timestep", "encoder_hidden_states"]
    assert read_json(tiny_cfg_bundle / "unet" / "config.json")["time_cond_proj_dim"] is None
    # openvino.genai and optimum-intel read it as LCM-LoRA is run in diffusers: an SD pipeline, LCMScheduler.
    index = read_json(tiny_cfg_bundle / "model_index.json")
    assert index["_class_name"] == "StableDiffusionPipeline" and index["scheduler"] == ["diffusers", "LCMScheduler"]
    # The scheduler is LCMScheduler.from_config(pipe.scheduler.config) of the SD (PNDM) config, tables included.
    expected = LCMScheduler.from_config(build_tiny_sd_pipeline(0).scheduler.config)
    written = read_json(tiny_cfg_bundle / "scheduler" / "scheduler_config.json")
    assert written == clean_config(expected.to_json_string())
    assert written["_class_name"] == "LCMScheduler" and written["set_alpha_to_one"] is False
    for name, table in compute_scheduler_tables(expected).items():
        np.testing.assert_array_equal(np.load(tiny_cfg_bundle / scheduler_table_file(name)), table)
    assert set(compute_scheduler_tables(expected)) == set(SCHEDULER_TABLES)


def test_the_mode_and_the_unet_must_agree_before_any_work(tiny_pipeline_dir, tmp_path):
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.source import load_source
    from lcm_export.tiny import load_tiny_sd_random

    with pytest.raises(BundleError, match="time_cond_proj_dim 32.*without cfg mode"):
        export_bundle(load_source(str(tiny_pipeline_dir)), tmp_path / "a", ExportOptions(guidance_mode="cfg"))
    with pytest.raises(BundleError, match="--lcm-lora latent-consistency/lcm-lora-sdv1-5") as error:
        export_bundle(load_tiny_sd_random(0), tmp_path / "b", ExportOptions())
    assert "\n" not in str(error.value) and "not an LCM-distilled model" in str(error.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # nothing staged, nothing written
    with pytest.raises(InputError, match="unknown guidance mode 'guided'"):
        ExportOptions(guidance_mode="guided").validate()


def test_calibration_records_what_the_unet_gets_in_each_guidance(tiny_cfg_bundle):
    from lcm_export.calibration import run_calibration_prompts

    runs = run_calibration_prompts(tiny_cfg_bundle, ["a cat"], 4, "cfg")
    single = runs.unet_inputs
    assert [int(sample["timestep"][0]) for sample in single] == [999, 759, 499, 259]
    assert all(set(sample) == {"sample", "timestep", "encoder_hidden_states"} for sample in single)
    assert single[0]["sample"].shape == (1, 4, 8, 8) and single[0]["encoder_hidden_states"].shape == (1, 77, 32)
    # Above guidance 1: the doubled batch [uncond, cond], the same latents twice, "" first.
    doubled_runs = run_calibration_prompts(tiny_cfg_bundle, ["a cat", "a dog"], 8, "cfg", guidance_scale=2.0)
    doubled = doubled_runs.unet_inputs
    assert len(doubled) == 8 and doubled[0]["sample"].shape == (2, 4, 8, 8)
    # The decoder's calibration: one guided latent a step (the batch of one image), as the runtime decodes it.
    assert len(doubled_runs.denoised) == 8 and doubled_runs.denoised[0].shape == (1, 4, 8, 8)
    assert not np.array_equal(doubled_runs.denoised[0], doubled_runs.denoised[3])
    for sample in doubled:
        np.testing.assert_array_equal(sample["sample"][0], sample["sample"][1])
    cat, dog = doubled[0]["encoder_hidden_states"], doubled[4]["encoder_hidden_states"]
    np.testing.assert_array_equal(cat[0], dog[0])  # the unconditional prompt
    np.testing.assert_array_equal(cat[1], single[0]["encoder_hidden_states"][0])
    assert np.abs(cat[1] - dog[1]).max() > 1e-3
    # The guided steps moved the latents differently from the unguided ones.
    assert np.abs(doubled[1]["sample"][0] - single[1]["sample"][0]).max() > 1e-4


def test_exporting_cfg_twice_gives_identical_bytes(tiny_cfg_bundle, tmp_path):
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.tiny import load_tiny_sd_random

    again = tmp_path / "again"
    export_bundle(load_tiny_sd_random(0), again, ExportOptions(weights="fp32", guidance_mode="cfg"))
    assert read_manifest(again).files == read_manifest(tiny_cfg_bundle).files
    assert (again / "manifest.json").read_bytes() == (tiny_cfg_bundle / "manifest.json").read_bytes()


def test_a_cfg_int8_ptq_export_calibrates_and_runs(tiny_cfg_bundle, tmp_path):
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.tiny import load_tiny_sd_random
    from lcm_runtime import LCMPipeline

    options = ExportOptions(weights="fp16", quantize_unet="int8", calibration_size=4, guidance_mode="cfg")
    export_bundle(load_tiny_sd_random(0), tmp_path / "ptq", options)
    manifest = read_manifest(tmp_path / "ptq")
    assert manifest.components["unet"]["precision"] == "int8-ptq" and manifest.model.guidance_mode == "cfg"
    assert manifest.calibration["guidance_scale"] == 1.0 and manifest.calibration["samples"] == 4
    unet = ov.Core().read_model(tmp_path / "ptq" / component_xml("unet"))
    assert "timestep_cond" not in {name for port in unet.inputs for name in port.get_names()}
    # At f32, with and without the guided second pass, each image is the fp32 cfg bundle's for the same
    # call within the bound measured for a quantized cfg UNet (image_bounds.py).
    pipe = LCMPipeline.from_pretrained(tmp_path / "ptq", cache_dir=False, precision="f32")
    fp32 = LCMPipeline.from_pretrained(tiny_cfg_bundle, cache_dir=False, precision="f32")
    call = dict(num_inference_steps=2, generator=0, output_type="np")
    guidance = dict(negative_prompt="blurry", guidance_scale=2.0)
    plain, guided = pipe("a cat", **call).images, pipe("a cat", **guidance, **call).images
    for images, expected in ((plain, fp32("a cat", **call).images), (guided, fp32("a cat", **guidance, **call).images)):
        assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
        assert expected.std() > 0.02  # not one flat colour: not a comparison of two blank images
        assert_near(images, expected, "int8-ptq-cfg")
    assert np.abs(plain - guided).max() > 1e-3
