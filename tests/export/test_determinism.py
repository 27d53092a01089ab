"""Same source + same options => byte-identical bundle (CI publishes bundles; users check them).

FP32 is checked by test_atomic's --force replacement (in-process) and test_cli's tiny-random
export (another process); here the NNCF paths, which run their own algorithms."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from lcm_runtime.bundle import read_manifest  # noqa: E402


@pytest.mark.parametrize(
    "options",
    [{"weights": "int4"}, {"weights": "fp16", "quantize_unet": "int8", "calibration_size": 4}],
    ids=["int4", "int8-ptq"],
)
def test_exporting_twice_gives_identical_checksums(export_tiny, tiny_pipeline_dir, tmp_path, options):
    from lcm_export.exporter import ExportOptions, export_bundle
    from lcm_export.source import load_source

    first = export_tiny(**options)
    second = tmp_path / "again"
    export_bundle(load_source(str(tiny_pipeline_dir)), second, ExportOptions(**options))
    first_manifest, second_manifest = read_manifest(first), read_manifest(second)
    assert first_manifest.files == second_manifest.files
    assert (first / "manifest.json").read_bytes() == (second / "manifest.json").read_bytes()
