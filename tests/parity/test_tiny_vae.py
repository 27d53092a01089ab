"""TAESD (--tiny-vae / --vae tiny): exported, selectable, and the same image as diffusers with AutoencoderTiny."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from lcm_export.exporter import ExportOptions, export_bundle
from lcm_export.source import SourceError, load_source
from lcm_export.tiny_vae import build_tiny_random_vae, load_tiny_vae
from lcm_runtime import LCMPipeline
from lcm_runtime.bundle import read_manifest, verify_files
from lcm_runtime.errors import BundleError
from lcm_runtime.image import to_uint8


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("taesd") / "taesd"
    build_tiny_random_vae(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bundle_with_tiny_vae(tiny_pipeline_dir, tiny_vae_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle-taesd") / "bundle"
    export_bundle(
        load_source(str(tiny_pipeline_dir)),
        out,
        ExportOptions(weights="fp32"),
        tiny_vae=load_tiny_vae(str(tiny_vae_dir)),
    )
    return out


def test_bundle_records_and_verifies_the_tiny_vae(bundle_with_tiny_vae, tiny_vae_dir):
    manifest = read_manifest(bundle_with_tiny_vae)
    entry = manifest.components["vae_decoder_tiny"]
    assert entry["precision"] == "fp32" and entry["source"]["kind"] == "local"
    assert "vae_decoder_tiny/openvino_model.bin" in manifest.files
    assert verify_files(bundle_with_tiny_vae, manifest) == []


@pytest.mark.parametrize("steps,height,width", [(1, 64, 64), (4, 64, 96)])
def test_same_image_as_diffusers_with_autoencoder_tiny(
    tiny_pipeline_dir, tiny_vae_dir, bundle_with_tiny_vae, torch_draws, steps, height, width
):
    reference = diffusers.LatentConsistencyModelPipeline.from_pretrained(tiny_pipeline_dir)
    reference.vae = diffusers.AutoencoderTiny.from_pretrained(tiny_vae_dir)
    reference.set_progress_bar_config(disable=True)
    # guidance explicit: diffusers' own default is 8.5, ours the bundle's 8.0
    expected = reference(
        "a cat",
        num_inference_steps=steps,
        guidance_scale=8.0,
        height=height,
        width=width,
        output_type="np",
        generator=torch.Generator().manual_seed(11),
    ).images
    pipe = LCMPipeline.from_pretrained(bundle_with_tiny_vae, precision="f32", cache_dir=False, vae="tiny")
    ours = pipe(
        "a cat", num_inference_steps=steps, height=height, width=width, output_type="np", generator=torch_draws(11)
    ).images
    difference = np.abs(to_uint8(ours).astype(int) - to_uint8(expected).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() <= 0.001
    assert to_uint8(expected).std() > 2  # not two blank images
    full = LCMPipeline.from_pretrained(bundle_with_tiny_vae, precision="f32", cache_dir=False)
    other = full(
        "a cat", num_inference_steps=steps, height=height, width=width, output_type="np", generator=torch_draws(11)
    ).images
    assert np.abs(other - ours).max() > 0.05  # the full VAE really is a different decoder


def test_tiny_vae_from_cli_and_missing_tiny_vae(bundle_with_tiny_vae, tiny_bundle_fp32, tmp_path):
    env = {**os.environ, "LCM_CACHE_DIR": "off"}
    run = [sys.executable, "-m", "lcm_runtime.cli", "a cat", "--vae", "tiny", "--seed", "1"]
    ok = subprocess.run(
        [*run, "--model", bundle_with_tiny_vae, "--output", tmp_path / "t.png"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    from PIL import Image

    assert "VAE: tiny" in Image.open(tmp_path / "t.png").text["parameters"]
    missing = subprocess.run(
        [*run, "--model", tiny_bundle_fp32, "--output", tmp_path / "m.png"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "no tiny VAE" in missing.stderr and "--tiny-vae" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.png").exists()
    with pytest.raises(BundleError):
        LCMPipeline.from_pretrained(tiny_bundle_fp32, vae="tiny", cache_dir=False)


def test_bad_tiny_vae_sources(tiny_pipeline_dir, tmp_path, tiny_vae_dir):
    with pytest.raises(SourceError, match="not an AutoencoderTiny"):
        load_tiny_vae(str(tiny_pipeline_dir / "vae"))  # the full VAE folder
    with pytest.raises(SourceError, match="no config.json"):
        load_tiny_vae(str(tmp_path))
    with pytest.raises(SourceError, match="hub"):
        load_tiny_vae("madebyollin/taesd")  # offline in tests
    wide = tmp_path / "wide"
    build_tiny_random_vae(latent_channels=16).save_pretrained(wide)
    out = tmp_path / "out"
    with pytest.raises(SourceError, match="16-channel"):
        export_bundle(
            load_source(str(tiny_pipeline_dir)), out, ExportOptions(weights="fp32"), tiny_vae=load_tiny_vae(str(wide))
        )
    assert not out.exists()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"_class_name": "AutoencoderTiny"}))
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(SourceError, match="pickle"):
        load_tiny_vae(str(pickled))


def test_lcm_export_cli_tiny_vae(tiny_vae_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lcm_export.entry",
            "--tiny-random",
            str(tmp_path / "b"),
            "--weights",
            "fp32",
            "--tiny-vae",
            str(tiny_vae_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "vae_decoder_tiny" in read_manifest(tmp_path / "b").components


def test_server_previews_decode_each_step_with_the_bundles_taesd(bundle_with_tiny_vae):
    from lcm_runtime.serve.preview import Previewer

    pipe = LCMPipeline.from_pretrained(bundle_with_tiny_vae, precision="f32", vae="tiny", cache_dir=False)
    steps: list[np.ndarray] = []
    final = pipe(
        "a cat",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=0,
        output_type="np",
        callback_on_step_end=lambda index, total, denoised: steps.append(denoised.copy()),
    ).images
    previewer = Previewer(pipe)
    assert previewer.kind == "taesd"
    preview = np.asarray(previewer(steps[-1]))
    assert preview.shape == (64, 64, 3)  # a real decode at the image's size, not the latent view
    assert np.abs(preview.astype(int) - to_uint8(final)[0].astype(int)).max() <= 1
    assert not np.array_equal(np.asarray(previewer(steps[0])), preview)
