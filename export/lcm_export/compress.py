"""Weight precision per component: FP32/FP16 on save, NNCF weight-only INT8/INT4 compression.

INT4 goes to the UNet only: it holds 70% of the weights, while the text encoder and the
VAE lose visibly more quality at 4 bits for little size gain, so they get INT8.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcm_runtime.bundle import INT8_PTQ

if TYPE_CHECKING:
    import openvino as ov

WEIGHT_OPTIONS = ("fp32", "fp16", "int8", "int4")
INT4_GROUP_SIZE = 64


def component_precision(weights: str, component: str) -> str:
    """The precision label (bundle.PRECISIONS) a component gets under --weights."""
    if weights not in WEIGHT_OPTIONS:
        raise ValueError(f"unknown weights option {weights!r}")
    if weights == "int4" and component != "unet":
        return "int8"
    return weights


def compression_details(precision: str) -> dict[str, Any]:
    """What the manifest records about how a component's weights were compressed."""
    if precision == "int8":
        return {"method": "nncf.compress_weights", "mode": "int8_asym"}
    if precision == "int4":
        return {
            "method": "nncf.compress_weights",
            "mode": "int4_sym",
            "group_size": INT4_GROUP_SIZE,
            "ratio": 1.0,
            "group_size_fallback_mode": "adjust",
        }
    if precision == INT8_PTQ:
        return {"method": "nncf.quantize", "mode": "int8", "see": "calibration"}
    return {"method": "ov.save_model", "compress_to_fp16": precision != "fp32"}


def compress_weights(model: "ov.Model", precision: str) -> "ov.Model":
    """Apply weight-only compression for int8/int4; fp32/fp16 are handled at save time."""
    if precision in ("fp32", "fp16", INT8_PTQ):
        return model
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    if precision == "int8":
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    if precision == "int4":
        # Layers narrower than the group size (tiny models, some attention projections)
        # would make NNCF fail outright; ADJUST picks the largest group size that divides them.
        return nncf.compress_weights(
            model,
            mode=nncf.CompressWeightsMode.INT4_SYM,
            group_size=INT4_GROUP_SIZE,
            ratio=1.0,
            advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST),
        )
    raise ValueError(f"unknown precision {precision!r}")


def save_ir(model: "ov.Model", xml_path: Path, weights: str) -> None:
    """Save IR; everything not already int8/int4 is stored as FP16 unless --weights fp32."""
    from .ir import save_reproducibly

    save_reproducibly(model, xml_path, compress_to_fp16=weights != "fp32")
