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


def test_unet_parts_add_up_and_find_the_shallow_path(benchmarks_package, tiny_bundle_fp32):
    profile = importlib.import_module("benchmarks.profile")
    lines = profile.profile_unet_parts(tiny_bundle_fp32)
    rows = {
        line.split("|")[1].strip(): line.split("|") for line in lines if line.startswith("| ") and "Part" not in line
    }
    assert 99 <= sum(float(row[3].strip().rstrip("%")) for row in rows.values()) <= 101
    # The tiny UNet's attention runs at full resolution only: self-attention over 4096 tokens leads.
    assert max(rows, key=lambda part: float(rows[part][2])) == "self-attention (attn1)"
    assert float(rows["cross-attention (attn2)"][2]) > 0
    shallow = next(line for line in lines if line.startswith("- DeepCache"))
    share = float(shallow.split(": ")[1].split("%")[0])
    assert 5 < share < 60  # one resnet and transformer of the last up block, and the in/out convolutions
    assert profile.in_shallow_path("up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_q", 3, 2)
    assert not profile.in_shallow_path("up_blocks.3.attentions.1.proj_out", 3, 2)
    assert profile.unet_part("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k") == "cross-attention (attn2)"
