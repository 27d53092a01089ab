"""optimum-intel's OVLatentConsistencyModelPipeline on the same bundle folder; see common.py.

--variant default: as loaded (dynamic shapes); --variant reshape: static batch and size first.
"""

from __future__ import annotations

from typing import Any

from common import Generate, StageClock, openvino_config, openvino_default_precision, parse_args, run, versions


def setup(args: Any) -> "tuple[Generate, dict[str, Any]]":
    import torch
    from optimum.intel import OVLatentConsistencyModelPipeline

    # An empty CACHE_DIR: no compile cache, like every other worker (optimum may default to one).
    config = {**openvino_config(args.precision), "CACHE_DIR": ""}
    pipe = OVLatentConsistencyModelPipeline.from_pretrained(args.model, device="CPU", ov_config=config, compile=False)
    if args.variant == "reshape":
        pipe.reshape(batch_size=1, height=args.height, width=args.width, num_images_per_prompt=1)
    pipe.compile()
    pipe.set_progress_bar_config(disable=True)
    clock = StageClock()
    clock.wrap(pipe, "encode_prompt", "text_encoder")
    clock.wrap(pipe.vae, "decode", "vae_decode")

    def generate(seed: int) -> "tuple[Any, dict[str, Any]]":
        clock.reset()
        image = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, height=args.height,
                     width=args.width, generator=torch.Generator().manual_seed(seed),
                     callback_on_step_end=clock.step_callback).images[0]
        return image, clock.result()

    precision = args.precision if args.precision != "default" else openvino_default_precision()
    info = {"versions": versions("optimum-intel", "optimum", "openvino", "diffusers", "torch"), "precision_executed": {"all": precision}}
    return generate, info


if __name__ == "__main__":
    run(parse_args(__doc__), setup)
