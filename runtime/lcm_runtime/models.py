"""Thin wrappers over OpenVINO compiled models: reshape to the requested size, compile, infer.

Input names and element types are read from the model, never assumed (optimum exports the
timestep as int64, older notebooks as float32).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import DEEP_FEATURE
from .compile_cache import CompileCache
from .errors import BundleError, InputError
from .openvino_runtime import ov

PRECISION_HINTS = {"auto": None, "f32": "f32", "bf16": "bf16", "f16": "f16"}
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def check_device(core: ov.Core, device: str) -> None:
    available = core.available_devices
    root = device.split(":")[0].split(".")[0].upper()
    if root in VIRTUAL_DEVICES or device in available or root in {name.split(".")[0] for name in available}:
        return
    raise InputError(f"OpenVINO has no device {device!r} on this machine; choose one of {', '.join(available)}")


def compile_config(precision: str) -> dict[str, Any]:
    if precision not in PRECISION_HINTS:
        raise InputError(f"precision must be one of {', '.join(PRECISION_HINTS)}, got {precision!r}")
    hint = PRECISION_HINTS[precision]
    return {"INFERENCE_PRECISION_HINT": hint} if hint else {}


class CompiledComponent:
    """One model compiled at static shapes: imported through the compile cache's index when it
    has this exact model, otherwise read, reshaped and compiled (the ov.Model is dropped after).
    ``extra_outputs``: named tensors of the IR to make outputs too (DeepCache's deep feature)."""

    def __init__(
        self,
        core: ov.Core,
        xml: Path,
        shapes: Mapping[str, list[int]],
        device: str,
        config: Mapping[str, Any],
        cache: CompileCache | None = None,
        extra_outputs: Sequence[str] = (),
    ) -> None:
        key = cache.key(core, xml, shapes, device, config, extra_outputs) if cache is not None else None
        loaded = cache.load(core, key, device, config) if cache is not None and key is not None else None
        blob = None
        if loaded is not None:
            compiled, blob = loaded
        else:
            model = core.read_model(os.fspath(xml))
            if extra_outputs:
                try:
                    model.add_outputs(list(extra_outputs))
                except RuntimeError:
                    raise BundleError(
                        f"{xml} has no tensor named {', '.join(extra_outputs)}; re-export the bundle with lcm-export"
                    ) from None
            model.reshape(_static_shapes(model, shapes))
            if cache is not None and key is not None:
                compiled = cache.compile(core, model, key, device, config, xml)
            else:
                compiled = core.compile_model(model, device, dict(config))
            del model
        self.from_cache_index = loaded is not None
        # By every name: an imported model's ports carry extra tensor names, in any order.
        self.input_types = {
            name: port.get_element_type().to_dtype() for port in compiled.inputs for name in port.get_names()
        }
        self.compiled = compiled
        self.request = self.compiled.create_infer_request()
        # Set last: CPython frees attributes in the order they were set, and the imported model reads
        # constants in place from this mapping, so it must go after the model and its request.
        self._blob = blob

    def set_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        for name, value in inputs.items():
            self.request.set_tensor(name, ov.Tensor(np.ascontiguousarray(value, dtype=self.input_types[name])))

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Infer with these inputs (plus any set before) and return a copy of the first output."""
        self.set_inputs(inputs)
        self.request.infer()
        output: np.ndarray = self.request.get_output_tensor(0).data.copy()
        return output


class TextEncoder(CompiledComponent):
    def __call__(self, input_ids: np.ndarray) -> np.ndarray:
        return self.run({"input_ids": input_ids})


class UNet(CompiledComponent):
    def bind_conditioning(self, encoder_hidden_states: np.ndarray, timestep_cond: np.ndarray | None = None) -> None:
        """Set the inputs that stay the same for every step, once, before the loop (``timestep_cond``:
        the guidance embedding of an embedded-guidance UNet; a cfg UNet has no such input)."""
        inputs = {"encoder_hidden_states": encoder_hidden_states}
        if timestep_cond is not None:
            inputs["timestep_cond"] = timestep_cond
        self.set_inputs(inputs)

    def __call__(self, sample: np.ndarray, timestep: int) -> np.ndarray:
        return self.run({"sample": sample, "timestep": np.array([timestep])})

    def deep_feature(self) -> np.ndarray:
        """The last call's DeepCache feature (a UNet of a bundle with unet_shallow outputs it too)."""
        feature: np.ndarray = self.request.get_tensor(DEEP_FEATURE).data.copy()
        return feature


class ShallowUNet(UNet):
    """DeepCache's skip step: the UNet's shallow path on a deep feature cached from a full step."""

    def set_deep_feature(self, feature: np.ndarray) -> None:
        self.set_inputs({DEEP_FEATURE: feature})


class VAEDecoder(CompiledComponent):
    def __call__(self, latents: np.ndarray) -> np.ndarray:
        return self.run({"latent_sample": latents})


class VAEEncoder(CompiledComponent):
    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Images in [-1, 1] -> the posterior's mean and log-variance, concatenated on channels."""
        return self.run({"sample": pixels})


def _static_shapes(model: ov.Model, requested: Mapping[str, list[int]]) -> dict[str, ov.PartialShape]:
    """Requested shapes per input name; -1 keeps the model's own dimension (e.g. hidden size)."""
    shapes = {}
    for port in model.inputs:
        name = port.get_any_name()
        own = port.get_partial_shape()
        if name not in requested or own.rank.is_dynamic or own.rank.get_length() != len(requested[name]):
            continue
        shapes[name] = ov.PartialShape(
            [own[axis] if size == -1 else ov.Dimension(size) for axis, size in enumerate(requested[name])]
        )
    return shapes


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lcm-openvino" / "openvino"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | bool | None) -> Path | None:
    """None/True -> $LCM_CACHE_DIR or the user's cache folder; False or "" -> no cache.

    LCM_CACHE_DIR set to an empty string, "0" or "off" turns caching off.
    """
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        env = os.environ.get("LCM_CACHE_DIR")
        if env is not None:
            return None if env.strip().lower() in ("", "0", "off", "none", "false") else Path(env)
        return default_cache_dir()
    return Path(cache_dir) if str(cache_dir) else None
