"""Where images go and what they record: output names that never clobber, and A1111-style
``parameters`` text so that any image can be regenerated from its own file."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError

DEFAULT_OUTPUT_DIR = Path("outputs")


def plan_output_paths(output: Path | None, seed: int, count: int, overwrite: bool = False) -> list[Path]:
    """The paths for ``count`` images; checks the folder is writable before any work is done."""
    if output is None or output.is_dir() or str(output).endswith(("/", os.sep)) or output.suffix == "":
        folder = output if output is not None else DEFAULT_OUTPUT_DIR
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}"
    elif output.suffix.lower() == ".png":
        folder, stem = output.parent, output.stem
    else:
        raise InputError(f"--output {output} must be a .png file or a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"cannot create the output folder {folder} ({error.strerror}); choose another --output"
        ) from None
    check_writable(folder)

    names = [f"{stem}.png"] if count == 1 else [f"{stem}-{index}.png" for index in range(1, count + 1)]
    paths: list[Path] = []
    taken: set[Path] = set()
    for name in names:
        path = folder / name
        if not overwrite:
            path = _free_path(path, taken=taken)
        elif path.is_dir():
            raise InputError(f"{path} is a folder; choose another --output")
        paths.append(path)
        taken.add(path)
    return paths


def check_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: permission bits do not tell for root, a read-only mount,
    /sys or /proc, where only a write fails."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".lcm-run-probe.", dir=folder)
    except OSError as error:
        raise InputError(f"cannot write to {folder} ({error.strerror}); choose another --output") from None
    os.close(handle)
    os.unlink(probe)


def _free_path(path: Path, taken: set[Path]) -> Path:
    candidate, number = path, 1
    while candidate.exists() or candidate in taken:
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
        number += 1
    return candidate


def lora_name(name: str) -> str:
    """A LoRA's short name, as A1111 shows it: the file's stem or the hub id's last part."""
    last = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return last.removesuffix(".safetensors").replace(",", " ").replace(":", " ")


def png_parameters(
    prompt: str,
    *,
    steps: int,
    guidance: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    model_hash: str,
    precision: str,
    device: str,
    index: int,
    count: int,
    vae: str = "full",
    strength: float | None = None,
    image_hash: str | None = None,
    mask_hash: str | None = None,
    safety_checker: str | None = None,
    flagged: bool | None = None,
    prompt_syntax: str = "a1111",
    negative_prompt: str | None = None,
    guidance_rescale: float = 0.0,
    loras: Sequence[Mapping[str, Any]] = (),
    deep_cache_interval: int = 1,
) -> str:
    """The A1111 ``parameters`` chunk: the prompt on the first line, A1111's ``Negative prompt: ...``
    line when there is one, then key: value pairs. Image-to-image and inpainting add A1111's
    ``Denoising strength`` and the input picture's and mask's sha256 (12 hex); ``Guidance rescale``
    appears when it is not 0; ``safety_checker`` is "on" or "off" for a bundle that has one (None: it
    has none). A prompt read as diffusers reads it (``--plain-prompt``) says so, since A1111's reading
    is what the CLI assumes. ``loras``: the bundle's fused LoRAs, as A1111's ``Lora hashes``.
    ``DeepCache interval`` appears when DeepCache ran (deep_cache_interval > 1): it changes the image."""
    optional = {
        "Guidance rescale": guidance_rescale or None,
        "Denoising strength": strength,
        "Init image hash": image_hash,
        "Mask hash": mask_hash,
        "Safety checker": None if safety_checker is None else f"{safety_checker}{' (flagged)' if flagged else ''}",
        "Prompt syntax": None if prompt_syntax == "a1111" else prompt_syntax,
        "DeepCache interval": deep_cache_interval if deep_cache_interval > 1 else None,
        # A1111's form: the LoRAs fused into the bundle, by name and the first 12 hex of their sha256.
        "Lora hashes": (
            '"' + ", ".join(f"{lora_name(lora['name'])}: {lora['sha256'][:12]}" for lora in loras) + '"'
            if loras
            else None
        ),
    }
    fields = {
        "Steps": steps,
        "Sampler": "LCM",
        "CFG scale": guidance,
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": model,
        "Model hash": model_hash,
        "VAE": vae,
        "Precision": precision,
        "Device": device,
        "Batch size": count,
        "Batch pos": index,
        "Generator": "numpy PCG64 standard_normal",
        "Version": f"lcm-openvino {__version__}",
        **{key: value for key, value in optional.items() if value is not None},
    }
    negative = f"Negative prompt: {negative_prompt}\n" if negative_prompt else ""
    return prompt + "\n" + negative + ", ".join(f"{key}: {value}" for key, value in fields.items())
