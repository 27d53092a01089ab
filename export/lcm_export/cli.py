"""`lcm-export`: parse arguments, run the export with per-stage progress, print a summary.

Every user-facing failure is one line on stderr and a non-zero exit; tracebacks are kept for
bugs, and even then only with LCM_EXPORT_DEBUG=1.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from pathlib import Path

import typer

from lcm_runtime.bundle import CFG, EMBEDDED
from lcm_runtime.cli_errors import run_app
from lcm_runtime.errors import InputError

from .options import DEFAULT_CALIBRATION_SIZE, DEFAULT_TINY_VAE, FAST_TOKEN_DOWNSAMPLING, ExportOptions
from .source import DEFAULT_SOURCE

DEFAULT_SAFETY_CHECKER = "CompVis/stable-diffusion-safety-checker"  # = safety_checker.DEFAULT_SAFETY_CHECKER

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def _quiet_libraries() -> None:
    # Loading and tracing print pages of warnings and progress bars that say nothing to a user.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore")


def _terminate_as_interrupt(_signum: int, _frame: object) -> None:
    # SIGTERM (CI cancellations, `timeout`) must clean up the staging folder like Ctrl-C does.
    raise KeyboardInterrupt


@app.command(
    epilog=f"Examples: lcm-export {DEFAULT_SOURCE} artifacts/lcm-dreamshaper-v7 | "
    "lcm-export ./my-lcm-folder out --weights int8 | "
    "lcm-export ./sd15.safetensors out --lcm-lora latent-consistency/lcm-lora-sdv1-5 --lora ./style.safetensors:0.8 | "
    "lcm-export --tiny-random artifacts/tiny"
)
def export(
    paths: list[str] = typer.Argument(
        ...,
        metavar="[SOURCE] OUT",
        help=f"SOURCE: hub id, local diffusers folder or single-file SD1.5 .safetensors checkpoint "
        f"[default: {DEFAULT_SOURCE}]; OUT: bundle folder to write",
    ),
    revision: str | None = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit) of SOURCE"),
    weights: str = typer.Option(
        "fp16",
        "--weights",
        help="Weight precision: fp32, fp16, bf16 (for CPUs that compute in bf16: the same image as fp16, "
        "faster start), int8 or int4 (NNCF weight-only)",
    ),
    quantize_unet: str | None = typer.Option(
        None, "--quantize-unet", help="int8: NNCF post-training quantization of the UNet"
    ),
    quantize_tiny_vae: str | None = typer.Option(
        None,
        "--quantize-tiny-vae",
        help="int8: NNCF post-training quantization of the --tiny-vae decoder, calibrated on the latents the "
        "calibration prompts make: half its decode time on CPUs without AMX",
    ),
    calibration_dataset: str | None = typer.Option(
        None,
        "--calibration-dataset",
        help="Prompts for --quantize-unet and --quantize-tiny-vae: a `datasets` name or a local "
        ".txt/.jsonl/.csv/.parquet or saved dataset [default: the shipped prompt list]",
    ),
    calibration_size: int = typer.Option(
        DEFAULT_CALIBRATION_SIZE,
        "--calibration-size",
        help="UNet input samples for calibration (4 per prompt), and as many denoised latents for the tiny VAE",
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Accept pickle (.bin) weights; they can run code when loaded"
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it holds a bundle (never another folder)"),
    tiny_random: bool = typer.Option(
        False, "--tiny-random", help="Export a tiny random-weight LCM with the real CLIP vocabulary instead of SOURCE"
    ),
    seed: int = typer.Option(0, "--seed", help="Weights seed for --tiny-random"),
    tiny_vae: str | None = typer.Option(
        None,
        "--tiny-vae",
        help="Also export a TAESD decoder (hub id such as madebyollin/taesd, or a local AutoencoderTiny folder) "
        "for lcm-run --vae tiny",
    ),
    safety_checker: str | None = typer.Option(
        None,
        "--safety-checker",
        help=f"Add diffusers' safety checker from a hub id such as {DEFAULT_SAFETY_CHECKER} "
        "or a local folder (config.json + weights, preprocessor_config.json optional) "
        "[default: SOURCE's own safety_checker/, when it has one]",
    ),
    no_safety_checker: bool = typer.Option(
        False, "--no-safety-checker", help="Leave SOURCE's safety checker out of the bundle"
    ),
    token_downsampling: int | None = typer.Option(
        None,
        "--token-downsampling",
        help="1, 2 or 4: the UNet's full-resolution self-attentions attend to keys/values "
        "average-pooled by this factor per side (ToDo): faster, approximate [default: 1, exact; 2 with --fast]",
    ),
    lcm_lora: str | None = typer.Option(
        None,
        "--lcm-lora",
        metavar="LORA[:SCALE]",
        help="Fuse this LCM-LoRA (hub id such as latent-consistency/lcm-lora-sdv1-5, or a local .safetensors, "
        "kohya or diffusers format) into a Stable Diffusion 1.x SOURCE that is not LCM-distilled: "
        "the bundle uses classifier-free guidance",
    ),
    loras: list[str] = typer.Option(
        [],
        "--lora",
        metavar="LORA[:SCALE]",
        help="Fuse this LoRA too (hub id or local .safetensors, kohya or diffusers format), scaled by SCALE "
        "[default: 1]: delta = SCALE * alpha / rank * up @ down, as diffusers; repeatable",
    ),
    deep_cache: bool = typer.Option(
        False,
        "--deep-cache",
        help="Also export a shallow UNet for lcm-run --deep-cache (DeepCache: steps between full ones reuse "
        "the UNet's deep features): faster, approximate; about 1% more disk",
    ),
    fast: bool = typer.Option(
        False,
        "--fast",
        help=f"A bundle for lcm-run --fast: --quantize-unet int8, --token-downsampling {FAST_TOKEN_DOWNSAMPLING}, "
        f"--tiny-vae {DEFAULT_TINY_VAE} (unless given), --quantize-tiny-vae int8 and --deep-cache",
    ),
) -> None:
    """Export a diffusers Latent Consistency Model (or a Stable Diffusion 1.x model made one with --lcm-lora)
    to a verified OpenVINO bundle at OUT."""

    source, out = _split_paths(paths, tiny_random)
    if revision is not None and tiny_random:
        raise InputError("--revision does not apply to --tiny-random; drop one of them")
    if seed != 0 and not tiny_random:
        raise InputError("--seed only applies to --tiny-random; drop --seed")
    if safety_checker is not None and no_safety_checker:
        raise InputError("--safety-checker adds a checker and --no-safety-checker leaves it out; drop one of them")
    if lcm_lora is not None and tiny_random:
        raise InputError("--tiny-random is already an LCM; --lcm-lora is for Stable Diffusion models, drop it")
    if lcm_lora is not None or loras:
        from .lora import LCM_ROLE, STYLE_ROLE, parse_lora

        # A bad LORA:SCALE fails here, before anything is loaded.
        if lcm_lora is not None:
            parse_lora(lcm_lora, LCM_ROLE)
        for text in loras:
            parse_lora(text, STYLE_ROLE)
    if fast:
        if quantize_unet not in (None, "int8"):
            raise InputError(f"--fast quantizes the UNet to int8; drop --quantize-unet {quantize_unet} or --fast")
        quantize_unet = "int8"
        if tiny_vae is None and not tiny_random:  # a random model gets a random TAESD (run_export)
            tiny_vae = DEFAULT_TINY_VAE
        if token_downsampling is None:
            token_downsampling = FAST_TOKEN_DOWNSAMPLING
        if quantize_tiny_vae not in (None, "int8"):
            raise InputError(
                f"--fast quantizes the tiny VAE to int8; drop --quantize-tiny-vae {quantize_tiny_vae} or --fast"
            )
        quantize_tiny_vae = "int8"
        deep_cache = True
    options = ExportOptions(
        weights=weights,
        quantize_unet=quantize_unet,
        quantize_tiny_vae=quantize_tiny_vae,
        calibration_dataset=calibration_dataset,
        calibration_size=calibration_size,
        token_downsampling=1 if token_downsampling is None else token_downsampling,
        deep_cache=deep_cache,
        force=force,
        guidance_mode=CFG if lcm_lora is not None else EMBEDDED,
    )
    options.validate()
    options.check_tiny_vae(tiny_vae is not None or (fast and tiny_random))
    run_export(
        source,
        Path(out),
        options,
        revision=revision,
        allow_pickle=allow_pickle,
        tiny_random=tiny_random,
        seed=seed,
        tiny_vae=tiny_vae,
        random_tiny_vae=fast and tiny_random and tiny_vae is None,
        safety_checker=safety_checker,
        no_safety_checker=no_safety_checker,
        lcm_lora=lcm_lora,
        loras=loras,
    )


def _split_paths(paths: list[str], tiny_random: bool) -> tuple[str | None, str]:
    if tiny_random:
        if len(paths) != 1:
            raise InputError("with --tiny-random give only OUT (no SOURCE): lcm-export --tiny-random OUT")
        return None, paths[0]
    if len(paths) == 1:
        return DEFAULT_SOURCE, paths[0]
    if len(paths) == 2:
        return paths[0], paths[1]
    raise InputError(f"expected [SOURCE] OUT, got {len(paths)} paths; quote paths that contain spaces")


def run_export(
    source: str | None,
    out: Path,
    options: ExportOptions,
    revision: str | None = None,
    allow_pickle: bool = False,
    tiny_random: bool = False,
    seed: int = 0,
    tiny_vae: str | None = None,
    random_tiny_vae: bool = False,
    safety_checker: str | None = None,
    no_safety_checker: bool = False,
    lcm_lora: str | None = None,
    loras: list[str] | tuple[str, ...] = (),
) -> None:
    """Export SOURCE (or the tiny random model) to OUT; ``lcm_lora`` and ``loras`` (``LORA[:SCALE]``
    texts) are fused into it first, and with ``lcm_lora`` ``options.guidance_mode`` must be cfg."""
    from rich.console import Console

    from .exporter import Progress, export_bundle
    from .source import load_source
    from .tiny import load_tiny_random
    from .writer import check_output, remove_abandoned_staging

    console = Console(stderr=True, highlight=False)
    if options.weights in ("int8", "int4") or options.calibrates:
        import logging

        import nncf

        nncf.set_log_level(logging.ERROR)  # its per-model statistics tables would bury the progress lines
    started = time.perf_counter()
    # Folders of exports killed beside OUT (any OUT): said, then gone. Before check_output, because a
    # restored backup is an existing OUT.
    for line in remove_abandoned_staging(out):
        console.print(line, markup=False, soft_wrap=True)
    check_output(out, options.force)  # fail before spending minutes loading weights

    spinner = console.status("")

    def notify(event: str, name: str, seconds: float | None) -> None:
        # A live spinner names the running stage (on a terminal); each finished stage gets a line.
        if event == "start":
            spinner.update(f"{name} ...")
            spinner.start()
        else:
            spinner.stop()
            console.print(f"  {name:<55} {seconds:7.1f} s", markup=False)

    progress = Progress(notify)
    label = f"tiny-random (seed {seed})" if tiny_random else source
    try:
        loaded_checker = None
        if safety_checker is not None:  # first: a bad checker fails before the minutes of loading SOURCE
            from .safety_checker import load_safety_checker

            with progress.stage(f"load safety checker {safety_checker}"):
                loaded_checker = load_safety_checker(safety_checker, allow_pickle)
        resolved_loras = []
        if lcm_lora is not None or loras:  # found (downloaded) before the minutes of loading SOURCE too
            from .lora import resolve_loras

            with progress.stage("find LoRAs"):
                resolved_loras = resolve_loras(lcm_lora, loras)
        prompts = None
        if options.calibrates:  # a dataset that cannot be read fails before the minutes of loading SOURCE too
            from .calibration import calibration_prompts

            prompts = calibration_prompts(options)
        loaded_tiny_vae = None
        if tiny_vae is not None:  # a few MB, and a bad one fails before the minutes of loading SOURCE too
            from .tiny_vae import load_tiny_vae

            with progress.stage(f"load tiny VAE {tiny_vae}"):
                loaded_tiny_vae = load_tiny_vae(tiny_vae, allow_pickle)
        # SOURCE's own checker unless one was given or it is refused (--tiny-random has none).
        own_checker = safety_checker is None and not no_safety_checker
        with progress.stage(f"load {label}"):
            loaded = (
                load_tiny_random(seed)
                if tiny_random
                else load_source(str(source), revision, allow_pickle, own_checker, lcm_lora=lcm_lora is not None)
            )
        if resolved_loras:
            from .lora import fuse_loras

            with progress.stage(f"fuse {len(resolved_loras)} LoRA{'s' * (len(resolved_loras) > 1)} into the model"):
                loaded.loras = fuse_loras(loaded.pipeline, resolved_loras)
        if tiny_vae is None and random_tiny_vae:
            from .tiny_vae import tiny_random_vae

            loaded_tiny_vae = tiny_random_vae(seed)
        result = export_bundle(
            loaded,
            out,
            options,
            progress,
            tiny_vae=loaded_tiny_vae,
            safety_checker=loaded_checker,
            calibration_prompts=prompts,
        )
    finally:
        spinner.stop()
    print_summary(console, result, time.perf_counter() - started)
    typer.echo(str(result.out))


def print_summary(console: object, result: object, seconds: float) -> None:
    """One screen: each bundle folder with its precision and size, then totals."""
    from rich.table import Table

    from .writer import human_size

    manifest = result.manifest
    groups: dict[str, int] = {}
    counts: dict[str, int] = {}
    for name, entry in manifest.files.items():
        group = name.split("/")[0] if "/" in name else name
        groups[group] = groups.get(group, 0) + entry["size"]
        counts[group] = counts.get(group, 0) + 1
    table = Table(title=f"lcm-export: {result.out}", title_justify="left")
    table.add_column("part")
    table.add_column("files", justify="right")
    table.add_column("precision")
    table.add_column("size", justify="right")
    for group in sorted(groups):
        precision = manifest.components.get(group, {}).get("precision", "")
        table.add_row(group, str(counts[group]), precision, human_size(groups[group]))
    total = sum(groups.values())
    table.add_row("total", str(sum(counts.values())), "", human_size(total), end_section=True)
    console.print(table)
    facts = manifest.model
    source = ", ".join(f"{key} {value}" for key, value in manifest.source.items() if key != "weights_sha256")
    console.print(f"source: {source}", markup=False)
    if manifest.loras:
        names = ", ".join(f"{lora['name']} x {lora['scale']:g}" for lora in manifest.loras)
        console.print(f"fused LoRAs: {names}", markup=False)
    console.print(
        f"native size {facts.default_image_size}x{facts.default_image_size}, {facts.default_steps} steps, "
        f"guidance {facts.default_guidance_scale}; manifest {manifest.digest()}; {seconds:.1f} s",
        markup=False,
    )


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--version"]:
        from importlib.metadata import version

        print(f"lcm-export {version('lcm-openvino')}")
        return
    _quiet_libraries()
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        run_app(
            app,
            args,
            "lcm-export",
            interrupted_message="interrupted: nothing was written",
            failure_message="the export failed unexpectedly; nothing was written",
            debug_variable="LCM_EXPORT_DEBUG",
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
