"""LoRAs fused into the UNet and the text encoder before conversion: ``lcm-export --lcm-lora`` and ``--lora``.

diffusers does the loading and the fusing, through peft (``load_lora_weights``, ``set_adapters``,
``fuse_lora``, ``unload_lora_weights``): kohya and diffusers/peft keys, 3x3 convolutions, the text
encoder, and its scale semantics (each module's delta is ``scale * alpha / rank * B @ A``). What
diffusers and peft only warn about (keys that no module takes, which they drop; DoRA magnitudes,
which they drop) or fail on with a page of text is checked here first, so that every unusable LoRA
is one line that names it and says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcm_runtime.bundle import sha256_file
from lcm_runtime.errors import LCMError, first_line

from .hub import HUB_ID

if TYPE_CHECKING:
    import torch
    from diffusers import LatentConsistencyModelPipeline

DEFAULT_LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"
LCM_ROLE, STYLE_ROLE = "lcm", "style"  # --lcm-lora, --lora
OPTIONS = {LCM_ROLE: "--lcm-lora", STYLE_ROLE: "--lora"}
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
COMPONENTS = ("unet", "text_encoder")
SHOWN_KEYS = 3  # how many offending keys an error lists
# Keys only Stable Diffusion XL LoRAs have: its second text encoder (kohya te1/te2, diffusers
# text_encoder_2) and its added time/size embedding (add_embedding, label_emb in sgm names).
SDXL_MARKERS = ("lora_te1_", "lora_te2_", "text_encoder_2.", "add_embedding", "label_emb")
# The cross-attention width of other architectures: SDXL's two CLIPs, SD2's OpenCLIP.
OTHER_CROSS_ATTENTION = {2048: "an SDXL", 1024: "an SD2.x"}


class LoraError(LCMError):
    """A LoRA that cannot be fused: missing, unreadable, for another model, or with keys no module takes."""


@dataclass(frozen=True)
class LoraSpec:
    """One --lcm-lora/--lora argument: where the LoRA is (hub id or local path) and its multiplier."""

    source: str
    scale: float = 1.0
    role: str = STYLE_ROLE


@dataclass(frozen=True)
class ResolvedLora:
    spec: LoraSpec
    path: Path  # the local .safetensors file
    name: str  # the hub id, or the local file's name
    sha256: str

    def record(self) -> dict[str, Any]:
        """What the manifest's ``loras`` list holds for this LoRA."""
        return {"name": self.name, "sha256": self.sha256, "scale": self.spec.scale, "role": self.spec.role}

    @property
    def label(self) -> str:
        return f"{OPTIONS[self.spec.role]} {self.spec.source}"


def parse_lora(text: str, role: str = STYLE_ROLE) -> LoraSpec:
    """``LORA[:SCALE]``: a hub id or a path, and an optional finite multiplier (default 1).

    The text after the last colon is a scale unless the whole text is an existing path or that text
    holds a path separator (``C:\\loras\\x.safetensors``)."""
    option = OPTIONS[role]
    text = text.strip()
    if not text:
        raise LoraError(f"{option} needs a hub id or a .safetensors file, got an empty value")
    source, scale = text, 1.0
    head, colon, tail = text.rpartition(":")
    if colon and not Path(text).expanduser().exists() and not any(sep in tail for sep in "/\\"):
        try:
            scale = float(tail)
        except ValueError:
            scale = math.nan
        if not head:
            raise LoraError(
                f"{option} {text}: no LoRA before the scale; write LORA:SCALE, e.g. {option} {DEFAULT_LCM_LORA}:1"
            )
        if not math.isfinite(scale):
            raise LoraError(
                f"{option} {text}: {tail!r} is not a scale; write LORA or LORA:SCALE with a number, "
                f"e.g. {option} {head}:0.8"
            )
        source = head
    return LoraSpec(source=source, scale=scale, role=role)


def _looks_like_path(source: str) -> bool:
    return (
        source.lower().endswith((".safetensors", *PICKLE_SUFFIXES))
        or source.startswith((".", "/", "~"))
        or "\\" in source
        or source.count("/") > 1
    )


def _pick_file(folder: Path, spec: LoraSpec, what: str) -> Path:
    """The LoRA file of a folder (a hub snapshot or a save_lora_weights folder)."""
    files = sorted(path for path in folder.rglob("*.safetensors") if path.is_file())
    named = [path for path in files if path.name == LORA_WEIGHT_NAME]
    if len(named) == 1:
        return named[0]
    if len(files) == 1:
        return files[0]
    option = OPTIONS[spec.role]
    if not files:
        pickled = sorted(path.name for suffix in PICKLE_SUFFIXES for path in folder.rglob(f"*{suffix}"))
        detail = f" (only pickle files such as {pickled[0]}; convert it to .safetensors)" if pickled else ""
        raise LoraError(f"{option} {spec.source}: {what} has no .safetensors LoRA file{detail}")
    listing = ", ".join(str(path.relative_to(folder)) for path in files[:SHOWN_KEYS])
    raise LoraError(
        f"{option} {spec.source}: {what} has {len(files)} .safetensors files ({listing}...) and none is "
        f"{LORA_WEIGHT_NAME}; pass the path of the one you want"
    )


def resolve_lora(spec: LoraSpec) -> ResolvedLora:
    """Find the LoRA's file (a local file or folder, or a hub download through the hub cache) and hash it."""
    option = OPTIONS[spec.role]
    path = Path(spec.source).expanduser()
    if path.exists():
        if path.is_dir():
            folder = path
            path = _pick_file(folder, spec, f"folder {spec.source}")
            name = f"{folder.resolve().name}/{path.relative_to(folder).as_posix()}"
        elif path.suffix.lower() != ".safetensors":
            raise LoraError(
                f"{option} {spec.source}: LoRAs are read from .safetensors files only ({path.suffix} files are "
                "pickle, which can run code when loaded); convert it to .safetensors"
            )
        else:
            name = path.name
    elif _looks_like_path(spec.source) or not HUB_ID.match(spec.source):
        raise LoraError(
            f"{option} {spec.source}: no such file; check the path, or give a hub id like {DEFAULT_LCM_LORA}"
        )
    else:
        from .hub import SourceError, download_from_hub

        try:
            folder = download_from_hub(
                spec.source,
                None,
                allow_pickle=False,
                safety_checker=False,
                allow_patterns=["*.safetensors"],
                local_hint="pass the path of a local .safetensors LoRA file",
            )
        except SourceError as error:
            raise LoraError(f"{option}: {error}") from None
        path = _pick_file(folder, spec, f"hub repository {spec.source}")
        name = spec.source
    return ResolvedLora(spec=spec, path=path.resolve(), name=name, sha256=sha256_file(path))


def resolve_loras(lcm_lora: str | None, loras: Iterable[str]) -> list[ResolvedLora]:
    """Parse and resolve every LoRA argument (the LCM-LoRA first), before the minutes of loading SOURCE."""
    specs = [parse_lora(lcm_lora, LCM_ROLE)] if lcm_lora is not None else []
    specs += [parse_lora(text, STYLE_ROLE) for text in loras]
    return [resolve_lora(spec) for spec in specs]


# Checks of a LoRA's keys against the model, before diffusers loads it.


def _shown(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def read_lora_tensors(lora: ResolvedLora) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(lora.path))
    except Exception as error:  # safetensors raises its own SafetensorError, or OSError
        raise LoraError(f"{lora.label}: {lora.path} is not a readable safetensors file ({first_line(error)})") from None
    if not tensors:
        raise LoraError(f"{lora.label}: {lora.path} holds no tensors; it is not a LoRA")
    return tensors


def check_lora_kind(lora: ResolvedLora, keys: Iterable[str]) -> None:
    """A plain LoRA for Stable Diffusion 1.x: not a checkpoint, not DoRA or LyCORIS, not for SDXL."""
    keys = list(keys)
    if any(key.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for key in keys):
        raise LoraError(f"{lora.label}: {lora.name} is a model checkpoint, not a LoRA; pass it as SOURCE")
    sdxl = [key for key in keys if any(marker in key for marker in SDXL_MARKERS)]
    if sdxl:
        raise LoraError(
            f"{lora.label}: {lora.name} is an SDXL LoRA (keys such as {_shown(sdxl)}); "
            "lcm-export fuses LoRAs for Stable Diffusion 1.x"
        )
    dora = [key for key in keys if "dora_scale" in key or "lora_magnitude_vector" in key]
    if dora:
        # diffusers drops DoRA's magnitudes with a warning, which would fuse a different model.
        raise LoraError(f"{lora.label}: {lora.name} is a DoRA (keys such as {_shown(dora)}), which is not supported")
    lycoris = [key for key in keys if any(part in key for part in ("hada_", "lokr_", "lora_mid", ".diff"))]
    if lycoris:
        raise LoraError(
            f"{lora.label}: {lora.name} is a LyCORIS adapter (LoHa/LoKr/LoCon keys such as {_shown(lycoris)}), "
            "not a LoRA; only LoRA is supported"
        )
    not_lora = [key for key in keys if "lora" not in key.lower()]
    if not_lora:
        raise LoraError(f"{lora.label}: {lora.name} has keys that are not LoRA weights ({_shown(not_lora)})")
    kohya = [key for key in keys if key.startswith(("lora_unet_", "lora_te_"))]
    if kohya and len(kohya) == len(keys):
        unknown = [key for key in keys if not key.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))]
        if unknown:
            raise LoraError(f"{lora.label}: {lora.name} has kohya keys that are not LoRA factors ({_shown(unknown)})")


def _peft_components(pipeline: Any, lora: ResolvedLora, state_dict: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{component: {peft key: tensor}} as diffusers converts them before injecting: the UNet's through
    convert_unet_state_dict_to_peft, the text encoder's through convert_state_dict_to_diffusers and
    _to_peft, less the text_model. prefix a flattened CLIPTextModel lacks. Keys for no component are
    listed as unmatched."""
    from diffusers.utils.state_dict_utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    parts: dict[str, dict[str, Any]] = {component: {} for component in COMPONENTS}
    elsewhere = []
    for key, value in state_dict.items():
        component, _, rest = key.partition(".")
        if component in parts and rest:
            parts[component][rest] = value
        else:
            elsewhere.append(key)
    if elsewhere:
        raise LoraError(
            f"{lora.label}: {len(elsewhere)} LoRA keys are for neither the UNet nor the text encoder "
            f"({_shown(elsewhere)}); is it a LoRA for another model?"
        )
    try:
        if parts["unet"] and "lora_A" not in next(iter(parts["unet"])):
            parts["unet"] = convert_unet_state_dict_to_peft(parts["unet"])
        if parts["text_encoder"]:
            text = convert_state_dict_to_peft(convert_state_dict_to_diffusers(parts["text_encoder"]))
            if not hasattr(pipeline.text_encoder, "text_model"):
                text = {key.removeprefix("text_model."): value for key, value in text.items()}
            parts["text_encoder"] = text
    except (ValueError, KeyError) as error:
        raise LoraError(f"{lora.label}: diffusers cannot read its keys ({first_line(error)})") from None
    return parts


def _expected_shapes(module: Any, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    import torch

    # A module an earlier LoRA adapted is peft's wrapper around it.
    module = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    if isinstance(module, torch.nn.Linear):
        return (rank, module.in_features), (module.out_features, rank)
    if isinstance(module, torch.nn.Conv2d):
        return (rank, module.in_channels, *module.kernel_size), (module.out_channels, rank, 1, 1)
    return None


def lora_targets(pipeline: Any, lora: ResolvedLora, state_dict: dict[str, Any]) -> dict[str, set[str]]:
    """{component: module paths} the LoRA adapts; a LoRA key that matches no module, or factors whose
    shapes do not fit their module, is a one-line error listing a few of them."""
    targets: dict[str, set[str]] = {component: set() for component in COMPONENTS}
    unmatched: list[str] = []
    for component, peft_keys in _peft_components(pipeline, lora, state_dict).items():
        model = getattr(pipeline, component)
        modules = dict(model.named_modules())
        factors: dict[str, dict[str, Any]] = {}
        for key, value in peft_keys.items():
            module_path, marker, kind = key.partition(".lora_")
            if not marker or kind not in ("A.weight", "B.weight") or module_path not in modules:
                unmatched.append(f"{component}.{key}")
                continue
            factors.setdefault(module_path, {})[kind[0]] = value
        for module_path, pair in factors.items():
            label = f"{component}.{module_path}"
            if set(pair) != {"A", "B"}:
                unmatched.append(f"{label} (only lora_{''.join(pair)})")
                continue
            shapes = _expected_shapes(modules[module_path], int(pair["A"].shape[0]))
            if shapes is None:
                unmatched.append(f"{label} (a {type(modules[module_path]).__name__}, not a Linear or Conv2d)")
                continue
            if (tuple(pair["A"].shape), tuple(pair["B"].shape)) != shapes:
                _raise_shape_mismatch(lora, label, pair, shapes)
            targets[component].add(module_path)
    if unmatched:
        raise LoraError(
            f"{lora.label}: {len(unmatched)} LoRA keys match no module of this Stable Diffusion 1.x model "
            f"({_shown(unmatched)}); is it a LoRA for another model?"
        )
    if not any(targets.values()):
        raise LoraError(f"{lora.label}: {lora.name} adapts no module of the UNet or the text encoder")
    return targets


def _raise_shape_mismatch(
    lora: ResolvedLora, label: str, pair: dict[str, Any], shapes: tuple[tuple[int, ...], tuple[int, ...]]
) -> None:
    width = int(pair["A"].shape[1]) if pair["A"].ndim > 1 else 0
    if (".attn2.to_k" in label or ".attn2.to_v" in label) and width in OTHER_CROSS_ATTENTION:
        raise LoraError(
            f"{lora.label}: {lora.name} is {OTHER_CROSS_ATTENTION[width]} LoRA (its cross-attention takes "
            f"{width}-wide text features, this model's {shapes[0][1]}); lcm-export fuses LoRAs for Stable Diffusion 1.x"
        )
    raise LoraError(
        f"{lora.label}: the LoRA's factors for {label} are {list(pair['B'].shape)} x {list(pair['A'].shape)}, "
        f"the module needs {list(shapes[1])} x {list(shapes[0])}; is it a LoRA for another model?"
    )


def _adapted_modules(model: Any, adapter: str) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and adapter in getattr(module, "lora_A", {})
    }


def _check_injected(pipeline: Any, lora: ResolvedLora, adapter: str, targets: dict[str, set[str]]) -> None:
    """Every module the file has factors for got them, and no other module got a non-zero delta
    (peft's target matching by suffix could adapt more modules than the file has weights for)."""
    for component, expected in targets.items():
        adapted = _adapted_modules(getattr(pipeline, component), adapter)
        missing = expected - set(adapted)
        if missing:
            raise LoraError(
                f"{lora.label}: diffusers did not apply the LoRA to {len(missing)} {component} modules "
                f"({_shown(missing)}); the file is not one diffusers can load"
            )
        extra = [
            name
            for name, module in adapted.items()
            if name not in expected and bool(module.lora_B[adapter].weight.detach().abs().max() > 0)
        ]
        if extra:
            raise LoraError(
                f"{lora.label}: its configuration adapts {component} modules it has no weights for ({_shown(extra)})"
            )


def require_peft() -> None:
    """diffusers' LoRA loading needs peft (part of the [export] extra)."""
    from importlib.util import find_spec

    if find_spec("peft") is None:
        raise LoraError("--lcm-lora and --lora need peft; install it with: pip install 'lcm-openvino[export]'")
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        from importlib.metadata import version

        raise LoraError(
            f"diffusers cannot use the installed peft {version('peft')} (or transformers) for LoRAs; "
            "reinstall with: pip install 'lcm-openvino[export]'"
        )


def fuse_loras(pipeline: LatentConsistencyModelPipeline, loras: list[ResolvedLora]) -> list[dict[str, Any]]:
    """Fuse ``loras`` into ``pipeline``'s UNet and text encoder (float32, in place), as diffusers does:
    each loaded as an adapter, weighted by its scale with set_adapters, fused with fuse_lora, the LoRA
    layers then removed. Returns the manifest's records, in order."""
    if not loras:
        return []
    require_peft()
    adapters = []
    try:
        for index, lora in enumerate(loras):
            tensors = read_lora_tensors(lora)
            check_lora_kind(lora, tensors)
            try:
                state_dict, _alphas = type(pipeline).lora_state_dict(dict(tensors))
            except (ValueError, KeyError) as error:
                raise LoraError(f"{lora.label}: diffusers cannot read its keys ({first_line(error)})") from None
            targets = lora_targets(pipeline, lora, state_dict)
            del tensors, state_dict
            adapter = f"lcm_export_{index}"
            try:
                # From the file, not the tensors: a diffusers/peft file's metadata holds its alphas.
                with warnings.catch_warnings():
                    # Several LoRAs are several adapters on purpose (weighed, then fused); peft warns.
                    warnings.filterwarnings("ignore", "Already found a `peft_config` attribute", UserWarning)
                    pipeline.load_lora_weights(str(lora.path), adapter_name=adapter)
            except (ValueError, KeyError, RuntimeError, TypeError) as error:
                raise LoraError(f"{lora.label}: diffusers cannot load it ({first_line(error)})") from None
            adapters.append(adapter)
            _check_injected(pipeline, lora, adapter, targets)
        pipeline.set_adapters(adapters, adapter_weights=[lora.spec.scale for lora in loras])
        try:
            pipeline.fuse_lora(components=list(COMPONENTS), lora_scale=1.0, safe_fusing=True, adapter_names=adapters)
        except ValueError as error:  # safe_fusing: a fused weight is NaN or infinite
            raise LoraError(
                f"fusing the LoRAs gives non-finite weights ({first_line(error)}); check their scales"
            ) from None
    finally:
        if adapters:
            pipeline.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    return [lora.record() for lora in loras]
