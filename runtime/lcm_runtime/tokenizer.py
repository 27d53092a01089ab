"""Prompt -> token ids with the `tokenizers` library and the bundle's tokenizer.json."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .errors import BundleError, first_line


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
        self._settings_lock = threading.Lock()  # fragment_ids lifts truncation and padding for a moment

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> PromptTokenizer:
        try:
            with _native_stderr_held():
                tokenizer = cls(Tokenizer.from_file(str(path)), max_length)
                # A file can load and still fail (or panic) on every prompt, e.g. a template naming a
                # token it does not define: find out now, not in the middle of a generation.
                tokenizer._tokenizer.encode_batch(["a"])
            return tokenizer
        except BaseException as error:  # plain Exceptions for I/O and JSON; PanicException when Rust panics
            if not isinstance(error, Exception) and type(error).__name__ != "PanicException":
                raise  # Ctrl-C, exit
            detail = first_line(error)
            raise BundleError(f"cannot load the tokenizer {path} ({detail}); re-export the bundle") from None

    def _pad_token(self) -> str:
        # CLIP pads with its end-of-text token (SD1.x) or "!" (SD2.x); the file's padding says which.
        padding = self._tokenizer.padding
        if padding is not None:
            pad_token: str = padding["pad_token"]
            return pad_token
        return "<|endoftext|>" if self._tokenizer.token_to_id("<|endoftext|>") is not None else "[PAD]"

    @property
    def pad_id(self) -> int:
        padding = self._tokenizer.padding
        assert padding is not None  # __init__ enabled it
        return int(padding["pad_id"])

    @contextmanager
    def _unpadded(self) -> Iterator[Tokenizer]:
        """The tokenizer with truncation and padding lifted meanwhile, then restored as they were (a
        copy would cost 0.1 s of JSON parsing per process)."""
        with self._settings_lock:
            truncation, padding = self._tokenizer.truncation, self._tokenizer.padding
            assert truncation is not None and padding is not None  # __init__ enabled both
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
            try:
                yield self._tokenizer
            finally:
                self._tokenizer.enable_truncation(**truncation)
                self._tokenizer.enable_padding(**padding)

    def fragment_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids without start/end tokens, untruncated: A1111 tokenises each weighted fragment alone."""
        with self._unpadded() as tokenizer:
            return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]

    def wrapping_ids(self) -> list[int]:
        """The ids the tokenizer puts around an empty prompt, unpadded: [start, end] for CLIP."""
        with self._unpadded() as tokenizer:
            return tokenizer.encode("", add_special_tokens=True).ids

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def __call__(self, prompts: list[str]) -> np.ndarray:
        """int64 ids of shape [len(prompts), max_length]; warns with the dropped words of long prompts."""
        with self._settings_lock:
            encodings = self._tokenizer.encode_batch(prompts)
        for encoding in encodings:
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


@contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Hold what native code writes to fd 2 meanwhile; replay it unless the block failed.

    A Rust panic in `tokenizers` prints its message (and with RUST_BACKTRACE a backtrace) to fd 2
    before Python sees the exception; the caller turns that into one line, so the dump is dropped.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (a pythonw-like process): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                if output := held.read():
                    os.write(2, output)
