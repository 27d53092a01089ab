"""The bundle format: the one contract between ``lcm_export`` (writer) and ``lcm_runtime`` (reader).

A bundle is a folder laid out like optimum-intel's OpenVINO diffusion export, so that
openvino.genai, optimum-intel and OpenVINO Model Server load it too, plus what our
runtime needs to be exact and self-checking::

    manifest.json                        this module's Manifest (format version, checksums, facts)
    model_index.json                     diffusers' pipeline index
    scheduler/scheduler_config.json      diffusers' LCMScheduler config
    scheduler/<table>.npy                float32 tables computed with torch (see SCHEDULER_TABLES)
    tokenizer/tokenizer.json             `tokenizers` file with truncation+padding to max length
    tokenizer/openvino_tokenizer.xml     (and .bin) for openvino.genai
    text_encoder/openvino_model.xml      input_ids -> last_hidden_state
    unet/openvino_model.xml              sample, timestep, encoder_hidden_states, timestep_cond -> out_sample
                                         (a "cfg" bundle's UNet has no timestep_cond: see GUIDANCE_MODES;
                                         an inpainting UNet's sample has 9 channels: see ModelFacts)
    vae_decoder/openvino_model.xml       latent_sample -> sample
    vae_encoder/openvino_model.xml       sample -> latent_parameters
    vae_decoder_tiny/openvino_model.xml  (optional, TAESD) latent_sample -> sample
    unet_shallow/openvino_model.xml      (optional, DeepCache) the UNet's shallow path: its inputs plus
                                         deep_feature -> out_sample; the UNet IR of such a bundle names
                                         the tensor deep_feature (see UNET_SHALLOW)
    safety_checker/openvino_model.xml    (optional) clip_input -> image_embeds: diffusers'
                                         StableDiffusionSafetyChecker's vision model + projection
    safety_checker/<tensor>.npy          its float32 concept embeddings and thresholds (SAFETY_CONCEPT_TENSORS)
    feature_extractor/preprocessor_config.json  (with the checker) transformers' CLIPImageProcessor config
    <component>/config.json              the diffusers/transformers config of each model

model_index.json keeps safety_checker and feature_extractor as [null, null] even when the bundle
has a checker: openvino.genai and optimum-intel would otherwise look for a torch model there.

Everything here is plain Python + json + hashlib: importing it is free of openvino and torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import reprlib
import stat
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import BundleError

FORMAT_NAME = "lcm-openvino-bundle"
# 2: the model facts record the guidance mode (GUIDANCE_MODES); a version 1 manifest has none and reads as
# "embedded", the only mode version 1 knew.
FORMAT_VERSION = 2
GUIDANCE_MODE_VERSION = 2  # the first version that may name a guidance mode other than "embedded"
MANIFEST_FILE = "manifest.json"
MODEL_INDEX_FILE = "model_index.json"
MODEL_XML = "openvino_model.xml"
MODEL_BIN = "openvino_model.bin"
CONFIG_FILE = "config.json"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
TOKENIZER_JSON = "tokenizer/tokenizer.json"
OPENVINO_TOKENIZER_XML = "tokenizer/openvino_tokenizer.xml"

# Component folder -> (input names, output names). Export writes these names; runtime reads them.
COMPONENT_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "text_encoder": (("input_ids",), ("last_hidden_state",)),
    "unet": (("sample", "timestep", "encoder_hidden_states", "timestep_cond"), ("out_sample",)),
    "vae_decoder": (("latent_sample",), ("sample",)),
    "vae_encoder": (("sample",), ("latent_parameters",)),
}
REQUIRED_COMPONENTS = ("text_encoder", "unet", "vae_decoder")
# How the UNet is guided. "embedded": an LCM-distilled UNet (time_cond_proj_dim) takes the guidance
# scale as its timestep_cond input, one pass per step. "cfg": a UNet without time_cond_proj_dim (an
# SD1.5 checkpoint with LCM-LoRA fused), guided by classifier-free guidance: the UNet IR has no
# timestep_cond input, and a guidance scale above 1 runs it on [unconditional, conditional].
EMBEDDED, CFG = "embedded", "cfg"
GUIDANCE_MODES = (EMBEDDED, CFG)
TIMESTEP_COND = "timestep_cond"  # the UNet input only an embedded-guidance bundle has
# Optional components: present only when the export asked for them.
TINY_VAE_DECODER = "vae_decoder_tiny"  # TAESD (diffusers' AutoencoderTiny) decoder, lcm-export --tiny-vae
SAFETY_CHECKER = "safety_checker"  # diffusers' StableDiffusionSafetyChecker, run by lcm_runtime.safety_checker
# DeepCache (lcm-export --deep-cache): the UNet IR names a tensor DEEP_FEATURE (not an output: openvino.genai
# needs a UNet with one output; the runtime adds it as one for DeepCache), the hidden state entering the last
# up block's last layer (DeepCache's branch 0: computed by everything but the first
# and last layers at full resolution). unet_shallow recomputes only those from a cached deep_feature:
# conv_in, the time embedding, the last up block's last resnet and transformer, conv_out.
UNET_SHALLOW = "unet_shallow"
DEEP_FEATURE = "deep_feature"
OPTIONAL_COMPONENT_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    TINY_VAE_DECODER: (("latent_sample",), ("sample",)),
    SAFETY_CHECKER: (("clip_input",), ("image_embeds",)),
    UNET_SHALLOW: (("sample", "timestep", "encoder_hidden_states", "timestep_cond", DEEP_FEATURE), ("out_sample",)),
}
UNET_COMPONENTS = ("unet", UNET_SHALLOW)  # a cfg bundle's have no timestep_cond input
# The safety checker's checkpoint tensors, one float32 .npy each (safety_concept_file): concept
# embeddings [N, D] and [M, D] (17 and 3 in Stable Diffusion's checker) and their thresholds [N], [M].
SAFETY_CONCEPT_TENSORS = (
    "concept_embeds",
    "special_care_embeds",
    "concept_embeds_weights",
    "special_care_embeds_weights",
)
FEATURE_EXTRACTOR_CONFIG = "feature_extractor/preprocessor_config.json"

# Scheduler tables, one float32 .npy of shape [num_train_timesteps] each, computed with torch
# exactly as diffusers' LCMScheduler does, so that a NumPy step() is bit-exact (docs/numerics.md).
SCHEDULER_TABLES = (
    "alphas_cumprod",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "c_skip",
    "c_out",
)

# Precision labels a component may carry in the manifest.
INT8_PTQ = "int8-ptq"  # the UNet after NNCF post-training quantization (lcm-export --quantize-unet int8)
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4", INT8_PTQ)

# The guidance-scale embedding conventions we know: the value embedded as w, given guidance_scale.
# diffusers, optimum-intel and openvino.genai embed guidance_scale - 1; the original LCM code embeds
# guidance_scale itself. The offset is added to guidance_scale.
GUIDANCE_CONVENTIONS = {"w = guidance_scale - 1": -1.0, "w = guidance_scale": 0.0}
DIFFUSERS_GUIDANCE_CONVENTION = "w = guidance_scale - 1"


def component_io(component: str, guidance_mode: str = EMBEDDED) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A component's input and output names in a bundle of this guidance mode."""
    inputs, outputs = COMPONENT_IO[component] if component in COMPONENT_IO else OPTIONAL_COMPONENT_IO[component]
    if component in UNET_COMPONENTS and guidance_mode == CFG:
        inputs = tuple(name for name in inputs if name != TIMESTEP_COND)
    return inputs, outputs


def component_xml(component: str) -> str:
    return f"{component}/{MODEL_XML}"


def scheduler_table_file(name: str) -> str:
    return f"scheduler/{name}.npy"


def safety_concept_file(name: str) -> str:
    return f"{SAFETY_CHECKER}/{name}.npy"


def inpainting_channels(latent_channels: int) -> int:
    """An inpainting UNet's input channels: the latents, the mask (1) and the masked picture's latents."""
    return 2 * latent_channels + 1


@dataclass(frozen=True)
class ModelFacts:
    """What the runtime must know about the model, derived from its configs."""

    latent_channels: int
    vae_scale_factor: int
    vae_scaling_factor: float
    sample_size: int  # latent side; the native image side is sample_size * vae_scale_factor
    text_max_length: int
    time_cond_proj_dim: int | None  # the guidance embedding's size; None in "cfg" mode (no timestep_cond)
    guidance_embedding: str = DIFFUSERS_GUIDANCE_CONVENTION
    default_steps: int = 4
    default_guidance_scale: float = 8.0  # 1.0 in "cfg" mode: one UNet pass, LCM-LoRA's recommendation
    guidance_mode: str = EMBEDDED  # GUIDANCE_MODES
    # The UNet IR's own constraint on the latent side. lcm-export traces diffusers' general
    # up-sampling path, so any side works (1); an IR traced at a multiple of the UNet's up-sampling
    # factor (optimum-cli's) only accepts multiples of it.
    latent_size_multiple: int = 1
    # An inpainting UNet's input channels (SD1.5 inpainting's 9): the latents, the mask at latent size and
    # the masked picture's latents, 2 x latent_channels + 1. None for a UNet on the latents alone, and then
    # absent from the manifest (to_dict), so such a manifest is what it was before the field existed.
    unet_in_channels: int | None = None

    @property
    def default_image_size(self) -> int:
        return self.sample_size * self.vae_scale_factor

    @property
    def unet_channels(self) -> int:
        """The channels of the UNet's ``sample`` input."""
        return self.latent_channels if self.unet_in_channels is None else self.unet_in_channels

    @property
    def inpainting_unet(self) -> bool:
        """Whether the UNet takes the mask and the masked picture's latents besides the latents."""
        return self.unet_in_channels is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.unet_in_channels is None:
            del data["unet_in_channels"]
        return data

    @property
    def guidance_offset(self) -> float:
        return GUIDANCE_CONVENTIONS[self.guidance_embedding]

    @classmethod
    def from_configs(
        cls,
        unet_config: dict[str, Any],
        vae_config: dict[str, Any],
        text_max_length: int,
        guidance_mode: str = EMBEDDED,
        **defaults: Any,
    ) -> ModelFacts:
        """Derive the facts from diffusers' UNet and VAE configs (the ones the bundle ships). An "embedded"
        UNet must have a time_cond_proj_dim (LCM-distilled); a "cfg" one must not."""
        _check_guidance_mode(guidance_mode, where="the export")
        time_cond_proj_dim = unet_config.get("time_cond_proj_dim")
        if guidance_mode == EMBEDDED and not time_cond_proj_dim:
            raise BundleError(
                "the UNet has no time_cond_proj_dim: this is not an LCM-distilled model; export an SD1.5 "
                "checkpoint with `lcm-export --lcm-lora latent-consistency/lcm-lora-sdv1-5`, or use an LCM "
                "such as SimianLuo/LCM_Dreamshaper_v7"
            )
        if guidance_mode == CFG and time_cond_proj_dim is not None:
            raise BundleError(
                f"the UNet has time_cond_proj_dim {describe_value(time_cond_proj_dim)}: an LCM-distilled model "
                "embeds its guidance and has no classifier-free guidance; export it without cfg mode"
            )
        if guidance_mode == CFG:
            defaults = {"default_guidance_scale": 1.0, **defaults}
        sample_size = unet_config.get("sample_size", 64)
        if isinstance(sample_size, (list, tuple)) and sample_size:
            sample_size = sample_size[0]
        try:
            in_channels = int(unet_config.get("in_channels", vae_config.get("latent_channels", 4)))
            # The latents are what the UNet predicts (and the VAE decodes); an inpainting UNet takes more.
            latent_channels = int(unet_config.get("out_channels", vae_config.get("latent_channels", in_channels)))
            vae_channels = int(vae_config.get("latent_channels", latent_channels))
            values = dict(
                latent_channels=latent_channels,
                vae_scale_factor=2 ** (len(vae_config.get("block_out_channels", [0, 0, 0, 0])) - 1),
                vae_scaling_factor=float(vae_config.get("scaling_factor", 0.18215)),
                sample_size=int(sample_size),
                text_max_length=int(text_max_length),
                time_cond_proj_dim=None if time_cond_proj_dim is None else int(time_cond_proj_dim),
                guidance_mode=guidance_mode,
            )
        except (TypeError, ValueError, OverflowError) as error:
            raise BundleError(
                f"the model's config.json files (UNet, VAE, text encoder) have a malformed value "
                f"({error}); re-export the model"
            ) from None
        if vae_channels != latent_channels:
            raise BundleError(
                f"the UNet predicts {describe_value(latent_channels)}-channel latents (out_channels) but the VAE "
                f"takes {describe_value(vae_channels)} (latent_channels): the configs are not of one model"
            )
        if in_channels not in (latent_channels, inpainting_channels(latent_channels)):
            raise BundleError(
                f"the UNet's config has in_channels {describe_value(in_channels)} and out_channels "
                f"{describe_value(latent_channels)}: lcm-openvino "
                "runs a UNet on the latents alone (in_channels = out_channels) or an inpainting UNet on the "
                "latents, the mask and the masked picture's latents (in_channels = 2 x out_channels + 1, 9 for SD1.5)"
            )
        if in_channels != latent_channels:
            values["unet_in_channels"] = in_channels
        facts = cls(**values, **defaults)
        for item in fields(cls):
            _check_fact(item.name, str(item.type), getattr(facts, item.name), where="a config.json of the model")
        return facts

    @classmethod
    def from_dict(cls, data: dict[str, Any], format_version: int = FORMAT_VERSION) -> ModelFacts:
        """The manifest's facts; a manifest of ``format_version`` 1 has no guidance mode: "embedded"."""
        try:
            facts = cls(**data)
        except TypeError as error:
            raise BundleError(f"manifest.json has malformed model facts ({error}); re-export the bundle") from None
        for item in fields(cls):
            _check_fact(item.name, str(item.type), getattr(facts, item.name))
        if facts.guidance_embedding not in GUIDANCE_CONVENTIONS:
            raise BundleError(
                f"manifest.json names an unknown guidance embedding {facts.guidance_embedding!r}; "
                "upgrade lcm-openvino or re-export the bundle"
            )
        _check_guidance_mode(facts.guidance_mode)
        if facts.guidance_mode != EMBEDDED and format_version < GUIDANCE_MODE_VERSION:
            raise BundleError(
                f"{MANIFEST_FILE} says format version {format_version} but names guidance mode "
                f"{facts.guidance_mode!r}, which only version {GUIDANCE_MODE_VERSION} and later have; "
                "re-export the bundle"
            )
        if facts.unet_in_channels is not None and facts.unet_in_channels != inpainting_channels(facts.latent_channels):
            raise BundleError(
                f"{MANIFEST_FILE} has unet_in_channels {facts.unet_in_channels} with latent_channels "
                f"{facts.latent_channels}: an inpainting UNet takes 2 x {facts.latent_channels} + 1 (the latents, "
                "the mask, the masked picture's latents); re-export the bundle"
            )
        if (facts.time_cond_proj_dim is None) != (facts.guidance_mode == CFG):
            raise BundleError(
                f"{MANIFEST_FILE} has guidance mode {facts.guidance_mode!r} with time_cond_proj_dim "
                f"{facts.time_cond_proj_dim}: an embedded-guidance UNet has one, a cfg UNet none; re-export the bundle"
            )
        return facts


@dataclass
class Manifest:
    """manifest.json. ``files`` maps each bundle file (posix path) to {"size", "sha256"}."""

    source: dict[str, Any]
    versions: dict[str, str]
    components: dict[str, dict[str, Any]]
    model: ModelFacts
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    # The LoRAs lcm-export fused into the UNet and text encoder before conversion (--lcm-lora, --lora), in
    # order: {"name": hub id or file name, "sha256": of the file, "scale", "role": "lcm" or "style"}.
    loras: list[dict[str, Any]] = field(default_factory=list)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise BundleError(f"{MANIFEST_FILE} is not an lcm-openvino manifest; re-export the bundle with lcm-export")
        try:
            # JSON may escape lone surrogates, which no file name, digest or PNG text can hold.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BundleError(
                f"{MANIFEST_FILE} has text that is not valid unicode; re-export or re-download the bundle"
            ) from None
        except (TypeError, ValueError, RecursionError):
            raise BundleError(f"{MANIFEST_FILE} does not hold JSON data; re-export or re-download the bundle") from None
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 1:
            raise BundleError(
                f"bundle format version {version!r} is not supported by this lcm-openvino "
                f"(it reads version {FORMAT_VERSION}); upgrade lcm-openvino or re-export the bundle"
            )
        try:
            source, versions = _object(data["source"], "source"), _object(data["versions"], "versions")
            components = _components(data["components"])
            model = ModelFacts.from_dict(_object(data["model"], "model"), version)
            files = _file_entries(data["files"])
        except KeyError as error:
            raise BundleError(f"{MANIFEST_FILE} is incomplete (missing {error}); re-export the bundle") from None
        calibration = data.get("calibration")
        if calibration is not None:
            _object(calibration, "calibration")
        loras = _loras(data.get("loras", []))  # a manifest older than LoRA fusion has none
        return cls(
            source=dict(source),
            versions=dict(versions),
            components=components,
            model=model,
            files=files,
            calibration=calibration,
            loras=loras,
            format=data["format"],
            format_version=version,
        )

    def digest(self) -> str:
        """A short hash identifying this exact bundle (its manifest), for image metadata."""
        return hashlib.sha256(dumps_json(self.to_dict()).encode()).hexdigest()[:12]


# Model facts size tensors and loops: an integer beyond this is garbage, not a model.
MAX_FACT = 2**31 - 1


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 300  # file names in full; nested junk still cut short


def describe_value(value: Any) -> str:
    """A short one-line rendering of a bad value for an error message (repr escapes newlines)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a huge integer"
    try:
        return _REPR.repr(value)
    except ValueError:  # an int beyond Python's int -> str digit limit, nested somewhere
        return f"a {type(value).__name__}"


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _check_guidance_mode(mode: Any, where: str = MANIFEST_FILE) -> None:
    if not isinstance(mode, str) or mode not in GUIDANCE_MODES:
        raise BundleError(
            f"{where} names an unknown guidance mode {describe_value(mode)} (this lcm-openvino knows "
            f"{' and '.join(GUIDANCE_MODES)}); upgrade lcm-openvino or re-export the bundle"
        )


def _check_fact(name: str, kind: str, value: Any, where: str = MANIFEST_FILE) -> None:
    if kind == "int | None" and value is None:
        return
    if kind in ("int", "int | None"):
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_FACT
        wanted = f"an integer from 1 to {MAX_FACT}"
    elif kind == "float":
        ok, wanted = is_finite_number(value), "a finite number"
    else:
        ok, wanted = isinstance(value, str), "a string"
    if not ok:
        raise BundleError(
            f"{where} has a malformed model fact: {name} is {describe_value(value)}, not {wanted}; re-export the bundle"
        )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(
            f"{MANIFEST_FILE} is malformed: {what} is {describe_value(value)}, not an object; "
            "re-export or re-download the bundle"
        )
    return value


def bundle_path_problem(name: Any) -> str | None:
    """Why ``name`` is not a plain relative posix path that stays inside a bundle, or None if it is.

    Only the lexical part: symlinks are resolve_inside's job. The normal form (no empty or '.'
    parts) is required too, so that one file has one name and "not in manifest" cannot be dodged.
    """
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "contains control characters"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid unicode"
    if "\\" in name or ":" in name:
        return "contains a backslash or colon (a Windows path or drive)"
    if name.startswith("/"):
        return "is an absolute path"
    if len(name.encode("utf-8")) > 1024 or any(len(part.encode("utf-8")) > 255 for part in name.split("/")):
        return "is too long for a file name"
    parts = name.split("/")
    if ".." in parts:
        return "climbs out with '..'"
    if any(part in ("", ".") for part in parts):
        return "is not a normalized relative path (empty or '.' parts)"
    return None


def _check_path(name: Any, where: str) -> None:
    problem = bundle_path_problem(name)
    if problem is not None:
        raise BundleError(
            f"{MANIFEST_FILE} is malformed: {where} {describe_value(name)} {problem}; "
            "only relative paths inside the bundle are allowed; re-export or re-download the bundle"
        )


def _components(value: Any) -> dict[str, dict[str, Any]]:
    components = _object(value, "components")
    for name, entry in components.items():
        _check_path(name, "the component name")
        _object(entry, f"the component {name}")
        if "file" in entry:
            _check_path(entry["file"], f"the file of component {name}")
    return dict(components)


def _file_entries(value: Any) -> dict[str, dict[str, Any]]:
    files = _object(value, "files")
    for name, entry in files.items():
        _check_path(name, "the file path")
        size = entry.get("size") if isinstance(entry, dict) else None
        if not (
            isinstance(size, int) and not isinstance(size, bool) and size >= 0 and isinstance(entry.get("sha256"), str)
        ):
            raise BundleError(
                f"{MANIFEST_FILE} is malformed: the entry of {name} is {describe_value(entry)}, "
                'not {"size": bytes, "sha256": hex digest}; re-export or re-download the bundle'
            )
    return dict(files)


def _loras(value: Any) -> list[dict[str, Any]]:
    """The manifest's fused LoRAs: a list of {"name": text, "sha256": 64 hex digits, "scale": finite number}."""
    if not isinstance(value, list):
        raise BundleError(
            f"{MANIFEST_FILE} is malformed: loras is {describe_value(value)}, not a list; re-export the bundle"
        )
    for entry in value:
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(digest, str)
            and len(digest) == 64
            and all(char in "0123456789abcdef" for char in digest)
            and is_finite_number(entry.get("scale"))
        ):
            raise BundleError(
                f"{MANIFEST_FILE} is malformed: a fused LoRA is {describe_value(entry)}, not "
                '{"name", "sha256", "scale"}; re-export or re-download the bundle'
            )
    return [dict(entry) for entry in value]


# Symlinks followed while resolving one bundle path before it counts as a loop (Linux's limit).
MAX_SYMLINKS = 40


def resolve_inside(root: Path, relative: str) -> Path:
    """The real path of root/relative, refusing (BundleError) any path that leaves root or is not a file.

    Symlinks are followed one component at a time with lstat/readlink on paths inside root only, so
    nothing outside the bundle is ever stat'ed or read to decide. A missing file is not an error here:
    the path returned then does not exist and the caller reports it missing. Callers should open the
    returned path, which has no symlinks left in it.
    """
    _check_path(relative, "the bundle path")
    base = Path(os.path.realpath(root))
    done: list[str] = []
    todo = relative.split("/")
    links = 0

    def malformed(problem: str) -> BundleError:
        return BundleError(f"bundle {root} is malformed: {relative} {problem}; re-export or re-download the bundle")

    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                raise malformed("leads outside the bundle through a symlink")
            done.pop()
            continue
        path = base.joinpath(*done, part)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):  # missing (or under a file): nothing below exists either
            return base.joinpath(*done, part, *(p for p in todo if p not in ("", ".", "..")))
        except OSError as error:  # a name too long, a folder we may not search
            raise malformed(f"cannot be looked up ({error.strerror or error})") from None
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise malformed("is a symlink loop")
            target = os.readlink(path)
            if target.startswith("/"):
                # Only an absolute link into the bundle's own real path is followed, from the top.
                prefix = f"{base}/"
                if not target.startswith(prefix):
                    raise malformed("leads outside the bundle through a symlink")
                done, target = [], target[len(prefix) :]
            todo = target.split("/") + todo
            continue
        done.append(part)
        if todo and not stat.S_ISDIR(mode):
            return base.joinpath(*done, *(p for p in todo if p not in ("", ".", "..")))
    path = base.joinpath(*done)
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return path
    except OSError as error:
        raise malformed(f"cannot be looked up ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise malformed("is a folder where a file should be")
    if not stat.S_ISREG(mode):
        raise malformed("is not a regular file (a device, pipe or socket)")
    return path


def dumps_json(data: Any) -> str:
    """Deterministic JSON: the same data always gives the same bytes (bundles are checksummed)."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def list_bundle_files(root: Path) -> list[str]:
    """Every file under root except the manifest, as sorted posix paths."""
    files = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            relative = (Path(dirpath) / name).relative_to(root).as_posix()
            if relative != MANIFEST_FILE:
                files.append(relative)
    return sorted(files)


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    root = Path(root)
    return {
        name: {"size": (root / name).stat().st_size, "sha256": sha256_file(root / name)}
        for name in list_bundle_files(root)
    }


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Record every file's checksum and write manifest.json (last, so its presence means complete)."""
    manifest.files = file_entries(Path(root))
    (Path(root) / MANIFEST_FILE).write_text(dumps_json(manifest.to_dict()), encoding="utf-8")


def read_manifest(root: Path) -> Manifest:
    path = resolve_inside(root, MANIFEST_FILE)
    if not path.is_file():
        raise BundleError(f"{root} has no {MANIFEST_FILE}: not an lcm-openvino bundle; export one with lcm-export")
    return Manifest.from_dict(read_json(path))


@dataclass(frozen=True)
class FileProblem:
    path: str
    problem: str  # "missing", "size differs", "checksum differs", "not in manifest"


def verify_files(root: Path, manifest: Manifest, checksums: bool = True) -> list[FileProblem]:
    """Compare the files on disk with the manifest. Sizes always; sha256 when ``checksums``."""
    root = Path(root)
    problems = []
    for name, entry in sorted(manifest.files.items()):
        path = resolve_inside(root, name)  # raises for a path leading out of the bundle, before any stat
        if not path.is_file():
            problems.append(FileProblem(name, "missing"))
        elif path.stat().st_size != entry.get("size"):
            problems.append(FileProblem(name, "size differs"))
        elif checksums and sha256_file(path) != entry.get("sha256"):
            problems.append(FileProblem(name, "checksum differs"))
    for name in list_bundle_files(root):
        if name not in manifest.files:
            problems.append(FileProblem(name, "not in manifest"))
    return problems


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a bundle file; anything else (missing, unreadable, not JSON...) is a BundleError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: the bundle is incomplete; re-export it") from None
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep, an int of too many digits
        raise BundleError(f"{path} is corrupted (not valid JSON); re-export the bundle") from None
    except OSError as error:
        raise BundleError(
            f"{path} cannot be read ({error.strerror or error}); re-export or re-download the bundle"
        ) from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} is corrupted (not a JSON object); re-export the bundle")
    return data
