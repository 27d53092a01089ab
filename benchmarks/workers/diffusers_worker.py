"""diffusers' LatentConsistencyModelPipeline in eager PyTorch on the CPU; see common.py.

--model is the diffusers folder the bundle was exported from (the same weights).
--precision default/f32 runs float32; bf16 casts every module to bfloat16.
"""

from __future__ import annotations

from typing import Any

from common import Generate, parse_args, precision_name, run, set_torch_threads, timed_diffusers_style, versions


def setup(args: Any) -> tuple[Generate, dict[str, Any]]:
    import torch
    from diffusers import LatentConsistencyModelPipeline

    set_torch_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    pipe = LatentConsistencyModelPipeline.from_pretrained(
        args.model, dtype=dtype, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    generate = timed_diffusers_style(pipe, args, lambda seed: torch.Generator().manual_seed(seed), torch.inference_mode)

    info = {
        "versions": versions("diffusers", "torch", "transformers"),
        "precision_executed": {"all": precision_name(dtype)},
        "torch_threads": torch.get_num_threads(),
    }
    return generate, info


if __name__ == "__main__":
    run(parse_args(__doc__), setup)
