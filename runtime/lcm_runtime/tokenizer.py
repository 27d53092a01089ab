"""Prompt -> token ids with the `tokenizers` library and the bundle's tokenizer.json."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .errors import BundleError


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the text encoder can read; the end was dropped (as diffusers does)."""


class PromptTokenizer:
    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        self._tokenizer = tokenizer
        self.max_length = max_length
        # lcm-export configures truncation and padding in the file; a folder from other tools may not.
        if tokenizer.truncation is None or tokenizer.truncation.get("max_length") != max_length:
            tokenizer.enable_truncation(max_length)
        if tokenizer.padding is None or tokenizer.padding.get("length") != max_length:
            pad_token = self._pad_token()
            tokenizer.enable_padding(length=max_length, pad_id=tokenizer.token_to_id(pad_token), pad_token=pad_token)

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> "PromptTokenizer":
        try:
            return cls(Tokenizer.from_file(str(path)), max_length)
        except Exception as error:  # tokenizers raises plain Exception subclasses for I/O and JSON
            raise BundleError(f"cannot load the tokenizer {path} ({str(error).splitlines()[0]}); re-export the bundle") from None

    def _pad_token(self) -> str:
        # CLIP pads with its end-of-text token (SD1.x) or "!" (SD2.x); the file's padding says which.
        padding = self._tokenizer.padding
        if padding is not None:
            return padding["pad_token"]
        return "<|endoftext|>" if self._tokenizer.token_to_id("<|endoftext|>") is not None else "[PAD]"

    def __call__(self, prompts: list[str]) -> np.ndarray:
        """int64 ids of shape [len(prompts), max_length]; warns with the dropped words of long prompts."""
        encodings = self._tokenizer.encode_batch(prompts)
        for prompt, encoding in zip(prompts, encodings):
            if encoding.overflowing:
                dropped = " ".join(
                    self._tokenizer.decode(piece.ids, skip_special_tokens=True) for piece in encoding.overflowing
                ).strip()
                warnings.warn(
                    f"the prompt is longer than {self.max_length} tokens; this end was dropped: {dropped!r}",
                    PromptTruncatedWarning,
                    stacklevel=3,
                )
        return np.array([encoding.ids for encoding in encodings], dtype=np.int64)
