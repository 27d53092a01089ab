"""diffusers' StableDiffusionSafetyChecker, exported for lcm_runtime.safety_checker.

The checker is a CLIP vision tower whose projected image embedding is compared with 17 + 3 concept
embeddings against thresholds, all checkpoint tensors. The bundle gets the tower + projection as an
IR (clip_input -> image_embeds, dynamic batch, the feature extractor's crop size), the four tensors
as float32 .npy files, and the CLIPImageProcessor config that makes clip_input; the runtime does the
preprocessing and the scoring in NumPy.

Where a checker comes from: the SOURCE pipeline's safety_checker/ (+ feature_extractor/) folders
when it has them, unless ``lcm-export --no-safety-checker``; or ``--safety-checker SOURCE``, a hub id
such as CompVis/stable-diffusion-safety-checker or a local folder with config.json and weights
(and a preprocessor_config.json, else Stable Diffusion's standard one shipped in data/).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lcm_runtime.bundle import (
    CONFIG_FILE,
    FEATURE_EXTRACTOR_CONFIG,
    OPTIONAL_COMPONENT_IO,
    SAFETY_CHECKER,
    SAFETY_CONCEPT_TENSORS,
    component_xml,
    dumps_json,
    safety_concept_file,
)
from lcm_runtime.errors import BundleError, first_line

from .convert import quiet_tracing
from .hub import HUB_ID, PICKLE_WEIGHTS, SAFE_WEIGHTS, SourceError, download_from_hub, read_json_object, weights_sha256

if TYPE_CHECKING:
    import openvino as ov
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

DEFAULT_SAFETY_CHECKER = "CompVis/stable-diffusion-safety-checker"
CHECKER_CLASS = "StableDiffusionSafetyChecker"
PREPROCESSOR_FILE = "preprocessor_config.json"
SD_PREPROCESSOR_CONFIG = "sd_preprocessor_config.json"  # in lcm_export/data: Stable Diffusion's feature_extractor
PIPELINE_FEATURE_EXTRACTOR = "feature_extractor"
SHIPPED_PREPROCESSOR = "lcm-export's Stable Diffusion default"  # recorded when the source has no preprocessor config


@dataclass
class LoadedSafetyChecker:
    checker: StableDiffusionSafetyChecker
    preprocessor_config: dict[str, Any]  # normalized (lcm_runtime.safety_checker.normalize_preprocessor_config)
    info: dict[str, Any]  # recorded in the manifest's component entry

    @property
    def crop_size(self) -> tuple[int, int]:
        crop = self.preprocessor_config["crop_size"]
        return int(crop["height"]), int(crop["width"])


@dataclass
class _CheckerFiles:
    """A checker found on disk and checked, before any weights are loaded."""

    folder: Path
    weights: list[Path]
    preprocessor_config: dict[str, Any]
    info: dict[str, Any]


class SafetyCheckerIO(torch.nn.Module):
    """What the checker computes before its NumPy scoring: the projected CLIP pooled output."""

    def __init__(self, checker: torch.nn.Module) -> None:
        super().__init__()
        self.vision_model = checker.vision_model
        self.visual_projection = checker.visual_projection

    def forward(self, clip_input: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(clip_input, return_dict=True).pooler_output)


def load_safety_checker(source: str, allow_pickle: bool = False) -> LoadedSafetyChecker:
    """``--safety-checker SOURCE``: a hub id, or a folder with a StableDiffusionSafetyChecker's config.json
    and weights (or a pipeline folder: its safety_checker/ and feature_extractor/)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SourceError(
                f"--safety-checker {source} is a file; pass the folder holding the checker's config.json and weights"
            )
        folder, info = path.resolve(), {"kind": "local", "path": str(path.resolve())}
    elif HUB_ID.match(source):
        folder = download_from_hub(source, None, allow_pickle)
        info = {"kind": "hub", "id": source, "commit": folder.name}
    else:
        raise SourceError(
            f"--safety-checker {source} is neither an existing folder nor a hub id like "
            f"{DEFAULT_SAFETY_CHECKER}; check the path"
        )
    hint = f"pass a {CHECKER_CLASS} folder such as {DEFAULT_SAFETY_CHECKER}"
    if not (folder / CONFIG_FILE).is_file() and (folder / SAFETY_CHECKER / CONFIG_FILE).is_file():
        # A whole pipeline folder: its checker, with its feature extractor.
        preprocessors = [
            folder / PIPELINE_FEATURE_EXTRACTOR / PREPROCESSOR_FILE,
            folder / SAFETY_CHECKER / PREPROCESSOR_FILE,
        ]
        files = _checker_files(
            folder / SAFETY_CHECKER,
            preprocessors,
            allow_pickle,
            info,
            hint,
            hash_weights_from=folder if info["kind"] == "local" else None,
        )
    else:
        files = _checker_files(folder, [folder / PREPROCESSOR_FILE], allow_pickle, info, hint)
    return _load(files, allow_pickle)


def find_pipeline_safety_checker(folder: Path, allow_pickle: bool, local: bool) -> _CheckerFiles | None:
    """The pipeline folder's safety_checker/ (with feature_extractor/), checked; None when it has none."""
    checker = Path(folder) / SAFETY_CHECKER
    if not checker.is_dir():
        return None
    preprocessors = [Path(folder) / PIPELINE_FEATURE_EXTRACTOR / PREPROCESSOR_FILE, checker / PREPROCESSOR_FILE]
    return _checker_files(
        checker,
        preprocessors,
        allow_pickle,
        {"kind": "source", "subfolder": SAFETY_CHECKER},
        hint="pass --no-safety-checker to export without it",
        hash_weights_from=folder if local else None,
    )


def load_pipeline_safety_checker(files: _CheckerFiles, allow_pickle: bool) -> LoadedSafetyChecker:
    """Load what find_pipeline_safety_checker found (after the rest of the pipeline's files were checked)."""
    return _load(files, allow_pickle)


def _checker_files(
    folder: Path,
    preprocessor_candidates: list[Path],
    allow_pickle: bool,
    info: dict[str, Any],
    hint: str,
    hash_weights_from: Path | None = None,
) -> _CheckerFiles:
    from lcm_runtime.safety_checker import normalize_preprocessor_config

    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise SourceError(f"{folder} has no {CONFIG_FILE}: not a safety checker folder; {hint}")
    config = read_json_object(config_path, "safety checker config")
    architectures = config.get("architectures") or []
    if CHECKER_CLASS not in architectures or not isinstance(config.get("vision_config"), dict):
        found = (
            architectures[0]
            if architectures and isinstance(architectures, list)
            else config.get("model_type", "unknown model")
        )
        raise SourceError(
            f"{folder} holds a {found}, not a {CHECKER_CLASS} (CLIP vision model + concept embeddings); {hint}"
        )
    weights = _weight_files(folder, allow_pickle, hint)
    for candidate in preprocessor_candidates:
        if candidate.is_file():
            preprocessor, where = read_json_object(candidate, "feature extractor config"), str(candidate)
            info = {**info, "preprocessor_config": "source"}
            break
    else:
        preprocessor, where = shipped_preprocessor_config(), SHIPPED_PREPROCESSOR
        info = {**info, "preprocessor_config": SHIPPED_PREPROCESSOR}
    try:
        preprocessor = normalize_preprocessor_config(preprocessor, where=where)
    except BundleError as error:
        raise SourceError(str(error)) from None
    crop = preprocessor["crop_size"]["height"], preprocessor["crop_size"]["width"]
    vision_side = config["vision_config"].get("image_size", 224)
    if not preprocessor["do_center_crop"] or crop != (vision_side, vision_side):
        raise SourceError(
            f"the feature extractor ({where}) makes {crop[0]}x{crop[1]} images but the safety checker in "
            f"{folder} takes {vision_side}x{vision_side}; give it a preprocessor_config.json that "
            f"crops to {vision_side}x{vision_side}"
        )
    if hash_weights_from is not None or info["kind"] == "local":
        info["weights_sha256"] = weights_sha256(hash_weights_from or folder, weights)
    return _CheckerFiles(folder=folder, weights=weights, preprocessor_config=preprocessor, info=info)


def _weight_files(folder: Path, allow_pickle: bool, hint: str) -> list[Path]:
    safe = sorted(path for pattern in SAFE_WEIGHTS for path in folder.glob(pattern) if path.name.count(".") == 1)
    if safe:
        return safe
    pickled = sorted(path for pattern in PICKLE_WEIGHTS for path in folder.glob(pattern))
    if pickled and allow_pickle:
        return pickled
    if pickled:
        raise SourceError(
            f"{folder} has only pickle weights ({pickled[0].name}), which can run arbitrary code when "
            f"loaded; convert them to safetensors, or pass --allow-pickle if you trust the source, "
            f"or {hint}"
        )
    # A hub download skips pickle files unless --allow-pickle, so "none" may mean "pickle only" there.
    raise SourceError(
        f"{folder} has no safety checker weights in safetensors (model.safetensors); re-download it, "
        f"pass --allow-pickle if it only has trusted pickle weights, or {hint}"
    )


def _load(files: _CheckerFiles, allow_pickle: bool) -> LoadedSafetyChecker:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    try:
        checker, loading = StableDiffusionSafetyChecker.from_pretrained(
            files.folder, dtype=torch.float32, use_safetensors=None if allow_pickle else True, output_loading_info=True
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        detail = first_line(error)
        raise SourceError(f"cannot load the safety checker in {files.folder}: {detail}") from None
    missing = sorted(loading.get("missing_keys") or [])
    if missing:
        # transformers would fill them in (the thresholds with ones): a checker that checks nothing.
        raise SourceError(
            f"the safety checker weights in {files.folder} lack {missing[0]}"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; re-download them"
        )
    return LoadedSafetyChecker(checker=checker.eval(), preprocessor_config=files.preprocessor_config, info=files.info)


def shipped_preprocessor_config() -> dict[str, Any]:
    """Stable Diffusion's feature_extractor/preprocessor_config.json (CLIP at 224x224), shipped with lcm-export."""
    text = resources.files("lcm_export").joinpath("data", SD_PREPROCESSOR_CONFIG).read_text(encoding="utf-8")
    return json.loads(text)


def parameter_count(loaded: LoadedSafetyChecker) -> int:
    return sum(parameter.numel() for parameter in loaded.checker.parameters())


def convert_safety_checker(loaded: LoadedSafetyChecker) -> ov.Model:
    import openvino as ov

    channels = int(loaded.checker.config.vision_config.num_channels)
    height, width = loaded.crop_size
    example = (torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(6)),)
    with quiet_tracing():
        model = ov.convert_model(
            SafetyCheckerIO(loaded.checker).float().eval(),
            example_input=example,
            input=[(ov.PartialShape([-1, channels, height, width]), ov.Type.f32)],
        )
    (input_name,), (output_name,) = OPTIONAL_COMPONENT_IO[SAFETY_CHECKER]
    model.inputs[0].get_tensor().set_names({input_name})
    model.outputs[0].get_tensor().set_names({output_name})
    model.set_friendly_name(SAFETY_CHECKER)
    return model


def checker_config(loaded: LoadedSafetyChecker) -> dict[str, Any]:
    """The checker's transformers config as the bundle ships it (like the text encoder's: float32, named class)."""
    from .writer import clean_config

    config = clean_config(loaded.checker.config.to_json_string(use_diff=False))
    config["architectures"] = [CHECKER_CLASS]
    config["dtype"] = "float32"
    return config


def write_safety_checker(loaded: LoadedSafetyChecker, staging: Path, precision: str, weights: str) -> None:
    """Everything of the checker in the bundle: config, concept tensors, preprocessor config and IR."""
    from .compress import compress_weights, save_ir
    from .writer import write_text

    write_text(staging / SAFETY_CHECKER / CONFIG_FILE, dumps_json(checker_config(loaded)))
    write_text(staging / FEATURE_EXTRACTOR_CONFIG, dumps_json(loaded.preprocessor_config))
    for name in SAFETY_CONCEPT_TENSORS:
        tensor = getattr(loaded.checker, name).detach().cpu().float().numpy()
        np.save(staging / safety_concept_file(name), np.ascontiguousarray(tensor, dtype=np.float32), allow_pickle=False)
    model = compress_weights(convert_safety_checker(loaded), precision)
    save_ir(model, staging / component_xml(SAFETY_CHECKER), weights)


def build_tiny_random_safety_checker(
    seed: int = 0, image_size: int = 224, projection_dim: int = 16
) -> StableDiffusionSafetyChecker:
    """A small random-weight StableDiffusionSafetyChecker (CLIP ViT, narrow and shallow) for tests.

    Its concept embeddings are random and every threshold is 1.0, so nothing is flagged until a test
    sets thresholds. The weights are initialized 5x wider than CLIP's default: at the default scale
    every image maps to nearly the same embedding (cosines above 0.97), unlike a trained checker.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "vocab_size": 100,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": image_size,
            "patch_size": 32,
            "initializer_factor": 5.0,
        },
        projection_dim=projection_dim,
        initializer_factor=5.0,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn(checker.concept_embeds.shape, generator=generator))
        checker.special_care_embeds.copy_(torch.randn(checker.special_care_embeds.shape, generator=generator))
    return checker


def save_safety_checker_folder(
    checker: StableDiffusionSafetyChecker, folder: Path | str, preprocessor_config: dict[str, Any] | None = None
) -> Path:
    """A --safety-checker SOURCE folder: config.json, model.safetensors and, if given, preprocessor_config.json."""
    folder = Path(folder)
    checker.save_pretrained(folder)
    if preprocessor_config is not None:
        (folder / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor_config, indent=2), encoding="utf-8")
    return folder
