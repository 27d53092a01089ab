"""openvino_genai.Text2ImagePipeline on a bundle; see common.py for the protocol.

--variant default: construct with the device (shapes stay dynamic, as a user's first try);
--variant reshape: reshape to the benchmarked batch and size before compiling (genai's advice);
any other variant (batch4: --batch 4) constructs as default.
"""

from __future__ import annotations

from typing import Any

from common import Generate, check_batch, openvino_config, openvino_default_precision, parse_args, run, versions


def setup(args: Any) -> tuple[Generate, dict[str, Any]]:
    import numpy as np
    import openvino_genai
    from PIL import Image

    config = openvino_config(args.precision)
    if args.variant == "reshape":
        pipe = openvino_genai.Text2ImagePipeline(args.model)
        pipe.reshape(args.batch, args.height, args.width, args.guidance)
        pipe.compile("CPU", **config)
    else:
        pipe = openvino_genai.Text2ImagePipeline(args.model, "CPU", **config)

    def generate(seed: int) -> tuple[Any, dict[str, Any] | None]:
        tensor = pipe.generate(
            args.prompt,
            width=args.width,
            height=args.height,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            rng_seed=seed,
            num_images_per_prompt=args.batch,
        )
        images = np.asarray(tensor.data)
        check_batch(len(images), args.batch)
        return Image.fromarray(images[0]), performance_stages(pipe)

    precision = args.precision if args.precision != "default" else openvino_default_precision()
    return generate, {"versions": versions("openvino-genai", "openvino"), "precision_executed": {"all": precision}}


def performance_stages(pipe: Any) -> dict[str, Any] | None:
    """genai's own per-stage clock (2026.4: text encoder and VAE in ms, raw UNet steps in us)."""
    try:
        metrics = pipe.get_performance_metrics()
        text_encoder = metrics.get_text_encoder_infer_duration()
        return {
            "text_encoder": (sum(text_encoder.values()) if isinstance(text_encoder, dict) else text_encoder) / 1e3,
            "unet": [us / 1e6 for us in metrics.raw_metrics.unet_inference_durations],
            "vae_decode": metrics.get_vae_decoder_infer_duration() / 1e3,
        }
    except (AttributeError, RuntimeError, TypeError):
        return None


if __name__ == "__main__":
    run(parse_args(__doc__), setup)
