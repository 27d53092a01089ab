"""lcm-export's options, presets and their constants, in one import-light module (no torch, no
openvino): the CLI (whose --help must stay instant), the exporter, the converters, the calibration
and the benchmarks all read them from here."""

from __future__ import annotations

from dataclasses import dataclass

from lcm_runtime.bundle import EMBEDDED, GUIDANCE_MODES
from lcm_runtime.errors import InputError

WEIGHT_OPTIONS = ("fp32", "fp16", "bf16", "int8", "int4")  # lcm-export --weights
QUANTIZE_OPTIONS = ("int8",)  # lcm-export --quantize-unet and --quantize-tiny-vae
TOKEN_DOWNSAMPLING_FACTORS = (1, 2, 4)  # lcm-export --token-downsampling; 1 is exact attention
FAST_TOKEN_DOWNSAMPLING = 2  # what --fast uses unless --token-downsampling is given
DEFAULT_TINY_VAE = "madebyollin/taesd"  # what --fast exports unless --tiny-vae is given
# nncf.quantize of the SD1.5 UNet peaked near 14 GiB with 16 samples (docs/numerics.md).
DEFAULT_CALIBRATION_SIZE = 16


@dataclass
class ExportOptions:
    weights: str = "fp16"
    quantize_unet: str | None = None
    # The TAESD decoder (--tiny-vae) quantized too, calibrated on the latents the same runs decode.
    quantize_tiny_vae: str | None = None
    calibration_dataset: str | None = None
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    token_downsampling: int = 1
    # DeepCache: the UNet also outputs its deep feature, and a shallow UNet is added (bundle.UNET_SHALLOW).
    deep_cache: bool = False
    force: bool = False
    # Internal (no CLI flag): "embedded" for an LCM-distilled UNet; "cfg" (classifier-free guidance,
    # a UNet without time_cond_proj_dim, LCMScheduler) is what the LCM-LoRA path sets.
    guidance_mode: str = EMBEDDED

    def validate(self) -> None:
        if self.weights not in WEIGHT_OPTIONS:
            raise InputError(f"unknown --weights {self.weights!r}; choose one of {', '.join(WEIGHT_OPTIONS)}")
        if self.quantize_unet is not None and self.quantize_unet not in QUANTIZE_OPTIONS:
            raise InputError(f"unknown --quantize-unet {self.quantize_unet!r}; the only choice is int8")
        if self.quantize_tiny_vae is not None and self.quantize_tiny_vae not in QUANTIZE_OPTIONS:
            raise InputError(f"unknown --quantize-tiny-vae {self.quantize_tiny_vae!r}; the only choice is int8")
        if self.token_downsampling not in TOKEN_DOWNSAMPLING_FACTORS:
            raise InputError(
                f"--token-downsampling must be one of {', '.join(map(str, TOKEN_DOWNSAMPLING_FACTORS))} "
                f"(1 = exact attention), got {self.token_downsampling}"
            )
        if self.calibration_size < 1:
            raise InputError(f"--calibration-size must be at least 1, got {self.calibration_size}")
        if self.guidance_mode not in GUIDANCE_MODES:
            raise InputError(f"unknown guidance mode {self.guidance_mode!r}; one of {', '.join(GUIDANCE_MODES)}")
        if not self.calibrates and self.calibration_dataset is not None:
            raise InputError(
                "--calibration-dataset only applies with --quantize-unet int8 or --quantize-tiny-vae int8; "
                "add one or drop the dataset"
            )

    def check_tiny_vae(self, has_tiny_vae: bool) -> None:
        """--quantize-tiny-vae needs a TAESD to quantize; checked before loading anything."""
        if self.quantize_tiny_vae is not None and not has_tiny_vae:
            raise InputError("--quantize-tiny-vae quantizes the --tiny-vae decoder; add --tiny-vae madebyollin/taesd")

    @property
    def calibrates(self) -> bool:
        """Whether the export runs the calibration prompts (for the UNet, the tiny VAE or both)."""
        return self.quantize_unet is not None or self.quantize_tiny_vae is not None
