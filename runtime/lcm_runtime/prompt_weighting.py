"""AUTOMATIC1111's prompt syntax and long prompts, in pure Python and NumPy (no torch).

What A1111 (stable-diffusion-webui, "Original" emphasis) does, and so what this module does:

* ``(words)`` multiplies their weight by 1.1, ``[words]`` by 1/1.1, ``(words:1.3)`` by 1.3; brackets
  nest and multiply, brackets left open at the end still apply, ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\``
  are the literal characters, and ``BREAK`` ends a chunk. A space around the weight, ``(words : 1.3)``,
  is accepted as A1111 accepts it since v1.6.
* Each weighted fragment is tokenised on its own, without BOS/EOS and untruncated, and the tokens
  are packed into chunks of 75. A chunk that fills up while a comma lies within its last 20 tokens
  hands the tokens after that comma to the next chunk. Each chunk becomes ``[BOS] + tokens + [EOS]``
  padded to 77, with weight 1 on BOS, EOS and padding.
* Each chunk goes through the text encoder alone; its embeddings are multiplied per token by the
  weights, then rescaled so that their mean (one scalar over the whole chunk, BOS/EOS/padding
  included) is what it was before. The chunks are concatenated along the sequence: 77 x chunks.

Weights are Python floats (float64), as A1111's; they are applied to the float32 embeddings as
float32, as A1111's torch code does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BundleError, InputError
from .tokenizer import PromptTokenizer

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
CHUNK_LENGTH = 75  # prompt tokens per chunk; with BOS and EOS, the text encoder's 77
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack default
MAX_CHUNKS = 32  # 2400 prompt tokens: a bound on the UNet's cross-attention size, far past real prompts
BREAK = ("BREAK", -1.0)  # how a BREAK appears among the fragments, as in A1111

# One lexical token of the syntax per match, in A1111's order of preference.
_SYNTAX = re.compile(
    r"""
      \\[()\[\]\\]?            # an escaped bracket or backslash; a lone backslash is dropped
    | [(\[]                    # an opening bracket
    | :\s*([+-]?[.\d]+)\s*\)   # ":1.3)" closes a round bracket with that weight
    | [)\]]                    # a closing bracket
    | [^\\()\[\]:]+            # plain text
    | :                        # a colon that starts no weight
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """``text`` -> (fragment, weight) pairs, runs of equal weight merged; a BREAK is ``("BREAK", -1.0)``.

    ``parse_prompt_attention("a (cat:1.3) [dog]")`` -> ``[("a ", 1.0), ("cat", 1.3), (" ", 1.0), ("dog", 0.909...)]``.
    """
    fragments: list[list[Any]] = []  # [text, weight], weights multiplied in place as brackets close
    open_round: list[int] = []  # where each open bracket's fragments start
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= factor

    for match in _SYNTAX.finditer(text):
        piece, weight = match.group(0), match.group(1)
        if piece.startswith("\\"):
            fragments.append([piece[1:], 1.0])
        elif piece in ("(", "["):
            (open_round if piece == "(" else open_square).append(len(fragments))
        elif weight is not None and open_round and _is_number(weight):
            scale_from(open_round.pop(), float(weight))
        elif piece == ")" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
        elif piece == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:  # text, and closers with nothing to close (A1111 keeps them as text)
            for index, part in enumerate(_BREAK_SPLIT.split(piece)):
                if index:
                    fragments.append(list(BREAK))
                fragments.append([part, 1.0])
    # Brackets never closed apply to the end: round ones first, each in the order opened.
    for start in open_round:
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)

    merged: list[tuple[str, float]] = []
    for fragment_text, weight in fragments:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + fragment_text, merged[-1][1])
        else:
            merged.append((fragment_text, weight))
    return merged or [("", 1.0)]


def _is_number(weight: str) -> bool:
    # "[.\d]+" also matches "1.2.3" or "...", on which A1111 fails; here the piece stays plain text.
    try:
        float(weight)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class SpecialTokens:
    bos: int
    eos: int
    pad: int  # SD1's CLIP pads with EOS; SD2's with "!"
    comma: int | None  # ",</w>": where a full chunk may be cut

    @classmethod
    def of(cls, tokenizer: PromptTokenizer) -> SpecialTokens:
        wrapped = tokenizer.wrapping_ids()
        if len(wrapped) != 2:
            raise BundleError(
                "the bundle's tokenizer does not wrap a prompt in one start and one end token, "
                "which the A1111 prompt syntax needs; use prompt_syntax='diffusers'"
            )
        return cls(bos=wrapped[0], eos=wrapped[1], pad=tokenizer.pad_id, comma=tokenizer.token_id(",</w>"))


@dataclass(frozen=True)
class PromptChunk:
    """One text-encoder pass: 77 token ids and their weights (1.0 on BOS, EOS and padding)."""

    tokens: tuple[int, ...]
    multipliers: tuple[float, ...]


def empty_chunk(special: SpecialTokens, chunk_length: int = CHUNK_LENGTH) -> PromptChunk:
    """The chunk of an empty prompt: what shorter prompts are padded with."""
    return PromptChunk((special.bos, special.eos) + (special.pad,) * chunk_length, (1.0,) * (chunk_length + 2))


def chunk_fragments(
    tokenized: Sequence[tuple[Sequence[int] | None, float]],
    special: SpecialTokens,
    chunk_length: int = CHUNK_LENGTH,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> list[PromptChunk]:
    """(token ids, weight) per fragment -> chunks, as A1111's tokenize_line; ids None (a BREAK) close the
    chunk. ``comma_backtrack=0`` never cuts at a comma."""
    chunks: list[PromptChunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    comma_at = -1  # index of the last comma in the open chunk; -1 when none since it opened

    def close() -> None:
        nonlocal comma_at
        padding = chunk_length - len(tokens)
        chunks.append(
            PromptChunk(
                (special.bos, *tokens, special.eos) + (special.pad,) * padding, (1.0, *weights, 1.0) + (1.0,) * padding
            )
        )
        tokens.clear()
        weights.clear()
        comma_at = -1

    for ids, weight in tokenized:
        if ids is None:
            close()
            continue
        for token in ids:
            if token == special.comma:
                comma_at = len(tokens)
            elif (
                comma_backtrack
                and len(tokens) == chunk_length
                and comma_at != -1
                and len(tokens) - comma_at <= comma_backtrack
            ):
                # A full chunk ends at its last comma; what followed it opens the next one.
                carried = tokens[comma_at + 1 :], weights[comma_at + 1 :]
                del tokens[comma_at + 1 :], weights[comma_at + 1 :]
                close()
                tokens.extend(carried[0])
                weights.extend(carried[1])
            if len(tokens) == chunk_length:
                close()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        close()
    return chunks


def tokenize_fragments(
    fragments: Sequence[tuple[str, float]], tokenizer: PromptTokenizer
) -> list[tuple[list[int] | None, float]]:
    """Each fragment's ids alone, without BOS/EOS, untruncated (BPE does not merge across fragments);
    None for a BREAK."""
    ids = tokenizer.fragment_ids([text for text, _ in fragments])
    return [
        (None if (text, weight) == BREAK else fragment_ids, weight)
        for fragment_ids, (text, weight) in zip(ids, fragments, strict=True)
    ]


def prompt_chunks(prompt: str, tokenizer: PromptTokenizer, special: SpecialTokens | None = None) -> list[PromptChunk]:
    """A prompt in A1111's syntax -> its chunks of (the text encoder's) 77 tokens and weights."""
    special = SpecialTokens.of(tokenizer) if special is None else special
    return chunk_fragments(
        tokenize_fragments(parse_prompt_attention(prompt), tokenizer), special, chunk_length=tokenizer.max_length - 2
    )


def pad_to_chunk_count(
    prompts: Sequence[Sequence[PromptChunk]], special: SpecialTokens, count: int | None = None
) -> list[list[PromptChunk]]:
    """Every prompt's chunks padded with empty chunks to ``count`` (default: the longest's), so that
    prompts, and later a negative prompt and its prompt, give embeddings of one length."""
    count = max(len(chunks) for chunks in prompts) if count is None else count
    if any(len(chunks) > count for chunks in prompts):
        raise ValueError(f"a prompt has more than {count} chunks")
    lengths = {len(chunk.tokens) for chunks in prompts for chunk in chunks} or {CHUNK_LENGTH + 2}
    if len(lengths) != 1:
        raise ValueError(f"chunks of different lengths: {sorted(lengths)}")
    empty = empty_chunk(special, lengths.pop() - 2)
    return [list(chunks) + [empty] * (count - len(chunks)) for chunks in prompts]


def apply_emphasis(z: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """A1111's "Original" emphasis on one chunk's embeddings ``z`` (B, 77, D) with ``multipliers`` (B, 77):
    scale each token's vector, then restore the mean of the whole tensor (one scalar)."""
    weights = np.asarray(multipliers, dtype=np.float32)
    if np.all(weights == 1):
        return z  # what the formula gives exactly, without the arithmetic
    original_mean = z.mean(dtype=np.float64)
    weighted = z * weights[..., None]
    new_mean = weighted.mean(dtype=np.float64)
    if new_mean == 0 or not np.isfinite(new_mean):  # A1111 would divide by it; sd.cpp skips, as here
        return weighted
    restored: np.ndarray = weighted * np.float32(original_mean / new_mean)
    return restored


def encode_chunks(prompts: Sequence[Sequence[PromptChunk]], encode: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Chunked prompts (all of one chunk count) -> embeddings (prompts, 77 x chunks, D): one ``encode``
    pass (ids (1, 77) -> (1, 77, D)) per distinct chunk, the weights applied per chunk."""
    encoded: dict[tuple[int, ...], np.ndarray] = {}  # padding chunks, repeated prompts: encoded once
    rows = []
    for chunks in prompts:
        pieces = []
        for chunk in chunks:
            if chunk.tokens not in encoded:
                encoded[chunk.tokens] = encode(np.array([chunk.tokens], dtype=np.int64))
            raw = encoded[chunk.tokens]
            weighted = apply_emphasis(raw, np.array([chunk.multipliers]))
            # Only the weights' fault when the encoder's own output was finite (the denoising checks the rest).
            if weighted is not raw and not np.isfinite(weighted).all() and np.isfinite(raw).all():
                raise InputError(
                    "the prompt's weights make its text embeddings infinite; use weights like (word:1.3)",
                    argument="prompt",
                )
            pieces.append(weighted)
        rows.append(np.concatenate(pieces, axis=1))
    return np.concatenate(rows)


def encode_prompts(
    prompts: Sequence[str], tokenizer: PromptTokenizer, encode: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Prompts in A1111's syntax -> embeddings (prompts, 77 x chunks, D), every prompt padded with empty
    chunks to the longest's chunk count, as A1111 pads a batch."""
    special = SpecialTokens.of(tokenizer)
    chunked = [prompt_chunks(prompt, tokenizer, special) for prompt in prompts]
    longest = max(len(chunks) for chunks in chunked)
    if longest > MAX_CHUNKS:
        raise InputError(
            f"the prompt needs {longest} chunks of {tokenizer.max_length - 2} tokens; at most "
            f"{MAX_CHUNKS} ({MAX_CHUNKS * (tokenizer.max_length - 2)} tokens) are read",
            argument="prompt",
        )
    return encode_chunks(pad_to_chunk_count(chunked, special, longest), encode)
