"""diffusers' pipelines as the references the runtime is compared with, and the comparison itself.

Shared by the parity tests (tests/parity) and the command that writes the golden slices
(tests/runtime/data/make_tiny_golden.py). torch and diffusers are imported only by the functions that
need them, so the bundle tier can import ``assert_same_image`` without torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")


def assert_same_image(ours: np.ndarray, theirs: np.ndarray) -> None:
    """The bar: uint8 images differ by at most 1 level on at most 0.1% of the values."""
    assert ours.shape == theirs.shape
    difference = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    assert difference.max() <= 1, f"max difference {difference.max()} levels"
    assert (difference > 0).mean() <= 0.001, f"{(difference > 0).mean():.4%} of values differ"


def components(pipe: Any) -> dict[str, Any]:
    """The five parts a Stable Diffusion pipeline is made of (no safety checker)."""
    return {name: getattr(pipe, name) for name in COMPONENTS}


def reference(kind: Any, parts: dict[str, Any], lcm_scheduler: bool = False) -> Any:
    """A diffusers pipeline of class ``kind`` from ``parts``, without safety checker or progress bar;
    ``lcm_scheduler``: with ``LCMScheduler.from_config`` of its scheduler's config, as LCM-LoRA's card says."""
    import diffusers

    pipe = kind(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if lcm_scheduler:
        pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def lcm_reference(kind: Any, folder: Any) -> Any:
    """A diffusers LCM pipeline class (text or image to image) loaded from a saved pipeline folder."""
    pipe = kind.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def lcm_inpaint_reference(folder: Any) -> Any:
    """StableDiffusionInpaintPipeline built from an LCM pipeline's components (4-channel UNet, LCMScheduler):
    diffusers has no LCM inpainting class, and this is how its users inpaint with an LCM."""
    import diffusers

    lcm = diffusers.LatentConsistencyModelPipeline.from_pretrained(folder)
    return reference(diffusers.StableDiffusionInpaintPipeline, components(lcm))


def diffusers_negatives(negative: str | list[str] | None, prompts: list[str]) -> list[str] | None:
    """diffusers wants the negative prompt of the prompt's type: a list, one per prompt."""
    if negative is None:
        return None
    return [negative] * len(prompts) if isinstance(negative, str) else negative


def assert_inpainting_is_the_reference(
    reference: Any,
    ours: Any,
    draws: Any,
    prompts: list[str],
    negative: str | list[str] | None = None,
    seed: int = 5,
    **call: Any,
) -> Any:
    """One inpainting call through both pipelines (``call``: image, mask_image, steps, strength, ...),
    diffusers seeded by torch and the runtime fed torch's draws (``draws(seed)``); the parity bar, the
    steps that ran (the last int(steps x strength)), and an image that is not flat. The runtime's output."""
    import torch

    from lcm_runtime.image import to_uint8

    call = dict(call, output_type="np")
    expected = reference(
        prompts,
        negative_prompt=diffusers_negatives(negative, prompts),
        generator=torch.Generator().manual_seed(seed),
        **call,
    ).images
    result = ours(prompts, negative_prompt=negative, generator=draws(seed), **call)
    steps, strength = call["num_inference_steps"], call["strength"]
    assert result.images.shape == expected.shape
    assert len(result.timings["unet"]) == min(int(steps * strength), steps)
    assert_same_image(to_uint8(result.images), to_uint8(expected))
    assert to_uint8(expected).std() > 5
    return result


@contextlib.contextmanager
def numpy_draws(seed: int) -> Iterator[None]:
    """Within it, diffusers draws its noise from ``numpy.random.default_rng(seed)``, as the runtime does
    given ``generator=seed``: the same values in the same order, without torch on the runtime's side."""
    import sys

    import torch

    source = np.random.default_rng(seed)

    def randn_tensor(shape: Any, generator: Any = None, device: Any = None, dtype: Any = None, **_: Any) -> Any:
        values = torch.from_numpy(source.standard_normal(tuple(shape), dtype=np.float32))
        return values.to(dtype=dtype or torch.float32)

    # Each module that imported randn_tensor by name holds its own reference (vars: no lazy imports).
    patched = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("diffusers") and module is not None and callable(vars(module).get("randn_tensor"))
    ]
    originals = [module.randn_tensor for module in patched]
    for module in patched:
        module.randn_tensor = randn_tensor
    try:
        yield
    finally:
        for module, original in zip(patched, originals, strict=True):
            module.randn_tensor = original
