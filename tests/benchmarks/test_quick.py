"""The benchmark harness end to end on the tiny model, so it never rots. Asserts nothing about speed.

`python -m benchmarks --quick` builds no environments: it runs the systems installed in this
python (lcm_runtime, openvino_genai, diffusers; optimum-intel is skipped when absent), each in
its own subprocess, on a tiny random model at 256x256.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_writes_results_and_page(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    docs = tmp_path / "benchmarks.md"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--runs", "1", "--work-dir", str(tmp_path / "work"), "--docs", str(docs)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    results_files = list((tmp_path / "work" / "quick" / "results").glob("*.json"))
    assert len(results_files) == 1
    results = json.loads(results_files[0].read_text())
    runs = {run["key"]: run for run in results["runs"]}
    assert runs["lcm-run"]["status"] == "ok", runs["lcm-run"]
    assert runs["lcm-run"]["worker"]["precision_executed"]["unet"] in ("bf16", "f32", "f16")
    assert len(runs["lcm-run"]["worker"]["latencies_seconds"]) == 1
    assert runs["lcm-run"]["process"]["peak_rss_bytes"] > 0
    assert runs["lcm-run"]["process"]["first_png_seconds"] > 0
    for run in results["runs"]:
        assert run["status"] in ("ok", "skipped"), run  # a peer installed here must not fail
    assert set(results["flops"]) == {"text_encoder", "unet_step", "vae_decode"}
    assert set(results["matmul"]["peak_gops"]) == {"f32", "bf16", "int8"}
    assert [start["status"] for start in results["cold_start"]] == ["ok", "ok"]

    page = docs.read_text()
    assert "## Latency per image" in page and "lcm-run (API)" in page


def _import_benchmarks():
    """benchmarks/ lives at the repository root, not in the installed package; and this test's own
    folder (tests/benchmarks, no __init__.py) would otherwise pass for it as a namespace package."""
    if sys.path[:1] != [str(REPO_ROOT)]:
        sys.path.insert(0, str(REPO_ROOT))
    if getattr(sys.modules.get("benchmarks"), "__file__", None) is None:
        sys.modules.pop("benchmarks", None)
    import benchmarks

    return benchmarks


def test_report_renders_from_a_results_file(tmp_path: Path) -> None:
    _import_benchmarks()
    from benchmarks.report import render

    def run(key: str, system: str, precision: str, seconds: float) -> dict:
        return {"key": key, "system": system, "label": key, "precision": precision, "variant": "default",
                "environment": "lcm-runtime", "model": "bundle", "status": "ok",
                "process": {"first_png_seconds": 20.0, "peak_rss_bytes": 3 << 30, "wall_seconds": 60.0},
                "worker": {"latencies_seconds": [seconds, seconds * 1.1, seconds * 0.9], "load_seconds": 1.0,
                           "png_write_seconds": 0.05, "precision_executed": {"unet": "bf16"},
                           "stages": [{"text_encoder": 0.05, "unet": [2.0] * 4, "vae_decode": 6.0}] * 3}}

    results = {
        "schema": 1, "mode": "full", "date": "2026-01-01T00:00:00+00:00", "errors": [],
        "settings": {"runs": 3, "height": 512, "width": 512, "steps": 4, "guidance": 8.0, "seed": 0, "prompt": "p"},
        "machine": {"cpu_model": "CPU", "usable_cpus": 2, "flags": {"amx_bf16": True}, "memory_bytes": 1 << 34},
        "model": {"name": "m", "weights": "random"},
        "flops": {"text_encoder": 13_000_000_000, "unet_step": 800_000_000_000, "vae_decode": 2_500_000_000_000},
        "matmul": {"peak_gops": {"f32": 190.0, "bf16": 390.0, "int8": 790.0}, "measurements": []},
        "runs": [run("lcm-run", "lcm-run", "default", 14.0), run("genai", "openvino.genai", "default", 15.4),
                 {"key": "optimum", "label": "optimum-intel", "precision": "default", "status": "failed", "reason": "boom"}],
        "cold_start": [],
    }
    page = render(results, tmp_path / "r.json", tmp_path / "benchmarks.md").read_text()
    assert "**1.10×** faster than genai" in page
    assert "unet step | bf16" in page and "% of peak" in page
    assert "optimum-intel (default): failed" in page


def test_benchmark_model_has_lcm_dreamshaper_v7_parameter_counts() -> None:
    """The random-weight model is only a valid stand-in if its architecture is exactly the real one."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    _import_benchmarks()
    from benchmarks.model import build_modules, load_configs

    modules = build_modules(load_configs(), seed=0, device="meta")  # shapes only: no memory, no time
    counts = {name: sum(parameter.numel() for parameter in module.parameters()) for name, module in modules.items()}
    assert counts == {"unet": 859_602_884, "vae": 83_653_863, "text_encoder": 123_060_480}
