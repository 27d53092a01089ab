"""A model given as a Hugging Face hub id (``OpenVINO/LCM_Dreamshaper_v7-fp16-ov``, or one of ours):
downloaded once with huggingface_hub (installed with tokenizers) into real files, then opened as a folder.

Real files, not the hub cache's symlinks: a bundle refuses symlinks that leave it. Offline
(HF_HUB_OFFLINE=1) the earlier download is used as it is, or the error says what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import BundleError, first_line

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def models_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("LCM_MODELS_DIR") or Path(base) / "lcm-openvino" / "models")


def looks_like_hub_id(model: str | os.PathLike[str]) -> bool:
    """``owner/name`` that is no path on this machine (neither it nor its first part exists)."""
    text = os.fspath(model)
    return bool(HUB_ID.fullmatch(text)) and not Path(text).exists() and not Path(text.split("/")[0]).exists()


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """A local folder as given; a hub id downloaded (once) to ``models_dir()`` and that folder returned."""
    if not looks_like_hub_id(model):
        return Path(model).expanduser()
    repo_id = os.fspath(model)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    target = models_dir() / repo_id.replace("/", "--")
    try:
        return Path(snapshot_download(repo_id=repo_id, local_dir=target))
    except LocalEntryNotFoundError:
        raise BundleError(
            f"{repo_id} is neither a folder here nor a downloaded hub model, and the hub cannot be reached "
            "(HF_HUB_OFFLINE=1 or no network); download it once with network access, or pass a bundle folder"
        ) from None
    except RepositoryNotFoundError:
        raise BundleError(
            f"{repo_id} is neither a folder here nor a model on the Hugging Face hub (or it is private: "
            "set HF_TOKEN); check the name, or pass a bundle folder"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise BundleError(
            f"could not download {repo_id} ({first_line(error, 160)}); retry, or pass a bundle folder"
        ) from None
