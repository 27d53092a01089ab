"""`pip install lcm-openvino` without extras runs `lcm-run`: no torch, no diffusers, no transformers.

Builds a fresh virtual environment with only the runtime installed, as an edge box would have it.
"""

import os
import subprocess
import venv
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
EXPORT_SIDE = ("torch", "diffusers", "transformers", "nncf", "datasets", "optimum", "accelerate")
SERVE_SIDE = ("fastapi", "uvicorn", "starlette", "prometheus-client", "prometheus_client")


@pytest.fixture(scope="module")
def runtime_only_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime-venv")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)], check=True, timeout=900
    )
    return root


def test_runtime_only_install_has_no_export_dependencies(runtime_only_env):
    listed = subprocess.run(
        [runtime_only_env / "bin" / "python", "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    installed = {line.split("==")[0] for line in listed.splitlines()}
    assert "openvino" in installed and "tokenizers" in installed
    assert not installed & set(EXPORT_SIDE), installed & set(EXPORT_SIDE)
    assert not installed & set(SERVE_SIDE), installed & set(SERVE_SIDE)


def test_lcm_run_writes_png_with_metadata_without_torch(runtime_only_env, tiny_bundle_fp32, tmp_path):
    output = tmp_path / "unicorn.png"
    env = {**os.environ, "LCM_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            runtime_only_env / "bin" / "lcm-run",
            "a beautiful pink unicorn, 8k",
            "--model",
            str(tiny_bundle_fp32),
            "--seed",
            "42",
            "--steps",
            "2",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(output)
    image = Image.open(output)
    assert image.size == (64, 64)
    parameters = image.text["parameters"]
    assert parameters.startswith("a beautiful pink unicorn, 8k\n")
    assert "Seed: 42" in parameters and "Steps: 2" in parameters and "Size: 64x64" in parameters
    assert any((tmp_path / "cache").iterdir()), "the compiled-model cache was not filled"

    # lcm-export in that environment says how to get the extra, in one line.
    export = subprocess.run(
        [runtime_only_env / "bin" / "lcm-export", "--tiny-random", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert export.returncode != 0 and "Traceback" not in export.stderr
    assert "lcm-openvino[export]" in export.stderr and len(export.stderr.strip().splitlines()) == 1


def test_lcm_run_serve_without_the_extra_says_how_to_install_it(runtime_only_env, tiny_bundle_fp32):
    serve = subprocess.run(
        [runtime_only_env / "bin" / "lcm-run", "serve", "--model", str(tiny_bundle_fp32)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert serve.returncode != 0 and "Traceback" not in serve.stderr
    assert "lcm-openvino[serve]" in serve.stderr and len(serve.stderr.strip().splitlines()) == 1


def test_the_golden_images_hold_without_torch(runtime_only_env, tiny_bundle_fp32, tiny_cfg_bundle, tmp_path):
    """The bundle tier's golden test (diffusers' pinned slices, every task, both guidance modes) in the
    runtime-only environment, with the bundles handed in through $LCM_TEST_BUNDLE and $LCM_TEST_CFG_BUNDLE."""
    python = runtime_only_env / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pytest>=8"], check=True, timeout=300
    )
    env = {
        **os.environ,
        "LCM_TEST_BUNDLE": str(tiny_bundle_fp32),
        "LCM_TEST_CFG_BUNDLE": str(tiny_cfg_bundle),
        "LCM_CACHE_DIR": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/runtime/test_tiny_golden.py"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, summary
