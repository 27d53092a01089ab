"""`lcm-run --image` (image-to-image) and `--image --mask` (inpainting) through a real process."""

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, lcm_run
from pictures import box_mask, picture
from PIL import Image


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    picture(64, 64, 3).save(folder / "in.png")
    picture(80, 72, 4, mode="RGBA").save(folder / "rgba.png")
    box_mask(64, 64, (8, 8, 40, 40)).save(folder / "mask.png")
    box_mask(32, 32, (8, 8, 20, 20)).save(folder / "small-mask.png")
    (folder / "text.png").write_text("not a picture")
    return folder


def parameters(path):
    return Image.open(path).text["parameters"]


def test_image_to_image_and_inpainting_write_their_parameters(tiny_bundle_fp32, inputs, tmp_path):
    from lcm_runtime.image_input import digest

    img2img = lcm_run(
        "a watercolor fox",
        "--model",
        tiny_bundle_fp32,
        "--image",
        inputs / "rgba.png",
        "--strength",
        "0.5",
        "--seed",
        "3",
        "--steps",
        "2",
        "--output",
        tmp_path / "fox.png",
    )
    assert img2img.returncode == 0, img2img.stderr
    written = Image.open(tmp_path / "fox.png")
    assert written.size == (80, 72)  # the picture's own size, a multiple of 8
    text = parameters(tmp_path / "fox.png")
    assert "Denoising strength: 0.5" in text and f"Init image hash: {digest(str(inputs / 'rgba.png'))}" in text
    assert "Mask hash" not in text and "VAE encode" in img2img.stderr

    inpaint = lcm_run(
        "a red door",
        "--model",
        tiny_bundle_fp32,
        "--image",
        inputs / "in.png",
        "--mask",
        inputs / "mask.png",
        "--seed",
        "3",
        "--steps",
        "2",
        "--output",
        tmp_path / "door.png",
    )
    assert inpaint.returncode == 0, inpaint.stderr
    text = parameters(tmp_path / "door.png")
    assert "Denoising strength: 1.0" in text and f"Mask hash: {digest(str(inputs / 'mask.png'))}" in text

    again = lcm_run(
        "a watercolor fox",
        "--model",
        tiny_bundle_fp32,
        "--image",
        inputs / "rgba.png",
        "--strength",
        "0.5",
        "--seed",
        "3",
        "--steps",
        "2",
        "--output",
        tmp_path / "fox-again.png",
    )
    assert again.returncode == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "fox-again.png")), np.asarray(written))


@pytest.mark.parametrize(
    "args,words",
    [
        (["--image", "text.png"], ["cannot read", "text.png", "--image"]),
        (["--image", "missing.png"], ["does not exist", "--image"]),
        (["--mask", "mask.png"], ["--mask needs --image"]),
        (["--image", "in.png", "--mask", "small-mask.png"], ["32x32", "64x64", "mask"]),
        (["--image", "in.png", "--strength", "0"], ["strength", "(0, 1]", "--strength"]),
        (["--image", "in.png", "--strength", "1.5"], ["strength", "--strength"]),
        (["--image", "in.png", "--strength", "nan"], ["strength", "finite", "--strength"]),
        (["--image", "in.png", "--strength", "0.05", "--steps", "4"], ["strength >= 0.08", "--strength"]),
        (["--image", "in.png", "--mask", "mask.png", "--strength", "0.2"], ["strength >= 0.25", "--strength"]),
        (["--image", "in.png", "--height", "128"], ["takes its size from --image"]),
    ],
)
def test_bad_picture_arguments(tiny_bundle_fp32, inputs, tmp_path, args, words):
    args = [str(inputs / arg) if arg.endswith(".png") else arg for arg in args]
    result = lcm_run("a cat", "--model", tiny_bundle_fp32, "--output", tmp_path / "out", *args)
    assert_one_line_error(result, *words)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_picture_too_large_for_free_memory_is_refused(tiny_bundle_fp32, tmp_path, monkeypatch, capsys):
    from lcm_runtime import cli, memory

    picture(2048, 2048, 1).save(tmp_path / "big.png")
    monkeypatch.setenv("LCM_CACHE_DIR", "off")
    monkeypatch.setattr(memory, "available_memory", lambda: 64 << 20)
    with pytest.raises(SystemExit) as exited:
        cli.main(
            [
                "a cat",
                "--model",
                str(tiny_bundle_fp32),
                "--image",
                str(tmp_path / "big.png"),
                "--output",
                str(tmp_path / "out"),
            ]
        )
    assert exited.value.code == 2
    assert "smaller size" in capsys.readouterr().err
