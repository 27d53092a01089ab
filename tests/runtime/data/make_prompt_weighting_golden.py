"""Write prompt_weighting_golden.json from AUTOMATIC1111's own code (see README.md beside this file).

    .venv/bin/python tests/runtime/data/make_prompt_weighting_golden.py A1111_DIR

A1111_DIR holds stable-diffusion-webui's modules/prompt_parser.py and modules/sd_hijack_clip.py. They
cannot be imported here (lark, torch, the webui's shared state), so this script takes from their
source, at run time, just the definitions it runs: re_attention, re_break and parse_prompt_attention;
PromptChunk, PromptChunkFix and FrozenCLIPEmbedderWithCustomWordsBase's empty_chunk and tokenize_line,
run on a stand-in object with A1111's defaults (Original emphasis, comma_padding_backtrack 20, no
textual-inversion embeddings) and transformers' CLIPTokenizer with the real CLIP vocabulary
(lcm_export.tiny.build_clip_tokenizer). Nothing of A1111's is reimplemented or stored here.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

OUT = Path(__file__).with_name("prompt_weighting_golden.json")
PARSER_COMMIT = "0674fabd0d82c69c02ff362762815c4536687b95"
CLIP_COMMIT = "00e09382cd85c77ac35545c7264855823dfc2eb1"
# The weight pattern of A1111 >= 1.6, which accepts a space around the weight: "(cat : 1.2)".
OLD_WEIGHT, NEW_WEIGHT = r":([+-]?[.\d]+)\)", r":\s*([+-]?[.\d]+)\s*\)"


def definitions(source: str, names: set[str], namespace: dict) -> dict:
    """exec the top-level assignments, functions and classes of ``source`` named in ``names``."""
    for node in ast.parse(source).body:
        name = (
            node.targets[0].id
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            else getattr(node, "name", None)
        )
        if name in names:
            exec(compile(ast.Module([node], []), f"<a1111 {name}>", "exec"), namespace)
            names = names - {name}
    assert not names, f"not found in the source: {names}"
    return namespace


def methods(source: str, class_name: str, names: set[str], namespace: dict) -> dict:
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            found = [item for item in node.body if isinstance(item, ast.FunctionDef) and item.name in names]
            assert {item.name for item in found} == names, f"not all of {names} in {class_name}"
            exec(compile(ast.Module(found, []), f"<a1111 {class_name}>", "exec"), namespace)
            return {name: namespace[name] for name in names}
    raise AssertionError(f"no class {class_name}")


def single_token_words(tokenizer, count: int) -> list[str]:
    """``count`` distinct plain words that are one CLIP token each, so prompts can be built to a length."""
    candidates = (
        "cat dog red blue house tree river sky moon sun star city road car boat bird fish horse "
        "green white black gold light dark night day rain snow fire water stone wood glass paper "
        "flower garden forest mountain lake sea cloud wind storm bridge tower castle window door "
        "wall roof street field farm village king queen girl boy man woman child old young small "
        "big tall short long round soft hard warm cold happy sad quiet loud fast slow bright "
        "clean wet dry sweet fresh wild calm deep high low open empty full rich poor"
    ).split()
    words = [word for word in candidates if len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1]
    assert len(words) >= count, len(words)
    return words[:count]


def cases(words: list[str]) -> list[dict]:
    def run(start: int, length: int) -> str:
        return " ".join(words[(start + index) % len(words)] for index in range(length))

    long_tail = ", ".join(f"({run(7 * i, 3)}:1.{i % 9 + 1})" if i % 3 == 0 else run(5 * i, 4) for i in range(66))
    return [
        {"name": "plain", "prompt": "a photo of a cat"},
        {"name": "A1111's docstring example", "prompt": "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."},
        {"name": "nesting", "prompt": "((a (b [c [d]]) e)) f"},
        {"name": "explicit weight", "prompt": "(masterpiece:1.3), best quality, (detailed eyes:0.8)"},
        {"name": "explicit weight nested", "prompt": "((cat:1.3)) [(dog:1.2)]"},
        {"name": "square brackets", "prompt": "a [blurry] [[dark]] photo"},
        {"name": "unclosed round", "prompt": "a (unbalanced text"},
        {"name": "unclosed mixed", "prompt": "a [b (c d ((e"},
        {"name": "stray closers", "prompt": "a ) b ] c :1.2) d"},
        {"name": "escapes", "prompt": r"\(literal\) \[x\] back\\slash lone\ end \((kept\))"},
        {"name": "colons", "prompt": "a:b : c (d:e) (f:) (g:1.5:2)"},
        {"name": "weight numbers", "prompt": "(a:.5) (b:+2) (c:-0.5) (d:0) (e:7.)"},
        {"name": "runs merged", "prompt": "(a)(b) [c][d] (e)[f]"},
        {"name": "BREAK", "prompt": "a red cat BREAK a blue dog"},
        {"name": "BREAK at the edges and twice", "prompt": "BREAK first BREAK BREAK last BREAK"},
        {"name": "BREAK inside brackets", "prompt": "(a BREAK b) c"},
        {"name": "BREAK only as a word", "prompt": "BREAKING news, outbreak, BREAK\tnext\nline BREAK"},
        {"name": "BPE across fragments", "prompt": "(butter)fly sun(flower) [moon]light"},
        {"name": "unicode", "prompt": "ein grünes Haus am See, 東京の夜 🌃 (café:1.2) [naïve] Ελλάδα"},
        {"name": "empty", "prompt": ""},
        {"name": "whitespace only", "prompt": "  \t\n "},
        {"name": "brackets only", "prompt": "()[]([])"},
        {
            "name": "space around the weight (A1111 >= 1.6)",
            "prompt": "(cat : 1.2) (dog: 0.8 ) (bird :1.1)",
            "newer_syntax": True,
        },
        {"name": "75 tokens: one chunk", "prompt": run(0, 75)},
        {"name": "76 tokens: two chunks", "prompt": run(0, 76)},
        {"name": "BREAK right after 75 tokens", "prompt": run(0, 75) + " BREAK " + run(3, 5)},
        {"name": "comma 15 from the edge: backtrack", "prompt": run(0, 60) + ", " + run(60, 30)},
        {"name": "comma 20 from the edge: backtrack", "prompt": run(0, 55) + ", " + run(55, 30)},
        {"name": "comma 21 from the edge: no backtrack", "prompt": run(0, 54) + ", " + run(54, 30)},
        {"name": "comma as the 76th token", "prompt": run(0, 75) + ", " + run(75, 10)},
        {"name": "comma as the 75th token", "prompt": run(0, 74) + ", " + run(74, 10)},
        {
            "name": "weighted words carried by the backtrack",
            "prompt": run(0, 65) + ", (" + run(65, 8) + ":1.4) " + run(3, 10),
        },
        {"name": "BREAK after a comma near the edge", "prompt": run(0, 62) + ", " + run(62, 5) + " BREAK " + run(1, 4)},
        {"name": "300 tokens", "prompt": long_tail},
    ]


def main(a1111: Path) -> None:
    from lcm_export.tiny import build_clip_tokenizer

    parser_source = (a1111 / "modules" / "prompt_parser.py").read_text(encoding="utf-8")
    clip_source = (a1111 / "modules" / "sd_hijack_clip.py").read_text(encoding="utf-8")
    assert OLD_WEIGHT in parser_source, "the weight pattern is not 0674fabd's"
    wanted = {"re_attention", "re_break", "parse_prompt_attention"}
    as_is = definitions(parser_source, wanted, {"re": re})["parse_prompt_attention"]
    newer = definitions(parser_source.replace(OLD_WEIGHT, NEW_WEIGHT), wanted, {"re": re})["parse_prompt_attention"]

    tokenizer = build_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    clip = definitions(clip_source, {"PromptChunk"}, {"namedtuple": namedtuple})
    clip["PromptChunkFix"] = namedtuple("PromptChunkFix", ["offset", "embedding"])
    clip["opts"] = SimpleNamespace(emphasis="Original", comma_padding_backtrack=20)
    clip["prompt_parser"] = SimpleNamespace(parse_prompt_attention=newer)
    found = methods(clip_source, "FrozenCLIPEmbedderWithCustomWordsBase", {"empty_chunk", "tokenize_line"}, clip)
    no_embeddings = SimpleNamespace(find_embedding_at_position=lambda tokens, position: (None, None))
    embedder = type(
        "Embedder",
        (),
        {
            "chunk_length": 75,
            "id_start": tokenizer.bos_token_id,
            "id_end": tokenizer.eos_token_id,
            "comma_token": vocab.get(",</w>"),
            "hijack": SimpleNamespace(embedding_db=no_embeddings),
            # FrozenCLIPEmbedderWithCustomWords.tokenize
            "tokenize": lambda self, texts: tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"],
            **found,
        },
    )()

    results = []
    for case in cases(single_token_words(tokenizer, 90)):
        fragments = newer(case["prompt"])
        if not case.get("newer_syntax"):
            assert as_is(case["prompt"]) == fragments, case["name"]
        chunks, token_count = embedder.tokenize_line(case["prompt"])
        results.append(
            {
                **case,
                "fragments": fragments,
                "fragment_ids": embedder.tokenize([t for t, _ in fragments]),
                "token_count": token_count,
                "chunks": [{"tokens": c.tokens, "multipliers": c.multipliers} for c in chunks],
            }
        )
    empty = embedder.empty_chunk()
    document = {
        "how": "tests/runtime/data/README.md",
        "a1111": {"prompt_parser.py": PARSER_COMMIT, "sd_hijack_clip.py": CLIP_COMMIT, "weight pattern": NEW_WEIGHT},
        "tokenizer": f"transformers {sys.modules['transformers'].__version__} CLIPTokenizer "
        "(lcm_export.tiny.build_clip_tokenizer)",
        "special": {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "comma": vocab.get(",</w>")},
        "empty_chunk": {"tokens": empty.tokens, "multipliers": empty.multipliers},
        "cases": results,
    }
    lines = ["{"] + [
        f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},"
        for key, value in document.items()
        if key != "cases"
    ]
    lines += [' "cases": ['] + [f"  {json.dumps(case, ensure_ascii=False)}," for case in results]
    lines[-1] = lines[-1].rstrip(",")
    OUT.write_text("\n".join(lines + [" ]", "}"]) + "\n", encoding="utf-8")
    print(f"wrote {len(results)} cases to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
