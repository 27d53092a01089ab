"""Peak matrix-multiply throughput of OpenVINO's CPU plugin at f32, bf16 and int8 (GOP/s).

Standalone script (runs in the lcm-runtime environment: only openvino and numpy):
    python matmul_peak.py OUT.json [--quick]

One MatMul with constant weights, the shape of the layers that dominate the UNet and VAE, compiled
as the runtime compiles its models. int8 is requested the way OpenVINO's low-precision
transformations expect it: FakeQuantize on the activations (u8) and on the weights (i8). Each
result records the precision the plugin actually ran the matmul in, read from the executed graph.

The peak is the matmul kernel's own time (OpenVINO's per-layer counters), not the whole inference:
the inference also converts the f32 input to bf16 or u8, which at 2048x2048 is a fifth of its time
for int8, and inside a model that conversion is fused into other layers. Timing whole inferences
understated the int8 peak by a third: the UNet's own int8 convolutions ran faster than it.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import openvino as ov
import openvino.opset13 as ops

FULL_SIZES = (1024, 2048, 4096)
QUICK_SIZES = (256,)


def build_matmul(size: int, int8: bool) -> ov.Model:
    rng = np.random.default_rng(0)
    activations = ops.parameter([size, size], ov.Type.f32, name="a")
    weights = ops.constant(rng.standard_normal((size, size), dtype=np.float32) * 0.05)
    left, right = activations, weights
    if int8:

        def fake_quantize(node: ov.Node, low: float, high: float) -> ov.Node:
            return ops.fake_quantize(node, np.float32(low), np.float32(high), np.float32(low), np.float32(high), 256)

        left = fake_quantize(activations, 0.0, 2.55)  # unsigned activations, as after a ReLU/SiLU
        right = fake_quantize(weights, -1.28, 1.27)  # signed symmetric weights
    return ov.Model([ops.matmul(left, right, False, False)], [activations], f"matmul{size}")


def executed_precision(compiled: ov.CompiledModel) -> str:
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in ("FullyConnected", "MatMul", "Gemm"):
            # e.g. "bf16 brgemm_avx512_amx_bf16": the kernel name shows whether AMX/VNNI ran it.
            return f"{info['runtimePrecision'].astype(str)} {info['primitiveType'].astype(str)}"
    return "unknown"


def kernel_seconds(request: ov.InferRequest) -> float:
    """The matmul layer's own time in the last inference, from the per-layer counters."""
    for layer in request.get_profiling_info():
        if layer.status == layer.Status.EXECUTED and (
            "FullyConnected" in layer.node_type or "MatMul" in layer.node_type
        ):
            return layer.real_time.total_seconds()
    raise RuntimeError("no matmul layer ran")


def measure(core: ov.Core, size: int, precision: str, seconds: float) -> dict:
    int8 = precision == "int8"
    hint = "f32" if precision == "f32" else "bf16"  # int8 matmuls keep bf16 for whatever is not int8
    compiled = core.compile_model(
        build_matmul(size, int8),
        "CPU",
        {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True},
    )
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.random.default_rng(1).random((size, size), dtype=np.float32)))
    for _ in range(3):
        request.infer()
    times, kernel_times = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        started = time.perf_counter()
        request.infer()
        times.append(time.perf_counter() - started)
        kernel_times.append(kernel_seconds(request))
    best, best_kernel = min(times), min(kernel_times)
    return {
        "size": size,
        "precision_requested": precision,
        "precision_executed": executed_precision(compiled),
        "best_seconds": best,
        "best_kernel_seconds": best_kernel,
        "gops": 2 * size**3 / best_kernel / 1e9,
        "inference_gops": 2 * size**3 / best / 1e9,
    }


def main() -> None:
    out = sys.argv[1]
    quick = "--quick" in sys.argv[2:]
    core = ov.Core()
    results = []
    for precision in ("f32", "bf16", "int8"):
        for size in QUICK_SIZES if quick else FULL_SIZES:
            results.append(measure(core, size, precision, 0.2 if quick else 3.0))
    peak = {
        precision: max(r["gops"] for r in results if r["precision_requested"] == precision)
        for precision in ("f32", "bf16", "int8")
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump({"peak_gops": peak, "measurements": results, "openvino": ov.get_version()}, handle, indent=2)


if __name__ == "__main__":
    main()
