"""A1111's prompt syntax without torch: parsing, tokenising and chunking equal A1111's own output
(data/prompt_weighting_golden.json, made by A1111's code: data/README.md), and the emphasis math
equals A1111's formula."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lcm_runtime import validation
from lcm_runtime.errors import InputError
from lcm_runtime.prompt_weighting import (
    MAX_CHUNKS,
    PromptChunk,
    SpecialTokens,
    apply_emphasis,
    chunk_fragments,
    empty_chunk,
    encode_chunks,
    encode_prompts,
    pad_to_chunk_count,
    parse_prompt_attention,
    prompt_chunks,
)
from lcm_runtime.tokenizer import PromptTokenizer, PromptTruncatedWarning

GOLDEN = json.loads((Path(__file__).parent / "data" / "prompt_weighting_golden.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]
IDS = [case["name"] for case in CASES]


@pytest.fixture(scope="module")
def tokenizer() -> PromptTokenizer:
    """The tokenizer.json lcm-export writes into a bundle, from the real CLIP vocabulary."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    from lcm_export.tiny import build_clip_tokenizer
    from lcm_export.tokenizer import configured_tokenizer_json

    return PromptTokenizer(Tokenizer.from_str(configured_tokenizer_json(build_clip_tokenizer(), 77)), 77)


@pytest.fixture(scope="module")
def special(tokenizer: PromptTokenizer) -> SpecialTokens:
    return SpecialTokens.of(tokenizer)


def as_golden(chunks: list[PromptChunk]) -> list[dict]:
    return [{"tokens": list(chunk.tokens), "multipliers": list(chunk.multipliers)} for chunk in chunks]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parse_equals_a1111(case):
    # Exact float64 equality: the same multiplications in the same order.
    assert parse_prompt_attention(case["prompt"]) == [tuple(fragment) for fragment in case["fragments"]]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fragment_tokens_and_chunks_equal_a1111(case, tokenizer, special):
    assert tokenizer.fragment_ids([text for text, _ in case["fragments"]]) == case["fragment_ids"]
    assert as_golden(prompt_chunks(case["prompt"], tokenizer, special)) == case["chunks"]
    # The chunking alone, from A1111's own token ids.
    tokenized = [
        (None if (text, weight) == ("BREAK", -1) else ids, weight)
        for ids, (text, weight) in zip(case["fragment_ids"], case["fragments"], strict=True)
    ]
    assert as_golden(chunk_fragments(tokenized, special)) == case["chunks"]


def test_special_tokens_and_empty_chunk_equal_a1111(tokenizer, special):
    assert (special.bos, special.eos, special.comma) == tuple(GOLDEN["special"][key] for key in ("bos", "eos", "comma"))
    assert special.pad == special.eos  # SD1's CLIP pads with its end token
    assert as_golden([empty_chunk(special)]) == [GOLDEN["empty_chunk"]]
    assert prompt_chunks("", tokenizer, special) == [empty_chunk(special)]


def test_fragment_tokenising_leaves_diffusers_reading_as_it_was(tokenizer):
    long = " ".join(["cat"] * 100)
    with pytest.warns(PromptTruncatedWarning, match="dropped"):
        before = tokenizer([long]).tolist(), tokenizer._tokenizer.to_str()
    assert [len(ids) for ids in tokenizer.fragment_ids([long, ""])] == [100, 0]
    with pytest.warns(PromptTruncatedWarning, match="dropped"):
        assert (tokenizer([long]).tolist(), tokenizer._tokenizer.to_str()) == before


def test_golden_covers_what_the_issue_lists():
    names = " ".join(IDS)
    for topic in (
        "nesting",
        "explicit weight",
        "square",
        "unclosed",
        "escapes",
        "BREAK",
        "runs merged",
        "backtrack",
        "unicode",
        "empty",
        "300 tokens",
    ):
        assert topic in names, topic
    assert max(case["token_count"] for case in CASES) >= 300


@pytest.mark.parametrize("prompt", ["(a:1.2.3) b", "(a:...) b", "(a:.) b", "(a: 1..2 ) b"])
def test_weights_that_are_no_number_stay_text(prompt):
    """A1111 raises ValueError on these; here the would-be weight is plain text and the bracket stays open."""
    fragments = parse_prompt_attention(prompt)
    assert "".join(text for text, _ in fragments) == prompt[1:]
    assert fragments[0][1] == pytest.approx(1.1)


def test_comma_backtrack_can_be_turned_off(special):
    tokens = [(list(range(100, 160)) + [special.comma] + list(range(200, 230)), 1.0)]
    cut = chunk_fragments(tokens, special)
    kept = chunk_fragments(tokens, special, comma_backtrack=0)
    assert cut[0].tokens[61:63] == (special.comma, special.eos) and cut[1].tokens[1] == 200
    assert kept[0].tokens[1:76] == tuple(range(100, 160)) + (special.comma,) + tuple(range(200, 214))


def test_pad_to_chunk_count_pads_with_empty_chunks(special):
    one = chunk_fragments([([1, 2], 1.3)], special)
    three = chunk_fragments([(list(range(1000, 1200)), 1.0)], special)
    assert len(three) == 3
    padded = pad_to_chunk_count([one, three], special)
    assert [len(chunks) for chunks in padded] == [3, 3]
    assert padded[0][0] == one[0] and padded[0][1:] == [empty_chunk(special)] * 2 and padded[1] == three
    # A negative prompt can later be padded to its prompt's count, or both to a common one.
    assert [len(chunks) for chunks in pad_to_chunk_count([one, three], special, count=4)] == [4, 4]
    with pytest.raises(ValueError):
        pad_to_chunk_count([three], special, count=2)


def a1111_emphasis(z: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """A1111's EmphasisOriginal.after_transformers, in NumPy (float64)."""
    original_mean = z.mean()
    weighted = z * multipliers.reshape(multipliers.shape + (1,))
    return weighted * (original_mean / weighted.mean())


def test_emphasis_equals_a1111_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(0.1, 1.0, (1, 77, 768)).astype(np.float32)
    multipliers = np.ones((1, 77))
    multipliers[0, 5:9] = 1.1**3
    multipliers[0, 20:30] = 1 / 1.1
    multipliers[0, 40] = 1.5
    ours = apply_emphasis(z, multipliers)
    assert ours.dtype == np.float32 and ours.shape == z.shape
    np.testing.assert_allclose(ours, a1111_emphasis(z.astype(np.float64), multipliers), rtol=2e-6, atol=1e-6)
    assert ours.mean(dtype=np.float64) == pytest.approx(z.mean(dtype=np.float64), rel=1e-5)
    assert apply_emphasis(z, np.ones((1, 77))) is z  # all weights 1: exactly the formula's identity


def test_mean_is_restored_per_chunk_not_over_the_prompt(special):
    """Each 77-token chunk is weighted and rescaled on its own; the chunks are concatenated."""
    rng = np.random.default_rng(1)
    table = rng.normal(0.2, 1.0, (50000, 16)).astype(np.float32)

    def encode(ids: np.ndarray) -> np.ndarray:  # a stand-in text encoder: (1, 77) -> (1, 77, 16)
        assert ids.shape == (1, 77) and ids.dtype == np.int64
        return table[ids] + np.float32(0.01) * np.arange(77, dtype=np.float32)[None, :, None]

    chunks = chunk_fragments([(list(range(300, 380)), 1.0), (list(range(400, 420)), 1.4)], special)
    assert len(chunks) == 2
    embeddings = encode_chunks([chunks], encode)
    assert embeddings.shape == (1, 154, 16)
    for index, chunk in enumerate(chunks):
        z = encode(np.array([chunk.tokens])).astype(np.float64)
        expected = a1111_emphasis(z, np.array([chunk.multipliers]))
        np.testing.assert_allclose(embeddings[:, 77 * index : 77 * (index + 1)], expected, rtol=2e-6, atol=1e-6)


def test_prompts_are_padded_to_one_length_and_chunks_encoded_once(tokenizer, special):
    calls = []

    def encode(ids: np.ndarray) -> np.ndarray:
        calls.append(tuple(ids[0]))
        return np.broadcast_to(ids[..., None].astype(np.float32), (1, 77, 4)).copy()

    long = ", ".join(["a castle on a hill"] * 20)  # 119 tokens: 2 chunks
    embeddings = encode_prompts(["a cat", long, "a cat"], tokenizer, encode)
    assert embeddings.shape == (3, 154, 4)
    empty = empty_chunk(special).tokens
    np.testing.assert_array_equal(embeddings[0, 77:, 0], empty)  # "a cat" padded with the empty chunk
    np.testing.assert_array_equal(embeddings[0], embeddings[2])
    assert len(calls) == len(set(calls)) == 4  # "a cat", the empty chunk, the long prompt's two


def test_too_many_chunks_and_infinite_weights_are_input_errors(tokenizer):
    def encode(ids: np.ndarray) -> np.ndarray:
        return np.ones((1, 77, 4), dtype=np.float32)

    with pytest.raises(InputError, match=f"at most {MAX_CHUNKS}") as error:
        encode_prompts([" BREAK ".join(["cat"] * (MAX_CHUNKS + 1))], tokenizer, encode)
    assert error.value.argument == "prompt"
    with pytest.raises(InputError, match="infinite") as error:
        encode_prompts(["(cat:" + "9" * 400 + ")"], tokenizer, encode)
    assert error.value.argument == "prompt"


@pytest.mark.parametrize("value", ["A1111", "compel", "", None, 1])
def test_unknown_prompt_syntax_names_the_argument(value):
    with pytest.raises(InputError, match="prompt_syntax must be 'diffusers'.* or 'a1111'") as error:
        validation.prompt_syntax(value)
    assert error.value.argument == "prompt_syntax"
