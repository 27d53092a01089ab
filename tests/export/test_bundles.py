"""Every precision option gives a bundle that verifies, compiles and carries what it says."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402

from lcm_runtime.bundle import (  # noqa: E402
    COMPONENT_IO,
    SCHEDULER_TABLES,
    component_xml,
    read_json,
    read_manifest,
    scheduler_table_file,
    verify_files,
)

PRECISION_CASES = {
    "fp32": (
        {"weights": "fp32"},
        {"text_encoder": "fp32", "unet": "fp32", "vae_decoder": "fp32", "vae_encoder": "fp32"},
    ),
    "fp16": (
        {"weights": "fp16"},
        {"text_encoder": "fp16", "unet": "fp16", "vae_decoder": "fp16", "vae_encoder": "fp16"},
    ),
    "bf16": (
        {"weights": "bf16"},
        {"text_encoder": "bf16", "unet": "bf16", "vae_decoder": "bf16", "vae_encoder": "bf16"},
    ),
    "int8": (
        {"weights": "int8"},
        {"text_encoder": "int8", "unet": "int8", "vae_decoder": "int8", "vae_encoder": "int8"},
    ),
    "int4": (
        {"weights": "int4"},
        {"text_encoder": "int8", "unet": "int4", "vae_decoder": "int8", "vae_encoder": "int8"},
    ),
    "ptq": (
        {"weights": "fp16", "quantize_unet": "int8", "calibration_size": 4},
        {"text_encoder": "fp16", "unet": "int8-ptq", "vae_decoder": "fp16", "vae_encoder": "fp16"},
    ),
}
# Element types of the weights (Constants) each precision must produce in the IR.
WEIGHT_TYPES = {
    "fp32": ov.Type.f32,
    "fp16": ov.Type.f16,
    "bf16": ov.Type.bf16,
    "int8": ov.Type.u8,
    "int4": ov.Type.i4,
    "int8-ptq": ov.Type.i8,
}


def _bundle(export_tiny, case):
    options, _ = PRECISION_CASES[case]
    return export_tiny(**options)


def _constant_types(model: ov.Model) -> set:
    return {node.get_output_element_type(0) for node in model.get_ops() if node.get_type_name() == "Constant"}


@pytest.mark.parametrize("case", list(PRECISION_CASES))
def test_bundle_verifies_compiles_and_records_precision(export_tiny, case):
    bundle = _bundle(export_tiny, case)
    manifest = read_manifest(bundle)
    assert verify_files(bundle, manifest) == []
    assert {name: entry["precision"] for name, entry in manifest.components.items()} == PRECISION_CASES[case][1]
    core = ov.Core()
    for component, (inputs, outputs) in COMPONENT_IO.items():
        model = core.read_model(bundle / component_xml(component))
        assert [port.get_any_name() for port in model.inputs] == list(inputs)
        assert [port.get_any_name() for port in model.outputs] == list(outputs)
        assert WEIGHT_TYPES[manifest.components[component]["precision"]] in _constant_types(model), component
        core.compile_model(model, "CPU")
    assert not [path for path in bundle.parent.iterdir() if path.name != bundle.name]  # no staging leftovers


def test_manifest_describes_source_versions_and_model(tiny_bundle_fp32, tiny_pipeline_dir, reference_pipeline):
    manifest = read_manifest(tiny_bundle_fp32)
    assert manifest.source["kind"] == "local" and manifest.source["path"] == str(tiny_pipeline_dir.resolve())
    assert len(manifest.source["weights_sha256"]) == 64
    for package in ("lcm-openvino", "openvino", "diffusers", "torch", "transformers", "nncf"):
        assert manifest.versions[package] not in ("", "not installed"), package
    facts = manifest.model
    assert facts.vae_scale_factor == reference_pipeline.vae_scale_factor
    assert facts.vae_scaling_factor == reference_pipeline.vae.config.scaling_factor
    assert facts.time_cond_proj_dim == reference_pipeline.unet.config.time_cond_proj_dim
    assert facts.sample_size == reference_pipeline.unet.config.sample_size
    assert facts.latent_channels == reference_pipeline.unet.config.in_channels
    assert facts.text_max_length == reference_pipeline.tokenizer.model_max_length
    assert facts.guidance_offset == -1.0
    assert manifest.calibration is None
    assert "manifest.json" not in manifest.files


def test_ptq_manifest_records_calibration(export_tiny):
    manifest = read_manifest(_bundle(export_tiny, "ptq"))
    calibration = manifest.calibration
    assert calibration["method"] == "nncf.quantize" and calibration["samples"] == 4
    assert calibration["dataset"].endswith("calibration_prompts.txt")
    assert calibration["prompts"] == 1 and len(calibration["prompts_sha256"]) == 64


def test_optimum_compatible_layout(tiny_bundle_fp32, reference_pipeline):
    index = read_json(tiny_bundle_fp32 / "model_index.json")
    assert index["_class_name"] == "LatentConsistencyModelPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["scheduler"] == [
        "diffusers",
        "LCMScheduler",
    ]
    assert (
        read_json(tiny_bundle_fp32 / "unet" / "config.json")["time_cond_proj_dim"]
        == reference_pipeline.unet.config.time_cond_proj_dim
    )
    for vae_part in ("vae_decoder", "vae_encoder"):
        assert (
            read_json(tiny_bundle_fp32 / vae_part / "config.json")["scaling_factor"]
            == reference_pipeline.vae.config.scaling_factor
        )
    assert (
        read_json(tiny_bundle_fp32 / "text_encoder" / "config.json")["hidden_size"]
        == reference_pipeline.text_encoder.config.hidden_size
    )
    assert read_json(tiny_bundle_fp32 / "scheduler" / "scheduler_config.json")["_class_name"] == "LCMScheduler"
    for name in (
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "openvino_tokenizer.xml",
        "openvino_tokenizer.bin",
    ):
        assert (tiny_bundle_fp32 / "tokenizer" / name).is_file(), name
    for name in SCHEDULER_TABLES:
        table = np.load(tiny_bundle_fp32 / scheduler_table_file(name))
        assert table.dtype == np.float32 and table.shape == (1000,)


def test_no_absolute_paths_in_configs(tiny_bundle_fp32, tiny_pipeline_dir):
    for path in tiny_bundle_fp32.rglob("*"):
        if path.suffix in (".json", ".xml", ".txt") and path.name != "manifest.json":
            text = path.read_text(encoding="utf-8")
            assert str(tiny_pipeline_dir) not in text and str(tiny_bundle_fp32.parent) not in text, path
