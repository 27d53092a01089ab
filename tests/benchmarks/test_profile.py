"""benchmarks.profile's studies run on a bundle and report numbers that add up."""

import importlib

import pytest

pytest.importorskip("nncf")


def test_unet_profile_and_int8_vae_study_on_the_tiny_bundle(benchmarks_package, tiny_bundle_fp32):
    profile = importlib.import_module("benchmarks.profile")
    unet = profile.profile_unet(tiny_bundle_fp32)
    rows = [line for line in unet if line.startswith("| ") and not line.startswith("| Layer")]
    assert rows and "one UNet step at 512x512" in unet[0]
    shares = [int(row.split("|")[5].strip().rstrip("%")) for row in rows]
    assert 50 <= sum(shares) <= 101  # the top layer kinds cover most of the step

    vae = profile.vae_int8(tiny_bundle_fp32, samples=2)
    by_name = {
        row.split("|")[1].strip(): row.split("|") for row in vae if row.startswith("| ") and "Decoder" not in row
    }
    assert set(by_name) == {"f32", "bf16 (default)", "int8"}
    assert by_name["f32"][5].strip() == "∞"  # the reference against itself
    assert float(by_name["int8"][3]) > 0  # quantization changes the image a little
