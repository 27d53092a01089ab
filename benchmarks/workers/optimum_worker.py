"""optimum-intel's OVLatentConsistencyModelPipeline on the same bundle folder; see common.py.

--variant default: as loaded (dynamic shapes); --variant reshape: static batch and size first.
"""

from __future__ import annotations

from typing import Any

from common import (
    Generate,
    openvino_config,
    openvino_default_precision,
    parse_args,
    precision_name,
    run,
    timed_diffusers_style,
    versions,
)


def setup(args: Any) -> tuple[Generate, dict[str, Any]]:
    import torch
    from optimum.intel import OVLatentConsistencyModelPipeline

    # optimum-intel adds a compile cache only on GPU, so on the CPU it compiles from the IR like
    # every other worker.
    config = openvino_config(args.precision)
    pipe = OVLatentConsistencyModelPipeline.from_pretrained(args.model, device="CPU", ov_config=config, compile=False)
    if args.variant == "reshape":
        pipe.reshape(batch_size=1, height=args.height, width=args.width, num_images_per_prompt=1)
    pipe.compile()
    pipe.set_progress_bar_config(disable=True)
    generate = timed_diffusers_style(pipe, args, lambda seed: torch.Generator().manual_seed(seed))

    info = {
        "versions": versions("optimum-intel", "optimum", "openvino", "diffusers", "torch"),
        "precision_executed": lambda: executed_precision(pipe, args.precision),
    }
    return generate, info


def executed_precision(pipe: Any, requested: str) -> dict[str, str]:
    """Each compiled model's settled precision (optimum keeps the compiled model as .request)."""
    found = {}
    for name in ("text_encoder", "unet", "vae_decoder"):
        compiled = getattr(getattr(pipe, name, None), "request", None)
        if hasattr(compiled, "get_property"):
            found[name] = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return found or {"all": requested if requested != "default" else openvino_default_precision()}


if __name__ == "__main__":
    run(parse_args(__doc__), setup)
