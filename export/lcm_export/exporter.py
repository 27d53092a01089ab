"""The export itself: a loaded pipeline -> a complete, verified bundle at OUT.

Stages run in a staging folder (writer.staged_output); the manifest is written last and the
bundle is verified (every IR compiles with the contract's names, every checksum matches)
before it is renamed into place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcm_runtime.bundle import (
    CFG,
    COMPONENT_IO,
    CONFIG_FILE,
    DEEP_FEATURE,
    EMBEDDED,
    FEATURE_EXTRACTOR_CONFIG,
    INT8_PTQ,
    MODEL_INDEX_FILE,
    OPENVINO_TOKENIZER_XML,
    OPTIONAL_COMPONENT_IO,
    SAFETY_CHECKER,
    SCHEDULER_CONFIG,
    TIMESTEP_COND,
    TINY_VAE_DECODER,
    UNET_SHALLOW,
    Manifest,
    ModelFacts,
    component_io,
    component_xml,
    dumps_json,
    read_manifest,
    verify_files,
    write_manifest,
)
from lcm_runtime.errors import BundleError, InputError, LCMError
from lcm_runtime.schedulers.scheduling_lcm import LCMSchedulerConfig

from .compress import component_precision, compress_weights, compression_details, save_ir
from .hub import SourceError
from .options import ExportOptions
from .source import LoadedSource
from .writer import check_free_space, check_output, clean_config, staged_output, write_text

if TYPE_CHECKING:
    from diffusers import LatentConsistencyModelPipeline

    from .safety_checker import LoadedSafetyChecker
    from .tiny_vae import LoadedTinyVae

COMPONENTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
VERSIONED_PACKAGES = ("lcm-openvino", "openvino", "openvino-tokenizers", "diffusers", "torch", "transformers", "nncf")
# Approximate bytes per parameter on disk, for the free-space check (plus a fixed margin).
BYTES_PER_PARAMETER = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.1, "int4": 0.7}
SPACE_MARGIN = 64 << 20


class ExportError(LCMError):
    """The export produced something unusable (a bug or a broken environment, reported in one line)."""


@dataclass
class StageTime:
    name: str
    seconds: float


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    stages: list[StageTime] = field(default_factory=list)
    seconds: float = 0.0


class Progress:
    """Stage notifications; the CLI prints them, tests may record them or inject failures."""

    def __init__(self, notify: Callable[[str, str, float | None], None] | None = None) -> None:
        self.notify = notify or (lambda event, name, seconds: None)
        self.stages: list[StageTime] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.notify("start", name, None)
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.stages.append(StageTime(name, seconds))
        self.notify("done", name, seconds)


def package_versions() -> dict[str, str]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def pipeline_class(guidance_mode: str, inpainting_unet: bool = False) -> str:
    """The diffusers pipeline a bundle is: an inpainting UNet's is StableDiffusionInpaintPipeline (in either mode,
    as diffusers runs one), a cfg bundle's StableDiffusionPipeline, an LCM's LatentConsistencyModelPipeline."""
    if inpainting_unet:
        return "StableDiffusionInpaintPipeline"
    return "StableDiffusionPipeline" if guidance_mode == CFG else "LatentConsistencyModelPipeline"


def model_index(
    pipeline: LatentConsistencyModelPipeline, guidance_mode: str = EMBEDDED, inpainting_unet: bool = False
) -> dict[str, Any]:
    """diffusers' model_index.json for the exported pipeline (what optimum-intel ships too). A cfg bundle
    is a StableDiffusionPipeline with LCMScheduler, as diffusers, optimum-intel and openvino.genai run
    LCM-LoRA: classifier-free guidance, no guidance embedding (pipeline_class)."""
    import diffusers

    return {
        "_class_name": pipeline_class(guidance_mode, inpainting_unet),
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "LCMScheduler"],
        "text_encoder": ["transformers", type(pipeline.text_encoder).__name__],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", type(pipeline.unet).__name__],
        "vae": ["diffusers", type(pipeline.vae).__name__],
    }


def component_configs(pipeline: LatentConsistencyModelPipeline) -> dict[str, dict[str, Any]]:
    vae = clean_config(pipeline.vae.to_json_string())
    text_encoder = clean_config(pipeline.text_encoder.config.to_json_string(use_diff=False))
    # A model built in memory (--tiny-random) has neither; a loaded one has both. Filling them
    # makes the bundle depend on the weights only, and the IR is float32 whatever torch held.
    text_encoder["architectures"] = text_encoder.get("architectures") or [type(pipeline.text_encoder).__name__]
    text_encoder["dtype"] = "float32"
    return {
        "text_encoder": text_encoder,
        "unet": clean_config(pipeline.unet.to_json_string()),
        "vae_decoder": vae,
        "vae_encoder": vae,
    }


def export_scheduler(pipeline: LatentConsistencyModelPipeline, guidance_mode: str) -> Any:
    """The scheduler the bundle ships: the pipeline's LCMScheduler; in cfg mode, diffusers'
    ``LCMScheduler.from_config(pipe.scheduler.config)`` of the SD checkpoint's scheduler (LCM-LoRA's recipe)."""
    if guidance_mode != CFG:
        return pipeline.scheduler
    from diffusers import LCMScheduler
    from diffusers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "skip_prk_steps ... will be ignored": PNDM's keys mean nothing to LCM
    try:
        return LCMScheduler.from_config(pipeline.scheduler.config)
    finally:
        logging.set_verbosity(verbosity)


def check_scheduler_config(config: dict[str, Any]) -> None:
    """Refuse, before any work, a scheduler config that the runtime would refuse to load (SourceError)."""
    try:
        LCMSchedulerConfig.from_dict(
            config, where="the source's scheduler config", fix=f"correct it in the source's {SCHEDULER_CONFIG}"
        )
    except BundleError as error:
        raise SourceError(str(error)) from None


def estimate_bundle_bytes(pipeline: LatentConsistencyModelPipeline, weights: str) -> int:
    parameters = sum(
        p.numel() for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder) for p in module.parameters()
    )
    return int(parameters * BYTES_PER_PARAMETER[weights]) + SPACE_MARGIN


def export_bundle(
    loaded: LoadedSource,
    out: Path,
    options: ExportOptions,
    progress: Progress | None = None,
    tiny_vae: LoadedTinyVae | None = None,
    safety_checker: LoadedSafetyChecker | None = None,
    calibration_prompts: tuple[list[str], str] | None = None,
) -> ExportResult:
    """Write a complete, verified bundle for ``loaded`` (plus a TAESD decoder) at ``out`` (atomically).

    The safety checker is ``safety_checker`` if given, else the source folder's own (``loaded.safety_checker``).
    ``calibration_prompts``: the prompts and dataset of ``calibration.calibration_prompts(options)``, when
    the caller read them before loading SOURCE (a bad dataset then fails first); read here otherwise.
    """
    from .scheduler_tables import write_scheduler_tables
    from .tokenizer import text_max_length, write_tokenizer_folder

    options.validate()
    progress = progress or Progress()
    started = time.perf_counter()
    out = Path(out).absolute()
    pipeline = loaded.pipeline
    check_output(out, options.force)
    checker = safety_checker if safety_checker is not None else loaded.safety_checker
    checker_bytes = 0
    if checker is not None:
        from .safety_checker import parameter_count

        checker_bytes = int(parameter_count(checker) * BYTES_PER_PARAMETER[options.weights])
    check_free_space(out, estimate_bundle_bytes(pipeline, options.weights) + checker_bytes)

    max_length = text_max_length(pipeline.tokenizer, pipeline.text_encoder.config.max_position_embeddings)
    # Before any work: refuses a UNet that does not fit the guidance mode (embedded needs time_cond_proj_dim).
    facts = ModelFacts.from_configs(
        dict(pipeline.unet.config), dict(pipeline.vae.config), max_length, guidance_mode=options.guidance_mode
    )
    if options.calibrates and facts.inpainting_unet:
        flag = "--quantize-unet" if options.quantize_unet else "--quantize-tiny-vae"
        raise InputError(
            f"{flag} int8 calibrates on text-to-image runs, which an inpainting UNet "
            f"({facts.unet_channels} input channels) does not make; drop {flag} (and --fast)"
            + (", or use --weights int8 (weight-only) instead" if options.quantize_unet else "")
        )
    options.check_tiny_vae(tiny_vae is not None)
    scheduler = export_scheduler(pipeline, options.guidance_mode)
    scheduler_config = clean_config(scheduler.to_json_string())
    check_scheduler_config(scheduler_config)
    precisions = {component: component_precision(options.weights, component) for component in COMPONENTS}
    if options.quantize_unet:
        precisions["unet"] = INT8_PTQ
    if tiny_vae is not None:
        from .tiny_vae import check_compatible

        check_compatible(tiny_vae, facts.latent_channels)
        precisions[TINY_VAE_DECODER] = (
            INT8_PTQ if options.quantize_tiny_vae else component_precision(options.weights, "vae_decoder")
        )
    if checker is not None:
        precisions[SAFETY_CHECKER] = component_precision(options.weights, SAFETY_CHECKER)
    if options.deep_cache:
        from .convert import check_deep_cache_supported

        check_deep_cache_supported(pipeline.unet)
        # Weight-compressed as the float UNet would be; not calibrated: it is a small part of a skip step.
        precisions[UNET_SHALLOW] = component_precision(options.weights, "unet")
    calibration = None
    if options.calibrates:
        if calibration_prompts is None:
            from .calibration import calibration_prompts as read_prompts

            calibration_prompts = read_prompts(options)
        prompts, dataset = calibration_prompts

    with staged_output(out, options.force) as staging:
        with progress.stage("configs"):
            index = model_index(pipeline, options.guidance_mode, facts.inpainting_unet)
            write_text(staging / MODEL_INDEX_FILE, dumps_json(index))
            for component, config in component_configs(pipeline).items():
                write_text(staging / component / CONFIG_FILE, dumps_json(config))
            write_text(staging / SCHEDULER_CONFIG, dumps_json(scheduler_config))
        with progress.stage("scheduler tables"):
            write_scheduler_tables(staging, scheduler)
        with progress.stage("tokenizer"):
            write_tokenizer_folder(staging, pipeline.tokenizer, max_length)
        for component in COMPONENTS + ((UNET_SHALLOW,) if options.deep_cache else ()):
            with progress.stage(f"{component} ({precisions[component]})"):
                _export_component(pipeline, component, precisions[component], options, staging)
        if tiny_vae is not None:
            from .tiny_vae import convert_tiny_vae_decoder

            with progress.stage(f"{TINY_VAE_DECODER} ({precisions[TINY_VAE_DECODER]})"):
                write_text(
                    staging / TINY_VAE_DECODER / CONFIG_FILE, dumps_json(clean_config(tiny_vae.vae.to_json_string()))
                )
                if precisions[TINY_VAE_DECODER] != INT8_PTQ:  # PTQ writes it after the calibration runs
                    model = compress_weights(convert_tiny_vae_decoder(tiny_vae), precisions[TINY_VAE_DECODER])
                    save_ir(model, staging / component_xml(TINY_VAE_DECODER), options.weights)
                    del model
        if checker is not None:
            from .safety_checker import write_safety_checker

            with progress.stage(f"{SAFETY_CHECKER} ({precisions[SAFETY_CHECKER]})"):
                write_safety_checker(checker, staging, precisions[SAFETY_CHECKER], options.weights)
        if options.calibrates:
            from .calibration import calibration_details, quantize_tiny_vae, quantize_unet, run_calibration_prompts

            with progress.stage(f"calibration runs ({options.calibration_size} UNet steps at f32)"):
                runs = run_calibration_prompts(staging, prompts, options.calibration_size, options.guidance_mode)
            if options.quantize_unet:
                with progress.stage("unet int8 quantization"):
                    quantize_unet(pipeline, staging, options, runs.unet_inputs)
            if options.quantize_tiny_vae and tiny_vae is not None:
                with progress.stage(f"{TINY_VAE_DECODER} int8 quantization"):
                    quantize_tiny_vae(tiny_vae, staging, options, runs.denoised)
            calibration = calibration_details(options, prompts, dataset, runs)
            del runs
        with progress.stage("manifest"):
            from .convert import deep_feature_name, downsampled_self_attentions

            manifest = Manifest(
                source=loaded.info,
                versions=package_versions(),
                components={
                    component: {
                        "precision": precisions[component],
                        "file": component_xml(component),
                        "compression": compression_details(precisions[component]),
                        **({"latent_size_multiple": 1} if component == "unet" else {}),
                        **(
                            {
                                "token_downsampling": {
                                    "factor": options.token_downsampling,
                                    "self_attentions": downsampled_self_attentions(
                                        pipeline.unet, options.token_downsampling
                                    ),
                                }
                            }
                            if component == "unet" and options.token_downsampling > 1
                            else {}
                        ),
                        **({"source": tiny_vae.info} if component == TINY_VAE_DECODER else {}),
                        **(
                            {"deep_cache": {"branch": 0, "feature_of": deep_feature_name(pipeline.unet)}}
                            if component == UNET_SHALLOW
                            else {}
                        ),
                        **(
                            {"source": checker.info, "preprocessor_config": FEATURE_EXTRACTOR_CONFIG}
                            if component == SAFETY_CHECKER
                            else {}
                        ),
                    }
                    for component in precisions
                },
                model=facts,
                calibration=calibration,
                loras=list(loaded.loras),  # fused before conversion (lora.fuse_loras)
            )
            write_manifest(staging, manifest)
        with progress.stage("verify"):
            verify_bundle(staging)
    return ExportResult(out=out, manifest=manifest, stages=progress.stages, seconds=time.perf_counter() - started)


def _export_component(
    pipeline: LatentConsistencyModelPipeline, component: str, precision: str, options: ExportOptions, staging: Path
) -> None:
    from .convert import convert_component

    model = convert_component(
        pipeline, component, options.token_downsampling, options.guidance_mode, options.deep_cache
    )
    if precision != INT8_PTQ:  # PTQ replaces this IR later, starting from the float model
        model = compress_weights(model, precision)
    save_ir(model, staging / component_xml(component), options.weights)
    del model


def verify_bundle(root: Path) -> None:
    """Every IR compiles and has the contract's names; every file matches the manifest."""
    import openvino as ov

    manifest = read_manifest(root)
    problems = verify_files(root, manifest)
    if problems:
        listing = ", ".join(f"{p.path} ({p.problem})" for p in problems[:3])
        raise ExportError(f"the written bundle does not verify: {listing}; check the disk and retry")
    core = ov.Core()
    mode = manifest.model.guidance_mode
    deep_cache = UNET_SHALLOW in manifest.components
    required = {component: component_io(component, mode) for component in COMPONENT_IO}
    present = {name: component_io(name, mode) for name in OPTIONAL_COMPONENT_IO if name in manifest.components}
    for component, (inputs, outputs) in {**required, **present}.items():
        model = core.read_model(root / component_xml(component))
        names = (
            {name for port in model.inputs for name in port.get_names()},
            {name for port in model.outputs for name in port.get_names()},
        )
        unexpected = component == "unet" and mode == CFG and TIMESTEP_COND in names[0]
        if not set(inputs) <= names[0] or not set(outputs) <= names[1] or unexpected:
            raise ExportError(
                f"{component} IR has inputs {sorted(names[0])} / outputs {sorted(names[1])}, not {inputs} / {outputs}"
            )
        core.compile_model(model, "CPU")
        if component == "unet" and deep_cache:
            try:
                model.add_outputs([DEEP_FEATURE])  # what lcm_runtime does for DeepCache
            except RuntimeError:
                raise ExportError(f"the UNet IR has no {DEEP_FEATURE} tensor for {UNET_SHALLOW}") from None
            if len(model.outputs) != 2:
                raise ExportError(f"the UNet IR has {len(model.outputs)} outputs with {DEEP_FEATURE}, not 2")
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    core.compile_model(root / OPENVINO_TOKENIZER_XML, "CPU")
