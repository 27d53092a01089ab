"""FLOPs of one text-encoder pass, one UNet step and one VAE decode, counted with torch's FlopCounterMode.

The modules are built on the meta device, so counting costs no weights, no compute and a few
seconds. Attention goes through diffusers' plain bmm processor so that every matmul is seen by
the counter (the fused SDPA kernels are not counted on every backend). The counts depend only on
the architecture and the image size, so they are stored in flops.json and recounted only when
either changes.

FlopCounterMode counts multiply-accumulates as 2 FLOPs, for matmul, bmm and convolution only:
exactly the work a matrix-multiply bound applies to.

A UNet exported with token downsampling does less of that work (its full-resolution self-attentions
see fewer keys), so its step is counted again through the export's own rewrite, per factor.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

STORE = Path(__file__).resolve().parent / "flops.json"


def downsampling_factors() -> tuple[int, ...]:
    """lcm-export's --token-downsampling factors that change the UNet (all but 1)."""
    from lcm_export.options import TOKEN_DOWNSAMPLING_FACTORS

    return tuple(factor for factor in TOKEN_DOWNSAMPLING_FACTORS if factor > 1)


def count_keys() -> set[str]:
    """What count_flops returns: a stored count lacking any of these is counted again."""
    return {
        "text_encoder",
        "unet_step",
        "vae_decode",
        *(f"unet_step_token_downsampling_{factor}" for factor in downsampling_factors()),
    }


def count_flops(configs: dict[str, dict[str, Any]], height: int, width: int, batch: int = 1) -> dict[str, int]:
    import torch
    from diffusers.models.attention_processor import AttnProcessor

    from lcm_export.convert import unet_rewrites

    from .model import build_modules

    modules = build_modules(configs, seed=0, device="meta")
    unet, vae, text_encoder = modules["unet"], modules["vae"], modules["text_encoder"]
    unet.set_attn_processor(AttnProcessor())
    vae.set_attn_processor(AttnProcessor())
    text_config = configs["text_encoder"]
    unet_config = configs["unet"]
    scale = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    latent = (batch, unet_config["in_channels"], height // scale, width // scale)
    counts: dict[str, int] = {}
    with torch.device("meta"), torch.no_grad():
        ids = torch.zeros(batch, text_config["max_position_embeddings"], dtype=torch.int64)
        counts["text_encoder"] = _count(lambda: text_encoder(ids))
        hidden = torch.zeros(batch, text_config["max_position_embeddings"], unet_config["cross_attention_dim"])
        cond = torch.zeros(batch, unet_config["time_cond_proj_dim"])
        sample = torch.zeros(latent)
        timestep = torch.tensor([999])
        counts["unet_step"] = _count(lambda: unet(sample, timestep, hidden, timestep_cond=cond))
        for factor in downsampling_factors():
            with unet_rewrites(unet, token_downsampling=factor):
                counts[f"unet_step_token_downsampling_{factor}"] = _count(
                    lambda: unet(sample, timestep, hidden, timestep_cond=cond)
                )
        counts["vae_decode"] = _count(
            lambda: vae.decode(torch.zeros(batch, configs["vae"]["latent_channels"], *latent[2:]))
        )
    return counts


def _count(call: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return int(counter.get_total_flops())


def store_key(digest: str, height: int, width: int) -> str:
    return f"{digest}@{height}x{width}"


def stored_flops(digest: str, height: int, width: int) -> dict[str, int] | None:
    if not STORE.exists():
        return None
    return json.loads(STORE.read_text()).get(store_key(digest, height, width))


def store_flops(digest: str, height: int, width: int, counts: dict[str, int], store: Path = STORE) -> None:
    data = json.loads(store.read_text()) if store.exists() else {}
    data[store_key(digest, height, width)] = counts
    store.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def configs_from_folder(folder: Path) -> dict[str, dict[str, Any]]:
    """The component configs of a saved diffusers pipeline folder."""
    return {
        name: json.loads((Path(folder) / name / "config.json").read_text()) for name in ("unet", "vae", "text_encoder")
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.flops HEIGHT WIDTH [DIFFUSERS_FOLDER]`: print the counts as JSON
    (of the folder's configs, or by default of the benchmark's model_configs/)."""
    from .model import load_configs

    args = sys.argv[1:] if argv is None else argv
    height, width = int(args[0]), int(args[1])
    configs = configs_from_folder(Path(args[2])) if len(args) > 2 else load_configs()
    print(json.dumps(count_flops(configs, height, width)))


if __name__ == "__main__":
    main()
