"""diffusers' LatentConsistencyModelPipeline in eager PyTorch on the CPU; see common.py.

--model is the diffusers folder the bundle was exported from (the same weights).
--precision default/f32 runs float32; bf16 casts every module to bfloat16.
"""

from __future__ import annotations

from typing import Any

from common import Generate, StageClock, parse_args, precision_name, run, set_torch_threads, versions


def setup(args: Any) -> "tuple[Generate, dict[str, Any]]":
    import torch
    from diffusers import LatentConsistencyModelPipeline

    set_torch_threads(args.threads)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    pipe = LatentConsistencyModelPipeline.from_pretrained(args.model, dtype=dtype, safety_checker=None,
                                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    clock = StageClock()
    clock.wrap(pipe, "encode_prompt", "text_encoder")
    clock.wrap(pipe.vae, "decode", "vae_decode")

    def generate(seed: int) -> "tuple[Any, dict[str, Any]]":
        clock.reset()
        with torch.inference_mode():
            image = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, height=args.height,
                         width=args.width, generator=torch.Generator().manual_seed(seed),
                         callback_on_step_end=clock.step_callback).images[0]
        return image, clock.result()

    info = {"versions": versions("diffusers", "torch", "transformers"),
            "precision_executed": {"all": precision_name(dtype)},
            "torch_threads": torch.get_num_threads()}
    return generate, info


if __name__ == "__main__":
    run(parse_args(__doc__), setup)
