"""lcm-run's Python API (lcm_runtime.LCMPipeline) on a bundle; see common.py for the protocol."""

from __future__ import annotations

from typing import Any

from common import Generate, check_batch, parse_args, run, versions

PRECISION_ARGUMENT = {"default": "auto", "f32": "f32", "bf16": "bf16"}
DEEP_CACHE_INTERVAL = 2  # systems.DEEP_CACHE_INTERVAL (workers run apart from the harness package)


def setup(args: Any) -> tuple[Generate, dict[str, Any]]:
    from lcm_runtime import LCMPipeline

    # No compile cache: every worker compiles from the IR, so first-image times compare fairly.
    # The cache's effect is measured apart, with the lcm-run CLI.
    pipe = LCMPipeline.from_pretrained(
        args.model,
        device="CPU",
        precision=PRECISION_ARGUMENT[args.precision],
        cache_dir=False,
        vae="tiny" if args.variant == "tiny-vae" else None,
        fast=args.variant in ("fast", "fast-deep-cache"),
        deep_cache_interval=DEEP_CACHE_INTERVAL if args.variant.endswith("deep-cache") else 1,
    )

    def generate(seed: int) -> tuple[Any, dict[str, Any]]:
        output = pipe(
            args.prompt,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            height=args.height,
            width=args.width,
            num_images_per_prompt=args.batch,
            generator=seed,
        )
        check_batch(len(output.images), args.batch)
        return output.images[0], dict(output.timings)

    info = {"versions": versions("lcm-openvino", "openvino", "numpy"), "precision_executed": pipe.execution_precision}
    return generate, info


if __name__ == "__main__":
    run(parse_args(__doc__), setup)
