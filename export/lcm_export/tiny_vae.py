"""TAESD, a tiny VAE decoder (diffusers' AutoencoderTiny): ~40x fewer FLOPs than the SD VAE decoder.

The VAE decode is ~40% of a 4-step 512x512 image on a CPU; TAESD makes it negligible at a small
cost in detail. ``lcm-export --tiny-vae SOURCE`` adds its decoder to the bundle as
``vae_decoder_tiny/``; ``lcm-run --vae tiny`` uses it. Like diffusers, the runtime divides the
latents by the tiny VAE's own scaling_factor (1.0 for TAESD) before decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lcm_runtime.bundle import OPTIONAL_COMPONENT_IO, TINY_VAE_DECODER
from lcm_runtime.errors import first_line

from .convert import quiet_tracing
from .hub import HUB_ID, SourceError, download_from_hub, weights_sha256
from .options import DEFAULT_TINY_VAE

if TYPE_CHECKING:
    import openvino as ov
    from diffusers import AutoencoderTiny

SAFE_WEIGHTS = ("diffusion_pytorch_model.safetensors",)
PICKLE_WEIGHTS = ("diffusion_pytorch_model.bin",)


@dataclass
class LoadedTinyVae:
    vae: AutoencoderTiny
    info: dict[str, Any]  # recorded in the manifest's component entry


class TinyVaeDecoderIO(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=True).sample


def load_tiny_vae(source: str, allow_pickle: bool = False) -> LoadedTinyVae:
    """A TAESD folder (config.json + weights at its top, or in a vae/ subfolder) or hub id."""
    from diffusers import AutoencoderTiny

    path = Path(source).expanduser()
    if path.exists():
        folder, info = path.resolve(), {"kind": "local", "path": str(path.resolve())}
    elif HUB_ID.match(source):
        folder = download_from_hub(source, None, allow_pickle)
        info = {"kind": "hub", "id": source, "commit": folder.name}
    else:
        raise SourceError(f"--tiny-vae {source} is neither an existing folder nor a hub id like {DEFAULT_TINY_VAE}")
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(
            f"{folder} has no config.json: not a tiny VAE folder; pass an AutoencoderTiny such as {DEFAULT_TINY_VAE}"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SourceError(f"{config_path} is not valid JSON; re-download the tiny VAE") from None
    if not isinstance(config, dict) or config.get("_class_name") != "AutoencoderTiny":
        found = config.get("_class_name") if isinstance(config, dict) else None
        raise SourceError(
            f"--tiny-vae {source} is a {found or 'unknown model'}, "
            f"not an AutoencoderTiny (TAESD) such as {DEFAULT_TINY_VAE}"
        )
    weights = [folder / name for name in SAFE_WEIGHTS if (folder / name).is_file()]
    if not weights:
        pickled = [folder / name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
        if pickled and not allow_pickle:
            raise SourceError(
                f"{folder} has only pickle weights ({pickled[0].name}), which can run code when loaded; "
                "convert them to safetensors, or pass --allow-pickle if you trust the source"
            )
        if not pickled:
            raise SourceError(f"{folder} has no tiny VAE weights (diffusion_pytorch_model.safetensors); re-download it")
        weights = pickled
    try:
        vae = AutoencoderTiny.from_pretrained(
            folder, torch_dtype=torch.float32, use_safetensors=None if allow_pickle else True
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        detail = first_line(error)
        raise SourceError(f"cannot load the tiny VAE in {folder}: {detail}") from None
    if info["kind"] == "local":
        info["weights_sha256"] = weights_sha256(folder, weights)
    return LoadedTinyVae(vae=vae.eval(), info=info)


def check_compatible(tiny: LoadedTinyVae, latent_channels: int) -> None:
    channels = int(tiny.vae.config.latent_channels)
    if channels != latent_channels:
        raise SourceError(
            f"the tiny VAE decodes {channels}-channel latents but this model makes {latent_channels}; "
            f"use a TAESD made for this model family ({DEFAULT_TINY_VAE} for SD1.x)"
        )


def convert_tiny_vae_decoder(tiny: LoadedTinyVae) -> ov.Model:
    import openvino as ov

    channels = int(tiny.vae.config.latent_channels)
    example = (torch.randn(1, channels, 9, 9, generator=torch.Generator().manual_seed(5)),)
    with quiet_tracing():
        model = ov.convert_model(
            TinyVaeDecoderIO(tiny.vae).float().eval(),
            example_input=example,
            input=[(ov.PartialShape([-1, channels, -1, -1]), ov.Type.f32)],
        )
    (input_name,), (output_name,) = OPTIONAL_COMPONENT_IO[TINY_VAE_DECODER]
    model.inputs[0].get_tensor().set_names({input_name})
    model.outputs[0].get_tensor().set_names({output_name})
    return model


def build_tiny_random_vae(seed: int = 0, latent_channels: int = 4) -> AutoencoderTiny:
    """A small random-weight AutoencoderTiny (TAESD's structure, narrow), for tests and smoke tests."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=latent_channels,
    ).eval()


def tiny_random_vae(seed: int = 0, latent_channels: int = 4) -> LoadedTinyVae:
    """build_tiny_random_vae, ready for the export (lcm-export --tiny-random --fast)."""
    return LoadedTinyVae(vae=build_tiny_random_vae(seed, latent_channels), info={"kind": "tiny-random", "seed": seed})
