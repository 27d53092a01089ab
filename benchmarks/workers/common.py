"""What every worker shares: its arguments, the measurement loop and the result file.

Workers are standalone scripts run by a system's own python (its own virtual environment), so
they import nothing from the benchmarks package; Python puts this folder on sys.path for them.

A worker: load the pipeline (timed), make one image and write it as first.png right away (the
parent measures cold start as spawn -> that file's mtime), then make --runs more images, each
timed from prompt to PIL image. The image write is timed once, apart. With --batch N every call
makes N images (one prompt, one seed) and is timed as a whole; first.png is the call's first image.

With --pace DIR the parent takes turns between several resident workers: after first.png a worker
writes DIR/ready, then makes timed image k only once DIR/go-k exists, and writes DIR/done-k when it
is made. Workers compared side by side so measure in alternation, image by image (benchmarks/run.py).
After its result a paced worker stays resident until DIR/exit exists: a process that ends frees
gigabytes while the next worker times its image, which cost that image's first UNet step 0.25-0.35 s
in the last round of every interleaved group before this wait.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

IMPORTED_AT = time.time()

# (image, per-stage seconds or None) for one prompt at one seed
Generate = Callable[[int], "tuple[Any, dict[str, Any] | None]"]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="the OpenVINO bundle (or, for torch, the diffusers folder)")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precision", default="default", choices=("default", "f32", "bf16"))
    parser.add_argument("--variant", default="default")
    parser.add_argument("--prompt", default="a photo of an astronaut riding a horse on mars")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=8.0)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="0: the library's default")
    parser.add_argument(
        "--batch", type=int, default=1, help="images per call (num_images_per_prompt); generate(seed) returns the first"
    )
    parser.add_argument("--pace", type=Path, help="make each timed image when the parent says (see above)")
    return parser.parse_args()


def wait_for(path: Path, poll_seconds: float = 0.005) -> None:
    """Until the parent creates ``path``; it kills a worker that waits past the run's timeout."""
    while not path.exists():
        time.sleep(poll_seconds)


def check_batch(made: int, asked: int) -> None:
    """A call that silently made fewer images would report a flattering images-per-minute."""
    if made != asked:
        raise RuntimeError(f"asked for {asked} images per call, got {made}")


def versions(*packages: str) -> dict[str, str]:
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


class StageClock:
    """Times named calls of a pipeline by wrapping its methods, and denoising steps by callback."""

    def __init__(self) -> None:
        self.stages: dict[str, Any] = {}
        self.step_ends: list[float] = []
        self.started = 0.0

    def reset(self) -> None:
        self.stages = {}
        self.step_ends = []
        self.started = time.perf_counter()

    def wrap(self, owner: Any, attribute: str, stage: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - started

        setattr(owner, attribute, timed)

    def step_callback(self, *_args: Any, **_kwargs: Any) -> dict:
        self.step_ends.append(time.perf_counter())
        return {}  # diffusers' callback_on_step_end expects a dict of tensors to replace

    def result(self) -> dict[str, Any]:
        stages = dict(self.stages)
        if self.step_ends:
            # The first step's start is not observable; it is the end of prompt encoding and
            # latent preparation, so that step is reported from the encoder's end.
            encoded = self.started + stages.get("text_encoder", 0.0)
            ends = [encoded, *self.step_ends]
            stages["unet"] = [after - before for before, after in zip(ends, ends[1:], strict=False)]
        return stages


def timed_diffusers_style(
    pipe: Any,
    args: argparse.Namespace,
    make_generator: Callable[[int], Any],
    context: Callable[[], Any] = contextlib.nullcontext,
) -> Generate:
    """generate(seed) for a pipeline with diffusers' call API (diffusers, optimum-intel), timed per
    stage by wrapping encode_prompt and vae.decode and by the step callback."""
    clock = StageClock()
    clock.wrap(pipe, "encode_prompt", "text_encoder")
    clock.wrap(pipe.vae, "decode", "vae_decode")

    def generate(seed: int) -> tuple[Any, dict[str, Any]]:
        clock.reset()
        with context():
            image = pipe(
                args.prompt,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                height=args.height,
                width=args.width,
                generator=make_generator(seed),
                callback_on_step_end=clock.step_callback,
            ).images[0]
        return image, clock.result()

    return generate


def run(args: argparse.Namespace, setup: Callable[[argparse.Namespace], tuple[Generate, dict[str, Any]]]) -> None:
    """Load, make the first image (cold), then args.runs warm images; write result.json."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"imports_seconds": time.time() - IMPORTED_AT}

    started = time.perf_counter()
    generate, info = setup(args)
    result["load_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    image, first_stages = generate(args.seed)
    result["first_image_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    image.save(args.out_dir / "first.png")
    result["png_write_seconds"] = time.perf_counter() - started
    result["first_image_stages"] = first_stages
    if args.pace:
        (args.pace / "ready").touch()

    latencies, stages = [], []
    for index in range(args.runs):
        if args.pace:
            wait_for(args.pace / f"go-{index}")
        started = time.perf_counter()
        image, run_stages = generate(args.seed)
        latencies.append(time.perf_counter() - started)
        stages.append(run_stages)
        if args.pace:
            (args.pace / f"done-{index}").write_text(f"{latencies[-1]}\n")
    result.update(
        latencies_seconds=latencies,
        median_seconds=statistics.median(latencies) if latencies else None,
        stages=stages,
        image_size=list(image.size),
        images_per_call=args.batch,
        # callables are facts known only once the pipeline has run (e.g. what it compiled to)
        **{key: value() if callable(value) else value for key, value in info.items()},
    )
    (args.out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.pace:
        wait_for(args.pace / "exit")


def openvino_default_precision() -> str:
    """What the CPU plugin runs in when nobody asks (bf16 on CPUs with avx512_bf16 or AMX)."""
    import openvino as ov

    return precision_name(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))


def precision_name(value: Any) -> str:
    """'bf16', 'f32', ... from an ov.Type, a torch dtype or a string."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    text = str(value).removeprefix("torch.")
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(text, text)


def openvino_config(precision: str) -> dict[str, str]:
    return {} if precision == "default" else {"INFERENCE_PRECISION_HINT": precision}


def set_torch_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
