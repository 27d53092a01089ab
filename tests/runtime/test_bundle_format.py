"""The bundle contract: manifest round trip, version checks, checksum verification."""

import dataclasses
import json

import pytest

from lcm_runtime import bundle
from lcm_runtime.errors import BundleError


def make_manifest(**overrides):
    facts = bundle.ModelFacts(
        latent_channels=4,
        vae_scale_factor=8,
        vae_scaling_factor=0.18215,
        sample_size=64,
        text_max_length=77,
        time_cond_proj_dim=256,
    )
    fields = dict(
        source={"kind": "hub", "id": "x/y", "revision": "main"},
        versions={"openvino": "2026.4"},
        components={"unet": {"precision": "fp16"}},
        model=facts,
    )
    fields.update(overrides)
    return bundle.Manifest(**fields)


def write_files(root, files):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_manifest_round_trips_and_records_every_file(tmp_path):
    write_files(tmp_path, {"unet/openvino_model.bin": b"weights", "scheduler/c_out.npy": b"table"})
    bundle.write_manifest(tmp_path, make_manifest())
    manifest = bundle.read_manifest(tmp_path)
    assert set(manifest.files) == {"unet/openvino_model.bin", "scheduler/c_out.npy"}
    assert manifest.files["unet/openvino_model.bin"]["size"] == len(b"weights")
    assert manifest.model.default_image_size == 512
    assert manifest.to_dict() == make_manifest(files=manifest.files).to_dict()
    assert bundle.verify_files(tmp_path, manifest) == []


def test_manifest_bytes_are_deterministic(tmp_path):
    write_files(tmp_path, {"a.txt": b"1"})
    bundle.write_manifest(tmp_path, make_manifest())
    first = (tmp_path / "manifest.json").read_bytes()
    bundle.write_manifest(tmp_path, make_manifest())
    assert (tmp_path / "manifest.json").read_bytes() == first


def test_verify_names_changed_missing_and_extra_files(tmp_path):
    write_files(tmp_path, {"a.bin": b"aaaa", "b.bin": b"bbbb", "c.bin": b"cc"})
    bundle.write_manifest(tmp_path, make_manifest())
    manifest = bundle.read_manifest(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"aaab")  # same size, other bytes
    (tmp_path / "b.bin").unlink()
    (tmp_path / "c.bin").write_bytes(b"ccc")
    (tmp_path / "extra.bin").write_bytes(b"x")
    problems = {(p.path, p.problem) for p in bundle.verify_files(tmp_path, manifest)}
    assert problems == {
        ("a.bin", "checksum differs"),
        ("b.bin", "missing"),
        ("c.bin", "size differs"),
        ("extra.bin", "not in manifest"),
    }
    sizes_only = {(p.path, p.problem) for p in bundle.verify_files(tmp_path, manifest, checksums=False)}
    assert ("a.bin", "checksum differs") not in sizes_only


@pytest.mark.parametrize("version", [bundle.FORMAT_VERSION + 1, 0, "1"])
def test_unknown_format_version_is_a_clear_error(tmp_path, version):
    data = make_manifest().to_dict()
    data["format_version"] = version
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="format version"):
        bundle.read_manifest(tmp_path)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": "something-else"}), json.dumps([1])])
def test_corrupted_or_foreign_manifest_is_refused(tmp_path, content):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(BundleError):
        bundle.read_manifest(tmp_path)


def test_incomplete_manifest_names_what_is_missing(tmp_path):
    data = make_manifest().to_dict()
    del data["model"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="model"):
        bundle.read_manifest(tmp_path)


def test_unknown_guidance_convention_is_refused():
    data = make_manifest().to_dict()
    data["model"]["guidance_embedding"] = "w = 2 * guidance_scale"
    with pytest.raises(BundleError, match="guidance"):
        bundle.Manifest.from_dict(data)


def test_facts_from_configs_refuse_a_unet_that_is_not_lcm():
    with pytest.raises(BundleError, match="not an LCM"):
        bundle.ModelFacts.from_configs({"in_channels": 4}, {"block_out_channels": [1, 2, 3, 4]}, 77)
    facts = bundle.ModelFacts.from_configs(
        {"in_channels": 4, "time_cond_proj_dim": 256, "sample_size": 96},
        {"block_out_channels": [1, 2, 3, 4], "scaling_factor": 0.13},
        77,
    )
    assert (facts.vae_scale_factor, facts.default_image_size, facts.vae_scaling_factor) == (8, 768, 0.13)


def test_facts_refusal_names_the_lcm_lora_fix_and_cfg_mode_takes_that_unet():
    unet, vae = {"in_channels": 4}, {"block_out_channels": [1, 2, 3, 4]}
    with pytest.raises(BundleError, match="--lcm-lora latent-consistency/lcm-lora-sdv1-5") as error:
        bundle.ModelFacts.from_configs(unet, vae, 77)
    assert "\n" not in str(error.value)
    facts = bundle.ModelFacts.from_configs(unet, vae, 77, guidance_mode=bundle.CFG)
    assert (facts.guidance_mode, facts.time_cond_proj_dim) == ("cfg", None)
    assert (facts.default_steps, facts.default_guidance_scale) == (4, 1.0)
    with pytest.raises(BundleError, match="time_cond_proj_dim 256.*without cfg mode"):
        bundle.ModelFacts.from_configs({"time_cond_proj_dim": 256}, vae, 77, guidance_mode=bundle.CFG)
    with pytest.raises(BundleError, match="unknown guidance mode 'guided'"):
        bundle.ModelFacts.from_configs(unet, vae, 77, guidance_mode="guided")


def cfg_manifest():
    facts = dataclasses.replace(make_manifest().model, time_cond_proj_dim=None, guidance_mode="cfg")
    return make_manifest(model=dataclasses.replace(facts, default_guidance_scale=1.0))


def test_a_cfg_manifest_round_trips_at_the_current_format_version(tmp_path):
    write_files(tmp_path, {"a.bin": b"1"})
    bundle.write_manifest(tmp_path, cfg_manifest())
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format_version"] == bundle.FORMAT_VERSION == 2
    assert data["model"]["guidance_mode"] == "cfg" and data["model"]["time_cond_proj_dim"] is None
    assert bundle.read_manifest(tmp_path).model == cfg_manifest().model


def test_a_version_1_manifest_without_the_mode_reads_as_embedded():
    data = make_manifest().to_dict()
    data["format_version"] = 1
    del data["model"]["guidance_mode"]
    manifest = bundle.Manifest.from_dict(data)
    assert manifest.format_version == 1 and manifest.model.guidance_mode == bundle.EMBEDDED
    assert manifest.model == make_manifest().model


@pytest.mark.parametrize(
    "version,changes,words",
    [
        (1, {"guidance_mode": "cfg", "time_cond_proj_dim": None}, ["format version 1", "'cfg'", "version 2"]),
        (2, {"guidance_mode": "guided"}, ["unknown guidance mode 'guided'", "upgrade"]),
        (2, {"guidance_mode": 3}, ["guidance_mode", "not a string"]),
        (2, {"guidance_mode": "cfg"}, ["'cfg'", "time_cond_proj_dim 256"]),
        (2, {"time_cond_proj_dim": None}, ["'embedded'", "time_cond_proj_dim None"]),
        (2, {"guidance_mode": "cfg", "time_cond_proj_dim": 0}, ["time_cond_proj_dim"]),
    ],
)
def test_guidance_mode_mismatches_are_one_line_errors(version, changes, words):
    data = make_manifest().to_dict()
    data["format_version"] = version
    data["model"].update(changes)
    with pytest.raises(BundleError) as error:
        bundle.Manifest.from_dict(data)
    message = str(error.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


def test_a_cfg_unet_has_no_timestep_cond_input():
    assert "timestep_cond" in bundle.component_io("unet")[0]
    assert bundle.component_io("unet", bundle.CFG)[0] == ("sample", "timestep", "encoder_hidden_states")
    assert bundle.component_io("vae_decoder", bundle.CFG) == bundle.COMPONENT_IO["vae_decoder"]


def test_the_shallow_unet_takes_the_deep_feature():
    assert bundle.component_io("unet")[1] == ("out_sample",)  # openvino.genai needs one output
    inputs, outputs = bundle.component_io(bundle.UNET_SHALLOW, bundle.CFG)
    assert inputs == ("sample", "timestep", "encoder_hidden_states", bundle.DEEP_FEATURE)
    assert outputs == ("out_sample",)
    assert "timestep_cond" in bundle.component_io(bundle.UNET_SHALLOW)[0]


def test_an_inpainting_unet_has_more_input_channels_than_latents():
    """SD1.5 inpainting's UNet takes 9 channels (latents, mask, masked picture's latents) and predicts 4: the
    latents are 4 channels, the UNet's sample 9; anything else than 4 or 2 x 4 + 1 is refused in one line."""
    vae = {"block_out_channels": [1, 2, 3, 4], "latent_channels": 4}
    facts = bundle.ModelFacts.from_configs({"in_channels": 9, "out_channels": 4}, vae, 77, guidance_mode=bundle.CFG)
    assert (facts.latent_channels, facts.unet_in_channels, facts.unet_channels) == (4, 9, 9)
    assert facts.inpainting_unet
    plain = bundle.ModelFacts.from_configs({"in_channels": 4, "out_channels": 4}, vae, 77, guidance_mode=bundle.CFG)
    assert (plain.latent_channels, plain.unet_in_channels, plain.unet_channels) == (4, None, 4)
    assert not plain.inpainting_unet
    for unet in ({"in_channels": 5, "out_channels": 4}, {"in_channels": 8}):
        with pytest.raises(BundleError, match="in_channels .* 2 x out_channels \\+ 1") as error:
            bundle.ModelFacts.from_configs(unet, vae, 77, guidance_mode=bundle.CFG)
        assert "\n" not in str(error.value)
    with pytest.raises(BundleError, match="predicts 9-channel latents .* VAE takes 4"):
        bundle.ModelFacts.from_configs({"in_channels": 9, "out_channels": 9}, vae, 77, guidance_mode=bundle.CFG)


def test_unet_in_channels_is_in_the_manifest_only_for_an_inpainting_unet(tmp_path):
    data = cfg_manifest().to_dict()
    assert "unet_in_channels" not in data["model"]  # a manifest of any other UNet is what it always was
    assert bundle.Manifest.from_dict(data).model.unet_channels == 4
    inpainting = make_manifest(model=dataclasses.replace(cfg_manifest().model, unet_in_channels=9))
    write_files(tmp_path, {"a.bin": b"1"})
    bundle.write_manifest(tmp_path, inpainting)
    assert json.loads((tmp_path / "manifest.json").read_text())["model"]["unet_in_channels"] == 9
    assert bundle.read_manifest(tmp_path).model == inpainting.model
    for wrong in (4, 7, "9"):
        data = inpainting.to_dict()
        data["model"]["unet_in_channels"] = wrong
        with pytest.raises(BundleError, match="unet_in_channels") as error:
            bundle.Manifest.from_dict(data)
        assert "\n" not in str(error.value) and "re-export" in str(error.value)
