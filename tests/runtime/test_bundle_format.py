"""The bundle contract: manifest round trip, version checks, checksum verification."""

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
