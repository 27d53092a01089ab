"""diffusers' Stable Diffusion safety checker, in NumPy and Pillow over one OpenVINO model.

diffusers (``StableDiffusionSafetyChecker.forward``, 0.42) scores each generated image against 17
"concept" and 3 "special care" embeddings and replaces a flagged image by zeros. The bundle splits
that into the part that is a network and the part that is arithmetic on checkpoint tensors:

- ``safety_checker/openvino_model.xml``: the CLIP vision tower + visual projection, clip_input ->
  image_embeds (SafetyCheckerModel);
- ``safety_checker/<tensor>.npy``: the embeddings and thresholds (SafetyConcepts);
- ``feature_extractor/preprocessor_config.json``: transformers' CLIPImageProcessor settings, which
  clip_preprocess applies exactly as the PIL backend (CLIPImageProcessorPil) does.

The checker sees what diffusers gives it: the uint8 image (``to_uint8``), not the float one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import bundle
from .errors import BundleError
from .models import CompiledComponent

# CLIPImageProcessor's class defaults: what transformers uses for a key the config leaves out (or
# sets to null). The mean and std are OpenAI CLIP's.
CLIP_DEFAULTS: dict[str, Any] = {
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 3,  # PIL.Image.BICUBIC
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
PIL_FILTERS = range(6)  # NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING
# torch.nn.functional.normalize's default eps, which diffusers' cosine_distance uses.
NORMALIZE_EPS = np.float32(1e-12)
# diffusers adds this to every concept score of an image once one of its special-care scores is positive.
SPECIAL_CARE_ADJUSTMENT = np.float32(0.01)
CHANNELS = 3


class SafetyCheckerModel(CompiledComponent):
    def __call__(self, clip_input: np.ndarray) -> np.ndarray:
        """Preprocessed images f32 [B, 3, H, W] -> CLIP image embeddings f32 [B, projection_dim]."""
        return self.run({"clip_input": clip_input})


@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class SafetyConcepts:
    """The checker's checkpoint tensors: float32 embeddings [N, D] / [M, D] and thresholds [N] / [M]."""

    concept_embeds: np.ndarray
    special_care_embeds: np.ndarray
    concept_embeds_weights: np.ndarray
    special_care_embeds_weights: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.concept_embeds.shape[1])

    @classmethod
    def load(cls, root: Path) -> SafetyConcepts | None:
        """The bundle's concepts, or None when it has no safety checker (neither its IR nor its files)."""
        root = Path(root)
        paths = {
            name: bundle.resolve_inside(root, bundle.safety_concept_file(name))
            for name in bundle.SAFETY_CONCEPT_TENSORS
        }
        xml = bundle.resolve_inside(root, bundle.component_xml(bundle.SAFETY_CHECKER))
        if not xml.is_file() and not any(path.is_file() for path in paths.values()):
            return None
        arrays = {}
        for name, path in paths.items():
            relative = bundle.safety_concept_file(name)
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                raise BundleError(
                    f"{root} has no readable {relative} (missing or corrupted); re-export the bundle"
                ) from None
            if not isinstance(array, np.ndarray) or array.dtype != np.float32 or not np.isfinite(array).all():
                raise BundleError(f"{root / relative} is not a finite float32 array; re-export the bundle")
            arrays[name] = array
        concepts = cls(**arrays)
        problem = concepts._shape_problem()
        if problem:
            raise BundleError(
                f"{root / bundle.SAFETY_CHECKER} has inconsistent concept files ({problem}); re-export the bundle"
            )
        config_path = bundle.resolve_inside(root, f"{bundle.SAFETY_CHECKER}/{bundle.CONFIG_FILE}")
        if config_path.is_file():
            projection_dim = bundle.read_json(config_path).get("projection_dim")
            if projection_dim is not None and projection_dim != concepts.dim:
                raise BundleError(
                    f"{root / bundle.SAFETY_CHECKER} has concept embeddings of {concepts.dim} values but "
                    f"its config projects to {projection_dim!r}; re-export the bundle"
                )
        return concepts

    def _shape_problem(self) -> str | None:
        concept, special = self.concept_embeds, self.special_care_embeds
        if concept.ndim != 2 or special.ndim != 2 or concept.shape[1] != special.shape[1] or concept.shape[1] == 0:
            return f"embeddings of shapes {list(concept.shape)} and {list(special.shape)}, not [N, D] and [M, D]"
        for weights, embeds, name in (
            (self.concept_embeds_weights, concept, "concept_embeds_weights"),
            (self.special_care_embeds_weights, special, "special_care_embeds_weights"),
        ):
            if weights.shape != (embeds.shape[0],):
                return f"{name} of shape {list(weights.shape)} for {embeds.shape[0]} embeddings"
        return None


def load_preprocessor_config(root: Path) -> dict[str, Any]:
    """The bundle's feature_extractor/preprocessor_config.json, checked and completed
    (normalize_preprocessor_config)."""
    path = bundle.resolve_inside(Path(root), bundle.FEATURE_EXTRACTOR_CONFIG)
    if not path.is_file():
        raise BundleError(f"{root} has a safety checker but no {bundle.FEATURE_EXTRACTOR_CONFIG}; re-export the bundle")
    return normalize_preprocessor_config(bundle.read_json(path), where=str(path))


@dataclass(frozen=True)
class _ClipSteps:
    do_resize: bool
    resize: tuple[str, int, int]  # ("shortest_edge", side, 0) or ("height_width", height, width)
    resample: int
    do_center_crop: bool
    crop: tuple[int, int]
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]


def normalize_preprocessor_config(config: dict[str, Any], where: str = "the preprocessor config") -> dict[str, Any]:
    """The config with every setting clip_preprocess reads made explicit, in transformers' dict forms.

    Keys it does not read are kept. A setting transformers would read differently from us (padding,
    an aspect-capped resize...) is a BundleError naming it, rather than a silently different input.
    """
    steps = _steps(config, where)
    size = (
        {"shortest_edge": steps.resize[1]}
        if steps.resize[0] == "shortest_edge"
        else {"height": steps.resize[1], "width": steps.resize[2]}
    )
    return {
        **config,
        "do_resize": steps.do_resize,
        "size": size,
        "resample": steps.resample,
        "do_center_crop": steps.do_center_crop,
        "crop_size": {"height": steps.crop[0], "width": steps.crop[1]},
        "do_rescale": steps.do_rescale,
        "rescale_factor": steps.rescale_factor,
        "do_normalize": steps.do_normalize,
        "image_mean": list(steps.mean),
        "image_std": list(steps.std),
    }


def clip_input_shape(preprocessor_config: dict[str, Any], batch: int) -> list[int]:
    """The safety checker's input shape for ``batch`` images: [batch, 3, crop height, crop width]."""
    steps = _steps(preprocessor_config, "the preprocessor config")
    return [int(batch), CHANNELS, *_output_size(steps)]


def clip_preprocess(images: np.ndarray | Sequence[np.ndarray], preprocessor_config: dict[str, Any]) -> np.ndarray:
    """uint8 RGB images (NHWC, or a list of HWC of any sizes) -> the checker's clip_input f32 [B, 3, H, W].

    The same numbers as transformers' CLIPImageProcessorPil: PIL resize of the shortest edge (the
    long side truncated by int()), center crop at floor offsets (zero padding if the image is
    smaller), x * rescale_factor in float64 then float32, then (x - mean) / std in float32.
    """
    steps = _steps(preprocessor_config, "the preprocessor config")
    mean = np.asarray(steps.mean, dtype=np.float32)
    std = np.asarray(steps.std, dtype=np.float32)
    out_h, out_w = _output_size(steps)
    batch = [_checked_image(image) for image in images]
    result = np.empty((len(batch), CHANNELS, out_h, out_w), dtype=np.float32)
    for index, image in enumerate(batch):
        if steps.do_resize:
            height, width = _resized_size(steps, *image.shape[:2])
            image = np.asarray(Image.fromarray(image).resize((width, height), resample=steps.resample))
        if steps.do_center_crop:
            image = _center_crop(image, *steps.crop)
        if image.shape[:2] != (out_h, out_w):  # only without a crop: a resize to height/width fixes the size
            raise ValueError(f"preprocessed image is {image.shape[:2]}, not {(out_h, out_w)}")
        pixels = (
            (image.astype(np.float64) * steps.rescale_factor).astype(np.float32)
            if steps.do_rescale
            else image.astype(np.float32)
        )
        if steps.do_normalize:
            pixels = (pixels - mean) / std
        result[index] = pixels.transpose(2, 0, 1)
    return result


def nsfw_flags(image_embeds: np.ndarray, concepts: SafetyConcepts) -> list[bool]:
    """Whether each image is flagged, decided exactly as diffusers' StableDiffusionSafetyChecker.forward.

    Cosine similarity of L2-normalized vectors (eps 1e-12), all in float32 as diffusers is under
    NumPy 2 (NEP 50 keeps np.float32 - Python float in float32; it is explicit here so that NumPy 1
    agrees). Each score is round(cosine - threshold + adjustment, 3) and counts when > 0, so the
    effective threshold is 0.0005 above the checkpoint's. The special-care concepts never flag an
    image: once one scores, the adjustment 0.01 is added to the scores after it and to every concept score.
    """
    embeds = np.asarray(image_embeds, dtype=np.float32)
    if embeds.ndim != 2 or embeds.shape[1] != concepts.dim:
        raise BundleError(
            f"the safety checker returns embeddings of shape {list(embeds.shape)} but its concept files "
            f"have {concepts.dim} values each; re-export the bundle"
        )
    special = _cosine(embeds, concepts.special_care_embeds)
    concept = _cosine(embeds, concepts.concept_embeds)
    special_weights = concepts.special_care_embeds_weights.astype(np.float32)
    concept_weights = concepts.concept_embeds_weights.astype(np.float32)
    flags = []
    for image in range(embeds.shape[0]):
        adjustment = np.float32(0.0)
        # In order: an adjustment set by one special concept applies to the special concepts after it.
        for index in range(special.shape[1]):
            if np.round(special[image, index] - special_weights[index] + adjustment, 3) > 0:
                adjustment = SPECIAL_CARE_ADJUSTMENT
        scores = np.round(concept[image] - concept_weights + adjustment, 3)
        flags.append(bool((scores > 0).any()))
    return flags


def black_out(images: np.ndarray, flags: Sequence[bool]) -> np.ndarray:
    """A copy of ``images`` (batch first, any layout and dtype) with each flagged image all zeros.

    Zeros in the output's own range: diffusers postprocesses a flagged image without denormalizing,
    so it comes out black (0), whether the output is float in [0, 1] or uint8.
    """
    images = np.asarray(images)
    if len(flags) != images.shape[0]:
        raise ValueError(f"{len(flags)} flags for {images.shape[0]} images")
    result: np.ndarray = images.copy()
    result[np.asarray(flags, dtype=bool)] = 0
    return result


def _cosine(embeds: np.ndarray, others: np.ndarray) -> np.ndarray:
    def normalized(vectors: np.ndarray) -> np.ndarray:
        vectors = vectors.astype(np.float32)
        norms = np.sqrt(np.sum(vectors * vectors, axis=1, keepdims=True, dtype=np.float32))
        unit: np.ndarray = vectors / np.maximum(norms, NORMALIZE_EPS)
        return unit

    cosines: np.ndarray = (normalized(embeds) @ normalized(others).T).astype(np.float32)
    return cosines


def _checked_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != CHANNELS or 0 in image.shape:
        raise ValueError(f"the safety checker takes uint8 RGB images [H, W, 3], got {image.dtype} {list(image.shape)}")
    return np.ascontiguousarray(image)


def _resized_size(steps: _ClipSteps, height: int, width: int) -> tuple[int, int]:
    kind, first, second = steps.resize
    if kind == "height_width":
        return first, second
    # transformers' get_resize_output_image_size: the long side is truncated, not rounded.
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(first * long / short)
    return (new_long, first) if width <= height else (first, new_long)


def _center_crop(image: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0 and top + crop_h <= height and left + crop_w <= width:
        return image[top : top + crop_h, left : left + crop_w]
    # Smaller than the crop in some direction: transformers centers it on zeros first.
    padded_h, padded_w = max(crop_h, height), max(crop_w, width)
    pad_top, pad_left = math.ceil((padded_h - height) / 2), math.ceil((padded_w - width) / 2)
    padded = np.zeros((padded_h, padded_w, image.shape[2]), dtype=image.dtype)
    padded[pad_top : pad_top + height, pad_left : pad_left + width] = image
    top, left = top + pad_top, left + pad_left
    return padded[max(0, top) : min(padded_h, top + crop_h), max(0, left) : min(padded_w, left + crop_w)]


def _output_size(steps: _ClipSteps) -> tuple[int, int]:
    if steps.do_center_crop:
        return steps.crop
    if steps.do_resize and steps.resize[0] == "height_width":
        return steps.resize[1], steps.resize[2]
    raise BundleError(
        "the safety checker's preprocessor config neither crops nor resizes to a fixed size, so its "
        "input has no fixed shape; use a CLIP config with do_center_crop and crop_size"
    )


def _is_number(value: Any) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _steps(config: Any, where: str) -> _ClipSteps:
    def bad(key: str, problem: str) -> BundleError:
        return BundleError(f"{where}: {key} {problem}; use a CLIPImageProcessor config such as Stable Diffusion's")

    if not isinstance(config, dict):
        raise BundleError(f"{where} is not a JSON object; re-export the bundle")
    for key in ("do_pad", "use_square_size"):
        if config.get(key):
            raise bad(key, "is set, which this safety checker does not support")

    def value(key: str) -> Any:
        # transformers takes the class default for a key that is absent or null.
        found = config.get(key)
        return CLIP_DEFAULTS[key] if found is None else found

    def flag(key: str) -> bool:
        found = value(key)
        if not isinstance(found, bool):
            raise bad(key, f"is {found!r}, not true or false")
        return found

    def side(found: Any, key: str) -> int:
        if isinstance(found, bool) or not isinstance(found, int) or not 1 <= found <= 1 << 16:
            raise bad(key, f"has a side {found!r}, not a positive integer")
        return found

    size = value("size")
    if isinstance(size, int) and not isinstance(size, bool):  # CLIP: an int is the shortest edge
        size = {"shortest_edge": size}
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        size = {"height": size[0], "width": size[1]}
    if isinstance(size, dict) and set(size) == {"shortest_edge"}:
        resize = ("shortest_edge", side(size["shortest_edge"], "size"), 0)
    elif isinstance(size, dict) and set(size) == {"height", "width"}:
        resize = ("height_width", side(size["height"], "size"), side(size["width"], "size"))
    else:
        raise bad("size", f"is {size!r}; only {{'shortest_edge': n}} or {{'height': h, 'width': w}} are supported")

    crop = value("crop_size")
    if isinstance(crop, int) and not isinstance(crop, bool):  # an int crop is square
        crop = {"height": crop, "width": crop}
    elif isinstance(crop, (list, tuple)) and len(crop) == 2:
        crop = {"height": crop[0], "width": crop[1]}
    if not (isinstance(crop, dict) and set(crop) == {"height", "width"}):
        raise bad("crop_size", f"is {crop!r}, not {{'height': h, 'width': w}}")

    resample = value("resample")
    if isinstance(resample, bool) or resample not in PIL_FILTERS:
        raise bad("resample", f"is {resample!r}, not a PIL filter number (3 is BICUBIC)")
    factor = value("rescale_factor")
    if not _is_number(factor):
        raise bad("rescale_factor", f"is {factor!r}, not a number")

    def per_channel(key: str) -> tuple[float, ...]:
        found = value(key)
        found = [found] * CHANNELS if _is_number(found) else found
        if not (isinstance(found, (list, tuple)) and len(found) == CHANNELS and all(map(_is_number, found))):
            raise bad(key, f"is {found!r}, not {CHANNELS} numbers")
        return tuple(float(item) for item in found)

    std = per_channel("image_std")
    if 0.0 in std:
        raise bad("image_std", "has a zero")
    return _ClipSteps(
        do_resize=flag("do_resize"),
        resize=resize,
        resample=int(resample),
        do_center_crop=flag("do_center_crop"),
        crop=(side(crop["height"], "crop_size"), side(crop["width"], "crop_size")),
        do_rescale=flag("do_rescale"),
        rescale_factor=float(factor),
        do_normalize=flag("do_normalize"),
        mean=per_channel("image_mean"),
        std=std,
    )
