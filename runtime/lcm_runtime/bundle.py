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
    vae_decoder/openvino_model.xml       latent_sample -> sample
    vae_encoder/openvino_model.xml       sample -> latent_parameters
    vae_decoder_tiny/openvino_model.xml  (optional, TAESD) latent_sample -> sample
    <component>/config.json              the diffusers/transformers config of each model

Everything here is plain Python + json + hashlib: importing it is free of openvino and torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError

FORMAT_NAME = "lcm-openvino-bundle"
FORMAT_VERSION = 1
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
# Optional components: present only when the export asked for them.
TINY_VAE_DECODER = "vae_decoder_tiny"  # TAESD (diffusers' AutoencoderTiny) decoder, lcm-export --tiny-vae
OPTIONAL_COMPONENT_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    TINY_VAE_DECODER: (("latent_sample",), ("sample",)),
}

# Scheduler tables, one float32 .npy of shape [num_train_timesteps] each, computed with torch
# exactly as diffusers' LCMScheduler does, so that a NumPy step() is bit-exact (lcm-numerics.md).
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


def component_xml(component: str) -> str:
    return f"{component}/{MODEL_XML}"


def scheduler_table_file(name: str) -> str:
    return f"scheduler/{name}.npy"


@dataclass(frozen=True)
class ModelFacts:
    """What the runtime must know about the model, derived from its configs."""

    latent_channels: int
    vae_scale_factor: int
    vae_scaling_factor: float
    sample_size: int  # latent side; the native image side is sample_size * vae_scale_factor
    text_max_length: int
    time_cond_proj_dim: int
    guidance_embedding: str = DIFFUSERS_GUIDANCE_CONVENTION
    default_steps: int = 4
    default_guidance_scale: float = 8.0
    # The UNet IR's own constraint on the latent side. lcm-export traces diffusers' general
    # up-sampling path, so any side works (1); an IR traced at a multiple of the UNet's up-sampling
    # factor (optimum-cli's) only accepts multiples of it.
    latent_size_multiple: int = 1

    @property
    def default_image_size(self) -> int:
        return self.sample_size * self.vae_scale_factor

    @property
    def guidance_offset(self) -> float:
        return GUIDANCE_CONVENTIONS[self.guidance_embedding]

    @classmethod
    def from_configs(
        cls,
        unet_config: dict[str, Any],
        vae_config: dict[str, Any],
        text_max_length: int,
        **defaults: Any,
    ) -> "ModelFacts":
        """Derive the facts from diffusers' UNet and VAE configs (the ones the bundle ships)."""
        time_cond_proj_dim = unet_config.get("time_cond_proj_dim")
        if not time_cond_proj_dim:
            raise BundleError(
                "the UNet has no time_cond_proj_dim: this is not an LCM-distilled model "
                "(use an LCM such as SimianLuo/LCM_Dreamshaper_v7)"
            )
        sample_size = unet_config.get("sample_size", 64)
        if isinstance(sample_size, (list, tuple)):
            sample_size = sample_size[0]
        return cls(
            latent_channels=int(unet_config.get("in_channels", vae_config.get("latent_channels", 4))),
            vae_scale_factor=2 ** (len(vae_config.get("block_out_channels", [0, 0, 0, 0])) - 1),
            vae_scaling_factor=float(vae_config.get("scaling_factor", 0.18215)),
            sample_size=int(sample_size),
            text_max_length=int(text_max_length),
            time_cond_proj_dim=int(time_cond_proj_dim),
            **defaults,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelFacts":
        try:
            facts = cls(**data)
        except TypeError as error:
            raise BundleError(f"manifest.json has malformed model facts ({error}); re-export the bundle") from None
        if facts.guidance_embedding not in GUIDANCE_CONVENTIONS:
            raise BundleError(
                f"manifest.json names an unknown guidance embedding {facts.guidance_embedding!r}; "
                "upgrade lcm-openvino or re-export the bundle"
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
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = asdict(self.model)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise BundleError(f"{MANIFEST_FILE} is not an lcm-openvino manifest; re-export the bundle with lcm-export")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise BundleError(
                f"bundle format version {version!r} is not supported by this lcm-openvino "
                f"(it reads version {FORMAT_VERSION}); upgrade lcm-openvino or re-export the bundle"
            )
        try:
            return cls(
                source=dict(data["source"]),
                versions=dict(data["versions"]),
                components=dict(data["components"]),
                model=ModelFacts.from_dict(dict(data["model"])),
                files=dict(data["files"]),
                calibration=data.get("calibration"),
                format=data["format"],
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{MANIFEST_FILE} is incomplete (missing {error}); re-export the bundle") from None

    def digest(self) -> str:
        """A short hash identifying this exact bundle (its manifest), for image metadata."""
        return hashlib.sha256(dumps_json(self.to_dict()).encode()).hexdigest()[:12]


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
    path = Path(root) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{root} has no {MANIFEST_FILE}: not an lcm-openvino bundle; export one with lcm-export") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError(f"{path} is corrupted (not valid JSON); re-export the bundle") from None
    return Manifest.from_dict(data)


@dataclass(frozen=True)
class FileProblem:
    path: str
    problem: str  # "missing", "size differs", "checksum differs", "not in manifest"


def verify_files(root: Path, manifest: Manifest, checksums: bool = True) -> list[FileProblem]:
    """Compare the files on disk with the manifest. Sizes always; sha256 when ``checksums``."""
    root = Path(root)
    problems = []
    for name, entry in sorted(manifest.files.items()):
        path = root / name
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
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: the bundle is incomplete; re-export it") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError(f"{path} is corrupted (not valid JSON); re-export the bundle") from None
