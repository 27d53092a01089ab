"""How far each measurement's first image (seed 0) is from lcm-run's f32 one: same seed, prompt and size.

With random weights the images are structureless, so these numbers measure numerical drift (bf16,
INT8, TAESD and the peers' own arithmetic), not image quality. Runs in the harness's parent process
(the development environment: numpy and Pillow); report.py only reads the stored numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .systems import DEVIATION_FIELD as FIELD

LEVELS = 255.0  # an 8-bit channel's full scale: PSNR's peak signal


def image_deviation(image: Path, reference: Path) -> dict[str, float] | None:
    """Max and mean absolute difference in 0-255 levels over all RGB values, and PSNR in dB
    (inf when identical); None when the sizes differ."""
    with Image.open(image) as first, Image.open(reference) as second:
        if first.size != second.size:
            return None
        # float64: uint8 subtraction would wrap around
        pixels = np.asarray(first.convert("RGB"), dtype=np.float64)
        expected = np.asarray(second.convert("RGB"), dtype=np.float64)
    difference = np.abs(pixels - expected)
    mse = float(np.mean(difference**2))
    return {
        "max": float(difference.max()),
        "mean": float(difference.mean()),
        "psnr_db": math.inf if mse == 0 else 10 * math.log10(LEVELS**2 / mse),
    }


def attach_deviations(runs: list[dict[str, Any]], runs_dir: Path, reference_key: str) -> None:
    """Sets run[FIELD] on every ok run from runs_dir/<key>/first.png: None when either image is
    missing or unreadable, or the sizes differ."""
    reference = runs_dir / reference_key / "first.png"
    reference_ok = any(run["key"] == reference_key and run.get("status") == "ok" for run in runs)
    for run in runs:
        if run.get("status") != "ok":
            continue
        image = runs_dir / run["key"] / "first.png"
        try:
            run[FIELD] = image_deviation(image, reference) if reference_ok else None
        except OSError:  # a missing or truncated PNG: no number rather than no results file
            run[FIELD] = None
