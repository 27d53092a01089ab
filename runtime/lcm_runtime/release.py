"""Model release policy: which compiled models a call frees once it is done with them."""

from __future__ import annotations

from collections.abc import Collection

ONE_CALL = "one-call"  # release_after_use for a process that makes a single call, as lcm-run does


def one_call_releases(vae: str) -> tuple[str, ...]:
    """What a process making one call frees once used. The text encoder and the VAE encoder always:
    they are never needed again after the prompt and the input pictures are encoded. The UNet before
    a full-VAE decode: the peak drops by the UNet's weights, and the decode's ~400 MB of activations
    reuse the UNet's just-freed pages. On a VM slow to hand out memory the process never had, that
    saves up to 0.8 s; otherwise it costs the free, 0.12 s. TAESD needs little memory and the UNet
    sets the peak anyway: freeing it would only cost."""
    return ("text_encoder", "vae_encoder", "unet") if vae == "full" else ("text_encoder", "vae_encoder")


def resolve_release(release_after_use: Collection[str] | str, vae: str) -> Collection[str] | str:
    """``"one-call"`` becomes its list for this VAE; anything else is checked by CompiledModels."""
    return one_call_releases(vae) if release_after_use == ONE_CALL else release_after_use
