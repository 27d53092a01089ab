"""The deviation-from-f32 numbers on small synthetic PNGs whose differences are known exactly."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

SIDE = 4  # 4x4 RGB: 48 channel values


def save_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(path)
    return path


def gradient() -> np.ndarray:
    return (np.arange(SIDE * SIDE * 3).reshape(SIDE, SIDE, 3) * 5).astype(np.uint8)  # 0..235, room for +1


def test_identical_images_have_zero_difference_and_infinite_psnr(
    tmp_path: Path, benchmarks_package: ModuleType
) -> None:
    from benchmarks.deviation import image_deviation

    reference = save_png(tmp_path / "reference.png", gradient())
    copy = save_png(tmp_path / "copy.png", gradient())
    assert image_deviation(copy, reference) == {"max": 0.0, "mean": 0.0, "psnr_db": math.inf}


def test_one_value_one_level_apart(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks.deviation import image_deviation

    changed = gradient()
    changed[1, 2, 0] -= 1  # a level below: uint8 must not wrap to 255 in the subtraction
    deviation = image_deviation(save_png(tmp_path / "a.png", changed), save_png(tmp_path / "b.png", gradient()))
    values = SIDE * SIDE * 3
    assert deviation["max"] == 1.0
    assert deviation["mean"] == pytest.approx(1 / values)
    assert deviation["psnr_db"] == pytest.approx(10 * math.log10(255**2 * values))  # MSE = 1/48: 64.9 dB


def test_every_value_one_level_apart_is_48_13_db(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks.deviation import image_deviation

    deviation = image_deviation(save_png(tmp_path / "a.png", gradient() + 1), save_png(tmp_path / "b.png", gradient()))
    assert deviation["max"] == 1.0 and deviation["mean"] == 1.0
    assert deviation["psnr_db"] == pytest.approx(20 * math.log10(255)) and round(deviation["psnr_db"], 2) == 48.13


def test_black_against_white_is_the_worst_case(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks.deviation import image_deviation

    black, white = np.zeros((SIDE, SIDE, 3)), np.full((SIDE, SIDE, 3), 255)
    deviation = image_deviation(save_png(tmp_path / "a.png", black), save_png(tmp_path / "b.png", white))
    assert deviation == {"max": 255.0, "mean": 255.0, "psnr_db": 0.0}


def test_different_sizes_have_no_deviation(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks.deviation import image_deviation

    small = save_png(tmp_path / "small.png", np.zeros((SIDE, SIDE, 3)))
    wide = save_png(tmp_path / "wide.png", np.zeros((SIDE, 2 * SIDE, 3)))
    assert image_deviation(small, wide) is None


def test_attach_deviations_to_the_runs_of_a_results_file(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks.deviation import FIELD, attach_deviations

    save_png(tmp_path / "lcm-run-f32" / "first.png", gradient())
    save_png(tmp_path / "lcm-run" / "first.png", gradient() + 1)
    save_png(tmp_path / "lcm-run-768" / "first.png", np.zeros((2 * SIDE, 2 * SIDE, 3)))
    runs = [
        {"key": "lcm-run-f32", "status": "ok"},
        {"key": "lcm-run", "status": "ok"},
        {"key": "lcm-run-768", "status": "ok"},
        {"key": "lcm-run-lost", "status": "ok"},
        {"key": "genai", "status": "failed"},
    ]
    attach_deviations(runs, tmp_path, "lcm-run-f32")
    by_key = {run["key"]: run for run in runs}
    assert by_key["lcm-run-f32"][FIELD]["psnr_db"] == math.inf
    assert by_key["lcm-run"][FIELD]["mean"] == 1.0
    assert by_key["lcm-run-768"][FIELD] is None  # another size
    assert by_key["lcm-run-lost"][FIELD] is None  # no first.png
    assert FIELD not in by_key["genai"]  # only ok runs are compared

    # Without an ok reference measurement nothing can be compared.
    runs = [{"key": "lcm-run-f32", "status": "failed"}, {"key": "lcm-run", "status": "ok"}]
    attach_deviations(runs, tmp_path, "lcm-run-f32")
    assert runs[1][FIELD] is None
