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
    """`python -m benchmarks.model OUT [SEED]`: run in a child process so its memory is returned."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    save_pipeline(Path(args[0]), int(args[1]) if len(args) > 1 else 0)


if __name__ == "__main__":
    main()
