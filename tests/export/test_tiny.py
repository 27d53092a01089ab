"""The tiny random LCM: real CLIP vocabulary, seeded weights, sane outputs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import numpy as np  # noqa: E402

from lcm_export.tiny import build_tiny_pipeline, clip_vocab_and_merges  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_pipeline(seed=0)


def test_real_clip_vocabulary(tiny):
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(set(vocab.values())) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert tiny.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tiny.tokenizer.pad_token_id == 49407 and tiny.tokenizer.model_max_length == 77
    assert tiny.text_encoder.config.vocab_size == len(vocab)


def test_same_seed_same_weights_other_seed_other_weights(tiny):
    again, other = build_tiny_pipeline(seed=0), build_tiny_pipeline(seed=1)
    for name in ("unet", "vae", "text_encoder"):
        mine, same, different = (getattr(p, name).state_dict() for p in (tiny, again, other))
        assert all(torch.equal(mine[key], same[key]) for key in mine), name
        assert not all(torch.equal(mine[key], different[key]) for key in mine), name


def test_structure_like_the_real_model(tiny):
    assert tiny.vae_scale_factor == 8
    assert tiny.unet.config.time_cond_proj_dim > 0
    assert tiny.unet.config.cross_attention_dim == tiny.text_encoder.config.hidden_size
    assert tiny.scheduler.config.original_inference_steps == 50 and tiny.scheduler.config.timestep_scaling == 10.0


def test_generates_a_finite_image_with_content(tiny):
    image = tiny(
        "a photo of a cat", num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images[0]
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all()
    assert image.std() > 0.02  # not one flat colour
    assert len(np.unique((image * 255).round())) > 16
