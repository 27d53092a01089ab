"""SOURCE resolution: hub ids through the hub cache (offline), local folders, validation."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch")

from lcm_export.source import SourceError, load_source, validate_pipeline_folder, weights_sha256  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_hub_cache(tiny_pipeline_dir, tmp_path, monkeypatch):
    """A hub cache holding the tiny pipeline as lcm-test/tiny at COMMIT (what a past download leaves)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--lcm-test--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(tiny_pipeline_dir, repo / "snapshots" / COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_resolves_through_the_cache_and_records_the_commit(fake_hub_cache, reference_pipeline):
    import torch

    loaded = load_source("lcm-test/tiny")
    assert loaded.info == {"kind": "hub", "id": "lcm-test/tiny", "revision": "main", "commit": COMMIT}
    unet, reference = loaded.pipeline.unet.state_dict(), reference_pipeline.unet.state_dict()
    assert all(torch.equal(unet[key], reference[key]) for key in reference)


def test_uncached_revision_offline_is_one_line(fake_hub_cache):
    with pytest.raises(SourceError, match="cannot reach the Hugging Face hub") as error:
        load_source("lcm-test/tiny", revision="v2")
    assert "\n" not in str(error.value) and "local" in str(error.value)


def test_revision_with_a_local_folder_is_refused(tiny_pipeline_dir):
    with pytest.raises(SourceError, match="--revision"):
        load_source(str(tiny_pipeline_dir), revision="main")


def test_exported_bundle_is_not_a_source(tiny_bundle_fp32):
    with pytest.raises(SourceError, match="already an exported OpenVINO bundle"):
        load_source(str(tiny_bundle_fp32))


def test_missing_component_folder(tiny_pipeline_dir, tmp_path):
    source = tmp_path / "no-vae"
    shutil.copytree(tiny_pipeline_dir, source)
    shutil.rmtree(source / "vae")
    with pytest.raises(SourceError, match="missing the vae"):
        validate_pipeline_folder(source, allow_pickle=False)


def test_corrupted_config(tiny_pipeline_dir, tmp_path):
    source = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, source)
    (source / "unet" / "config.json").write_text("{not json")
    with pytest.raises(SourceError, match="not valid JSON"):
        validate_pipeline_folder(source, allow_pickle=False)


def test_missing_weights(tiny_pipeline_dir, tmp_path):
    source = tmp_path / "no-weights"
    shutil.copytree(tiny_pipeline_dir, source)
    (source / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(SourceError, match="no weights"):
        validate_pipeline_folder(source, allow_pickle=False)


def test_weights_hash_changes_with_the_weights(tiny_pipeline_dir, tmp_path):
    source = tmp_path / "copy"
    shutil.copytree(tiny_pipeline_dir, source)
    files = validate_pipeline_folder(source, allow_pickle=False)
    before = weights_sha256(source, files)
    assert before == weights_sha256(tiny_pipeline_dir, validate_pipeline_folder(tiny_pipeline_dir, allow_pickle=False))
    with open(source / "vae" / "diffusion_pytorch_model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    assert weights_sha256(source, files) != before


def test_stable_diffusion_scheduler_config_is_replaced_by_lcm(tiny_pipeline_dir, tmp_path):
    """An LCM-distilled UNet shipped with another scheduler config still exports with LCMScheduler."""
    source = tmp_path / "ddim-config"
    shutil.copytree(tiny_pipeline_dir, source)
    config_path = source / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["_class_name"] = "DDIMScheduler"
    config_path.write_text(json.dumps(config))
    loaded = load_source(str(source))
    assert type(loaded.pipeline.scheduler).__name__ == "LCMScheduler"


@pytest.mark.parametrize("in_channels,refused", [(5, True), (8, True), (9, False)])
def test_a_unet_of_another_channel_layout_is_refused_before_loading(tiny_pipeline_dir, tmp_path, in_channels, refused):
    """A UNet on the latents alone, or an inpainting one (9: latents, mask, masked picture's latents)."""
    source = tmp_path / "channels"
    shutil.copytree(tiny_pipeline_dir, source)
    config_path = source / "unet" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "in_channels": in_channels}))
    if not refused:
        assert validate_pipeline_folder(source, allow_pickle=False)
        return
    with pytest.raises(SourceError, match=f"takes {in_channels} input channels and predicts 4") as error:
        validate_pipeline_folder(source, allow_pickle=False)
    assert "\n" not in str(error.value) and str(source) in str(error.value)


@pytest.mark.parametrize("field,value", [("timestep_scaling", 1e17), ("original_inference_steps", 5000)])
def test_a_scheduler_config_the_runtime_would_refuse_is_refused_before_writing(
    tiny_pipeline_dir, tmp_path, field, value
):
    """The runtime refuses such a bundle at load (NaN tables, or steps beyond the train timesteps): the export
    refuses its source first, in one line naming the field, and writes nothing."""
    from lcm_export.exporter import ExportOptions, export_bundle

    source = tmp_path / "source"
    shutil.copytree(tiny_pipeline_dir, source)
    config_path = source / "scheduler" / "scheduler_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), field: value}))
    out = tmp_path / "out"
    with pytest.raises(SourceError, match=f"the source's scheduler config has {field} = ") as error:
        export_bundle(load_source(str(source)), out, ExportOptions(weights="fp32"))
    assert "\n" not in str(error.value) and "scheduler/scheduler_config.json" in str(error.value)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["source"]
