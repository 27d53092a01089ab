"""`lcm-run`: parse, call the API, print. Nothing here imports openvino until a command runs,
so `lcm-run --help` answers instantly."""

from __future__ import annotations

import os
import secrets
import sys
import time
import warnings
from pathlib import Path
from typing import Any, cast

import typer

from . import __version__, validation
from .cli_errors import run_app
from .errors import InputError, LCMError
from .outputs import plan_output_paths, png_parameters

DEFAULT_MODEL = "artifacts/lcm-dreamshaper-v7"

generate_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
tools_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Inspect bundles and the compiled-model cache.",
)


def _default_model() -> str:
    return os.environ.get("LCM_MODEL") or DEFAULT_MODEL


# The Python argument an InputError names -> this CLI's option for it.
OPTION_FOR_ARGUMENT = {
    "prompt": "PROMPT",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "height": "--height",
    "width": "--width",
    "num_images_per_prompt": "--num-images",
    "generator": "--seed",
    "strength": "--strength",
    "image": "--image",
    "mask_image": "--mask",
    "vae": "--vae",
    "precision": "--precision",
    "device": "--device",
    "prompt_syntax": "--plain-prompt",
    "negative_prompt": "--negative-prompt",
    "guidance_rescale": "--guidance-rescale",
    "deep_cache_interval": "--deep-cache",
}


def _describe(error: LCMError) -> str:
    """The library names Python arguments (``strength=``); a user of lcm-run also needs the option."""
    option = OPTION_FOR_ARGUMENT.get(getattr(error, "argument", None) or "")
    return f"{error} (lcm-run {option})" if option else str(error)


@generate_app.command(
    epilog="With --image the prompt redraws that picture (image-to-image); with --image and --mask it repaints "
    "where the mask is white (inpainting). Other commands: `lcm-run verify BUNDLE` checks a bundle's files against "
    "its manifest; `lcm-run info BUNDLE` describes it and lists OpenVINO devices; "
    "`lcm-run cache` shows the compiled-model cache (`--prune`, `--clear` free its space); "
    "`lcm-run batch PROMPTS --output DIR` makes every image of a prompt file, resumably."
)
def generate(
    prompt: str = typer.Argument(..., help="What to draw."),
    model: str | None = typer.Option(
        None, "--model", "-m", help=f"Bundle folder [default: $LCM_MODEL or {DEFAULT_MODEL}]"
    ),
    steps: int | None = typer.Option(None, "--steps", "-s", help="Denoising steps [default: the bundle's, 4]"),
    guidance: float | None = typer.Option(
        None,
        "--guidance",
        "-g",
        help="Guidance scale, diffusers' convention [default: the bundle's: 8.0 for an LCM, 1.0 for LCM-LoRA (cfg)]",
    ),
    negative_prompt: str | None = typer.Option(
        None,
        "--negative-prompt",
        help="What to steer away from; only LCM-LoRA (cfg) bundles with --guidance above 1 use it",
    ),
    guidance_rescale: float = typer.Option(
        0.0,
        "--guidance-rescale",
        help="Rescale classifier-free guidance (diffusers' guidance_rescale, 0 to 1; 0.7 is typical); cfg bundles",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed [default: random, printed]"),
    height: int | None = typer.Option(
        None, "--height", help="Image height [default: the model's native size; with --image alone, the picture's]"
    ),
    width: int | None = typer.Option(
        None, "--width", help="Image width [default: the model's native size; with --image alone, the picture's]"
    ),
    num_images: int = typer.Option(1, "--num-images", "-n", help="Images to make from the prompt"),
    image: Path | None = typer.Option(
        None, "--image", "-i", help="A picture to start from (image-to-image, or inpainting with --mask)"
    ),
    strength: float | None = typer.Option(
        None, "--strength", help="How much of --image to redraw, in (0, 1] [default: 0.8; 1.0 with --mask]"
    ),
    mask: Path | None = typer.Option(None, "--mask", help="With --image: repaint where this picture is white"),
    output: Path | None = typer.Option(None, "--output", "-o", help="A .png file or a folder [default: ./outputs/]"),
    device: str = typer.Option("CPU", "--device", help="OpenVINO device: CPU, GPU, NPU, AUTO..."),
    precision: str = typer.Option("auto", "--precision", help="auto (the device's default), f32, bf16 or f16"),
    vae: str | None = typer.Option(
        None,
        "--vae",
        help="full (the model's VAE) or tiny (TAESD from lcm-export --tiny-vae: much faster, less detail) "
        "[default: full, tiny with --fast]",
    ),
    fast: bool = typer.Option(
        False,
        "--fast",
        help="The INT8 UNet (with token downsampling) and tiny VAE of a bundle from `lcm-export --fast`: "
        "about 0.4x the time; less fine detail",
    ),
    deep_cache: int = typer.Option(
        1,
        "--deep-cache",
        metavar="N",
        help="DeepCache: the full UNet every N-th step, the steps between reuse its deep features "
        "(a bundle from lcm-export --deep-cache or --fast): faster, approximate [default: 1, every step]",
    ),
    tiled_vae: bool | None = typer.Option(
        None,
        "--tiled-vae/--no-tiled-vae",
        help="Decode in tiles of the native size to bound memory [default: only when the whole image would not fit]",
    ),
    low_memory: bool = typer.Option(
        False,
        "--low-memory",
        help="Free the UNet before the VAE decode also with the tiny VAE (with the full VAE lcm-run always does)",
    ),
    no_safety_checker: bool = typer.Option(
        False, "--no-safety-checker", help="Do not run the bundle's safety checker (it blacks out flagged images)"
    ),
    plain_prompt: bool = typer.Option(
        False,
        "--plain-prompt",
        help="Read PROMPT as diffusers does: cut at 77 tokens, brackets are text "
        "[default: A1111's syntax: (word:1.2) weights, [word], BREAK, up to 2400 tokens]",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use or fill the compiled-model cache"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files instead of picking a new name"),
) -> None:
    """Generate images from PROMPT with an exported LCM bundle and write them as PNG."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    warnings.showwarning = lambda message, *_args, **_kw: console.print(
        f"warning: {message}", markup=False, soft_wrap=True
    )
    if mask is not None and image is None:
        raise InputError("--mask needs --image: the mask says where to repaint that picture; add --image PICTURE")
    if image is None and strength is not None:
        raise InputError("--strength only applies with --image; add --image PICTURE or drop --strength")
    if image is not None and mask is None and (height is not None or width is not None):
        raise InputError("image-to-image takes its size from --image; resize the picture, or drop --height/--width")
    seed = secrets.randbelow(2**32) if seed is None else seed
    if seed < 0:
        raise InputError("--seed must be 0 or more", argument="generator")
    from .image_input import digest, open_image

    inputs = {
        "image": open_image(image, "image") if image is not None else None,
        "mask_image": open_image(mask, "mask_image") if mask is not None else None,
    }
    if (
        inputs["image"] is not None
        and inputs["mask_image"] is not None
        and inputs["image"].size != inputs["mask_image"].size
    ):
        raise InputError(
            f"--mask is {inputs['mask_image'].width}x{inputs['mask_image'].height} but --image is "
            f"{inputs['image'].width}x{inputs['image'].height}; pass a mask of the picture's size",
            argument="mask_image",
        )
    validation.image_count(num_images, 1, validation.DEFAULT_MAX_IMAGES)  # before planning that many files
    model_path = Path(model or _default_model())
    paths = plan_output_paths(output, seed, num_images, overwrite)

    from .img2img import DEFAULT_STRENGTH as IMG2IMG_STRENGTH
    from .img2img import LCMImg2ImgPipeline  # imports openvino: only once a command really runs
    from .inpaint import DEFAULT_STRENGTH as INPAINT_STRENGTH
    from .inpaint import LCMInpaintPipeline
    from .pipeline import ONE_CALL, LCMPipeline

    task = LCMPipeline if image is None else LCMImg2ImgPipeline if mask is None else LCMInpaintPipeline
    started = time.perf_counter()
    # One call per process: free each model once used, where that pays. The VAE decoder is used last:
    # freeing it would only delay the PNG.
    release = ("text_encoder", "unet", "vae_encoder") if low_memory else ONE_CALL
    pipe = task.from_pretrained(
        model_path,
        device=device,
        precision=precision,
        cache_dir=False if no_cache else None,
        vae=vae,
        fast=fast,
        release_after_use=release,
        safety_checker=not no_safety_checker,
        deep_cache_interval=deep_cache,
    )
    opened = time.perf_counter() - started
    steps_total = steps or pipe.facts.default_steps
    from .bundle import CFG
    from .guidance import Guidance

    planned = Guidance.plan(pipe.facts, guidance, guidance_rescale, negative_prompt)  # refuses what cannot apply
    if (negative_prompt or guidance_rescale) and planned.mode == CFG and not planned.classifier_free:
        console.print(
            f"warning: --negative-prompt and --guidance-rescale have no effect at --guidance {planned.scale:g}: "
            "classifier-free guidance runs above 1",
            markup=False,
            soft_wrap=True,
        )
    # A1111's syntax by default: what users of a prompt box expect; the API keeps diffusers' reading.
    common: dict[str, Any] = dict(
        num_inference_steps=steps,
        guidance_scale=guidance,
        num_images_per_prompt=num_images,
        generator=seed,
        tiled_vae=tiled_vae,
        prompt_syntax="diffusers" if plain_prompt else "a1111",
        negative_prompt=negative_prompt,
        guidance_rescale=guidance_rescale,
    )
    arguments: dict[str, Any]
    if task is LCMPipeline:
        arguments = dict(common, height=height, width=width)
    elif task is LCMImg2ImgPipeline:
        strength = IMG2IMG_STRENGTH if strength is None else strength
        arguments = dict(common, image=inputs["image"], strength=strength)
    else:
        strength = INPAINT_STRENGTH if strength is None else strength
        arguments = dict(
            common,
            image=inputs["image"],
            mask_image=inputs["mask_image"],
            height=height,
            width=width,
            strength=strength,
        )
    with Progress(
        TextColumn("denoising"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        bar = progress.add_task("denoise", total=steps_total)
        result = pipe(
            prompt,
            **arguments,
            callback=lambda index, total, _t: progress.update(bar, completed=index + 1, total=total),
        )

    started = time.perf_counter()
    from .image import save_png

    ran_at = pipe.execution_precision().get("unet", precision)
    hashes = {name: digest(path) for name, path in (("image", image), ("mask", mask)) if path is not None}
    flagged = result.nsfw_content_detected
    written = []
    for index, (picture, path) in enumerate(zip(result.images, paths, strict=True)):
        text = png_parameters(
            prompt,
            steps=steps_total,
            guidance=guidance if guidance is not None else pipe.facts.default_guidance_scale,
            seed=seed,
            width=picture.width,
            height=picture.height,
            model=pipe.folder.name,
            model_hash=pipe.folder.identity(),
            precision=ran_at,
            device=device,
            vae=pipe.vae,
            index=index,
            count=num_images,
            strength=strength,
            image_hash=hashes.get("image"),
            mask_hash=hashes.get("mask"),
            safety_checker=("on" if pipe.safety_checker else "off" if pipe.parts.safety else None),
            flagged=flagged[index] if flagged else None,
            prompt_syntax="diffusers" if plain_prompt else "a1111",
            negative_prompt=negative_prompt,
            guidance_rescale=guidance_rescale,
            loras=pipe.folder.loras,
            deep_cache_interval=pipe.deep_cache_interval,
        )
        try:
            written.append(save_png(picture, path, {"parameters": text}, overwrite=overwrite))
        except OSError as error:  # after the folder's check: a full disk, a quota, a file system gone
            raise InputError(f"cannot write {path} ({error.strerror}); choose another --output") from None
    saved = time.perf_counter() - started

    timings = result.timings
    unet = cast("list[float]", timings["unet"])  # the UNet's entry holds one time per step
    for path in written:
        typer.echo(str(path))
    if flagged and any(flagged):
        console.print(
            f"warning: the safety checker blacked out {sum(flagged)} of {len(flagged)} images "
            "(--no-safety-checker turns it off)",
            markup=False,
            soft_wrap=True,
        )
    encode = f"VAE encode {timings['vae_encode']:.2f}s, " if "vae_encode" in timings else ""
    console.print(
        f"seed {seed} | load {opened:.2f}s, compile {timings['compile']:.2f}s, "
        f"text encoder {timings['text_encoder']:.2f}s, "
        f"{encode}UNet {len(unet)} steps {sum(unet):.2f}s ({', '.join(f'{t:.2f}' for t in unet)}), "
        f"VAE decode {timings['vae_decode']:.2f}s, write {saved:.2f}s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@tools_app.command()
def verify(bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder")) -> None:
    """Check every file of BUNDLE against the sizes and sha256 in its manifest."""
    from .bundle import read_manifest, verify_files

    if not bundle_path.is_dir():
        raise LCMError(f"{bundle_path} is not a folder; pass the bundle folder written by lcm-export")
    manifest = read_manifest(bundle_path)
    problems = verify_files(bundle_path, manifest)
    for problem in problems:
        typer.echo(f"{problem.problem}: {problem.path}")
    if problems:
        raise LCMError(
            f"{len(problems)} of {len(manifest.files)} files do not match the manifest; "
            "re-export or re-download the bundle"
        )
    typer.echo(f"ok: all {len(manifest.files)} files match the manifest of {bundle_path}")


@tools_app.command()
def info(bundle_path: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder")) -> None:
    """Describe BUNDLE (source, precisions, model facts) and list the devices OpenVINO sees."""
    from .bundle import UNET_SHALLOW
    from .loading import open_model_folder

    folder = open_model_folder(bundle_path)
    facts = folder.facts
    manifest = folder.manifest
    typer.echo(f"bundle: {folder.root}")
    if manifest is not None:
        source = ", ".join(f"{key}={value}" for key, value in sorted(manifest.source.items()))
        typer.echo(f"format: {manifest.format} v{manifest.format_version}, manifest hash {manifest.digest()}")
        typer.echo(f"source: {source}")
        typer.echo(
            "precision: "
            + ", ".join(f"{name} {entry.get('precision')}" for name, entry in sorted(manifest.components.items()))
        )
        pooled = manifest.components.get("unet", {}).get("token_downsampling")
        if pooled:
            typer.echo(
                f"token downsampling: keys/values pooled {pooled.get('factor')}x{pooled.get('factor')} "
                f"in {pooled.get('self_attentions')} full-resolution self-attentions (approximate attention)"
            )
        if UNET_SHALLOW in manifest.components:
            typer.echo("deep cache: unet_shallow for lcm-run --deep-cache N (approximate)")
        typer.echo(
            "exported with: " + ", ".join(f"{name} {version}" for name, version in sorted(manifest.versions.items()))
        )
        if manifest.calibration:
            typer.echo(f"calibration: {manifest.calibration}")
    else:
        typer.echo("format: folder without manifest (optimum-cli export); files cannot be verified")
    smallest = f", at least {folder.min_side}" if folder.min_side > folder.size_multiple else ""
    typer.echo(
        f"native size: {facts.default_image_size}x{facts.default_image_size}, "
        f"sides multiple of {folder.size_multiple}{smallest}"
    )
    from .bundle import EMBEDDED

    guided = (
        f"embedded, {facts.guidance_embedding}"
        if facts.guidance_mode == EMBEDDED
        else f"{facts.guidance_mode}: classifier-free, negative prompts"
    )
    typer.echo(f"defaults: {facts.default_steps} steps, guidance {facts.default_guidance_scale} ({guided})")
    if facts.inpainting_unet:
        typer.echo(
            f"UNet: inpainting, {facts.unet_channels} input channels (latents, mask, masked picture): "
            "runs inpainting only (--image and --mask)"
        )
    from .openvino_runtime import ov

    core = ov.Core()
    devices = ", ".join(f"{name} ({core.get_property(name, 'FULL_DEVICE_NAME')})" for name in core.available_devices)
    typer.echo(f"OpenVINO {ov.get_version()} devices: {devices}")


@tools_app.command()
def cache(
    prune: bool = typer.Option(
        False, "--prune", help="Delete the blobs of models whose bundle files are gone or changed"
    ),
    clear: bool = typer.Option(False, "--clear", help="Delete every compiled blob in the cache folder"),
) -> None:
    """Show the compiled-model cache: its folder, its size and the models in it.

    lcm-run deletes stale blobs by itself whenever it writes a new one; --prune does it now.
    """
    from .compile_cache import CompileCache, cache_folders
    from .models import resolve_cache_dir

    if prune and clear:
        raise LCMError("--prune and --clear do not go together; --clear already deletes everything")
    root = resolve_cache_dir(None)
    if root is None:
        raise LCMError("the compiled-model cache is off (LCM_CACHE_DIR); unset LCM_CACHE_DIR to use the default folder")
    caches = [CompileCache(folder) for folder in cache_folders(root)]  # one per execution precision
    if clear:
        freed = sum(compile_cache.clear() for compile_cache in caches)
        typer.echo(f"deleted {_gib(freed)} of compiled models from {root}")
        return
    if prune:
        results = [compile_cache.prune_stale() for compile_cache in caches]
        dropped, freed = sum(r[0] for r in results), sum(r[1] for r in results)
        typer.echo(f"deleted {dropped} stale entries and {_gib(freed)} of blobs from {root}")
        return
    typer.echo(f"cache: {root}")
    total_bytes = indexed = 0
    for compile_cache in caches:
        entries = compile_cache.entries()
        label = compile_cache.folder.name if compile_cache.folder != root else "(older, one folder for all)"
        typer.echo(f"{label}:")
        for entry in entries:
            size = _gib(entry.blob_bytes) if entry.blob_bytes is not None else "blob gone"
            used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
            state = "  (stale: its bundle files are gone or changed)" if entry.stale else ""
            typer.echo(f"{size:>10}  last used {used}  {entry.model or '(model not recorded)'}{state}")
        total_bytes += compile_cache.blob_bytes()
        indexed += len({entry.blob for entry in entries})
    typer.echo(
        f"total: {_gib(total_bytes)} in blobs, {indexed} indexed; "
        "`lcm-run cache --prune` deletes stale ones, `--clear` everything"
    )


@tools_app.command()
def serve(
    model: str | None = typer.Option(
        None, "--model", "-m", help=f"Bundle folder [default: $LCM_MODEL or {DEFAULT_MODEL}]"
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000, "--port", help="Port to listen on"),
    max_queue: int = typer.Option(16, "--max-queue", help="Requests that may wait; more are answered 429"),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds a request may wait for its images"),
    max_body: float = typer.Option(32.0, "--max-body", help="Largest request body, in MB"),
    max_images: int = typer.Option(4, "--max-images", help="Images per request at most (n, batch_size)"),
    max_side: int = typer.Option(2048, "--max-side", help="Largest width or height a request may ask for"),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="LCM_API_KEY", help="Require Authorization: Bearer KEY [default: $LCM_API_KEY]"
    ),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allow this web origin (CORS); repeatable"),
    device: str = typer.Option("CPU", "--device", help="OpenVINO device: CPU, GPU, NPU, AUTO..."),
    precision: str = typer.Option("auto", "--precision", help="auto (the device's default), f32, bf16 or f16"),
    no_safety_checker: bool = typer.Option(False, "--no-safety-checker", help="Do not run the bundle's safety checker"),
    vae: str | None = typer.Option(None, "--vae", help="full or tiny (TAESD) [default: full, tiny with --fast]"),
    fast: bool = typer.Option(False, "--fast", help="The INT8 UNet and tiny VAE of an `lcm-export --fast` bundle"),
    deep_cache: int = typer.Option(
        1, "--deep-cache", metavar="N", help="DeepCache: the full UNet every N-th step (see lcm-run --help)"
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error"),
    ray: bool = typer.Option(
        False, "--ray", help="Run as a Ray Serve deployment (extra [ray]) on $RAY_ADDRESS or a local Ray instance"
    ),
    ray_address: str | None = typer.Option(None, "--ray-address", help="With --ray: the cluster to join"),
    replicas: int = typer.Option(1, "--replicas", help="With --ray: replicas, each with the bundle loaded"),
    cpus_per_replica: float = typer.Option(
        1.0, "--cpus-per-replica", help="With --ray: CPUs Ray reserves per replica (and OpenVINO's threads)"
    ),
) -> None:
    """Serve the OpenAI images API, AUTOMATIC1111's /sdapi/v1 and a web page at http://HOST:PORT/."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be from 1 to 65535, got {port}")
    limits = [
        (max_queue >= 0, f"--max-queue must be 0 or more, got {max_queue}"),
        (timeout > 0, f"--timeout must be above 0 seconds, got {timeout:g}"),
        (max_body > 0, f"--max-body must be above 0 MB, got {max_body:g}"),
        (1 <= max_images <= 64, f"--max-images must be from 1 to 64, got {max_images}"),
        (max_side >= 64, f"--max-side must be at least 64, got {max_side}"),
    ]
    for within, message in limits:
        if not within:
            raise InputError(message)
    if log_level not in ("debug", "info", "warning", "error"):
        raise InputError(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    if not ray and (ray_address is not None or replicas != 1 or cpus_per_replica != 1.0):
        raise InputError("--ray-address, --replicas and --cpus-per-replica go with --ray; add --ray")
    if replicas < 1 or cpus_per_replica <= 0:
        raise InputError("--replicas must be 1 or more and --cpus-per-replica above 0")
    # After the checks of the arguments alone: a mistyped option is refused without importing the server.
    try:
        from .serve.engine import Engine
        from .serve.run import serve as run_server
        from .serve.state import Settings
    except ImportError as error:
        from .serve import INSTALL_HINT

        raise LCMError(f"{INSTALL_HINT} ({error.name} is missing)") from None
    if ray:
        from .models import compile_config

        compile_config(precision)  # checked here, as the Engine checks it locally: each replica would fail
        _serve_on_ray(
            model or _default_model(),
            host,
            port,
            replicas,
            cpus_per_replica,
            ray_address,
            Settings(
                api_key=api_key or None,
                timeout=timeout,
                max_body_bytes=int(max_body * 2**20),
                cors_origins=tuple(cors_origin),
            ),
            dict(
                device=device,
                precision=precision,
                max_queue=max_queue,
                max_images=max_images,
                max_side=max_side,
                safety_checker=not no_safety_checker,
                vae=vae,
                fast=fast,
                deep_cache_interval=deep_cache,
            ),
        )
        return
    engine = Engine(
        Path(model or _default_model()),
        device=device,
        precision=precision,
        max_queue=max_queue,
        max_images=max_images,
        max_side=max_side,
        safety_checker=not no_safety_checker,
        vae=vae,
        fast=fast,
        deep_cache_interval=deep_cache,
    )
    settings = Settings(
        api_key=api_key or None,
        timeout=timeout,
        max_body_bytes=int(max_body * 2**20),
        cors_origins=tuple(cors_origin),
    )
    run_server(
        engine,
        settings,
        host=host,
        port=port,
        log_level=log_level,
        on_listening=lambda: typer.echo(
            f"lcm-run serve: {engine.model_name} on http://{host}:{port}/ (loading the models)", err=True
        ),
    )


def _serve_on_ray(
    model: str,
    host: str,
    port: int,
    replicas: int,
    cpus_per_replica: float,
    address: str | None,
    settings: Any,
    engine_options: dict[str, Any],
) -> None:
    try:
        from .serve import ray_app
    except ImportError as error:
        raise LCMError(
            "lcm-run serve --ray needs the [ray] extra: pip install 'lcm-openvino[serve,ray]' "
            f"({error.name} is missing)"
        ) from None
    from .loading import open_model_folder

    folder = open_model_folder(model)  # a bad bundle fails here, not in every replica
    typer.echo(f"lcm-run serve: {folder.name} on Ray, {replicas} replicas (loading the models)", err=True)
    ray_app.run(str(folder.root), settings, host, port, replicas, cpus_per_replica, address, **engine_options)


@tools_app.command(
    epilog="Rerun the same command to finish a stopped job: images whose manifest line and sha256 match are "
    "skipped, the rest are made. Exit 0: every image made; 1: some rows failed; 2: bad arguments. docs/batch.md."
)
def batch(
    prompts: Path | None = typer.Argument(
        None,
        metavar="PROMPTS",
        help="A .jsonl file (a JSON object a line), a .csv file (a header row) or text (a prompt a line)",
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help=f"Bundle folder [default: $LCM_MODEL or {DEFAULT_MODEL}]"
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="The job's folder: DIR/<name or row>-<k>.png, manifest.jsonl, job.json"
    ),
    workers: int = typer.Option(1, "--workers", help="Processes, each loading the bundle once (1: this one)"),
    seed: int = typer.Option(0, "--seed", help="Seeds the rows that set none: each its own, from this and its row"),
    steps: int | None = typer.Option(None, "--steps", "-s", help="Denoising steps [default: the bundle's]"),
    guidance: float | None = typer.Option(None, "--guidance", "-g", help="Guidance scale [default: the bundle's]"),
    width: int | None = typer.Option(None, "--width", help="Image width [default: the model's native size]"),
    height: int | None = typer.Option(None, "--height", help="Image height [default: the model's native size]"),
    num_images: int = typer.Option(1, "--num-images", "-n", help="Images per row (image k has the row's seed + k - 1)"),
    strength: float | None = typer.Option(
        None, "--strength", help="For rows with an image [default: 0.8; 1.0 with a mask]"
    ),
    negative_prompt: str | None = typer.Option(
        None, "--negative-prompt", help="For rows that set none (LCM-LoRA (cfg) bundles)"
    ),
    device: str = typer.Option("CPU", "--device", help="OpenVINO device: CPU, GPU, NPU, AUTO..."),
    precision: str = typer.Option("auto", "--precision", help="auto (the device's default), f32, bf16 or f16"),
    vae: str | None = typer.Option(None, "--vae", help="full or tiny (TAESD) [default: full, tiny with --fast]"),
    fast: bool = typer.Option(False, "--fast", help="The INT8 UNet and tiny VAE of an `lcm-export --fast` bundle"),
    deep_cache: int = typer.Option(
        1, "--deep-cache", metavar="N", help="DeepCache: the full UNet every N-th step (see lcm-run --help)"
    ),
    no_safety_checker: bool = typer.Option(False, "--no-safety-checker", help="Do not run the bundle's safety checker"),
    restart: bool = typer.Option(
        False, "--restart", help="Start DIR's job over: remove the PNGs its manifest lists, and the manifest"
    ),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad row instead of skipping it"),
    verify_dir: Path | None = typer.Option(
        None, "--verify", metavar="DIR", help="Check DIR's PNGs against its manifest instead (no PROMPTS)"
    ),
    ray: bool = typer.Option(
        False, "--ray", help="Generate on Ray (extra [ray]): --workers actors on $RAY_ADDRESS or a local instance"
    ),
    ray_address: str | None = typer.Option(None, "--ray-address", help="With --ray: the cluster to join"),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="With --ray: CPUs Ray reserves per actor"),
) -> None:
    """Make every image of PROMPTS into DIR, resumably: one PNG per image, one manifest line per PNG."""
    from . import batch_console
    from .batch import GeneratorOptions, JobRequest, RayOptions
    from .batch_plan import Defaults

    if not ray and (ray_address is not None or cpus_per_worker != 1.0):
        raise InputError("--ray-address and --cpus-per-worker go with --ray; add --ray")
    if cpus_per_worker <= 0:
        raise InputError(f"--cpus-per-worker must be above 0, got {cpus_per_worker}")
    if ray:
        try:
            import ray as _ray  # noqa: F401  (only to say how to install it)
        except ImportError:
            raise LCMError("lcm-run batch --ray needs the [ray] extra: pip install 'lcm-openvino[ray]'") from None

    if verify_dir is not None:
        if prompts is not None or output is not None:
            raise InputError("--verify DIR checks a finished job: it takes no PROMPTS and no --output")
        batch_console.verify(verify_dir)
        return
    if prompts is None or output is None:
        raise InputError("lcm-run batch needs PROMPTS and --output DIR (or --verify DIR); see lcm-run batch --help")
    request = JobRequest(
        prompts=prompts,
        output=output,
        generator=GeneratorOptions(
            model=model or _default_model(),
            device=device,
            precision=precision,
            safety_checker=not no_safety_checker,
            vae=vae,
            fast=fast,
            deep_cache_interval=deep_cache,
        ),
        defaults=Defaults(
            seed=seed,
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            num_images=num_images,
            strength=strength,
            negative_prompt=negative_prompt,
        ),
        workers=workers,
        restart=restart,
        strict=strict,
        ray=RayOptions(ray_address, cpus_per_worker) if ray else None,
    )
    code = batch_console.run(request)
    if code:
        raise typer.Exit(code)


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**28 else f"{size / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    app = tools_app if args[:1] in (["verify"], ["info"], ["cache"], ["serve"], ["batch"]) else generate_app
    if args[:1] == ["--version"]:
        print(f"lcm-run {__version__}")
        return
    run_app(
        app,
        args,
        "lcm-run",
        interrupted_message=(
            "interrupted: the finished images and their manifest lines are kept; rerun the same command to resume"
            if args[:1] == ["batch"]
            else "interrupted: no image was written"
        ),
        failure_message="lcm-run failed unexpectedly",
        debug_variable="LCM_RUN_DEBUG",
        describe=_describe,
    )


if __name__ == "__main__":
    main()
