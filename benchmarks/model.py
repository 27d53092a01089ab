"""The benchmarked model: LCM_Dreamshaper_v7's exact architecture with seeded random weights.

Speed does not depend on weight values, and the real weights cannot be downloaded here, so the
harness builds the same modules from the configs in model_configs/ (transcribed from the hub's
SimianLuo/LCM_Dreamshaper_v7 config files) and saves them as a diffusers folder that both
lcm-export and diffusers' own pipeline load. The tokenizer is the real CLIP vocabulary.

Parameter counts (checked by tests/benchmarks): UNet 859,602,884 (SD1.5's 859,520,964 plus LCM's
256->320 guidance projection), VAE 83,653,863, text encoder 123,060,480.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import LatentConsistencyModelPipeline

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
COMPONENT_CONFIGS = ("unet", "vae", "text_encoder")
MODEL_NAME = "lcm-dreamshaper-v7-architecture-random"


def load_configs() -> dict[str, dict[str, Any]]:
    return {name: json.loads((CONFIG_DIR / f"{name}.json").read_text()) for name in COMPONENT_CONFIGS}


def configs_digest() -> str:
    """Identifies the architecture: stored FLOP counts and built folders are keyed by it."""
    digest = hashlib.sha256()
    for name in COMPONENT_CONFIGS:
        digest.update(name.encode() + b"\0" + (CONFIG_DIR / f"{name}.json").read_bytes())
    return digest.hexdigest()[:16]


def build_modules(
    configs: dict[str, dict[str, Any]], seed: int, device: str | torch.device = "cpu"
) -> dict[str, torch.nn.Module]:
    """UNet, VAE and text encoder from the configs; each is seeded on its own so one config
    change does not reshuffle the other modules' weights. device="meta" builds shapes only."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def without_class(config: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in config.items() if not key.startswith("_") and key != "architectures"}

    modules: dict[str, torch.nn.Module] = {}
    with torch.device(device):
        torch.manual_seed(seed)
        modules["unet"] = UNet2DConditionModel.from_config(without_class(configs["unet"]))
        torch.manual_seed(seed + 1)
        modules["vae"] = AutoencoderKL.from_config(without_class(configs["vae"]))
        torch.manual_seed(seed + 2)
        modules["text_encoder"] = CLIPTextModel(CLIPTextConfig(**without_class(configs["text_encoder"])))
    for module in modules.values():
        module.eval()
    return modules


def build_pipeline(seed: int = 0) -> LatentConsistencyModelPipeline:
    from diffusers import LCMScheduler

    from lcm_export.assemble import assemble_pipeline
    from lcm_export.tiny import DREAMSHAPER_SCHEDULER_CONFIG, build_clip_tokenizer

    modules = build_modules(load_configs(), seed)
    return assemble_pipeline(
        modules["unet"],
        modules["vae"],
        modules["text_encoder"],
        build_clip_tokenizer(),
        LCMScheduler(**DREAMSHAPER_SCHEDULER_CONFIG),
    )


def save_pipeline(folder: Path, seed: int = 0) -> Path:
    """Save as a diffusers folder (float32 safetensors, like the hub repo)."""
    from lcm_export.tiny import write_clip_vocab_files

    pipeline = build_pipeline(seed)
    pipeline.save_pretrained(folder, safe_serialization=True)
    # transformers 5 writes only tokenizer.json; older readers (optimum-intel's transformers) need these.
    write_clip_vocab_files(Path(folder) / "tokenizer")
    return Path(folder)


# The module names latent-consistency/lcm-lora-sdv1-5 adapts in the UNet (its adapter config), and its rank.
LCM_LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)  # fmt: skip
LCM_LORA_RANK = 64


def save_sd15_pipeline(folder: Path, seed: int = 0, tiny: bool = False) -> Path:
    """The same architecture as SD1.5 itself (the LCM's UNet without its guidance projection) and SD1.5's
    PNDM scheduler, random weights, as a diffusers folder; beside it (lcm_lora_path), a random
    LoRA with LCM-LoRA's targets and rank (kohya layout), so that ``lcm-export --lcm-lora`` fuses it as it
    fuses the real one. ``tiny``: lcm_export.tiny's SD1.5-like pipeline, rank 4."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from safetensors.torch import save_file

    from lcm_export.tiny import (
        SD15_SCHEDULER_CONFIG,
        build_clip_tokenizer,
        build_tiny_sd_pipeline,
        write_clip_vocab_files,
    )

    if tiny:
        pipeline, rank = build_tiny_sd_pipeline(seed), 4
    else:
        configs = load_configs()
        configs["unet"] = {key: value for key, value in configs["unet"].items() if key != "time_cond_proj_dim"}
        modules, rank = build_modules(configs, seed), LCM_LORA_RANK
        pipeline = StableDiffusionPipeline(
            vae=modules["vae"],
            text_encoder=modules["text_encoder"],
            tokenizer=build_clip_tokenizer(),
            unet=modules["unet"],
            scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    folder = Path(folder)
    pipeline.save_pretrained(folder, safe_serialization=True)
    write_clip_vocab_files(folder / "tokenizer")
    generator = torch.Generator().manual_seed(seed + 4)
    tensors = {}
    for path, module in pipeline.unet.named_modules():
        if not path.endswith(LCM_LORA_TARGETS) or not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        if isinstance(module, torch.nn.Conv2d):
            down = torch.randn(rank, module.in_channels, *module.kernel_size, generator=generator)
            up = torch.randn(module.out_channels, rank, 1, 1, generator=generator)
        else:
            down = torch.randn(rank, module.in_features, generator=generator)
            up = torch.randn(module.out_features, rank, generator=generator)
        name = "lora_unet_" + path.replace(".", "_")
        tensors[f"{name}.lora_down.weight"] = down * 0.01
        tensors[f"{name}.lora_up.weight"] = up * 0.01
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(lcm_lora_path(folder)))
    return folder


def lcm_lora_path(sd15_folder: Path) -> Path:
    """Where save_sd15_pipeline puts the folder's random LCM-LoRA: beside it, not in it."""
    return Path(sd15_folder).with_name(Path(sd15_folder).name + "-lcm-lora.safetensors")


def save_taesd(folder: Path, seed: int = 0, tiny: bool = False) -> Path:
    """A random-weight TAESD (diffusers' AutoencoderTiny with its default, i.e. TAESD's, architecture)."""
    import torch
    from diffusers import AutoencoderTiny

    from lcm_export.tiny_vae import build_tiny_random_vae

    torch.manual_seed(seed + 3)
    vae = build_tiny_random_vae(seed) if tiny else AutoencoderTiny()
    vae.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.model OUT [SEED] [--sd15]`: run in a child process so its memory is returned."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if "--sd15" in args:
        args.remove("--sd15")
        save_sd15_pipeline(Path(args[0]), int(args[1]) if len(args) > 1 else 0)
    else:
        save_pipeline(Path(args[0]), int(args[1]) if len(args) > 1 else 0)


if __name__ == "__main__":
    main()
