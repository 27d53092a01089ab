"""Post-training INT8 quantization of the UNet and the tiny VAE decoder, calibrated on the inputs they
really see.

The inputs are captured by running the exported (floating-point) text encoder and UNet
through the runtime's own tokenizer, guidance (guidance.py) and LCM scheduler, so that the
activation statistics match deployment: an LCM at guidance 8 (its embedding bound), a cfg
(LCM-LoRA) bundle at its default guidance 1, one UNet pass on the prompt. The tiny VAE decoder is
calibrated on every step's denoised latents of the same runs: what it decodes after that many steps.
Capture runs at f32 precision with fixed seeds: bf16 (the CPU default on some machines) would make the statistics, and
therefore the quantized bundle's checksums, depend on the CPU.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lcm_runtime.bundle import (
    CFG,
    EMBEDDED,
    SCHEDULER_TABLES,
    TIMESTEP_COND,
    ModelFacts,
    component_xml,
    read_json,
    scheduler_table_file,
)
from lcm_runtime.errors import InputError, first_line

from .options import ExportOptions

if TYPE_CHECKING:
    from diffusers import LatentConsistencyModelPipeline

    from .tiny_vae import LoadedTinyVae


DEFAULT_PROMPTS_FILE = "calibration_prompts.txt"
CALIBRATION_STEPS = 4
CALIBRATION_GUIDANCE_SCALE = 8.0
CFG_CALIBRATION_GUIDANCE_SCALE = 1.0  # a cfg bundle's default (LCM-LoRA is meant for 1 to 2)
CALIBRATION_SEED = 0
PROMPT_COLUMNS = ("prompt", "Prompt", "text", "caption", "TEXT", "sentence")
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def default_prompts() -> list[str]:
    text = resources.files("lcm_export").joinpath("data", DEFAULT_PROMPTS_FILE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_prompts(dataset: str | None, count: int) -> tuple[list[str], str]:
    """Up to ``count`` prompts, and a description of where they came from for the manifest."""
    if dataset is None:
        prompts = default_prompts()
        return _cycle(prompts, count), f"lcm_export/data/{DEFAULT_PROMPTS_FILE}"
    path = Path(dataset).expanduser()
    if path.is_file() and path.suffix == ".txt":
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        prompts = _prompts_from_datasets(dataset, path, count)
    if not prompts:
        raise InputError(f"the calibration dataset {dataset} has no prompts; pass one with a text column")
    return _cycle(prompts, count), dataset


def _cycle(prompts: list[str], count: int) -> list[str]:
    return [prompts[index % len(prompts)] for index in range(count)]


def _prompts_from_datasets(name: str, path: Path, count: int) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise InputError(
            "--calibration-dataset needs the datasets package; pip install 'lcm-openvino[export]'"
        ) from None
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
            rows = datasets.load_from_disk(str(path))
            if isinstance(rows, datasets.DatasetDict):
                rows = rows[next(iter(rows))]
        elif path.is_file():
            kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
            if kind is None:
                raise InputError(f"cannot read prompts from {path}: use .txt, .json(l), .csv or .parquet")
            rows = datasets.load_dataset(kind, data_files=str(path), split="train")
        else:
            # Streaming reads only the first rows instead of downloading a whole dataset.
            rows = datasets.load_dataset(name, split="train", streaming=True)
        column = _prompt_column(rows.column_names or list(next(iter(rows)).keys()), name)
        prompts = []
        for row in rows:
            if isinstance(row.get(column), str) and row[column].strip():
                prompts.append(row[column].strip())
            if len(prompts) >= count:
                break
        return prompts
    except InputError:
        raise
    except Exception as error:  # datasets raises many unrelated types for "not found"/"offline"
        detail = first_line(error)
        raise InputError(
            f"cannot load the calibration dataset {name!r} ({detail[:160]}); "
            "check the name, connect to the internet, or pass a local .txt/.jsonl/.csv file"
        ) from None


def _prompt_column(columns: list[str], name: str) -> str:
    for column in PROMPT_COLUMNS:
        if column in columns:
            return column
    raise InputError(
        f"the calibration dataset {name} has no prompt column (one of {', '.join(PROMPT_COLUMNS)}); "
        f"columns: {', '.join(columns)}"
    )


def calibration_guidance_scale(guidance_mode: str) -> float:
    return CFG_CALIBRATION_GUIDANCE_SCALE if guidance_mode == CFG else CALIBRATION_GUIDANCE_SCALE


@dataclass
class CalibrationRuns:
    unet_inputs: list[dict[str, np.ndarray]]  # every UNet call's inputs, as the UNet gets them
    denoised: list[np.ndarray]  # every step's denoised latents (unscaled), what a decoder gets after that step


def run_calibration_prompts(
    bundle_root: Path,
    prompts: list[str],
    size: int,
    guidance_mode: str = EMBEDDED,
    guidance_scale: float | None = None,
) -> CalibrationRuns:
    """Run the exported text encoder + UNet through the runtime's own denoising loop (denoise.denoise,
    f32, fixed seeds) and guidance (at ``guidance_scale``, the mode's calibration scale by default) until
    ``size`` UNet calls; record every call's inputs through its hook, as the UNet gets them (the doubled
    batch [uncond, cond] when the guidance is classifier-free), and every step's denoised latents."""
    from lcm_runtime.denoise import denoise
    from lcm_runtime.guidance import Guidance
    from lcm_runtime.models import TextEncoder, UNet
    from lcm_runtime.openvino_runtime import ov
    from lcm_runtime.schedulers.scheduling_lcm import LCMScheduler, LCMSchedulerConfig
    from lcm_runtime.tokenizer import PromptTokenizer

    root = Path(bundle_root)
    unet_config = read_json(root / "unet" / "config.json")
    text_config = read_json(root / "text_encoder" / "config.json")
    vae_config = read_json(root / "vae_decoder" / "config.json")
    latent_channels = int(unet_config["in_channels"])
    sample_size = unet_config.get("sample_size", 64)
    latent_side = int(sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size)
    max_length = int(text_config["max_position_embeddings"])
    facts = ModelFacts.from_configs(unet_config, vae_config, max_length, guidance_mode=guidance_mode)
    guidance = Guidance.plan(
        facts, calibration_guidance_scale(guidance_mode) if guidance_scale is None else guidance_scale
    )
    batch = guidance.unet_batch(1)

    tables = {name: np.load(root / scheduler_table_file(name)) for name in SCHEDULER_TABLES}
    scheduler = LCMScheduler(
        LCMSchedulerConfig.from_dict(read_json(root / "scheduler" / "scheduler_config.json")), tables
    )
    tokenizer = PromptTokenizer.from_file(root / "tokenizer" / "tokenizer.json", max_length)
    core = ov.Core()
    text_encoder = TextEncoder(core, root / component_xml("text_encoder"), {"input_ids": [1, max_length]}, "CPU", F32)
    shapes = {
        "sample": [batch, latent_channels, latent_side, latent_side],
        "timestep": [1],
        "encoder_hidden_states": [batch, max_length, -1],
    }
    timestep_cond = guidance.timestep_cond(1)
    if timestep_cond is not None:
        shapes[TIMESTEP_COND] = [batch, timestep_cond.shape[1]]
    unet = UNet(core, root / component_xml("unet"), shapes, "CPU", F32)
    unconditional = (
        [text_encoder(tokenizer([negative])) for negative in guidance.negative_prompts]
        if guidance.negative_prompts is not None
        else []
    )

    samples: list[dict[str, np.ndarray]] = []
    denoised: list[np.ndarray] = []
    for index, prompt in enumerate(prompts):
        if len(samples) >= size:
            break
        rng = np.random.default_rng(CALIBRATION_SEED + index)
        embeddings = np.concatenate(unconditional + [text_encoder(tokenizer([prompt]))])
        unet.bind_conditioning(embeddings, timestep_cond)

        def record(sample: np.ndarray, timestep: int, embeddings: np.ndarray = embeddings) -> None:
            inputs = {
                "sample": np.concatenate([sample] * (batch // len(sample))),
                "timestep": np.array([timestep], dtype=np.int64),
                "encoder_hidden_states": embeddings.copy(),
            }
            if timestep_cond is not None:
                inputs[TIMESTEP_COND] = timestep_cond.copy()
            samples.append(inputs)

        latents = rng.standard_normal((1, latent_channels, latent_side, latent_side), dtype=np.float32)
        scheduler.set_timesteps(CALIBRATION_STEPS)
        denoise(
            guidance.guided(unet),
            scheduler,
            latents,
            rng,
            on_unet_input=record,
            callback_on_step_end=lambda index, total, step_denoised: denoised.append(step_denoised.copy()),
        )
    return CalibrationRuns(unet_inputs=samples[:size], denoised=denoised[:size])


def calibration_prompts(options: ExportOptions) -> tuple[list[str], str]:
    """The prompts the calibration runs use (loaded before the export starts, so a bad dataset fails fast)."""
    return load_prompts(options.calibration_dataset, -(-options.calibration_size // CALIBRATION_STEPS))


def quantize_unet(
    pipeline: LatentConsistencyModelPipeline,
    bundle_root: Path,
    options: ExportOptions,
    samples: list[dict[str, np.ndarray]],
) -> None:
    """Replace the bundle's UNet IR with an INT8 post-training-quantized one, calibrated on ``samples``."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

    from .convert import convert_component, hide_deep_feature_output

    # The deep feature stays an output while NNCF quantizes: its tensor name would not survive otherwise.
    float_unet = convert_component(
        pipeline, "unet", options.token_downsampling, options.guidance_mode, options.deep_cache, hide_deep_feature=False
    )
    quantized = nncf.quantize(
        float_unet,
        nncf.Dataset(samples),
        subset_size=len(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        # SmoothQuant rescales activations for LLM outliers; it does not help conv-heavy UNets.
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
        ),
    )
    del float_unet
    if options.deep_cache:
        hide_deep_feature_output(quantized)
    _write_ir(quantized, Path(bundle_root), "unet", options.weights)


def quantize_tiny_vae(
    tiny_vae: LoadedTinyVae, bundle_root: Path, options: ExportOptions, denoised: list[np.ndarray]
) -> None:
    """Write the bundle's tiny VAE decoder as an INT8 post-training-quantized IR, calibrated on ``denoised``
    divided by its scaling factor, as the runtime feeds it. The mixed preset (asymmetric activations) kept
    a trained TAE decoder's image 1.4 dB closer to its float image than the default (docs/performance.md)."""
    import nncf

    from lcm_runtime.bundle import TINY_VAE_DECODER

    from .tiny_vae import convert_tiny_vae_decoder

    scale = np.float32(tiny_vae.vae.config.scaling_factor)
    quantized = nncf.quantize(
        convert_tiny_vae_decoder(tiny_vae),
        nncf.Dataset([latents / scale for latents in denoised]),
        subset_size=len(denoised),
        preset=nncf.QuantizationPreset.MIXED,
    )
    _write_ir(quantized, Path(bundle_root), TINY_VAE_DECODER, options.weights)


def _write_ir(model: Any, bundle_root: Path, component: str, weights: str) -> None:
    """Save ``component``'s IR beside, then replace: a model file may still be memory-mapped by OpenVINO,
    and os.replace gives the new IR a new inode instead of truncating the mapped one."""
    from .compress import save_ir

    scratch = bundle_root / f".{component}-ptq"
    save_ir(model, scratch / "openvino_model.xml", weights)
    for name in ("openvino_model.xml", "openvino_model.bin"):
        os.replace(scratch / name, bundle_root / component / name)
    scratch.rmdir()


def calibration_details(
    options: ExportOptions, prompts: list[str], dataset: str, runs: CalibrationRuns
) -> dict[str, Any]:
    """What the manifest records about the calibration runs and what they quantized."""
    used_prompts = prompts[: -(-len(runs.unet_inputs) // CALIBRATION_STEPS)]
    details: dict[str, Any] = {
        "method": "nncf.quantize",
        "precision": "int8",
        "dataset": dataset,
        "prompts": len(used_prompts),
        "prompts_sha256": hashlib.sha256("\n".join(used_prompts).encode()).hexdigest(),
        "samples": len(runs.unet_inputs),
        "steps": CALIBRATION_STEPS,
        "guidance_scale": calibration_guidance_scale(options.guidance_mode),
        "latent_size": int(runs.unet_inputs[0]["sample"].shape[-1]) if runs.unet_inputs else None,
        "seed": CALIBRATION_SEED,
        "inference_precision": "f32",
    }
    if options.quantize_unet:
        details.update({"model_type": "transformer", "smooth_quant": False})
    if options.quantize_tiny_vae:
        details["tiny_vae"] = {
            "samples": len(runs.denoised),
            "inputs": "each calibration step's denoised latents / the tiny VAE's scaling_factor",
            "preset": "mixed",
        }
    return details
