"""lcm-export from the command line: the happy path, and every bad input as one line, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from cli_helpers import assert_one_line_export_error as assert_one_line_error
from cli_helpers import lcm_export

from lcm_runtime.bundle import read_manifest, verify_files  # noqa: E402


def check(result, *words):
    assert_one_line_error(result.returncode, result.stderr, *words)


@pytest.fixture
def empty_hub_cache(tmp_path):
    return {"HF_HUB_CACHE": str(tmp_path / "empty-hub-cache"), "HF_HOME": str(tmp_path / "hf-home")}


def test_tiny_random_end_to_end(tmp_path, export_tiny):
    out = tmp_path / "tiny"
    result = lcm_export("--tiny-random", out, "--weights", "fp16")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out.absolute())
    for stage in ("load tiny-random", "tokenizer", "unet (fp16)", "vae_decoder (fp16)", "verify", "total"):
        assert stage in result.stderr, stage
    manifest = read_manifest(out)
    assert manifest.source == {"kind": "tiny-random", "seed": 0}
    assert verify_files(out, manifest) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    # The same weights exported in another process (from a saved folder) give the same files.
    from_folder = read_manifest(export_tiny("fp16")).files
    assert manifest.files == from_folder


def test_unknown_option():
    check(lcm_export("--bogus", "out"), "no such option", "--help")


@pytest.mark.parametrize(
    "args,words",
    [
        (["--weights", "int3"], ["--weights", "fp16", "int4"]),
        (["--quantize-unet", "int4"], ["--quantize-unet", "int8"]),
        (["--quantize-unet", "int8", "--calibration-size", "0"], ["--calibration-size"]),
        (["--calibration-dataset", "prompts.txt"], ["--quantize-unet", "--quantize-tiny-vae"]),
        (["--quantize-tiny-vae", "int8"], ["--quantize-tiny-vae", "add --tiny-vae"]),
        (["--fast", "--quantize-tiny-vae", "int4"], ["--fast quantizes the tiny VAE to int8", "drop"]),
        (["--revision", "main"], ["--revision"]),
        (["--token-downsampling", "3"], ["--token-downsampling", "1, 2, 4", "exact"]),
    ],
)
def test_bad_options(tmp_path, args, words):
    check(lcm_export("--tiny-random", tmp_path / "out", *args), *words)
    assert not (tmp_path / "out").exists()


def test_too_many_paths(tmp_path):
    check(lcm_export("a", "b", tmp_path / "c"), "SOURCE")


def test_unreachable_hub_offline_suggests_a_local_folder(tmp_path, empty_hub_cache):
    result = lcm_export("someone/some-lcm", tmp_path / "out", env_extra=empty_hub_cache)
    check(result, "someone/some-lcm", "hub", "local")
    assert not (tmp_path / "out").exists()


def test_default_source_is_dreamshaper(tmp_path, empty_hub_cache):
    check(lcm_export(tmp_path / "out", env_extra=empty_hub_cache), "SimianLuo/LCM_Dreamshaper_v7", "local")


def test_folder_that_is_not_a_diffusers_pipeline(tmp_path):
    (tmp_path / "random-folder").mkdir()
    check(lcm_export(tmp_path / "random-folder", tmp_path / "out"), "not a diffusers pipeline", "model_index.json")


def test_a_bad_tiny_vae_fails_before_the_source_is_loaded(tmp_path):
    """Like --safety-checker and the LoRAs: a mistyped path costs seconds, not the minutes of loading SOURCE."""
    result = lcm_export("--tiny-random", tmp_path / "out", "--tiny-vae", tmp_path / "no-such-taesd")
    check(result, "--tiny-vae", "neither an existing folder nor a hub id")
    assert "load tiny-random" not in result.stderr and not (tmp_path / "out").exists()


def test_missing_source_path(tmp_path):
    check(lcm_export(tmp_path / "does-not-exist", tmp_path / "out"), "neither an existing folder nor a hub id")


def test_unet_without_time_cond_proj_dim_is_not_an_lcm(tiny_pipeline_dir, tmp_path):
    source = tmp_path / "sd-like"
    shutil.copytree(tiny_pipeline_dir, source)
    config_path = source / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["time_cond_proj_dim"] = None
    config_path.write_text(json.dumps(config))
    check(lcm_export(source, tmp_path / "out"), "time_cond_proj_dim", "not an LCM-distilled model")


def test_pickle_only_weights_are_refused(tmp_path):
    from lcm_export.tiny import save_tiny_pipeline

    source = save_tiny_pipeline(tmp_path / "pickled", safe_serialization=False)
    assert not list(source.rglob("*.safetensors"))
    check(lcm_export(source, tmp_path / "out"), "pickle", "--allow-pickle")
    assert not (tmp_path / "out").exists()


def test_existing_out_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    check(lcm_export("--tiny-random", out), "already exists", "--force")


def test_without_the_export_extra_says_how_to_install():
    code = (
        "import sys; sys.modules['torch'] = None; sys.argv = ['lcm-export', '--tiny-random', 'x'];"
        "from lcm_export.entry import main; main()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    check(result, "pip install 'lcm-openvino[export]'", "torch")


def test_entry_imports_nothing_heavy():
    code = "import sys, lcm_export.entry; print(sorted({'torch', 'diffusers', 'openvino', 'nncf'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


# In-process: failures that need a patched environment.


def _run_cli_in_process(args, capsys):
    from lcm_export.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    return exit_info.value.code, capsys.readouterr().err


def test_no_free_space_is_checked_before_writing(tmp_path, monkeypatch, capsys):
    import lcm_export.writer as writer

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda _path: usage._replace(free=4096))
    code, err = _run_cli_in_process(["--tiny-random", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "not enough disk space", "choose another OUT")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing(tmp_path, monkeypatch, capsys):
    import errno

    import lcm_export.exporter as exporter

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporter, "save_ir", full)
    code, err = _run_cli_in_process(["--tiny-random", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "no space left", "free some space")
    assert list(tmp_path.iterdir()) == []


def test_interrupt_exits_130_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import lcm_export.exporter as exporter

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter, "save_ir", interrupted)
    code, err = _run_cli_in_process(["--tiny-random", tmp_path / "out"], capsys)
    assert code == 130 and "Traceback" not in err and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_unexpected_failure_is_one_line_too(tmp_path, monkeypatch, capsys):
    import lcm_export.exporter as exporter

    def broken(*_args, **_kwargs):
        raise ValueError("simulated converter bug")

    monkeypatch.delenv("LCM_EXPORT_DEBUG", raising=False)
    monkeypatch.setattr(exporter, "save_ir", broken)
    code, err = _run_cli_in_process(["--tiny-random", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "simulated converter bug", "LCM_EXPORT_DEBUG")
    assert list(tmp_path.iterdir()) == []


def test_allow_pickle_loads_pickle_weights(tmp_path, reference_pipeline):
    import torch

    from lcm_export.source import load_source
    from lcm_export.tiny import save_tiny_pipeline

    source = save_tiny_pipeline(tmp_path / "pickled", safe_serialization=False)
    loaded = load_source(str(source), allow_pickle=True)
    for name in ("unet", "vae", "text_encoder"):
        mine, reference = getattr(loaded.pipeline, name).state_dict(), getattr(reference_pipeline, name).state_dict()
        assert mine.keys() == reference.keys() and all(torch.equal(mine[k], reference[k]) for k in mine), name
    assert loaded.info["kind"] == "local" and len(loaded.info["weights_sha256"]) == 64


def test_sigterm_mid_export_leaves_nothing(tmp_path):
    import signal

    out = tmp_path / "out"
    command = [sys.executable, "-m", "lcm_export.entry", "--tiny-random", str(out)]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "tokenizer" in line:  # the bundle is half-written: staging folder exists
            assert any(path.name.startswith(".lcm-export-") for path in tmp_path.iterdir())
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130, "".join(seen) + rest
    assert "Traceback" not in rest and "interrupted" in rest
    assert list(tmp_path.iterdir()) == []


def test_unknown_calibration_dataset_offline_fails_before_exporting(tmp_path, empty_hub_cache):
    result = lcm_export(
        "--tiny-random",
        tmp_path / "out",
        "--quantize-unet",
        "int8",
        "--calibration-dataset",
        "someone/no-such-prompts",
        env_extra={**empty_hub_cache, "HF_DATASETS_OFFLINE": "1"},
    )
    check(result, "calibration dataset", "someone/no-such-prompts", "local")
    assert "load tiny-random" not in result.stderr  # failed before SOURCE was loaded, let alone exported
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".lcm-export-*"))


def test_the_library_refuses_quantize_tiny_vae_without_a_tiny_vae():
    """export_bundle's own callers (not the CLI) get the same one-line refusal, before any work."""
    from lcm_export.options import ExportOptions
    from lcm_runtime.errors import InputError

    ExportOptions(quantize_tiny_vae="int8").check_tiny_vae(True)
    ExportOptions().check_tiny_vae(False)
    with pytest.raises(InputError, match="add --tiny-vae"):
        ExportOptions(quantize_tiny_vae="int8").check_tiny_vae(False)
