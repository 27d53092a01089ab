"""Tiny Stable Diffusion 1.5-like pipelines (no LCM distillation), LoRA files in kohya and
diffusers/peft format, and single-file checkpoints in the original (CompVis/LDM) key layout: what the
LoRA and single-file tests build, offline, in a second or two.

Everything here writes files the way the tools users get them from do (kohya sd-scripts, diffusers'
``save_lora_weights``, the original ``.safetensors`` checkpoints), so the export reads them exactly as
it reads real ones; nothing here calls lcm_export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# runwayml/stable-diffusion-v1-5's scheduler/scheduler_config.json (less the version stamp).
SD15_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# The modules a LoRA in these tests adapts: linear attention projections, GEGLU's projection, a time
# embedding projection, 3x3 resnet and sampler convolutions, a 1x1 convolution, and the text encoder.
UNET_TARGETS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "down_blocks.0.attentions.0.proj_in",
    "down_blocks.0.resnets.0.conv1",
    "down_blocks.0.resnets.0.time_emb_proj",
    "down_blocks.0.downsamplers.0.conv",
    "mid_block.resnets.0.conv2",
    "up_blocks.1.resnets.0.conv_shortcut",
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v",
)
TEXT_ENCODER_TARGETS = (
    "encoder.layers.0.self_attn.q_proj",
    "encoder.layers.0.self_attn.k_proj",
    "encoder.layers.0.self_attn.v_proj",
    "encoder.layers.0.self_attn.out_proj",
    "encoder.layers.1.mlp.fc1",
    "encoder.layers.1.mlp.fc2",
)
CONV3X3_TARGET = "down_blocks.0.resnets.0.conv1"


def build_tiny_sd15_pipeline(seed: int = 0, in_channels: int = 4) -> Any:
    """lcm_export.tiny's SD1.5-like model (no LCM w-embedding, SD1.5's PNDM scheduler); ``in_channels=9``:
    like runwayml/stable-diffusion-inpainting."""
    from lcm_export.tiny import build_tiny_sd_pipeline

    return build_tiny_sd_pipeline(seed, in_channels)


def save_tiny_sd15_pipeline(folder: Path, seed: int = 0, in_channels: int = 4) -> Path:
    from lcm_export.tiny import write_clip_vocab_files

    folder = Path(folder)
    build_tiny_sd15_pipeline(seed, in_channels).save_pretrained(folder)
    write_clip_vocab_files(folder / "tokenizer")
    return folder


# LoRA files.


def _lora_factors(module: torch.nn.Module, rank: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(down [r, in(, k, k)], up [out, r(, 1, 1)]) for a Linear or Conv2d, as kohya and peft store them."""
    if isinstance(module, torch.nn.Conv2d):
        down = torch.randn(rank, module.in_channels, *module.kernel_size, generator=generator) * 0.1
        up = torch.randn(module.out_channels, rank, 1, 1, generator=generator) * 0.1
    else:
        down = torch.randn(rank, module.in_features, generator=generator) * 0.1
        up = torch.randn(module.out_features, rank, generator=generator) * 0.1
    return down, up


def lora_tensors(
    pipeline: Any,
    seed: int = 0,
    rank: int = 4,
    alpha: float = 2.0,
    unet_targets: tuple[str, ...] = UNET_TARGETS,
    text_encoder_targets: tuple[str, ...] = TEXT_ENCODER_TARGETS,
) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, float]]:
    """{(component, module path): (down, up, alpha)}: random factors fitting ``pipeline``'s modules."""
    generator = torch.Generator().manual_seed(seed)
    factors = {}
    for component, targets in (("unet", unet_targets), ("text_encoder", text_encoder_targets)):
        modules = dict(getattr(pipeline, component).named_modules())
        for path in targets:
            down, up = _lora_factors(modules[path], rank, generator)
            factors[(component, path)] = (down, up, float(alpha))
    return factors


def write_kohya_lora(path: Path, factors: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, float]]) -> Path:
    """kohya sd-scripts' layout: lora_unet_<path with _>.lora_down/.lora_up/.alpha; the text encoder's
    under lora_te_text_model_ (SD1.x kohya files name CLIP's modules with their text_model. prefix)."""
    from safetensors.torch import save_file

    tensors = {}
    for (component, module), (down, up, alpha) in factors.items():
        prefix = "lora_unet_" if component == "unet" else "lora_te_text_model_"
        name = prefix + module.replace(".", "_")
        tensors[f"{name}.lora_down.weight"] = down.contiguous()
        tensors[f"{name}.lora_up.weight"] = up.contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path))
    return Path(path)


def write_peft_lora(
    path: Path, factors: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, float]], metadata: bool = True
) -> Path:
    """diffusers/peft's layout, written by diffusers' own StableDiffusionPipeline.save_lora_weights:
    unet.<path>.lora_A/lora_B.weight and text_encoder.text_model.<path>.lora_A/lora_B.weight, with each
    component's LoraConfig (rank, alpha, targets) in the file's metadata. Without ``metadata`` (older
    diffusers files) peft takes alpha = rank."""
    from diffusers import StableDiffusionPipeline

    layers: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}}
    configs: dict[str, dict[str, Any]] = {}
    for (component, module), (down, up, alpha) in factors.items():
        key = module if component == "unet" else f"text_model.{module}"
        layers[component][f"{key}.lora_A.weight"] = down.contiguous()
        layers[component][f"{key}.lora_B.weight"] = up.contiguous()
        config = configs.setdefault(component, {"r": int(down.shape[0]), "lora_alpha": alpha, "target_modules": []})
        config["target_modules"].append(module)
    path = Path(path)
    StableDiffusionPipeline.save_lora_weights(
        path.parent,
        unet_lora_layers=layers["unet"] or None,
        text_encoder_lora_layers=layers["text_encoder"] or None,
        unet_lora_adapter_metadata=configs.get("unet") if metadata else None,
        text_encoder_lora_adapter_metadata=configs.get("text_encoder") if metadata else None,
        weight_name=path.name,
    )
    return path


def fused_by_hand(weight: torch.Tensor, down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """W + scale * B.A, written out (not diffusers' code): Linear, 1x1 and kxk convolutions."""
    if weight.ndim == 2:
        return weight + scale * (up @ down)
    return weight + scale * torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)


# Single-file checkpoints in the original Stable Diffusion key layout.


def _ldm_unet_prefixes(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs of the UNet's blocks, for any block count and layers_per_block."""
    per_block = int(config["layers_per_block"])
    blocks = len(config["block_out_channels"])
    up_has_attention = [kind.startswith("CrossAttn") for kind in config["up_block_types"]]
    pairs = []
    for i in range(blocks):
        for j in range(per_block):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(per_block + 1) * i + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(per_block + 1) * i + j + 1}.1."))
        if i < blocks - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(per_block + 1) * (i + 1)}.0.op."))
        for j in range(per_block + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(per_block + 1) * i + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(per_block + 1) * i + j}.1."))
        if i < blocks - 1:
            slot = 2 if up_has_attention[i] else 1
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(per_block + 1) * i + per_block}.{slot}."))
    pairs.append(("mid_block.resnets.0.", "middle_block.0."))
    pairs.append(("mid_block.attentions.0.", "middle_block.1."))
    pairs.append(("mid_block.resnets.1.", "middle_block.2."))
    return pairs


UNET_LAYERS = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
UNET_RESNET_PARTS = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
VAE_ATTENTION_PARTS = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def _ldm_unet_key(key: str, prefixes: list[tuple[str, str]]) -> str:
    for diffusers, ldm in UNET_LAYERS.items():
        if key.startswith(diffusers):
            return ldm + key[len(diffusers) :]
    for diffusers, ldm in prefixes:
        if key.startswith(diffusers):
            rest = key[len(diffusers) :]
            if ".resnets." in diffusers or diffusers.startswith("mid_block.resnets"):
                for part, ldm_part in UNET_RESNET_PARTS.items():
                    if rest.startswith(part):
                        rest = ldm_part + rest[len(part) :]
                        break
            return ldm + rest
    raise KeyError(f"no LDM name for UNet key {key}")


def _ldm_vae_key(key: str, config: dict[str, Any]) -> str:
    blocks = len(config["block_out_channels"])
    side, rest = key.split(".", 1)  # encoder / decoder / quant_conv / post_quant_conv
    if side not in ("encoder", "decoder"):
        return key
    renames = {"conv_norm_out.": "norm_out.", "mid_block.attentions.0.": "mid.attn_1."}
    renames.update({f"mid_block.resnets.{i}.": f"mid.block_{i + 1}." for i in range(2)})
    for i in range(blocks):
        renames[f"down_blocks.{i}.resnets."] = f"down.{i}.block."
        renames[f"down_blocks.{i}.downsamplers.0."] = f"down.{i}.downsample."
        renames[f"up_blocks.{i}.resnets."] = f"up.{blocks - 1 - i}.block."
        renames[f"up_blocks.{i}.upsamplers.0."] = f"up.{blocks - 1 - i}.upsample."
    for diffusers, ldm in renames.items():
        if rest.startswith(diffusers):
            rest = ldm + rest[len(diffusers) :]
            break
    if rest.startswith("mid.attn_1."):
        tail = rest[len("mid.attn_1.") :]
        for part, ldm_part in VAE_ATTENTION_PARTS.items():
            if tail.startswith(part):
                tail = ldm_part + tail[len(part) :]
                break
        rest = "mid.attn_1." + tail
    return f"{side}.{rest.replace('conv_shortcut.', 'nin_shortcut.')}"


def ldm_checkpoint(pipeline: Any) -> dict[str, torch.Tensor]:
    """The pipeline's weights as an original Stable Diffusion checkpoint: model.diffusion_model.*,
    first_stage_model.* (attention projections as 1x1 convolutions) and cond_stage_model.transformer.*."""
    unet_config = dict(pipeline.unet.config)
    prefixes = _ldm_unet_prefixes(unet_config)
    checkpoint = {}
    for key, tensor in pipeline.unet.state_dict().items():
        checkpoint["model.diffusion_model." + _ldm_unet_key(key, prefixes)] = tensor
    vae_config = dict(pipeline.vae.config)
    for key, tensor in pipeline.vae.state_dict().items():
        ldm = _ldm_vae_key(key, vae_config)
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        checkpoint["first_stage_model." + ldm] = tensor
    for key, tensor in pipeline.text_encoder.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        checkpoint["cond_stage_model.transformer." + key] = tensor
    return {key: tensor.detach().clone().contiguous() for key, tensor in checkpoint.items()}


def save_single_file(path: Path, pipeline: Any) -> Path:
    from safetensors.torch import save_file

    save_file(ldm_checkpoint(pipeline), str(path))
    return Path(path)


# lcm-export in this process (the same one-line ending as the command: lcm_export.cli.main), for the
# errors that come after torch is imported: seconds instead of a new interpreter each.


def run_cli_in_process(args: list[Any], capsys: Any) -> tuple[int, str]:
    import pytest

    from lcm_export.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    return exit_info.value.code, capsys.readouterr().err
