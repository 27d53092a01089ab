"""`lcm-run` through a real process: images, metadata, verify/info, and every bad input."""

import json
import shutil

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, lcm_run
from PIL import Image


@pytest.fixture
def bundle_copy(tiny_bundle_fp32, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_fp32, target)
    return target


def test_generates_pngs_that_never_overwrite(tiny_bundle_fp32, tmp_path):
    first = lcm_run(
        "a cat", "--model", tiny_bundle_fp32, "--seed", "5", "--steps", "2", "-n", "2", "--output", tmp_path / "cat.png"
    )
    assert first.returncode == 0, first.stderr
    written = first.stdout.split()
    assert written == [str(tmp_path / "cat-1.png"), str(tmp_path / "cat-2.png")]
    assert "seed 5" in first.stderr and "VAE decode" in first.stderr
    params = Image.open(written[1]).text["parameters"]
    assert "Batch pos: 1" in params and "Batch size: 2" in params

    again = lcm_run(
        "a dog", "--model", tiny_bundle_fp32, "--seed", "6", "--steps", "1", "--output", tmp_path / "cat-1.png"
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(tmp_path / "cat-1_1.png")
    assert Image.open(tmp_path / "cat-1.png").text["parameters"].startswith("a cat\n")

    replaced = lcm_run(
        "a dog",
        "--model",
        tiny_bundle_fp32,
        "--seed",
        "6",
        "--steps",
        "1",
        "--overwrite",
        "--output",
        tmp_path / "cat-1.png",
    )
    assert replaced.returncode == 0 and Image.open(tmp_path / "cat-1.png").text["parameters"].startswith("a dog\n")


def test_same_seed_same_image_and_default_output_folder(tiny_bundle_fp32, tmp_path):
    runs = [lcm_run("a cat", "--model", tiny_bundle_fp32, "--seed", "9", cwd=tmp_path) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    paths = [tmp_path / r.stdout.strip() for r in runs]
    assert paths[0] != paths[1] and all(p.parent == tmp_path / "outputs" for p in paths)
    assert Image.open(paths[0]).tobytes() == Image.open(paths[1]).tobytes()


def test_random_seed_is_printed_and_recorded(tiny_bundle_fp32, tmp_path):
    result = lcm_run("a cat", "--model", tiny_bundle_fp32, "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    seed = result.stderr.split("seed ")[1].split()[0]
    assert f"Seed: {seed}," in Image.open(result.stdout.strip()).text["parameters"]


def test_model_from_environment(tiny_bundle_fp32, tmp_path):
    """Without --model, lcm-run takes $LCM_MODEL: the PNG names that bundle and its manifest's hash."""
    from lcm_runtime.bundle import read_manifest

    named = tmp_path / "bundle-from-env"  # a name of its own, so the PNG cannot name another bundle by chance
    shutil.copytree(tiny_bundle_fp32, named)
    result = lcm_run("a cat", "--seed", "1", "--output", tmp_path / "x.png", env_extra={"LCM_MODEL": str(named)})
    assert result.returncode == 0, result.stderr
    params = Image.open(tmp_path / "x.png").text["parameters"]
    assert f", Model: bundle-from-env, Model hash: {read_manifest(named).digest()}, " in params, params


def test_verify_and_info(bundle_copy):
    ok = lcm_run("verify", bundle_copy)
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")
    info = lcm_run("info", bundle_copy)
    assert info.returncode == 0, info.stderr
    kind = json.loads((bundle_copy / "manifest.json").read_text())["source"]["kind"]
    assert f"kind={kind}" in info.stdout and "CPU" in info.stdout and "native size: 64x64" in info.stdout
    weights = bundle_copy / "unet" / "openvino_model.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    bad = lcm_run("verify", bundle_copy)
    assert bad.returncode != 0 and "checksum differs: unet/openvino_model.bin" in bad.stdout
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "args,words",
    [
        (["--steps", "0"], ["steps", "between 1 and 50", "--steps"]),
        (["--steps", "51"], ["steps", "between 1 and 50"]),
        (["--height", "60"], ["height", "multiple of 8", "--height"]),
        (["--width", "0"], ["width", "--width"]),
        (["--height", "65536", "--width", "64"], ["height", "at most"]),
        (["--guidance", "-1"], ["guidance", "--guidance"]),
        (["--num-images", "0"], ["num_images_per_prompt", "--num-images"]),
        (["--num-images", "100000"], ["between 1 and 16", "--num-images"]),
        (["--device", "NPU.7"], ["no device", "NPU.7"]),
        (["--precision", "int3"], ["precision"]),
        (["--seed", "-4"], ["seed"]),
        (["--strength", "0.5"], ["--strength", "--image"]),
        (["--mask", "m.png"], ["--mask needs --image"]),
    ],
)
def test_bad_arguments(tiny_bundle_fp32, tmp_path, args, words):
    result = lcm_run("a cat", "--model", tiny_bundle_fp32, "--output", tmp_path / "out", *args)
    assert_one_line_error(result, *words)
    assert list(tmp_path.rglob("*.png")) == []


def test_unwritable_output(tiny_bundle_fp32, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(
        lcm_run("a cat", "--model", tiny_bundle_fp32, "--output", tmp_path / "file" / "a.png"), "cannot create"
    )
    assert_one_line_error(lcm_run("a cat", "--model", tiny_bundle_fp32, "--output", tmp_path / "a.jpg"), ".png")


def test_missing_bundle(tmp_path):
    assert_one_line_error(lcm_run("a cat", "--model", tmp_path / "nothing"), "does not exist", "lcm-export")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(lcm_run("a cat", "--model", tmp_path / "empty"), "not a model bundle")


def test_incomplete_bundle(bundle_copy, tmp_path):
    (bundle_copy / "unet" / "openvino_model.bin").unlink()
    result = lcm_run("a cat", "--model", bundle_copy, "--output", tmp_path / "o")
    assert_one_line_error(result, "incomplete", "unet/openvino_model.bin", "missing")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_truncated_weights(bundle_copy):
    weights = bundle_copy / "vae_decoder" / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert_one_line_error(lcm_run("a cat", "--model", bundle_copy), "vae_decoder/openvino_model.bin", "size differs")


def test_corrupted_and_future_manifest(bundle_copy):
    manifest = bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 99
    manifest.write_text(json.dumps(data))
    assert_one_line_error(lcm_run("a cat", "--model", bundle_copy), "format version 99", "upgrade")
    manifest.write_text("{ broken")
    assert_one_line_error(lcm_run("a cat", "--model", bundle_copy), "corrupted")


def test_interrupt_exits_130_and_leaves_no_image(tiny_bundle_fp32, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the PNG is being written: exit 130, one line, no file and no temporary left."""
    from PIL import Image as PILImage

    from lcm_runtime import cli

    def interrupted(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setenv("LCM_CACHE_DIR", "off")
    monkeypatch.setattr(PILImage.Image, "save", interrupted)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        cli.main(["a cat", "--model", str(tiny_bundle_fp32), "--output", str(out), "--seed", "1"])
    assert exited.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted: no image was written"
    assert list(out.iterdir()) == []


def test_a_request_that_cannot_fit_is_refused_before_compiling(tiny_bundle_fp32, monkeypatch):
    """With 64 MiB free, a 2048x2048 image's UNet activations (at least 512 MiB) are refused at once."""
    from lcm_runtime import LCMPipeline, memory
    from lcm_runtime.errors import InputError

    pipe = LCMPipeline.from_pretrained(tiny_bundle_fp32, cache_dir=False)
    monkeypatch.setattr(memory, "available_memory", lambda: 64 << 20)
    with pytest.raises(InputError, match="GiB.*smaller size or fewer images"):
        pipe("a cat", height=2048, width=2048)
    assert pipe.models.in_memory() == []


def test_a_negative_prompt_on_an_embedded_bundle_is_one_line(tiny_bundle_fp32, tmp_path):
    result = lcm_run("a cat", "--model", tiny_bundle_fp32, "--negative-prompt", "blurry", "--output", tmp_path / "o")
    assert_one_line_error(result, "negative_prompt", "no unconditional branch", "(lcm-run --negative-prompt)")
    result = lcm_run("a cat", "--model", tiny_bundle_fp32, "--guidance-rescale", "0.7", "--output", tmp_path / "o")
    assert_one_line_error(result, "guidance_rescale", "(lcm-run --guidance-rescale)")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_cfg_bundle_records_its_negative_prompt_and_guidance_rescale(tiny_cfg_bundle, tmp_path):
    def run(name, *options):
        result = lcm_run("a cat", "--model", tiny_cfg_bundle, "--seed", "3", *options, "--output", tmp_path / name)
        assert result.returncode == 0, result.stderr
        written = Image.open(tmp_path / name)
        return written.text["parameters"].split("\n"), np.asarray(written), result.stderr

    lines, guided, _ = run(
        "guided.png", "--negative-prompt", "blurry, low quality", "--guidance", "2", "--guidance-rescale", "0.7"
    )
    assert lines[:2] == ["a cat", "Negative prompt: blurry, low quality"] and len(lines) == 3  # A1111's layout
    assert "CFG scale: 2.0" in lines[2] and "Guidance rescale: 0.7" in lines[2]
    # The defaults --help states: the bundle's 4 steps and, for a cfg bundle, guidance 1.0.
    lines, plain, _ = run("plain.png")
    assert len(lines) == 2 and "Steps: 4," in lines[1] and "CFG scale: 1.0," in lines[1]
    assert "Negative prompt" not in lines[1] and "Guidance rescale" not in lines[1]
    assert np.abs(plain.astype(int) - guided.astype(int)).max() > 0
    # At guidance 1 the negative prompt changes nothing (as diffusers), and lcm-run says so.
    lines, ignored, stderr = run("ignored.png", "--negative-prompt", "blurry")
    assert "no effect at --guidance 1" in stderr and lines[1] == "Negative prompt: blurry"
    np.testing.assert_array_equal(ignored, plain)
    info = lcm_run("info", tiny_cfg_bundle)
    assert info.returncode == 0, info.stderr
    assert "v2," in info.stdout and "defaults: 4 steps, guidance 1.0 (cfg: classifier-free" in info.stdout


def test_a_write_that_fails_after_the_checks_is_one_line_and_leaves_no_file(tiny_bundle_fp32, tmp_path):
    """A full disk or a quota met while the PNG is written (here a file size limit): one line naming the
    file, exit 2, and neither the PNG nor its temporary file left behind."""
    import os
    import resource
    import subprocess
    import sys

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # Python ignores SIGXFSZ: writes get EFBIG

    result = subprocess.run(
        [sys.executable, "-m", "lcm_runtime.cli", "a cat", "--model", str(tiny_bundle_fp32), "--steps", "1"]
        + ["--output", str(tmp_path / "out" / "cat.png")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LCM_CACHE_DIR": "off", "HF_HUB_OFFLINE": "1"},
        preexec_fn=small_files,
    )
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, f"cannot write {tmp_path / 'out' / 'cat.png'} (File too large)", "--output")
    assert list((tmp_path / "out").iterdir()) == []
