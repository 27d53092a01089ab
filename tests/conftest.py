"""Session-wide fixtures shared by the export and runtime tests, and the test tiers.

Building a tiny pipeline and exporting it takes seconds, so each is done once per session.
Fixtures that need torch skip (rather than fail) when the [export] extra is not installed;
``LCM_TEST_BUNDLE=/path/to/tiny-fp32-bundle`` (and ``LCM_TEST_CFG_BUNDLE`` for the cfg one) hand the
bundle tier its bundles, so a torch-free environment runs it too.

Every test gets one tier marker (``pytest -m unit`` runs in seconds):
- ``install``: builds fresh virtual environments or runs the benchmark harness end to end;
- ``parity``: compares with diffusers (tests/parity);
- ``bundle``: needs a tiny exported bundle or torch (the bundle fixtures, tests/export);
- ``unit``: everything else: no model, no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network: hub access must come from local folders or fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Nor does OpenVINO's or NNCF's usage telemetry, which forks a sender for each event: importing
# lcm_export turns it off, but only before anything imports openvino (lcm_export/telemetry.py).
import lcm_export  # noqa: E402, F401


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
def tiny_bundle_fp32(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_pipeline_dir exported with --weights fp32, or the bundle $LCM_TEST_BUNDLE names."""
    given = os.environ.get("LCM_TEST_BUNDLE")
    if given:
        return Path(given)
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.source import load_source

    tiny_pipeline_dir = request.getfixturevalue("tiny_pipeline_dir")
    out = tmp_path_factory.mktemp("tiny-bundle-fp32") / "bundle"
    export_bundle(load_source(str(tiny_pipeline_dir)), out, ExportOptions(weights="fp32"))
    return out


@pytest.fixture(scope="session")
def tiny_cfg_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD1.5-like pipeline (no time_cond_proj_dim, seed 0) exported at fp32 in "cfg" guidance
    mode: what an SD1.5 checkpoint with LCM-LoRA fused becomes; or the bundle $LCM_TEST_CFG_BUNDLE names."""
    given = os.environ.get("LCM_TEST_CFG_BUNDLE")
    if given:
        return Path(given)
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.tiny import load_tiny_sd_random

    out = tmp_path_factory.mktemp("tiny-cfg-bundle") / "bundle"
    export_bundle(load_tiny_sd_random(0), out, ExportOptions(weights="fp32", guidance_mode="cfg"))
    return out


@pytest.fixture(scope="session")
def tiny_deep_cache_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_pipeline_dir exported with --weights fp32 --deep-cache: its UNet also outputs the deep
    feature, and it has unet_shallow (DeepCache)."""
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.source import load_source

    tiny_pipeline_dir = request.getfixturevalue("tiny_pipeline_dir")
    out = tmp_path_factory.mktemp("tiny-deep-cache") / "bundle"
    export_bundle(load_source(str(tiny_pipeline_dir)), out, ExportOptions(weights="fp32", deep_cache=True))
    return out


INSTALL_TESTS = ("test_torch_free_install.py", "test_quick.py::test_quick_run_writes_results_and_page")
BUNDLE_FIXTURES = {
    "tiny_bundle_fp32",
    "tiny_pipeline_dir",
    "export_tiny",
    "reference_pipeline",
    "tiny_cfg_bundle",
    "tiny_deep_cache_bundle",
}


def tier(item: pytest.Item) -> str:
    path = Path(str(item.fspath))
    if any(item.nodeid.endswith(name) or path.name == name for name in INSTALL_TESTS):
        return "install"
    if "parity" in path.parts:
        return "parity"
    if "export" in path.parts or BUNDLE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return "bundle"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier(item))
