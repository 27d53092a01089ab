"""Single-file Stable Diffusion 1.x checkpoints as an export SOURCE, offline: one ``.safetensors`` in
the original (CompVis/LDM) key layout, as AUTOMATIC1111, ComfyUI and model sites share them.

diffusers' ``StableDiffusionPipeline.from_single_file`` converts the keys. It needs the model's
diffusers configs, which it would download: for SD1.5 they ship in this package (data/sd15_config,
runwayml/stable-diffusion-v1-5's model_index, scheduler, UNet, VAE, text encoder and tokenizer
configs), and the tokenizer's vocab.json/merges.txt are derived at load time from the CLIP BPE file the
package ships anyway (tiny.py). An SD1.5 inpainting checkpoint (a 9-channel UNet, as
runwayml/stable-diffusion-inpainting) loads with the same configs but its UNet's (data/sd15_config/
unet_inpainting: in_channels 9). A checkpoint of another architecture is refused before loading.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcm_runtime.errors import first_line

from .hub import SourceError, read_json_object

if TYPE_CHECKING:
    from diffusers import LatentConsistencyModelPipeline

SD15_CONFIG = "sd15_config"  # the folder under lcm_export/data
INPAINTING_UNET_CONFIG = "unet_inpainting/config.json"  # in it: SD1.5 inpainting's UNet config (in_channels 9)
# diffusers' infer_diffusers_model_type names of the checkpoints lcm-export takes -> the manifest's "config".
SD15_KINDS = {"v1": "sd15", "inpainting": "sd15-inpainting"}
SD15_CONFIG_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
)
CHECKPOINT_SUFFIX = ".safetensors"
PICKLE_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# The key prefixes of each model in an original Stable Diffusion 1.x checkpoint.
LDM_PREFIXES = {
    "UNet": "model.diffusion_model.",
    "VAE": "first_stage_model.",
    "text encoder": "cond_stage_model.transformer.",
}
# diffusers' infer_diffusers_model_type names of the checkpoints lcm-export cannot take, worded.
OTHER_ARCHITECTURES = {
    "v2": "a Stable Diffusion 2.x checkpoint",
    "inpainting_v2": "an SD2 inpainting checkpoint",
    "xl_base": "an SDXL checkpoint",
    "xl_refiner": "an SDXL refiner checkpoint",
    "xl_inpaint": "an SDXL inpainting checkpoint",
    "playground-v2-5": "a Playground v2.5 (SDXL) checkpoint",
}


def is_single_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == CHECKPOINT_SUFFIX


def checkpoint_shapes(path: Path) -> dict[str, Any]:
    """Every tensor of the checkpoint as an empty tensor of its shape (meta device): what the
    architecture checks read, without loading gigabytes."""
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in handle.keys()}
    except Exception as error:  # safetensors' own SafetensorError, or OSError
        raise SourceError(f"{path} is not a readable safetensors file ({first_line(error)}); re-download it") from None


def check_checkpoint(path: Path) -> str:
    """The file is an original-layout Stable Diffusion 1.x checkpoint with all three models: "v1", or
    "inpainting" for an SD1.5 inpainting one (diffusers' model type)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    shapes = checkpoint_shapes(path)
    keys = list(shapes)
    if keys and all(key.startswith(("lora_unet_", "lora_te", "unet.", "text_encoder.")) for key in keys):
        raise SourceError(
            f"{path} is a LoRA, not a checkpoint; pass it with --lora (or --lcm-lora) and a model as SOURCE"
        )
    missing = [name for name, prefix in LDM_PREFIXES.items() if not any(key.startswith(prefix) for key in keys)]
    if len(missing) == len(LDM_PREFIXES):
        raise SourceError(
            f"{path} is not a Stable Diffusion checkpoint in the original layout (no model.diffusion_model., "
            "first_stage_model. or cond_stage_model. weights); pass a .safetensors checkpoint or a diffusers folder"
        )
    kind = infer_diffusers_model_type(shapes)
    if kind not in SD15_KINDS:
        what = OTHER_ARCHITECTURES.get(kind, f"a {kind} checkpoint")
        raise SourceError(f"{path} is {what}; lcm-export takes Stable Diffusion 1.x (SD1.5-architecture) checkpoints")
    if missing:
        raise SourceError(
            f"{path} has no {' or '.join(missing)} weights (a checkpoint needs UNet, VAE and text encoder); "
            "pass a full checkpoint or a diffusers folder"
        )
    return str(kind)


@contextmanager
def sd15_config_folder(inpainting: bool = False) -> Iterator[Path]:
    """The shipped SD1.5 configs as a diffusers folder (a temporary copy, with the tokenizer's vocab);
    ``inpainting``: with SD1.5 inpainting's UNet config."""
    from .tiny import write_clip_vocab_files

    data = resources.files("lcm_export").joinpath("data", SD15_CONFIG)
    with tempfile.TemporaryDirectory(prefix="lcm-export-sd15-config-") as scratch:
        folder = Path(scratch)
        for name in SD15_CONFIG_FILES:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shipped = INPAINTING_UNET_CONFIG if inpainting and name == "unet/config.json" else name
            target.write_bytes(data.joinpath(*shipped.split("/")).read_bytes())
        write_clip_vocab_files(folder / "tokenizer")
        yield folder


def unet_config(config_folder: Path | None, inpainting: bool = False) -> dict[str, Any]:
    """The UNet config a single-file checkpoint is loaded with (the shipped SD1.5 one by default, SD1.5
    inpainting's with ``inpainting``)."""
    if config_folder is None:
        shipped = INPAINTING_UNET_CONFIG if inpainting else "unet/config.json"
        data = resources.files("lcm_export").joinpath("data", SD15_CONFIG, *shipped.split("/"))
        import json

        return json.loads(data.read_text(encoding="utf-8"))
    return read_json_object(Path(config_folder) / "unet" / "config.json", "UNet config")


def load_single_file(path: Path, config_folder: Path | None = None) -> LatentConsistencyModelPipeline:
    """Load the checkpoint with diffusers' from_single_file (float32, offline) and assemble the pipeline
    lcm-export exports; ``config_folder`` is a diffusers folder whose configs describe the checkpoint
    (default: the shipped SD1.5 configs, or SD1.5 inpainting's for an inpainting checkpoint)."""
    inpainting = check_checkpoint(path) == "inpainting"
    if config_folder is None:
        with sd15_config_folder(inpainting) as folder:
            return _load(path, folder, inpainting)
    return _load(path, Path(config_folder), inpainting)


def _load(path: Path, config_folder: Path, inpainting: bool = False) -> LatentConsistencyModelPipeline:
    import torch
    from diffusers import LCMScheduler, StableDiffusionPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        pipeline = StableDiffusionPipeline.from_single_file(
            str(path),
            config=str(config_folder),
            local_files_only=True,
            torch_dtype=torch.float32,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        # As load_pipeline_folder builds it from a folder's scheduler config, so both give the same bundle.
        scheduler = LCMScheduler.from_pretrained(config_folder, subfolder="scheduler")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SingleFileComponentError) as error:
        detail = first_line(getattr(error, "message", None) or error).split(". ")[0]  # diffusers' advice is for code
        what = "Stable Diffusion 1.5 inpainting" if inpainting else "Stable Diffusion 1.5"
        raise SourceError(
            f"cannot load {path} as a {what} checkpoint: {detail}; check it is a full SD1.x checkpoint"
        ) from None
    from .assemble import assemble_pipeline

    unet, vae, text_encoder, tokenizer = pipeline.unet, pipeline.vae, pipeline.text_encoder, pipeline.tokenizer
    del pipeline
    return assemble_pipeline(unet, vae, text_encoder, tokenizer, scheduler)
