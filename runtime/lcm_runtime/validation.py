"""The one validation layer for generation arguments, shared by every task and front end.

Each check raises InputError naming the Python argument (``strength=``) and what would be valid;
the CLI and the server add their own names for it. Counts are bounded so that no request can make
the process allocate without limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

from .errors import InputError

DEFAULT_MAX_IMAGES = 16  # images per call (prompts x images per prompt), settable per pipeline
MAX_SIDE = 8192  # pixels; far beyond what the models were trained for, and a bound on allocations
MAX_PIXELS = 4096 * 4096
MAX_GUIDANCE = 100.0
OUTPUT_TYPES = ("pil", "np")
# "diffusers": truncated at 77 tokens, brackets are text; "a1111": (word:1.2) weights, BREAK, any length.
PROMPT_SYNTAXES = ("diffusers", "a1111")


def prompt_list(prompt: str | Sequence[str], max_images: int) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts or not all(isinstance(text, str) for text in prompts):
        raise InputError("prompt must be a string or a non-empty list of strings", argument="prompt")
    if len(prompts) > max_images:
        raise InputError(
            f"prompt has {len(prompts)} prompts; at most {max_images} per call (max_images_per_call) are allowed",
            argument="prompt",
        )
    return prompts


def whole_number(value: object, name: str, low: int, high: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise InputError(f"{name} must be a whole number, got {value!r}", argument=name)
    if not low <= int(value) <= high:
        raise InputError(f"{name} must be between {low} and {high}{hint}, got {value}", argument=name)
    return int(value)


def real_number(value: object, name: str, low: float, high: float, low_open: bool = False, hint: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{name} must be a number, got {value!r}", argument=name)
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {number}", argument=name)
    if number < low or number > high or (low_open and number == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InputError(f"{name} must be in {interval}{hint}, got {number:g}", argument=name)
    return number


def image_count(num_images_per_prompt: object, prompts: int, max_images: int) -> int:
    per_prompt = whole_number(num_images_per_prompt, "num_images_per_prompt", 1, max_images)
    if per_prompt * prompts > max_images:
        raise InputError(
            f"{prompts} prompts x num_images_per_prompt={per_prompt} is {per_prompt * prompts} images; "
            f"at most {max_images} per call (max_images_per_call) are allowed",
            argument="num_images_per_prompt",
        )
    return per_prompt


def image_side(value: object, name: str, multiple: int, minimum: int = 0) -> int:
    """A side in pixels: a positive multiple of ``multiple``, at least ``minimum`` (a bundle's own floor)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < multiple or int(value) % multiple:
        raise InputError(f"{name} must be a positive multiple of {multiple} for this model, got {value}", argument=name)
    if int(value) < minimum:
        raise InputError(
            f"{name} must be at least {minimum} for this bundle (its token downsampling pools the latents), "
            f"got {value}",
            argument=name,
        )
    if int(value) > MAX_SIDE:
        raise InputError(f"{name} must be at most {MAX_SIDE}, got {value}", argument=name)
    return int(value)


def image_size(height: object, width: object, multiple: int, minimum: int = 0) -> tuple[int, int]:
    height, width = image_side(height, "height", multiple, minimum), image_side(width, "width", multiple, minimum)
    if height * width > MAX_PIXELS:
        raise InputError(
            f"height={height} x width={width} is more than {MAX_PIXELS // 2**20} megapixels; choose a smaller size",
            argument="height",
        )
    return height, width


def guidance(value: object) -> float:
    return real_number(value, "guidance_scale", 0.0, MAX_GUIDANCE, hint=" (8.0 is typical)")


def guidance_rescale(value: object) -> float:
    return real_number(value, "guidance_rescale", 0.0, 1.0, hint=" (0.7 is typical, 0 turns it off)")


def negative_prompt_list(value: object, prompts: int) -> list[str] | None:
    """None, one string for every prompt, or a list of one string per prompt."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value] * prompts
    if not isinstance(value, (list, tuple)) or not all(isinstance(text, str) for text in value):
        raise InputError(
            "negative_prompt must be a string or a list of strings, one per prompt", argument="negative_prompt"
        )
    if len(value) != prompts:
        raise InputError(
            f"negative_prompt has {len(value)} prompts for {prompts} prompts; pass one string, or one per prompt",
            argument="negative_prompt",
        )
    return list(value)


def strength(value: object) -> float:
    return real_number(value, "strength", 0.0, 1.0, low_open=True)


def output_type(value: object) -> str:
    if value not in OUTPUT_TYPES:
        raise InputError(f"output_type must be 'pil' or 'np', got {value!r}", argument="output_type")
    return str(value)


def prompt_syntax(value: object) -> str:
    if not isinstance(value, str) or value not in PROMPT_SYNTAXES:
        raise InputError(
            f"prompt_syntax must be 'diffusers' (truncate at 77 tokens, brackets are text) or 'a1111' "
            f"((word:1.2) weights, BREAK, long prompts), got {value!r}",
            argument="prompt_syntax",
        )
    return value
