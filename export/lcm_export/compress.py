"""Weight precision per component: FP32/FP16/BF16 on save, NNCF weight-only INT8/INT4 compression.

INT4 goes to the UNet only: it holds 70% of the weights, while the text encoder and the
VAE lose visibly more quality at 4 bits for little size gain, so they get INT8.

BF16 is FP16 with the matmul and convolution weights converted to bfloat16 exactly as OpenVINO's
CPU plugin converts them when it computes in bf16 (round to nearest even, from the FP16 values).
On such CPUs the image is bit-identical to the FP16 bundle's, but every start skips that
conversion: the compile cache keeps the weights as the IR has them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcm_runtime.bundle import INT8_PTQ

from .options import WEIGHT_OPTIONS

if TYPE_CHECKING:
    import numpy as np
    import openvino as ov

# The ops whose FP16 weights the CPU plugin converts to bf16 itself; biases and norms stay FP16.
BF16_WEIGHT_CONSUMERS = frozenset({"MatMul", "Convolution"})
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
    if precision == "bf16":
        return {
            "method": "ov.save_model",
            "compress_to_fp16": True,
            "bf16": f"weights of {', '.join(sorted(BF16_WEIGHT_CONSUMERS))}, rounded to nearest even from fp16",
        }
    return {"method": "ov.save_model", "compress_to_fp16": precision != "fp32"}


def compress_weights(model: ov.Model, precision: str) -> ov.Model:
    """Apply weight-only compression for int8/int4; fp32/fp16/bf16 are handled at save time."""
    if precision in ("fp32", "fp16", "bf16", INT8_PTQ):
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


def save_ir(model: ov.Model, xml_path: Path, weights: str) -> None:
    """Save IR; everything not already int8/int4 is stored as FP16 unless --weights fp32
    (and, with --weights bf16, the matmul and convolution weights as bfloat16)."""
    from .ir import save_reproducibly

    if weights == "bf16":
        from openvino._offline_transformations import compress_model_transformation

        compress_model_transformation(model)  # what compress_to_fp16 does on save, here in place
        store_matmul_weights_as_bf16(model)
        save_reproducibly(model, xml_path, compress_to_fp16=False)
        return
    save_reproducibly(model, xml_path, compress_to_fp16=weights != "fp32")


def store_matmul_weights_as_bf16(model: ov.Model) -> None:
    """Replace each FP16 weight that only feeds (through its Convert) matmuls and convolutions by
    its bfloat16 rounding."""
    import numpy as np
    import openvino as ov

    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_output_element_type(0) != ov.Type.f16:
            continue
        if len(node.get_output_shape(0)) < 2 or not _only_feeds(node, BF16_WEIGHT_CONSUMERS):
            continue
        values = node.get_data().astype(np.float32)
        bf16 = ov.Tensor(ov.Type.bf16, list(values.shape))
        bf16.data.view(np.uint16)[...] = bfloat16_bits(values)
        constant = ov.op.Constant(bf16)
        constant.set_friendly_name(node.get_friendly_name())
        node.output(0).replace(constant.output(0))


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded to nearest even (NaN and inf stay so)."""
    import numpy as np

    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def _only_feeds(constant: ov.Node, kinds: frozenset[str]) -> bool:
    """Whether every use of ``constant`` is a Convert whose every use is one of ``kinds``."""
    converts = [target.get_node() for target in constant.output(0).get_target_inputs()]
    if not converts or any(convert.get_type_name() != "Convert" for convert in converts):
        return False
    users = [target.get_node() for convert in converts for target in convert.output(0).get_target_inputs()]
    return bool(users) and all(user.get_type_name() in kinds for user in users)
