"""Write the bundle's tokenizer/ folder.

* tokenizer.json with truncation and padding to the text encoder's max length set IN the file,
  so the runtime's plain `tokenizers` load gives exactly transformers' CLIPTokenizer ids;
* vocab.json/merges.txt/tokenizer_config.json/special_tokens_map.json for older readers
  (transformers 5 save_pretrained writes only tokenizer.json for CLIP);
* openvino_tokenizer.xml/.bin for openvino.genai.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lcm_runtime.bundle import dumps_json

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TOKENIZER_DIR = "tokenizer"


def text_max_length(tokenizer: PreTrainedTokenizerBase, max_position_embeddings: int) -> int:
    # model_max_length is a huge sentinel when a tokenizer config omits it; the encoder's
    # position table is the hard limit.
    return int(min(tokenizer.model_max_length, max_position_embeddings))


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id)  # CLIP pads with <|endoftext|>


def configured_tokenizer_json(tokenizer: PreTrainedTokenizerBase, max_length: int) -> str:
    """The fast tokenizer's JSON with truncation and padding to max_length configured."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    pad_id = pad_token_id(tokenizer)
    backend.enable_truncation(max_length=max_length)
    backend.enable_padding(length=max_length, pad_id=pad_id, pad_token=backend.id_to_token(pad_id))
    return backend.to_str(pretty=True) + "\n"


def _vocab_and_merges(tokenizer_json: str) -> tuple[dict[str, int], list[str]]:
    model = json.loads(tokenizer_json)["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"expected a BPE tokenizer, got {model.get('type')!r}")
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]]
    return model["vocab"], merges


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    return {name: str(getattr(tokenizer, name)) for name in names if getattr(tokenizer, name, None) is not None}


def write_tokenizer_folder(bundle_root: Path, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict[str, Any]:
    """Write every tokenizer file; returns facts for the manifest."""
    folder = Path(bundle_root) / TOKENIZER_DIR
    folder.mkdir(parents=True, exist_ok=True)

    tokenizer_json = configured_tokenizer_json(tokenizer, max_length)
    (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")

    vocab, merges = _vocab_and_merges(tokenizer_json)
    ordered_vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
    (folder / "vocab.json").write_text(json.dumps(ordered_vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")

    special = _special_tokens(tokenizer)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        **special,
    }
    (folder / "tokenizer_config.json").write_text(dumps_json(config), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(dumps_json(special), encoding="utf-8")

    _write_openvino_tokenizer(folder, tokenizer, max_length)
    return {"max_length": max_length, "pad_token_id": pad_token_id(tokenizer), "vocab_size": len(vocab)}


def _write_openvino_tokenizer(folder: Path, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
    from openvino_tokenizers import convert_tokenizer

    from .ir import save_reproducibly

    # Truncation to the encoder's length is baked in, keeping the end-of-text token as diffusers
    # does, so that the IR alone gives diffusers' ids (openvino.genai pads the result itself).
    ov_tokenizer = convert_tokenizer(tokenizer, max_length=max_length, truncation=True)
    ov_tokenizer.set_friendly_name("tokenizer")
    save_reproducibly(ov_tokenizer, folder / "openvino_tokenizer.xml", compress_to_fp16=False)
