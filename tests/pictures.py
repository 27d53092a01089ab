"""Input pictures and masks for the image-to-image and inpainting parity tests: smooth, varied, seeded."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def picture(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """Gradients plus a little noise: structure the VAE sees, different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [np.sin(x / (5 + 3 * k + seed)) * np.cos(y / (7 + k)) for k in range(3)]
    pixels = (np.stack(channels, axis=-1) * 0.4 + 0.5 + rng.normal(0, 0.05, (height, width, 3))).clip(0, 1)
    rgb = Image.fromarray((pixels * 255).round().astype(np.uint8))
    if mode == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray((rng.uniform(0, 255, (height, width))).astype(np.uint8)))
        return rgba
    return rgb.convert(mode)


def box_mask(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    """White (repaint) inside ``box`` (left, top, right, bottom), black elsewhere, with a soft edge."""
    mask = np.zeros((height, width), dtype=np.float32)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 1.0
    mask[max(top - 2, 0) : top, left:right] = 0.45  # just below the 0.5 threshold: kept
    return Image.fromarray((mask * 255).round().astype(np.uint8), mode="L")


def case_pictures(case: dict[str, Any]) -> dict[str, Image.Image]:
    """The ``image`` and ``mask_image`` arguments a golden case names: ``picture`` [width, height, seed] and
    ``mask_box`` [left, top, right, bottom] (tests/runtime/data/tiny_golden.json)."""
    arguments = {}
    if "picture" in case:
        width, height, seed = case["picture"]
        arguments["image"] = picture(width, height, seed=seed)
    if "mask_box" in case:
        width, height, _ = case["picture"]
        arguments["mask_image"] = box_mask(width, height, tuple(case["mask_box"]))
    return arguments
