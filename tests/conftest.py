"""Session-wide fixtures shared by the export and runtime tests.

Building a tiny pipeline and exporting it takes seconds, so each is done once per session.
Fixtures that need torch skip (rather than fail) when the [export] extra is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network: hub access must come from local folders or fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _own_compile_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests that use the default compile cache write to a temp folder, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LCM_CACHE_DIR", str(tmp_path_factory.mktemp("compile-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random-weight diffusers LCM pipeline folder (safetensors, seed 0)."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from lcm_export.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-pipeline") / "pipeline", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle_fp32(tiny_pipeline_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_pipeline_dir exported with --weights fp32."""
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.source import load_source

    out = tmp_path_factory.mktemp("tiny-bundle-fp32") / "bundle"
    export_bundle(load_source(str(tiny_pipeline_dir)), out, ExportOptions(weights="fp32"))
    return out
