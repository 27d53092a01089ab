"""What is measured: each system, variant and precision, and how to start it in a fresh process."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

# Which model files a measurement loads.
BUNDLE = "bundle"  # the FP16 OpenVINO bundle from lcm-export
BUNDLE_FAST = "bundle-fast"  # lcm-export --fast: the UNet INT8-quantized (--quantize-unet int8) plus a TAESD decoder
INT8_UNET_BUNDLES = (BUNDLE_FAST,)  # bundles whose UNet is INT8-quantized
BUNDLE_TAESD = "bundle-taesd"  # the FP16 bundle plus a TAESD decoder (lcm-export --tiny-vae)
BUNDLE_TODO = "bundle-todo"  # the FP16 bundle with --fast's token downsampling (lcm-export --token-downsampling 2)
BUNDLE_BF16 = (
    "bundle-bf16"  # the FP16 bundle's weights, matmul/conv ones stored as bfloat16 (lcm-export --weights bf16)
)
# --fast's token downsampling and INT8 TAESD with bf16 weights instead of its INT8 UNet, whose import costs
# more than it saves when a process makes one image
# (lcm-export --weights bf16 --token-downsampling 2 --tiny-vae --quantize-tiny-vae int8)
BUNDLE_ONE_SHOT = "bundle-one-shot"
SOURCE = "source"  # the diffusers folder the bundles were exported from (torch)
# An SD1.5 checkpoint (the same architecture without the LCM's guidance projection, random weights) with
# a random LoRA of LCM-LoRA's targets and rank fused: lcm-export SD15 OUT --lcm-lora LORA ("cfg" guidance)
BUNDLE_CFG = "bundle-cfg"
BUNDLE_DEEP_CACHE = "bundle-deep-cache"  # the FP16 bundle with DeepCache's shallow UNet (lcm-export --deep-cache)
DEEP_CACHE_INTERVAL = 2  # what the deep-cache rows run: a full UNet step every other step


@dataclass(frozen=True)
class Measurement:
    key: str  # unique, stable across runs: results are compared by it
    system: str  # who made it: lcm-run, openvino.genai, optimum-intel, diffusers
    label: str  # how the report names it
    environment: str  # the venv (benchmarks/venvs.py) whose python runs the worker
    worker: str  # script in benchmarks/workers/
    model: str  # BUNDLE, BUNDLE_FAST, BUNDLE_TAESD, BUNDLE_TODO, BUNDLE_BF16, BUNDLE_ONE_SHOT, BUNDLE_CFG,
    # BUNDLE_DEEP_CACHE or SOURCE
    precision: str = "default"  # default (the library's choice), f32 or bf16
    variant: str = "default"
    module: str = ""  # importable module that must exist for --quick to run it in the current python
    size: int | None = None  # square image side; None: the run's --height/--width (512 in a full run)
    runs: int | None = None  # timed images after the first, at most --runs; None: --runs
    batch: int = 1  # images per call (num_images_per_prompt)
    guidance: float | None = None  # None: the run's --guidance
    # Only with --full (and --quick, or when named by --only): the size and batch rows (minutes each at
    # real size) and what each piece of --fast is worth alone (four exports more); none is needed for the
    # headline, and a run without them ends within 40 minutes from nothing on the slowest CPU measured (Zen 4).
    full_only: bool = False


MEASUREMENTS: tuple[Measurement, ...] = (
    # The rows the targets compare run back to back at default precision, then lcm-run's options, then
    # f32: this virtual machine's speed drifts by about 10% within a run, less between neighbours.
    Measurement(
        "lcm-run", "lcm-run", "lcm-run (API)", "lcm-runtime", "lcm_runtime_worker.py", BUNDLE, module="lcm_runtime"
    ),
    Measurement(
        "genai",
        "openvino.genai",
        "openvino.genai",
        "openvino-genai",
        "genai_worker.py",
        BUNDLE,
        module="openvino_genai",
    ),
    Measurement(
        "genai-reshape",
        "openvino.genai",
        "openvino.genai (reshaped)",
        "openvino-genai",
        "genai_worker.py",
        BUNDLE,
        variant="reshape",
        module="openvino_genai",
    ),
    Measurement(
        "optimum",
        "optimum-intel",
        "optimum-intel",
        "optimum-intel",
        "optimum_worker.py",
        BUNDLE,
        module="optimum.intel",
    ),
    Measurement(
        "lcm-run-fast",
        "lcm-run",
        "lcm-run (API), --fast",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_FAST,
        variant="fast",
        module="lcm_runtime",
    ),
    # DeepCache (lcm-run --deep-cache 2): the UNet's shallow path every other step, on --fast and alone.
    Measurement(
        "lcm-run-fast-deep-cache",
        "lcm-run",
        f"lcm-run (API), --fast --deep-cache {DEEP_CACHE_INTERVAL}",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_FAST,
        variant="fast-deep-cache",
        module="lcm_runtime",
    ),
    Measurement(
        "lcm-run-deep-cache",
        "lcm-run",
        f"lcm-run (API), --deep-cache {DEEP_CACHE_INTERVAL}",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_DEEP_CACHE,
        variant="deep-cache",
        module="lcm_runtime",
    ),
    Measurement(
        "lcm-run-one-shot",
        "lcm-run",
        "lcm-run (API), bf16 weights + token downsampling 2 + --vae tiny",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_ONE_SHOT,
        variant="tiny-vae",
        full_only=True,
        module="lcm_runtime",
    ),
    Measurement(
        "lcm-run-bf16",
        "lcm-run",
        "lcm-run (API), bf16 weights",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_BF16,
        variant="bf16-weights",
        full_only=True,
        module="lcm_runtime",
    ),
    Measurement(
        "lcm-run-taesd",
        "lcm-run",
        "lcm-run (API), --vae tiny",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_TAESD,
        variant="tiny-vae",
        full_only=True,
        module="lcm_runtime",
    ),
    Measurement(
        "lcm-run-todo",
        "lcm-run",
        "lcm-run (API), token downsampling 2",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_TODO,
        variant="token-downsampling",
        full_only=True,
        module="lcm_runtime",
    ),
    # The --fast bundle's UNet (INT8 and token downsampling) with the full VAE.
    Measurement(
        "lcm-run-int8",
        "lcm-run",
        "lcm-run (API), INT8 UNet + token downsampling",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_FAST,
        module="lcm_runtime",
    ),
    Measurement(
        "lcm-run-f32",
        "lcm-run",
        "lcm-run (API)",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE,
        "f32",
        module="lcm_runtime",
    ),
    Measurement(
        "genai-reshape-f32",
        "openvino.genai",
        "openvino.genai (reshaped)",
        "openvino-genai",
        "genai_worker.py",
        BUNDLE,
        "f32",
        variant="reshape",
        module="openvino_genai",
    ),
    Measurement(
        "optimum-f32",
        "optimum-intel",
        "optimum-intel",
        "optimum-intel",
        "optimum_worker.py",
        BUNDLE,
        "f32",
        runs=1,  # a secondary row: one timed image after the first
        module="optimum.intel",
    ),
    Measurement(
        "diffusers-f32",
        "diffusers",
        "diffusers (torch)",
        "diffusers-torch",
        "diffusers_worker.py",
        SOURCE,
        "f32",
        runs=1,  # a secondary row: one timed image after the first
        module="diffusers",
    ),
    Measurement(
        "diffusers-bf16",
        "diffusers",
        "diffusers (torch)",
        "diffusers-torch",
        "diffusers_worker.py",
        SOURCE,
        "bf16",
        runs=1,  # a secondary row: one timed image after the first
        module="diffusers",
    ),
    # An SD1.5 checkpoint made fast with LCM-LoRA (cfg guidance): at guidance 1.0 one UNet pass a step, as
    # the distilled model; above 1 the UNet runs on [uncond, cond], and a negative prompt means something.
    Measurement(
        "lcm-run-cfg",
        "lcm-run",
        "lcm-run (API), SD1.5 + LCM-LoRA, guidance 1.0",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_CFG,
        variant="cfg",
        guidance=1.0,
        module="lcm_runtime",
    ),
    Measurement(
        "genai-cfg",
        "openvino.genai",
        "openvino.genai, SD1.5 + LCM-LoRA, guidance 1.0",
        "openvino-genai",
        "genai_worker.py",
        BUNDLE_CFG,
        variant="cfg",
        guidance=1.0,
        module="openvino_genai",
    ),
    Measurement(
        "lcm-run-cfg-1.5",
        "lcm-run",
        "lcm-run (API), SD1.5 + LCM-LoRA, guidance 1.5",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE_CFG,
        variant="cfg",
        guidance=1.5,
        module="lcm_runtime",
    ),
    Measurement(
        "genai-cfg-1.5",
        "openvino.genai",
        "openvino.genai, SD1.5 + LCM-LoRA, guidance 1.5",
        "openvino-genai",
        "genai_worker.py",
        BUNDLE_CFG,
        variant="cfg",
        guidance=1.5,
        module="openvino_genai",
    ),
    # Memory and latency by image size; the 512 rows are lcm-run's and genai's above. Last, so that
    # a spent budget skips these and never the comparison at 512. One timed image: minutes each.
    Measurement(
        "lcm-run-768",
        "lcm-run",
        "lcm-run (API), 768x768",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE,
        size=768,
        runs=1,
        full_only=True,
        module="lcm_runtime",
    ),
    Measurement(
        "genai-768",
        "openvino.genai",
        "openvino.genai, 768x768",
        "openvino-genai",
        "genai_worker.py",
        BUNDLE,
        size=768,
        runs=1,
        full_only=True,
        module="openvino_genai",
    ),
    Measurement(
        "lcm-run-1024",
        "lcm-run",
        "lcm-run (API), 1024x1024",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE,
        size=1024,
        runs=1,
        full_only=True,
        module="lcm_runtime",
    ),
    Measurement(
        "genai-1024",
        "openvino.genai",
        "openvino.genai, 1024x1024",
        "openvino-genai",
        "genai_worker.py",
        BUNDLE,
        size=1024,
        runs=1,
        full_only=True,
        module="openvino_genai",
    ),
    # 4 images in one call, against the 1-image rows lcm-run and genai (images per minute).
    Measurement(
        "lcm-run-batch4",
        "lcm-run",
        "lcm-run (API), 4 images per call",
        "lcm-runtime",
        "lcm_runtime_worker.py",
        BUNDLE,
        variant="batch4",
        batch=4,
        runs=1,
        full_only=True,
        module="lcm_runtime",
    ),
    Measurement(
        "genai-batch4",
        "openvino.genai",
        "openvino.genai, 4 images per call",
        "openvino-genai",
        "genai_worker.py",
        BUNDLE,
        variant="batch4",
        batch=4,
        runs=1,
        full_only=True,
        module="openvino_genai",
    ),
)

BY_KEY = {measurement.key: measurement for measurement in MEASUREMENTS}
BASELINE = "lcm-run"  # ratios in the report are relative to this measurement
F32_BASELINE = "lcm-run-f32"
DEVIATION_FIELD = "deviation_from_f32"  # each run's distance from F32_BASELINE's first image (deviation.py)
GENAI_BASELINE = "genai"  # openvino.genai as a user first tries it: the targets below are ratios to it

# The targets for lcm-run, as ratios to GENAI_BASELINE at the benchmarked size (at most).
# A key that was not measured is simply absent from the report.
TARGETS: dict[str, dict[str, float]] = {
    BASELINE: {"latency": 1.00, "peak_rss": 0.60},  # default settings
    "lcm-run-fast": {"latency": 0.30},
    "lcm-run-fast-deep-cache": {"latency": 0.30},
}


# The headline comparisons (default and --fast against genai, the equal-precision rows, --fast against
# default): each group's systems are resident side by side and take turns image by image, so that the
# per-round ratios cancel the machine's drift (run.py: measure_interleaved; the report: their median).
# They take turns in the order written, then reversed: compared systems stand next to each other, since
# this VM's speed also moves in waves of 20-40 s that a round of the first group (~65 s on Zen 4) spans.
INTERLEAVED: tuple[tuple[str, ...], ...] = (
    ("genai-reshape", BASELINE, GENAI_BASELINE, "lcm-run-fast", "lcm-run-fast-deep-cache", "lcm-run-deep-cache"),
    (F32_BASELINE, "genai-reshape-f32"),
    ("lcm-run-cfg", "genai-cfg", "lcm-run-cfg-1.5", "genai-cfg-1.5"),
)
# `python -m benchmarks --headline`: the interleaved comparisons alone, a CPU kind's ratios in ~20 minutes.
HEADLINE_KEYS: tuple[str, ...] = tuple(key for group in INTERLEAVED for key in group)
# The LCM-LoRA rows against openvino.genai on the same bundle at the same guidance (report: their table).
CFG_PAIRS: tuple[tuple[str, str], ...] = (("lcm-run-cfg", "genai-cfg"), ("lcm-run-cfg-1.5", "genai-cfg-1.5"))


def interleaved_group(key: str) -> tuple[str, ...]:
    """The keys measured together with ``key`` (itself included; alone when it is in no group)."""
    return next((group for group in INTERLEAVED if key in group), (key,))


def measurement_groups(selected: list[Measurement]) -> list[list[Measurement]]:
    """The selected measurements in the order they run: each alone, or with its interleaved group where
    the group's first selected member stands, in the group's own order (its turn order)."""
    chosen = {measurement.key: measurement for measurement in selected}
    groups: list[list[Measurement]] = []
    done: set[str] = set()
    for measurement in selected:
        if measurement.key not in done:
            groups.append([chosen[key] for key in interleaved_group(measurement.key) if key in chosen])
            done.update(member.key for member in groups[-1])
    return groups


def available_here(measurement: Measurement) -> bool:
    """Whether the current python can run it (--quick never builds environments)."""
    root = measurement.module.split(".")[0]
    try:
        return importlib.util.find_spec(root) is not None and importlib.util.find_spec(measurement.module) is not None
    except ModuleNotFoundError:
        return False


def select(keys: list[str] | None) -> list[Measurement]:
    if not keys:
        return list(MEASUREMENTS)
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown:
        raise SystemExit(f"unknown measurement(s) {', '.join(unknown)}; choose from {', '.join(BY_KEY)}")
    return [BY_KEY[key] for key in keys]
