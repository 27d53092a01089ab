"""Output naming never clobbers; PNG parameters record what is needed to regenerate an image."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcm_runtime.errors import InputError
from lcm_runtime.image import save_png, to_uint8, to_unit_range
from lcm_runtime.outputs import plan_output_paths, png_parameters


def test_default_names_go_to_outputs_and_carry_the_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = plan_output_paths(None, seed=42, count=2)
    assert [p.parent for p in paths] == [tmp_path.joinpath("outputs").relative_to(tmp_path)] * 2
    assert all(p.name.endswith(f"-42-{i}.png") for i, p in zip((1, 2), paths, strict=True))


def test_existing_files_are_never_reused(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"mine")
    (tmp_path / "cat_1.png").write_bytes(b"mine too")
    [path] = plan_output_paths(tmp_path / "cat.png", seed=1, count=1)
    assert path == tmp_path / "cat_2.png"
    [same] = plan_output_paths(tmp_path / "cat.png", seed=1, count=1, overwrite=True)
    assert same == tmp_path / "cat.png"


def test_folder_output_and_bad_suffix(tmp_path):
    paths = plan_output_paths(tmp_path / "new" / "dir", seed=7, count=3)
    assert len(set(paths)) == 3 and all(p.parent == tmp_path / "new" / "dir" for p in paths)
    with pytest.raises(InputError, match="png"):
        plan_output_paths(tmp_path / "image.jpg", seed=7, count=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_refused_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(InputError, match="cannot write"):
        plan_output_paths(locked / "x.png", seed=1, count=1)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs")
def test_a_folder_only_a_write_finds_unwritable_is_refused_before_any_work():
    """sysfs refuses new files even to root, whose permission bits say yes: the check creates a file."""
    with pytest.raises(InputError, match=r"^cannot write to /sys \(.+\); choose another --output$"):
        plan_output_paths(Path("/sys/x.png"), seed=1, count=1)


def test_unwritable_path_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InputError, match="cannot create"):
        plan_output_paths(tmp_path / "file" / "sub" / "x.png", seed=1, count=1)


def test_save_png_is_atomic_and_does_not_overwrite(tmp_path):
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    target = tmp_path / "a.png"
    save_png(image, target, {"parameters": "p\nSteps: 4"})
    assert Image.open(target).text["parameters"] == "p\nSteps: 4"
    with pytest.raises(InputError, match="already exists"):
        save_png(Image.new("RGB", (8, 8)), target)
    assert Image.open(target).getpixel((0, 0)) == (10, 20, 30)
    save_png(Image.new("RGB", (8, 8)), target, overwrite=True)
    assert Image.open(target).getpixel((0, 0)) == (0, 0, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temporary left behind


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        save_png(Image.new("RGB", (4, 4)), tmp_path / "b.png")
    assert list(tmp_path.iterdir()) == []


def test_parameters_are_a1111_style():
    text = png_parameters(
        "a cat, 8k",
        steps=4,
        guidance=8.0,
        seed=5,
        width=512,
        height=768,
        model="m",
        model_hash="abc",
        precision="f32",
        device="CPU",
        index=0,
        count=1,
    )
    prompt, fields = text.split("\n")
    assert prompt == "a cat, 8k"
    assert "Steps: 4" in fields and "CFG scale: 8.0" in fields and "Seed: 5" in fields and "Size: 512x768" in fields
    assert "Model hash: abc" in fields and "Precision: f32" in fields


def test_uint8_rounds_half_to_even_like_diffusers():
    decoded = np.array([-1.0, 1.0, 2 * (0.5 / 255) - 1, 2 * (1.5 / 255) - 1], dtype=np.float32).reshape(1, 1, 2, 2)
    pixels = to_uint8(to_unit_range(decoded)).ravel()
    expected = (np.clip(decoded * np.float32(0.5) + np.float32(0.5), 0, 1) * np.float32(255)).round().astype(np.uint8)
    assert pixels.tolist() == expected.ravel().tolist()
    assert pixels[0] == 0 and pixels[1] == 255


def test_negative_prompt_is_a1111s_second_line_and_rescale_a_field():
    common = dict(
        steps=4, guidance=1.8, seed=5, width=64, height=64, model="m", model_hash="abc", precision="f32", device="CPU"
    )
    text = png_parameters("a cat", **common, index=0, count=1, negative_prompt="blurry, ugly", guidance_rescale=0.7)
    prompt, negative, fields = text.split("\n")
    assert (prompt, negative) == ("a cat", "Negative prompt: blurry, ugly")
    assert "CFG scale: 1.8" in fields and "Guidance rescale: 0.7" in fields
    plain = png_parameters("a cat", **common, index=0, count=1, negative_prompt="", guidance_rescale=0.0)
    assert len(plain.split("\n")) == 2 and "Negative prompt" not in plain and "Guidance rescale" not in plain


def test_fused_loras_are_a1111s_lora_hashes():
    loras = [
        {"name": "latent-consistency/lcm-lora-sdv1-5", "sha256": "ab" * 32, "scale": 1.0},
        {"name": "/styles/ink, dark.safetensors", "sha256": "cd" * 32, "scale": 0.8},
    ]
    common = dict(steps=4, guidance=1.0, seed=1, width=64, height=64, model="m", model_hash="h", precision="f32")
    text = png_parameters("a cat", **common, device="CPU", index=0, count=1, loras=loras)
    assert 'Lora hashes: "lcm-lora-sdv1-5: abababababab, ink  dark: cdcdcdcdcdcd"' in text
    assert "Lora hashes" not in png_parameters("a cat", **common, device="CPU", index=0, count=1)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_mode_of_any_new_file(tmp_path, umask):
    """0666 less the umask, as a plain open gives (the temporary file's 0600 used to stay on every PNG)."""
    previous = os.umask(umask)
    try:
        path = save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
