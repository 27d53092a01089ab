"""How far a bundle's image may stray from the fp32 bundle's: the bounds, measured once and stated here.

Both images come from the same prompt, seed, size and steps, both at precision f32 (so what differs is
the stored weights, the quantized UNet and --fast's token downsampling), and are compared over every
RGB value in 0-255 levels: the mean absolute difference and the PSNR. A bound holds both.

How each bound was chosen: measured on the tiny bundles (64x64, 2 steps; openvino.genai at 4 steps),
then given a 2x margin: the mean doubled and rounded up, the PSNR lowered by 6 dB (twice the RMS
error) and rounded down. Tiny random models exaggerate quantization error (random weights have no
redundancy to absorb it), so these bounds are wider than a real model's deviation; still, the fp32
image with another seed is 30-40 levels and 13-16 dB away, far outside every one of them
(test_runtime_loads_bundles.py::test_the_bounds_refuse_another_seeds_image). A different prompt is
not a test of them: the tiny text encoder moves the image by only 0.2-4 levels.

Measured 2026-12-02 with openvino 2026.4.1, openvino.genai 2026.4.1 and nncf 3.4.0 (mean levels / PSNR):
if a new OpenVINO or NNCF release moves a quantized image, measure again and restate the bound here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVELS = 255.0  # an 8-bit channel's full scale: PSNR's peak signal


@dataclass(frozen=True)
class Bound:
    mean_levels: float  # at most this mean absolute difference, in 0-255 levels
    psnr_db: float  # at least this PSNR


BOUNDS = {
    # --weights fp16: lcm-run 0.048 / 72.0 dB, openvino.genai 0.035 / 62.7 dB.
    "fp16": Bound(0.1, 56.0),
    # --weights int8: lcm-run 0.30 / 55.9 dB, openvino.genai 0.29 / 53.3 dB.
    "int8": Bound(0.6, 47.0),
    # --weights int4: lcm-run 0.41 / 53.1 dB, openvino.genai 0.40 / 51.5 dB.
    "int4": Bound(0.8, 45.0),
    # --quantize-unet int8 (PTQ, 4 calibration prompts): lcm-run 0.74 / 47.9 dB ("a red cube", seed 3:
    # 0.84 / 46.7 dB), openvino.genai 0.64 / 48.4 dB.
    "int8-ptq": Bound(1.5, 41.0),
    # --fast with the full VAE (the INT8 PTQ UNet with token downsampling): 0.93 / 45.7 dB.
    "fast": Bound(2.0, 39.0),
    # --quantize-unet int8 of a "cfg" bundle: guidance 2 with a negative prompt 1.87 / 39.5 dB (both UNet
    # passes quantized, their difference amplified), guidance 1: 1.09 / 44.5 dB.
    "int8-ptq-cfg": Bound(4.0, 33.0),
}


def levels(image: np.ndarray) -> np.ndarray:
    """0-255 float64 values of a uint8 image (openvino.genai's) or of the runtime's float [0, 1] one."""
    array = np.asarray(image)
    return array.astype(np.float64) if array.dtype == np.uint8 else array.astype(np.float64) * LEVELS


def deviation(image: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(mean absolute difference in 0-255 levels, PSNR in dB; inf when equal)."""
    difference = np.abs(levels(image) - levels(reference))
    assert difference.shape == np.asarray(reference).shape and difference.size, (image.shape, reference.shape)
    mse = float(np.mean(difference**2))
    return float(difference.mean()), math.inf if mse == 0 else 10 * math.log10(LEVELS**2 / mse)


def assert_near(image: np.ndarray, reference: np.ndarray, kind: str) -> None:
    """``image`` is within BOUNDS[kind] of ``reference`` (the fp32 bundle's image)."""
    bound = BOUNDS[kind]
    mean, psnr = deviation(image, reference)
    assert mean <= bound.mean_levels and psnr >= bound.psnr_db, (
        f"{kind}: {mean:.3f} levels and {psnr:.2f} dB from the fp32 image; "
        f"the bound is at most {bound.mean_levels} levels and at least {bound.psnr_db} dB"
    )
