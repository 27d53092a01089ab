"""DeepCache (Ma, Fang and Wang, 2023): a full UNet step every ``interval`` steps, and between them
only the UNet's shallow path on the deep feature the last full step left (bundle.UNET_SHALLOW).

The same schedule as the ``deepcache`` package's DeepCacheSDHelper with ``cache_branch_id=0`` and
uniform skipping: step k of a call (counted from its first step, so image-to-image's shortened
schedule too) runs the full UNet when k % interval == 0. A skip step costs conv_in, the time embedding,
the last up block's last resnet and transformer and conv_out: about a tenth of a full step of SD1.5.
An approximation: the image changes (the benchmark reports by how much).
"""

from __future__ import annotations

import numpy as np

from . import validation
from .bundle import UNET_SHALLOW
from .errors import InputError
from .loading import ModelFolder
from .models import ShallowUNet, UNet

MAX_INTERVAL = 50  # beyond any LCM schedule: every step after the first would reuse its feature


def check_interval(folder: ModelFolder, interval: int) -> int:
    """``deep_cache_interval``: 1 runs every step in full (no DeepCache); more needs a bundle with unet_shallow."""
    interval = validation.whole_number(
        interval, "deep_cache_interval", 1, MAX_INTERVAL, " (1: every step runs the full UNet)"
    )
    if interval > 1 and not folder.xml(UNET_SHALLOW).is_file():
        raise InputError(
            f"deep_cache_interval={interval} needs a bundle with {UNET_SHALLOW}, which {folder.root} has not; "
            "re-export it with lcm-export --deep-cache (or --fast), or use deep_cache_interval=1",
            argument="deep_cache_interval",
        )
    return interval


class DeepCacheUNet:
    """The UNet call of one denoising loop: full on every ``interval``-th step, shallow in between."""

    def __init__(self, full: UNet, shallow: ShallowUNet, interval: int) -> None:
        """``full`` compiled with the deep feature as an output (CompiledModels(deep_cache=True))."""
        self.full, self.shallow, self.interval = full, shallow, interval
        self.steps = 0

    def __call__(self, sample: np.ndarray, timestep: int) -> np.ndarray:
        if self.steps % self.interval == 0:
            output = self.full(sample, timestep)
            self.shallow.set_deep_feature(self.full.deep_feature())
        else:
            output = self.shallow(sample, timestep)
        self.steps += 1
        return output
