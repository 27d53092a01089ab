"""Long and weighted prompts on the tiny FP32 bundle. The API reads a prompt as diffusers does unless
``prompt_syntax="a1111"``: what follows the 77th token, and brackets, change nothing (so parity holds);
with A1111's syntax, and in lcm-run by default, they change the image."""

import warnings

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from cli_helpers import lcm_run
from pictures import box_mask, picture  # noqa: E402

from lcm_runtime import LCMImg2ImgPipeline, LCMInpaintPipeline, LCMPipeline  # noqa: E402
from lcm_runtime.errors import InputError  # noqa: E402
from lcm_runtime.tokenizer import PromptTruncatedWarning  # noqa: E402

# Words that are one CLIP token each, no commas: the prompt's length in tokens is its word count.
WORDS = (
    "cat dog red blue house tree river sky moon sun star city road car boat bird fish horse green white "
    "black gold light dark night day rain snow fire water stone wood glass paper flower garden forest "
    "mountain lake sea cloud wind storm bridge tower castle window door wall roof street field farm "
    "village king queen girl boy man woman child old young small big tall short long round soft hard "
    "warm cold happy sad quiet loud fast slow bright clean wet dry sweet fresh wild calm"
).split()
HEAD = " ".join(WORDS[:75])  # 75 tokens: with BOS and EOS, all the text encoder reads
LONG = HEAD + " " + " ".join(WORDS[::-1][:75])  # 150 tokens
CALL = dict(num_inference_steps=2, output_type="np", generator=3)


@pytest.fixture(scope="module")
def pipe(tiny_bundle_fp32):
    return LCMPipeline.from_pretrained(tiny_bundle_fp32, precision="f32", cache_dir=False)


def image(pipe, prompt, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptTruncatedWarning)
        return pipe(prompt, **{**CALL, **kwargs}).images


def test_the_prompts_have_the_lengths_the_tests_need(pipe):
    assert [len(ids) for ids in pipe.tokenizer.fragment_ids([HEAD, LONG])] == [75, 150]


def test_by_default_the_tail_past_77_tokens_changes_nothing_as_in_diffusers(pipe):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        long = pipe(LONG, **CALL).images
    assert any(issubclass(w.category, PromptTruncatedWarning) and WORDS[-75] in str(w.message) for w in caught)
    assert np.array_equal(long, image(pipe, HEAD))


def test_with_a1111_syntax_the_tail_changes_the_image(pipe):
    long = image(pipe, LONG, prompt_syntax="a1111")
    assert not np.array_equal(long, image(pipe, HEAD, prompt_syntax="a1111"))
    assert np.abs(long - image(pipe, LONG)).max() > 1e-3


@pytest.mark.parametrize("prompt", ["a photo of a cat", "ein grünes Haus am See, 東京の夜 🌃", "", HEAD])
def test_a_short_prompt_without_brackets_gives_the_default_image_exactly(pipe, prompt):
    """Same token ids (one fragment, one chunk), weights all 1: the mean restoration is the identity."""
    assert np.array_equal(image(pipe, prompt, prompt_syntax="a1111"), image(pipe, prompt))


def test_weights_change_the_image_only_with_a1111_syntax(pipe):
    weighted = image(pipe, "a (cat:1.5) on a hill", prompt_syntax="a1111")
    assert np.abs(weighted - image(pipe, "a cat on a hill", prompt_syntax="a1111")).max() > 1e-3
    assert not np.array_equal(weighted, image(pipe, "a (cat:1.5) on a hill"))  # brackets read as text
    # (cat:1) is "cat" at weight 1: the same chunk as the plain prompt.
    assert np.array_equal(image(pipe, "a (cat:1) on a hill", prompt_syntax="a1111"), image(pipe, "a cat on a hill"))


def test_the_unet_compiles_once_per_chunk_count(pipe):
    image(pipe, LONG, prompt_syntax="a1111")
    again = pipe(LONG, **CALL, prompt_syntax="a1111")
    assert again.timings["compile"] == 0.0  # 154 tokens again: the compiled UNet is reused
    assert pipe.models._loaded["unet"][1]["encoder_hidden_states"] == [1, 154, -1]
    short = pipe("a cat", **CALL, prompt_syntax="a1111")
    assert short.timings["compile"] > 0 and pipe.models._loaded["unet"][1]["encoder_hidden_states"] == [1, 77, -1]


def test_prompts_of_different_lengths_in_one_call(pipe):
    """Shorter prompts are padded with empty chunks, as A1111 pads a batch: "a cat" reads as
    "a cat BREAK BREAK" (its chunk, then an empty one). In one step the first image gets the same draws alone."""
    one_step = dict(prompt_syntax="a1111", num_inference_steps=1)
    images = image(pipe, ["a cat", LONG], num_images_per_prompt=2, **one_step)
    assert images.shape == (4, 64, 64, 3)
    padded = image(pipe, "a cat BREAK BREAK", **one_step)[0]
    np.testing.assert_allclose(images[0], padded, atol=1e-4)
    assert np.abs(padded - image(pipe, "a cat", **one_step)[0]).max() > 1e-3


def test_image_to_image_and_inpainting_read_a1111_syntax(pipe):
    img2img, inpaint = LCMImg2ImgPipeline.from_pipe(pipe), LCMInpaintPipeline.from_pipe(pipe)
    tasks = [
        (img2img, dict(image=picture(64, 64, 1), strength=0.5)),
        (inpaint, dict(image=picture(64, 64, 2), mask_image=box_mask(64, 64, (8, 8, 40, 40)))),
    ]
    for task, inputs in tasks:
        assert np.array_equal(image(task, LONG, **inputs), image(task, HEAD, **inputs))
        assert not np.array_equal(
            image(task, LONG, **inputs, prompt_syntax="a1111"), image(task, HEAD, **inputs, prompt_syntax="a1111")
        )


def test_an_unknown_prompt_syntax_is_one_input_error(pipe):
    with pytest.raises(InputError, match="prompt_syntax must be 'diffusers'") as error:
        pipe("a cat", prompt_syntax="A1111")
    assert error.value.argument == "prompt_syntax" and len(str(error.value).splitlines()) == 1


def test_lcm_run_reads_a1111_syntax_unless_plain_prompt(tiny_bundle_fp32, tmp_path):
    pixels = {}
    for name, prompt, options in (
        ("long", LONG, ()),
        ("head", HEAD, ()),
        ("long-plain", LONG, ("--plain-prompt",)),
        ("head-plain", HEAD, ("--plain-prompt",)),
    ):
        result = lcm_run(
            prompt,
            "--model",
            tiny_bundle_fp32,
            "--seed",
            "4",
            "--steps",
            "2",
            *options,
            "--output",
            tmp_path / f"{name}.png",
        )
        assert result.returncode == 0, result.stderr
        assert ("dropped" in result.stderr) == (name == "long-plain"), result.stderr  # the truncation warning
        written = Image.open(tmp_path / f"{name}.png")
        assert written.text["parameters"].startswith(prompt + "\n")  # the prompt as given
        assert ("Prompt syntax: diffusers" in written.text["parameters"]) == name.endswith("-plain")
        pixels[name] = np.asarray(written)
    assert not np.array_equal(pixels["long"], pixels["head"])
    assert np.array_equal(pixels["long-plain"], pixels["head-plain"])
    assert np.array_equal(pixels["head"], pixels["head-plain"])  # 75 tokens, no brackets: the same image
