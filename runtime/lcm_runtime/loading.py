"""Open a model folder and check it before any model is compiled.

Two kinds of folder: an lcm-openvino bundle (manifest.json: checked against its format version and
file sizes, scheduler tables from torch) and a folder from ``optimum-cli export openvino`` (no
manifest: facts from model_index.json and the configs, scheduler tables computed in NumPy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import bundle
from .bundle import Manifest, ModelFacts, resolve_inside
from .errors import BundleError
from .hub import resolve_model
from .schedulers.scheduling_lcm import LCMSchedulerConfig


@dataclass(frozen=True)
class ModelFolder:
    root: Path
    manifest: Manifest | None
    facts: ModelFacts
    scheduler_config: dict[str, Any]
    scheduler: LCMSchedulerConfig  # scheduler_config, parsed and checked
    scheduler_tables: dict[str, np.ndarray] | None
    size_multiple: int  # image sides must be multiples of this (VAE factor x UNet down-sampling)
    min_side: int  # and at least this: a token-downsampled UNet pools the latent grid (a side below fails)
    vae_block_out_channels: tuple[int, ...]
    unet_block_out_channels: tuple[int, ...]
    tiny_vae_config: dict[str, Any] | None = None  # the TAESD decoder's config, when the bundle has one

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def tokenizer_file(self) -> Path:
        return self.root / bundle.TOKENIZER_JSON

    @property
    def loras(self) -> list[dict[str, Any]]:
        """The LoRAs fused into this bundle at export ({name, sha256, scale}); none for other folders."""
        return list(self.manifest.loras) if self.manifest else []

    def xml(self, component: str) -> Path:
        return self.root / bundle.component_xml(component)

    @property
    def unet_precision(self) -> str | None:
        """The UNet's weight precision from the manifest (None for folders without one)."""
        return self.manifest.components.get("unet", {}).get("precision") if self.manifest else None

    def identity(self) -> str:
        """What to record in image metadata: the manifest's hash, or 'no-manifest'."""
        return self.manifest.digest() if self.manifest else "no-manifest"


def open_model_folder(path: str | os.PathLike[str]) -> ModelFolder:
    """A bundle folder, or a hub id (``owner/name``) downloaded once into real files (hub.py)."""
    root = resolve_model(path)
    if not root.exists():
        raise BundleError(f"model folder {root} does not exist; export one with `lcm-export` or pass --model")
    if not root.is_dir():
        raise BundleError(f"{root} is not a folder; pass the bundle folder written by lcm-export")

    manifest = None
    if os.path.lexists(root / bundle.MANIFEST_FILE):  # lexists: a symlink out of the bundle is refused, not followed
        manifest = bundle.read_manifest(root)
        problems = bundle.verify_files(root, manifest, checksums=False)
        missing = [problem for problem in problems if problem.problem != "not in manifest"]
        if missing:
            first = missing[0]
            raise BundleError(
                f"bundle {root} is incomplete or corrupted: {first.path} is {first.problem}"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
                f"run `lcm-run verify {root}` or re-export it"
            )
    elif not resolve_inside(root, bundle.MODEL_INDEX_FILE).is_file():
        raise BundleError(
            f"{root} is not a model bundle (no manifest.json or model_index.json); export one with lcm-export"
        )

    for component in bundle.REQUIRED_COMPONENTS:
        for suffix in (bundle.MODEL_XML, bundle.MODEL_BIN):
            # Every file opened by its fixed name must be a file inside the bundle (no symlink out).
            if not resolve_inside(root, f"{component}/{suffix}").is_file():
                raise BundleError(f"{root} has no {component}/{suffix}: the bundle is incomplete; re-export it")
    if not resolve_inside(root, bundle.TOKENIZER_JSON).is_file():
        raise BundleError(f"{root} has no {bundle.TOKENIZER_JSON}; re-export the model with lcm-export")

    unet_config = bundle.read_json(resolve_inside(root, f"unet/{bundle.CONFIG_FILE}"))
    vae_config = bundle.read_json(resolve_inside(root, f"vae_decoder/{bundle.CONFIG_FILE}"))
    scheduler_config = bundle.read_json(resolve_inside(root, bundle.SCHEDULER_CONFIG))
    scheduler = LCMSchedulerConfig.from_dict(scheduler_config)  # a malformed config fails here, before compiling
    unet_channels = _channels(unet_config, (320,), "unet")
    vae_channels = _channels(vae_config, (128,), "vae_decoder")

    if manifest is not None:
        facts = manifest.model
        _check_unet_channels(root, facts, unet_config)
        tables = _load_tables(root, scheduler_config)
    else:
        text_config = bundle.read_json(resolve_inside(root, f"text_encoder/{bundle.CONFIG_FILE}"))
        up_factor = 2 ** max(len(unet_channels) - 1, 0)
        facts = ModelFacts.from_configs(
            unet_config, vae_config, text_config.get("max_position_embeddings", 77), latent_size_multiple=up_factor
        )
        tables = None

    tiny_vae_config = None
    if resolve_inside(root, bundle.component_xml(bundle.TINY_VAE_DECODER)).is_file():
        if not resolve_inside(root, f"{bundle.TINY_VAE_DECODER}/{bundle.MODEL_BIN}").is_file():
            raise BundleError(
                f"{root} has no {bundle.TINY_VAE_DECODER}/{bundle.MODEL_BIN}: the bundle is incomplete; re-export it"
            )
        tiny_vae_config = bundle.read_json(resolve_inside(root, f"{bundle.TINY_VAE_DECODER}/{bundle.CONFIG_FILE}"))

    return ModelFolder(
        root=root,
        manifest=manifest,
        facts=facts,
        scheduler_config=scheduler_config,
        scheduler=scheduler,
        scheduler_tables=tables,
        size_multiple=facts.vae_scale_factor * facts.latent_size_multiple,
        min_side=facts.vae_scale_factor * token_downsampling_factor(manifest),
        vae_block_out_channels=vae_channels,
        unet_block_out_channels=unet_channels,
        tiny_vae_config=tiny_vae_config,
    )


def token_downsampling_factor(manifest: Manifest | None) -> int:
    """How many latents a side the UNet's full-resolution self-attentions pool into one (1: exact attention).

    OpenVINO's pooling refuses a grid smaller than its kernel, so the latent side must be at least this."""
    unet = manifest.components.get("unet") if manifest is not None else None
    pooled = unet.get("token_downsampling") if isinstance(unet, dict) else None
    factor = pooled.get("factor") if isinstance(pooled, dict) else None
    return factor if type(factor) is int and factor > 1 else 1


def _check_unet_channels(root: Path, facts: ModelFacts, unet_config: dict[str, Any]) -> None:
    """The manifest's UNet channels are those of unet/config.json (a bundle an older lcm-export wrote of an
    inpainting UNet recorded its 9 input channels as the latents')."""
    declared = (unet_config.get("in_channels"), unet_config.get("out_channels"))
    recorded = (facts.unet_channels, facts.latent_channels)
    if any(type(value) is int and value != expected for value, expected in zip(declared, recorded, strict=True)):
        raise BundleError(
            f"{root}: {bundle.MANIFEST_FILE} says the UNet takes {recorded[0]} channels and predicts {recorded[1]}, "
            f"but unet/{bundle.CONFIG_FILE} says in_channels {bundle.describe_value(declared[0])} and out_channels "
            f"{bundle.describe_value(declared[1])}; re-export the bundle"
        )


def _channels(config: dict[str, Any], default: tuple[int, ...], component: str) -> tuple[int, ...]:
    # Memory estimates and the latent size multiple are computed from these: garbage must stop here.
    value = config.get("block_out_channels", default)
    if not (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= bundle.MAX_FACT for v in value)
    ):
        raise BundleError(
            f"{component}/{bundle.CONFIG_FILE} has block_out_channels = {bundle.describe_value(value)}, "
            "not a list of positive integers; re-export the bundle"
        )
    return tuple(value)


def _load_tables(root: Path, scheduler_config: dict[str, Any]) -> dict[str, np.ndarray]:
    steps = LCMSchedulerConfig.from_dict(scheduler_config).num_train_timesteps
    tables = {}
    for name in bundle.SCHEDULER_TABLES:
        path = resolve_inside(root, bundle.scheduler_table_file(name))
        try:
            table = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            raise BundleError(f"{path} is missing or corrupted; re-export the bundle") from None
        if table.dtype != np.float32 or table.shape != (steps,):
            raise BundleError(f"{path} is not a float32 table of {steps} values; re-export the bundle")
        tables[name] = table
    return tables
