"""A tiny random-weight LCM pipeline with the real CLIP vocabulary.

Users smoke-test deployments with it without downloading 4 GB, and the tests build it offline.
The structure mirrors SD1.5/LCM_Dreamshaper_v7 (cross-attention UNet with time_cond_proj_dim,
4-block VAE so vae_scale_factor is 8, CLIP text encoder with the 49,408-token BPE vocabulary);
only the widths are shrunk. ``build_tiny_sd_pipeline`` is its SD1.5-like twin without
time_cond_proj_dim (what an SD1.5 checkpoint with LCM-LoRA fused is), for the "cfg" guidance mode.
Either takes ``in_channels=9`` for an inpainting UNet (SD1.5 inpainting's layout: latents, mask, masked
picture's latents), which the parity tests export.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from .source import LoadedSource

CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# OpenAI CLIP uses the first 49152 - 256 - 2 merges of the file (the rest were never trained).
CLIP_MERGE_COUNT = 49152 - 256 - 2
CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
TEXT_MAX_LENGTH = 77

# SimianLuo/LCM_Dreamshaper_v7's scheduler/scheduler_config.json, so the tiny model schedules
# exactly like the real one.
DREAMSHAPER_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "original_inference_steps": 50,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "timestep_scaling": 10.0,
    "rescale_betas_zero_snr": False,
}

# stable-diffusion-v1-5's scheduler/scheduler_config.json (PNDM): what LCM-LoRA's recipe turns into an
# LCMScheduler with LCMScheduler.from_config.
SD15_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

TINY_TEXT_HIDDEN = 32
TINY_TIME_COND_DIM = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character map."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codepoints = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codepoints.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codepoints), strict=True))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[str, ...]]:
    """Derive CLIP's vocab.json and merges from the shipped BPE file, exactly as OpenAI's tokenizer does."""
    raw = resources.files("lcm_export").joinpath("data", CLIP_BPE_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = tuple(lines[1 : 1 + CLIP_MERGE_COUNT])  # line 0 is the "#version" header
    tokens = list(_bytes_to_unicode().values())
    tokens += [token + "</w>" for token in tokens]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [CLIP_BOS, CLIP_EOS]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_clip_vocab_files(folder: Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt (the files slow and older tokenizer readers need)."""
    vocab, merges = clip_vocab_and_merges()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_clip_tokenizer() -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as scratch:
        vocab_path, merges_path = write_clip_vocab_files(Path(scratch))
        return CLIPTokenizer(
            vocab=str(vocab_path),
            merges=str(merges_path),
            pad_token=CLIP_EOS,
            model_max_length=TEXT_MAX_LENGTH,
        )


def build_tiny_pipeline(seed: int = 0, in_channels: int = 4) -> LatentConsistencyModelPipeline:
    """A random-weight LCM pipeline; the same seed always gives the same weights. ``in_channels=9``: an
    inpainting UNet (latents, mask, masked picture's latents), which no public LCM has."""
    from diffusers import LCMScheduler

    from .assemble import assemble_pipeline

    unet, vae, text_encoder = _tiny_models(seed, TINY_TIME_COND_DIM, in_channels)
    scheduler = LCMScheduler(**DREAMSHAPER_SCHEDULER_CONFIG)
    return assemble_pipeline(unet, vae, text_encoder, build_clip_tokenizer(), scheduler)


def build_tiny_sd_pipeline(seed: int = 0, in_channels: int = 4) -> StableDiffusionPipeline:
    """A random-weight SD1.5-like pipeline: the tiny LCM's architecture without time_cond_proj_dim, and
    SD1.5's PNDM scheduler config (export it with guidance_mode="cfg"). Same seed, same weights.
    ``in_channels=9``: an SD1.5-inpainting-like UNet (latents, mask, masked picture's latents)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    unet, vae, text_encoder = _tiny_models(seed, None, in_channels)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(),
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for module in (unet, vae, text_encoder):
        module.eval()
    return pipeline


def _tiny_models(seed: int, time_cond_proj_dim: int | None, in_channels: int = 4) -> tuple[Any, Any, Any]:
    """The tiny UNet, VAE and CLIP text encoder, drawn in that order after seeding torch."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        # Attention at the full resolution and none at the lowest, as in SD1.5 (the full-resolution
        # self-attentions are the ones --token-downsampling rewrites).
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_HIDDEN,
        time_cond_proj_dim=time_cond_proj_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=TINY_TEXT_HIDDEN,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=TEXT_MAX_LENGTH,
            projection_dim=TINY_TEXT_HIDDEN,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    return unet, vae, text_encoder


def save_tiny_pipeline(folder: Path | str, seed: int = 0, safe_serialization: bool = True) -> Path:
    """Save the tiny pipeline as a diffusers folder (a valid lcm-export SOURCE)."""
    folder = Path(folder)
    pipeline = build_tiny_pipeline(seed)
    pipeline.save_pretrained(folder, safe_serialization=safe_serialization)
    if not safe_serialization:
        _pickle_remaining_safetensors(folder)
    # transformers 5 writes only tokenizer.json for CLIP; older readers need vocab.json/merges.txt.
    write_clip_vocab_files(folder / "tokenizer")
    return folder


def _pickle_remaining_safetensors(folder: Path) -> None:
    """transformers 5 always saves safetensors; rewrite them as the legacy pickle files, so
    that safe_serialization=False really gives a pickle-only folder (for tests of refusal)."""
    import torch
    from safetensors.torch import load_file

    for path in sorted(folder.rglob("*.safetensors")):
        legacy = "pytorch_model.bin" if path.name == "model.safetensors" else path.name.replace(".safetensors", ".bin")
        torch.save(load_file(path), path.with_name(legacy))
        path.unlink()


def load_tiny_sd_random(seed: int = 0, in_channels: int = 4) -> LoadedSource:
    """The tiny random SD1.5-like pipeline as an export source (export it with guidance_mode="cfg");
    ``in_channels=9``: its inpainting variant."""
    from .source import LoadedSource

    info: dict[str, Any] = {"kind": "tiny-random-sd", "seed": int(seed)}
    if in_channels != 4:
        info["unet_in_channels"] = int(in_channels)
    return LoadedSource(pipeline=build_tiny_sd_pipeline(seed, in_channels), info=info)


def load_tiny_random(seed: int = 0) -> LoadedSource:
    """The tiny random pipeline as an export source (lcm-export --tiny-random)."""
    from .source import LoadedSource

    return LoadedSource(pipeline=build_tiny_pipeline(seed), info={"kind": "tiny-random", "seed": int(seed)})
