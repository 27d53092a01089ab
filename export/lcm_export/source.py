"""Find, validate and load the pipeline to export: a local diffusers folder, a hub id, a single-file
checkpoint (single_file.py), or tiny-random.

Validation happens on the folder's files before any weights are loaded, so every bad input
gets a one-line SourceError naming the problem and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcm_runtime.errors import first_line

from .hub import HUB_ID, PICKLE_WEIGHTS, SAFE_WEIGHTS, SourceError, download_from_hub, read_json_object, weights_sha256
from .lora import DEFAULT_LCM_LORA

if TYPE_CHECKING:
    from diffusers import LatentConsistencyModelPipeline

    from .safety_checker import LoadedSafetyChecker

DEFAULT_SOURCE = "SimianLuo/LCM_Dreamshaper_v7"
MODEL_COMPONENTS = ("unet", "vae", "text_encoder")
REQUIRED_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class LoadedSource:
    pipeline: LatentConsistencyModelPipeline
    info: dict[str, Any]  # the manifest's "source"
    folder: Path | None = None
    weight_files: list[Path] = field(default_factory=list)
    safety_checker: LoadedSafetyChecker | None = None  # the folder's own safety_checker/, when it has one
    loras: list[dict[str, Any]] = field(default_factory=list)  # the manifest's "loras": what lora.fuse_loras fused


def is_hub_id(source: str) -> bool:
    return bool(HUB_ID.match(source)) and not Path(source).exists()


def resolve_source_folder(
    source: str, revision: str | None, allow_pickle: bool, safety_checker: bool = True
) -> tuple[Path, dict[str, Any]]:
    """The local folder holding the pipeline, and the manifest's description of where it came from."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceError(
                f"{source} is a file but not a .safetensors checkpoint, nor a diffusers pipeline folder; pass "
                "a single-file .safetensors checkpoint (convert a pickle .ckpt) or the folder with model_index.json"
            )
        if revision is not None:
            raise SourceError("--revision only applies to hub ids, not to a local folder; drop --revision")
        return path.resolve(), {"kind": "local", "path": str(path.resolve())}
    if not HUB_ID.match(source):
        raise SourceError(f"{source} is neither an existing folder nor a hub id like {DEFAULT_SOURCE}; check the path")
    folder = download_from_hub(source, revision, allow_pickle, safety_checker)
    return folder, {"kind": "hub", "id": source, "revision": revision or "main", "commit": folder.name}


def check_lcm_distillation(unet_config: dict[str, Any], where: str, lcm_lora: bool) -> None:
    """An LCM-distilled UNet (time_cond_proj_dim) exports as it is; any other needs --lcm-lora, which an
    LCM-distilled one must not get."""
    distilled = unet_config.get("time_cond_proj_dim")
    if not distilled and not lcm_lora:
        raise SourceError(
            f"the UNet in {where} has no time_cond_proj_dim: this is not an LCM-distilled model; add "
            f"--lcm-lora {DEFAULT_LCM_LORA} to fuse LCM-LoRA into it, or export an LCM such as {DEFAULT_SOURCE}"
        )
    if distilled and lcm_lora:
        raise SourceError(
            f"the UNet in {where} is already LCM-distilled (time_cond_proj_dim {distilled}); drop --lcm-lora, "
            "which makes an LCM of a Stable Diffusion model that is not one"
        )


def check_unet_channels(unet_config: dict[str, Any], where: str) -> None:
    """A UNet on the latents alone (in_channels = out_channels), or an inpainting one (SD1.5 inpainting's 9:
    latents, mask, masked picture's latents); anything else (a depth model's 5 channels...) before loading."""
    from lcm_runtime.bundle import describe_value, inpainting_channels

    channels = unet_config.get("in_channels", 4), unet_config.get("out_channels", 4)
    if all(type(value) is int for value in channels) and channels[0] not in (
        channels[1],
        inpainting_channels(channels[1]),
    ):
        raise SourceError(
            f"the UNet in {where} takes {describe_value(channels[0])} input channels and predicts "
            f"{describe_value(channels[1])}: lcm-export takes a UNet on the latents alone or an inpainting one "
            "(latents, mask and masked picture: 9 for SD1.5)"
        )


def validate_pipeline_folder(folder: Path, allow_pickle: bool, lcm_lora: bool = False) -> list[Path]:
    """Check the folder is an exportable diffusers pipeline (an LCM, or with ``lcm_lora`` a Stable Diffusion
    model that is not one); return the weight files to load."""
    if (folder / "manifest.json").is_file() and (folder / "unet" / "openvino_model.xml").is_file():
        raise SourceError(
            f"{folder} is already an exported OpenVINO bundle, not a diffusers pipeline; "
            "pass the original diffusers folder or hub id as SOURCE"
        )
    if not (folder / "model_index.json").is_file():
        raise SourceError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json); "
            "pass a folder written by DiffusionPipeline.save_pretrained, or a hub id"
        )
    read_json_object(folder / "model_index.json", "pipeline index")
    missing = [name for name in REQUIRED_SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise SourceError(
            f"{folder} is missing the {', '.join(missing)} folder(s) of a Stable Diffusion pipeline; "
            "lcm-export needs unet, vae, text_encoder, tokenizer and scheduler"
        )
    unet_config = read_json_object(_config_path(folder, "unet"), "UNet config")
    check_lcm_distillation(unet_config, str(folder), lcm_lora)
    check_unet_channels(unet_config, str(folder))
    return [weight for component in MODEL_COMPONENTS for weight in _component_weights(folder, component, allow_pickle)]


def _config_path(folder: Path, component: str) -> Path:
    path = folder / component / "config.json"
    if not path.is_file():
        raise SourceError(f"{folder / component} has no config.json; the pipeline folder is incomplete, re-download it")
    return path


def _component_weights(folder: Path, component: str, allow_pickle: bool) -> list[Path]:
    _config_path(folder, component)
    directory = folder / component
    safe = sorted(path for pattern in SAFE_WEIGHTS for path in directory.glob(pattern))
    non_variant_safe = [path for path in safe if path.name.count(".") == 1]
    if non_variant_safe:
        return non_variant_safe
    pickled = sorted(path for pattern in PICKLE_WEIGHTS for path in directory.glob(pattern))
    if pickled:
        if allow_pickle:
            return pickled
        raise SourceError(
            f"{directory} has only pickle weights ({pickled[0].name}), which can run arbitrary code when loaded; "
            "convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    if safe:
        raise SourceError(
            f"{directory} has only variant weights ({safe[0].name}); save the pipeline without a variant and retry"
        )
    raise SourceError(f"{directory} has no weights (no .safetensors file); the pipeline folder is incomplete")


def load_pipeline_folder(folder: Path, allow_pickle: bool) -> LatentConsistencyModelPipeline:
    """Load the components one by one (float32) and assemble an LCM pipeline.

    Loading by component rather than by model_index lets a Stable Diffusion folder whose
    UNet is LCM-distilled (e.g. with a DDIM scheduler config) export with the LCM scheduler.
    The pipeline object never holds the safety checker: load_source loads it apart (safety_checker.py).
    """
    import torch
    from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    use_safetensors = None if allow_pickle else True
    try:
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", torch_dtype=torch.float32, use_safetensors=use_safetensors
        )
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", torch_dtype=torch.float32, use_safetensors=use_safetensors
        )
        text_encoder = CLIPTextModel.from_pretrained(
            folder / "text_encoder", dtype=torch.float32, use_safetensors=use_safetensors
        )
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        scheduler = LCMScheduler.from_pretrained(folder, subfolder="scheduler")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        detail = first_line(error)
        raise SourceError(
            f"cannot load the pipeline in {folder}: {detail}; check the folder is a complete diffusers pipeline"
        ) from None
    from .assemble import assemble_pipeline

    return assemble_pipeline(unet, vae, text_encoder, tokenizer, scheduler)


def load_single_file_source(
    path: Path, revision: str | None, lcm_lora: bool, config_folder: Path | None = None
) -> LoadedSource:
    """A single-file checkpoint; ``config_folder`` holds the diffusers configs it is loaded with
    (default: the SD1.5 ones lcm-export ships, with SD1.5 inpainting's UNet config for an inpainting
    checkpoint). It has no safety checker of its own."""
    from lcm_runtime.bundle import sha256_file

    from .single_file import SD15_KINDS, check_checkpoint, load_single_file, unet_config

    if revision is not None:
        raise SourceError("--revision only applies to hub ids, not to a local file; drop --revision")
    path = path.resolve()
    kind = check_checkpoint(path)  # an SD1.5 checkpoint, or an SD1.5 inpainting one (9-channel UNet)
    check_lcm_distillation(unet_config(config_folder, kind == "inpainting"), str(path), lcm_lora)
    info = {
        "kind": "single-file",
        "path": str(path),
        "weights_sha256": sha256_file(path),
        "config": SD15_KINDS[kind] if config_folder is None else str(Path(config_folder).resolve()),
    }
    return LoadedSource(pipeline=load_single_file(path, config_folder), info=info, folder=None, weight_files=[path])


def load_source(
    source: str,
    revision: str | None = None,
    allow_pickle: bool = False,
    safety_checker: bool = True,
    lcm_lora: bool = False,
    single_file_config: Path | None = None,
) -> LoadedSource:
    """The pipeline, plus its safety_checker/ and feature_extractor/ when it has them and ``safety_checker``.

    ``lcm_lora``: an LCM-LoRA will be fused into it, so it must not be LCM-distilled (and need not be).
    A single-file .safetensors checkpoint loads with the configs in ``single_file_config`` (a diffusers
    folder), by default the shipped SD1.5 ones."""
    from .single_file import is_single_file

    path = Path(source).expanduser()
    if is_single_file(path):
        return load_single_file_source(path, revision, lcm_lora, single_file_config)
    folder, info = resolve_source_folder(source, revision, allow_pickle, safety_checker)
    weight_files = validate_pipeline_folder(folder, allow_pickle, lcm_lora)
    checker_files = None
    if safety_checker:
        from .safety_checker import find_pipeline_safety_checker

        checker_files = find_pipeline_safety_checker(folder, allow_pickle, local=info["kind"] == "local")
    if info["kind"] == "local":
        info["weights_sha256"] = weights_sha256(folder, weight_files)
    pipeline = load_pipeline_folder(folder, allow_pickle)
    loaded = LoadedSource(pipeline=pipeline, info=info, folder=folder, weight_files=weight_files)
    if checker_files is not None:
        from .safety_checker import load_pipeline_safety_checker

        loaded.safety_checker = load_pipeline_safety_checker(checker_files, allow_pickle)
    return loaded
