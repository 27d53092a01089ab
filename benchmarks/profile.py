"""Where a UNet step's time goes, and what an INT8 VAE decoder would buy: the two studies behind
docs/performance.md. Run alone on a quiet machine, in the development environment:

    python -m benchmarks.profile unet BUNDLE [BUNDLE ...]   # OpenVINO per-layer counters, one step at 512x512
    python -m benchmarks.profile unet-parts BUNDLE [...]    # the same counters by UNet part: what T-GATE and
                                                            # DeepCache could skip
    python -m benchmarks.profile vae-int8 BUNDLE            # nncf.quantize the VAE decoder: speed and drift

Both print Markdown tables.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LATENT = 64  # 512x512 images
REPEATS = 3


def _compiled(core: Any, xml: Path, shapes: dict[str, list[int]], config: dict[str, Any]) -> Any:
    model = core.read_model(str(xml))
    model.reshape(shapes)
    return core.compile_model(model, "CPU", config)


def _unet_inputs(model: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at 512x512 for a UNet IR, its hidden sizes read from the model."""
    rng = np.random.default_rng(seed)
    sizes = {port.get_any_name(): port.get_partial_shape() for port in model.inputs}
    hidden = sizes["encoder_hidden_states"][2].get_length()
    cond = sizes["timestep_cond"][1].get_length()
    channels = sizes["sample"][1].get_length()
    return {
        "sample": rng.standard_normal((1, channels, LATENT, LATENT)).astype(np.float32),
        "timestep": np.array([499]),
        "encoder_hidden_states": rng.standard_normal((1, 77, hidden)).astype(np.float32),
        "timestep_cond": rng.standard_normal((1, cond)).astype(np.float32),
    }


def _profiled_step(bundle: Path) -> tuple[Any, list[float]]:
    """One UNet step at 512x512 with OpenVINO's per-layer counters: the request and the step times."""
    import openvino as ov

    core = ov.Core()
    xml = bundle / "unet" / "openvino_model.xml"
    inputs = _unet_inputs(core.read_model(str(xml)))
    shapes = {name: list(value.shape) for name, value in inputs.items()}
    request = _compiled(core, xml, shapes, {"PERF_COUNT": True}).create_infer_request()
    request.infer(inputs)
    seconds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        request.infer(inputs)
        seconds.append(time.perf_counter() - started)
    return request, seconds


def profile_unet(bundle: Path) -> list[str]:
    request, seconds = _profiled_step(bundle)
    by_kind: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for layer in request.get_profiling_info():
        if layer.status == layer.Status.EXECUTED:
            entry = by_kind[(_kind(layer), layer.exec_type)]
            entry[0] += layer.real_time.total_seconds()
            entry[1] += 1
    total = sum(entry[0] for entry in by_kind.values())
    lines = [
        f"### {bundle.name}: one UNet step at 512x512, {statistics.median(seconds):.3f} s (median of {REPEATS})",
        "",
        "| Layer kind | Kernel | Layers | ms | Share |",
        "|---|---|---|---|---|",
    ]
    for (kind, kernel), (spent, count) in sorted(by_kind.items(), key=lambda item: -item[1][0])[:14]:
        lines.append(f"| {kind} | {kernel} | {count} | {spent * 1e3:.1f} | {100 * spent / total:.0f}% |")
    return lines + [""]


# The UNet module a layer came from, as the PyTorch frontend names nodes: "__module.unet.<path>/aten::...".
_MODULE = re.compile(r"__module\.unet\.([^/]+)")
PARTS = (
    ("self-attention (attn1)", re.compile(r"\.attn1\b")),
    ("cross-attention (attn2)", re.compile(r"\.attn2\b")),
    ("feed-forward", re.compile(r"\.ff\.")),
    ("transformer norms and projections", re.compile(r"\.attentions\.")),
    ("resnets", re.compile(r"\.resnets\.")),
    ("down/up-samplers", re.compile(r"samplers\.")),
    ("time embedding", re.compile(r"^time_")),
    ("conv_in, conv_out", re.compile(r"^conv_")),
)


def unet_part(module: str | None) -> str:
    if module is None:
        return "not attributed (fused or renamed)"
    return next((part for part, pattern in PARTS if pattern.search(module)), "other")


def in_shallow_path(module: str | None, last_up_block: int, last_layer: int) -> bool:
    """Whether DeepCache's skip step (bundle.UNET_SHALLOW) recomputes this module."""
    if module is None:
        return False
    prefixes = ("conv_in", "time_proj", "time_embedding", "conv_norm_out", "conv_act", "conv_out")
    layer = rf"^up_blocks\.{last_up_block}\.(resnets|attentions)\.{last_layer}\b"
    return module.startswith(prefixes) or re.match(layer, module) is not None


def profile_unet_parts(bundle: Path, steps: int = 4) -> list[str]:
    """Where a step goes by UNet part, and so the most T-GATE (cross-attention cached after the first
    step of ``steps``) and DeepCache (interval 2: every other step runs only the shallow path) can save."""
    import json

    config = json.loads((bundle / "unet" / "config.json").read_text())
    last_up_block = len(config["up_block_types"]) - 1
    last_layer = int(config["layers_per_block"])  # an up block has layers_per_block + 1 layers
    request, seconds = _profiled_step(bundle)
    by_part: dict[str, float] = collections.defaultdict(float)
    shallow = 0.0
    for layer in request.get_profiling_info():
        if layer.status != layer.Status.EXECUTED:
            continue
        found = _MODULE.search(layer.node_name)
        module = found.group(1) if found else None
        spent = layer.real_time.total_seconds()
        by_part[unet_part(module)] += spent
        shallow += spent if in_shallow_path(module, last_up_block, last_layer) else 0.0
    total = sum(by_part.values())
    cross = by_part["cross-attention (attn2)"] / total
    shallow_share = shallow / total
    lines = [
        f"### {bundle.name}: one UNet step at 512x512 by part, {statistics.median(seconds):.3f} s "
        f"(median of {REPEATS}; counters sum to {total:.3f} s)",
        "",
        "| Part | ms | Share |",
        "|---|---|---|",
    ]
    for part, spent in sorted(by_part.items(), key=lambda item: -item[1]):
        lines.append(f"| {part} | {spent * 1e3:.1f} | {100 * spent / total:.1f}% |")
    full_steps = -(-steps // 2)
    lines += [
        "",
        f"- DeepCache's shallow path (a skip step): {100 * shallow_share:.1f}% of a step. Interval 2 over {steps} "
        f"steps: {full_steps} full + {steps - full_steps} shallow = "
        f"{(full_steps + (steps - full_steps) * shallow_share) / steps:.2f}x the UNet time.",
        f"- T-GATE after step 1 of {steps} skips cross-attention in {steps - 1} steps: at most "
        f"{1 - (steps - 1) * cross / steps:.2f}x the UNet time.",
        "",
    ]
    return lines


def _kind(layer: Any) -> str:
    """Name attention subgraphs apart from the other fused subgraphs: they are a third of a step."""
    if layer.node_type == "Subgraph" and "scaled_dot_product" in layer.node_name:
        return "Subgraph (attention)"
    return layer.node_type


def vae_int8(bundle: Path, samples: int = 4) -> list[str]:
    import nncf
    import openvino as ov

    core = ov.Core()
    xml = bundle / "vae_decoder" / "openvino_model.xml"
    rng = np.random.default_rng(0)
    # Unit-variance latents divided by SD's scaling factor: the decoder's input range in a real run.
    latents = [(rng.standard_normal((1, 4, LATENT, LATENT)) / 0.18215).astype(np.float32) for _ in range(samples + 1)]
    quantized = nncf.quantize(
        core.read_model(str(xml)),
        nncf.Dataset(latents[:samples]),
        subset_size=samples,
        model_type=nncf.ModelType.TRANSFORMER,
    )
    shapes = {"latent_sample": [1, 4, LATENT, LATENT]}
    probe = {"latent_sample": latents[-1]}
    with tempfile.TemporaryDirectory() as scratch:
        int8_xml = Path(scratch) / "vae_decoder_int8.xml"
        ov.save_model(quantized, str(int8_xml))
        runs = {"f32": (xml, {"INFERENCE_PRECISION_HINT": "f32"}), "bf16 (default)": (xml, {}), "int8": (int8_xml, {})}
        images, seconds = {}, {}
        for name, (path, config) in runs.items():
            request = _compiled(core, path, shapes, config).create_infer_request()
            images[name] = _to_levels(request.infer(probe)[0])
            timed = []
            for _ in range(REPEATS):
                started = time.perf_counter()
                request.infer(probe)
                timed.append(time.perf_counter() - started)
            seconds[name] = statistics.median(timed)
    lines = [
        f"### {bundle.name}: VAE decoder at 512x512, NNCF INT8 post-training quantization ({samples} latents)",
        "",
        "| Decoder | Decode s | Max abs. difference from f32 | Mean | PSNR dB |",
        "|---|---|---|---|---|",
    ]
    for name in runs:
        difference = np.abs(images[name] - images["f32"])
        mse = float(np.mean(difference**2))
        psnr = "∞" if mse == 0 else f"{10 * np.log10(255.0**2 / mse):.1f}"
        lines.append(f"| {name} | {seconds[name]:.3f} | {difference.max():.0f} | {difference.mean():.2f} | {psnr} |")
    return lines + [""]


def _to_levels(decoded: np.ndarray) -> np.ndarray:
    return np.round(np.clip(decoded / 2 + 0.5, 0, 1) * 255).astype(np.float64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=tuple(STUDIES))
    parser.add_argument("bundles", nargs="+", type=Path)
    args = parser.parse_args(argv)
    for bundle in args.bundles:
        print("\n".join(STUDIES[args.study](bundle)))


STUDIES = {"unet": profile_unet, "unet-parts": profile_unet_parts, "vae-int8": vae_int8}


if __name__ == "__main__":
    main()
