"""Bundles shared by the export tests: each precision is exported once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def export_tiny(
    tiny_pipeline_dir: Path, tiny_bundle_fp32: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """export_tiny(weights, **options) -> bundle path; the same arguments reuse the same bundle."""
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.source import load_source

    cache: dict[tuple, Path] = {("fp32", ()): tiny_bundle_fp32}
    loaded = load_source(str(tiny_pipeline_dir))

    def export(weights: str = "fp16", **options: object) -> Path:
        key = (weights, tuple(sorted(options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"bundle-{weights}") / "bundle"
            export_bundle(loaded, out, ExportOptions(weights=weights, **options))
            cache[key] = out
        return cache[key]

    return export


@pytest.fixture(scope="session")
def reference_pipeline(tiny_pipeline_dir: Path):
    """The tiny pipeline as diffusers itself loads it (its modules in eval mode): the source of every
    golden value of the export tests."""
    from diffusers import LatentConsistencyModelPipeline
    from references import lcm_reference

    return lcm_reference(LatentConsistencyModelPipeline, tiny_pipeline_dir)
