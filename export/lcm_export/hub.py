"""Where export sources come from: hub ids, the hub download of only what the export reads, the
weight-file patterns, and the one error every bad source raises. Shared by the pipeline, TAESD and
safety-checker loaders (source.py, tiny_vae.py, safety_checker.py)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from lcm_runtime.bundle import sha256_file
from lcm_runtime.errors import LCMError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SAFE_WEIGHTS = ("*.safetensors",)
PICKLE_WEIGHTS = ("*.bin", "*.ckpt", "*.pt", "*.pth")


class SourceError(LCMError):
    """The SOURCE cannot be exported (missing, unreachable, not a diffusers LCM pipeline...)."""


def download_from_hub(
    repo_id: str,
    revision: str | None,
    allow_pickle: bool,
    safety_checker: bool = True,
    allow_patterns: list[str] | None = None,
    local_hint: str = "pass a local diffusers folder as SOURCE",
) -> Path:
    """Download (or find in the cache) only what the export reads: configs, tokenizer, weights, and the
    safety checker with its feature extractor unless ``safety_checker`` is False; only ``allow_patterns``
    when given (a LoRA's .safetensors). ``local_hint`` ends the offline error: what to pass instead."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        raise SourceError("huggingface_hub is not installed; pip install 'lcm-openvino[export]'") from None

    ignore = ["*.fp16.*", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ckpt"]
    if not safety_checker:
        ignore += ["safety_checker/*", "feature_extractor/*"]
    if not allow_pickle:
        ignore += ["*.bin", "*.pt", "*.pth"]
    try:
        return Path(
            snapshot_download(repo_id, revision=revision, ignore_patterns=ignore, allow_patterns=allow_patterns)
        )
    except GatedRepoError:
        raise SourceError(
            f"{repo_id} is gated on the hub; accept its licence and log in (hf auth login), or pass a local folder"
        ) from None
    except RepositoryNotFoundError:
        raise SourceError(
            f"{repo_id} was not found on the hub (or is private); check the id, or pass a local folder"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(f"revision {revision!r} of {repo_id} was not found on the hub; check --revision") from None
    except OSError as error:
        from .writer import is_no_space

        if not is_no_space(error):
            raise _unreachable(repo_id, error, local_hint) from None
        raise SourceError(
            f"no space left on the device of the hub cache while downloading {repo_id}; "
            "free some space or point HF_HUB_CACHE to a bigger disk"
        ) from None
    except (LocalEntryNotFoundError, EntryNotFoundError) as error:
        raise _unreachable(repo_id, error, local_hint) from None


def _unreachable(repo_id: str, error: BaseException, local_hint: str) -> SourceError:
    # Offline (HF_HUB_OFFLINE=1 or no network) and not in the local cache.
    return SourceError(
        f"cannot reach the Hugging Face hub to download {repo_id} and it is not in the local cache "
        f"({type(error).__name__}); connect to the internet, or {local_hint}"
    )


def weights_sha256(folder: Path, weight_files: list[Path]) -> str:
    """One hash over every weight file (path relative to the folder, and content)."""
    digest = hashlib.sha256()
    for path in sorted(weight_files):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a source file, or a one-line SourceError naming what is corrupted."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SourceError(f"{path} is not valid JSON; the {what} is corrupted, re-download it") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path} is not a JSON object; the {what} is corrupted, re-download it")
    return data
