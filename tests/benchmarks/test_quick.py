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
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_writes_results_and_page(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    docs = tmp_path / "benchmarks.md"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--runs",
            "1",
            "--work-dir",
            str(tmp_path / "work"),
            "--docs",
            str(docs),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
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
    from lcm_export.options import TOKEN_DOWNSAMPLING_FACTORS

    flops = results["flops"]  # a step counted for every factor lcm-export offers
    assert set(flops) == {
        "text_encoder",
        "unet_step",
        "vae_decode",
        *(f"unet_step_token_downsampling_{factor}" for factor in TOKEN_DOWNSAMPLING_FACTORS if factor > 1),
    }
    assert flops["unet_step_token_downsampling_4"] < flops["unet_step_token_downsampling_2"] < flops["unet_step"]
    bundles = results["model"]["bundles"]
    assert bundles["bundle"]["token_downsampling"] == 1 and bundles["bundle-one-shot"]["token_downsampling"] == 2
    assert set(results["matmul"]["peak_gops"]) == {"f32", "bf16", "int8"}
    starts = {start["name"]: start for start in results["cold_start"]}
    assert all(start["status"] == "ok" for start in starts.values()), starts
    assert {"empty cache", "filled cache", "bf16 weights, filled cache"} <= set(starts)
    assert starts["bf16 weights, filled cache"]["reference"] == "lcm-run-bf16"
    assert starts["filled cache"]["first_png_runs"] == [starts["filled cache"]["process"]["first_png_seconds"]]
    # Each cold start just before the warm measurement it is compared with, nothing in between.
    progress = [line.split("] ", 1)[1] for line in completed.stdout.splitlines() if line.startswith("[")]
    steps = [line for line in progress if line.startswith(("lcm-run CLI cold start", "measuring "))]
    assert runs["lcm-run-one-shot"]["status"] == "ok", runs["lcm-run-one-shot"]
    for name, reference in (
        ("bf16 weights, filled cache", "lcm-run-bf16"),
        ("filled cache", "lcm-run"),
        ("bf16 + token downsampling + --vae tiny, filled cache", "lcm-run-one-shot"),
    ):
        after = steps[steps.index(f"lcm-run CLI cold start, {name}") + 1]
        assert after == f"measuring {reference}", steps

    assert runs["lcm-run-1024"]["worker"]["image_size"] == [1024, 1024]  # sizes apart from --quick's 256
    assert runs["lcm-run-batch4"]["worker"]["images_per_call"] == 4
    assert runs["lcm-run-f32"]["deviation_from_f32"]["psnr_db"] == float("inf")  # the reference itself
    assert runs["lcm-run"]["deviation_from_f32"]["max"] >= 0
    assert runs["lcm-run-768"]["deviation_from_f32"] is None  # another size than the reference

    page = docs.read_text()
    assert "## Latency per image" in page and "lcm-run (API)" in page
    for title in ("Targets against openvino.genai", "Memory by image size", "Batches", "Deviation from the f32 image"):
        assert f"## {title}" in page


def fake_run(
    key: str, system: str, precision: str, seconds: float, timed: int = 3, rss_gib: float = 3.0, **fields: object
) -> dict:
    """An ok run as the harness stores it; `fields` (height, width, batch, variant, ...) override."""
    latencies = [seconds, seconds * 1.1, seconds * 0.9][:timed]
    return {
        "key": key,
        "system": system,
        "label": key,
        "precision": precision,
        "variant": "default",
        "environment": "lcm-runtime",
        "model": "bundle",
        "status": "ok",
        "process": {"first_png_seconds": 20.0, "peak_rss_bytes": int(rss_gib * 2**30), "wall_seconds": 60.0},
        "worker": {
            "latencies_seconds": latencies,
            "load_seconds": 1.0,
            "png_write_seconds": 0.05,
            "precision_executed": {"unet": "bf16"},
            "stages": [{"text_encoder": 0.05, "unet": [2.0] * 4, "vae_decode": 6.0}] * timed,
        },
        **fields,
    }


def fake_results(runs: list[dict]) -> dict:
    return {
        "schema": 1,
        "mode": "full",
        "date": "2026-01-01T00:00:00+00:00",
        "errors": [],
        "settings": {"runs": 3, "height": 512, "width": 512, "steps": 4, "guidance": 8.0, "seed": 0, "prompt": "p"},
        "machine": {"cpu_model": "CPU", "usable_cpus": 2, "flags": {"amx_bf16": True}, "memory_bytes": 1 << 34},
        "model": {"name": "m", "weights": "random"},
        "flops": {"text_encoder": 13_000_000_000, "unet_step": 800_000_000_000, "vae_decode": 2_500_000_000_000},
        "matmul": {"peak_gops": {"f32": 190.0, "bf16": 390.0, "int8": 790.0}, "measurements": []},
        "runs": runs,
        "cold_start": [],
    }


def section(page: str, title: str) -> str:
    """One '## title' section of the page, up to the next one."""
    return page.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_renders_from_a_results_file(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    """A results file from before sizes, batches and deviations (none of their fields) still renders."""
    from benchmarks.report import render

    results = fake_results(
        [
            fake_run("lcm-run", "lcm-run", "default", 14.0),
            fake_run("genai", "openvino.genai", "default", 15.4, rss_gib=4.0),
            {"key": "optimum", "label": "optimum-intel", "precision": "default", "status": "failed", "reason": "boom"},
        ]
    )
    page = render(results, tmp_path / "r.json", tmp_path / "benchmarks.md").read_text()
    assert "**1.10×** faster than genai" in page
    assert "unet step | bf16" in page and "% of peak" in page
    assert "optimum-intel (default): failed" in page
    # 14/15.4 and 3/4 GiB; one UNet step of 2 s over 800 GFLOP at 790 GOP/s
    assert "| lcm-run | bf16 (default) | 0.91 (≤ 1.00: **met**) | 0.75 (≤ 0.60: not met) | 2.0× |" in page
    for title in ("Memory by image size", "Batches", "Deviation from the f32 image"):
        assert f"## {title}" not in page


def test_report_compares_sizes_batches_and_deviations(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks.report import render

    deviation = {"max": 5.0, "mean": 0.52, "psnr_db": 50.123}
    results = fake_results(
        [
            fake_run(
                "lcm-run", "lcm-run", "default", 14.0, height=512, width=512, batch=1, deviation_from_f32=deviation
            ),
            fake_run(
                "lcm-run-f32",
                "lcm-run",
                "f32",
                40.0,
                deviation_from_f32={"max": 0.0, "mean": 0.0, "psnr_db": float("inf")},
            ),
            fake_run(
                "lcm-run-fast",
                "lcm-run",
                "default",
                6.0,
                variant="fast",
                model="bundle-fast",
                rss_gib=1.5,
                deviation_from_f32=None,
            ),
            fake_run("genai", "openvino.genai", "default", 15.4, rss_gib=4.0),
            fake_run("lcm-run-768", "lcm-run", "default", 30.0, timed=1, rss_gib=4.0, height=768, width=768, batch=1),
            fake_run(
                "genai-768", "openvino.genai", "default", 40.0, timed=1, rss_gib=8.0, height=768, width=768, batch=1
            ),
            fake_run("lcm-run-batch4", "lcm-run", "default", 48.0, timed=1, variant="batch4", batch=4),
        ]
    )
    results["model"]["bundles"] = {
        name: {"path": f"/b/{name}", "bytes": 1, "token_downsampling": factor}
        for name, factor in (("bundle", 1), ("bundle-fast", 2))
    }
    results["flops"]["unet_step_token_downsampling_2"] = 400_000_000_000
    page = render(results, tmp_path / "r.json", tmp_path / "benchmarks.md").read_text()

    headline = section(page, "Headline")
    assert "**1.10×** faster than genai," in headline and "768" not in headline and "batch4" not in headline
    assert "lcm-run-fast: **0.39×** openvino.genai's latency and **0.38×** its peak RSS" in headline
    assert "| genai-768 | bf16 (default) | **40.0** (40.0–40.0) | – |" in section(page, "Latency per image")

    targets = section(page, "Targets against openvino.genai")
    # The --fast bundle's step does its downsampled UNet's 400 GFLOP: 2 s against 400/790 s is 3.9x, not 2.0x.
    assert (
        "| lcm-run-fast | TAESD decoder, int8 UNet, bf16 (default) | 0.39 (≤ 0.40: **met**) | 0.38 | 3.9× |" in targets
    )
    assert "| lcm-run-f32 | bf16 | – | – | 2.0× |" in targets  # the fake ran bf16 whatever it asked
    assert "768" not in targets and "batch4" not in targets

    sizes = section(page, "Memory by image size")
    assert "| 512x512 | lcm-run | 3.00 | 14.0 (n=3) | 0.75 | 0.91 |" in sizes
    assert "| 768x768 | lcm-run | 4.00 | 30.0 (n=1) | 0.50 | 0.75 |" in sizes
    assert "| 768x768 | openvino.genai | 8.00 | 40.0 (n=1) |  |  |" in sizes
    assert "lcm-run-fast" not in sizes  # another variant: not the default settings

    batches = section(page, "Batches")  # 60/14 = 4.29 images a minute, against 60*4/48 = 5.0
    assert "| lcm-run | 1 | 14.0 | 4.3 | 1.00 | 3.00 |" in batches
    assert "| lcm-run-batch4 | 4 | 48.0 | 5.0 | 1.17 | 3.00 |" in batches

    deviations = section(page, "Deviation from the f32 image")
    assert "numerical drift" in deviations
    assert "| lcm-run | bf16 (default) | 512x512 | 5 | 0.52 | 50.1 |" in deviations
    assert "| lcm-run-f32 | bf16 | 512x512 | 0 | 0.00 | ∞ |" in deviations
    assert "| lcm-run-fast | TAESD decoder, int8 UNet, bf16 (default) | 512x512 | – | – | – |" in deviations

    limits = section(page, "Distance from the machine's limit")
    assert (
        "| lcm-run-fast | unet step | int8 | 2.000 | 0.506 |" in limits
        and "(with token downsampling 2: 0.400 T)" in limits
    )
    assert (
        "| lcm-run | vae decode |" in limits and "| lcm-run-fast | vae decode |" not in limits
    )  # TAESD: no full-VAE bound


def test_results_file_names_carry_the_minute(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    """Two runs on one day must not overwrite each other's results."""
    from benchmarks.run import Settings, results_path

    settings = Settings(results_dir=tmp_path, machine="box")
    path = results_path(settings, {"date": "2026-11-25T20:10:59+00:00", "machine": {}})
    assert path == tmp_path / "box-2026-11-25T2010Z.json"


def test_benchmark_model_has_lcm_dreamshaper_v7_parameter_counts(benchmarks_package: ModuleType) -> None:
    """The random-weight model is only a valid stand-in if its architecture is exactly the real one."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from benchmarks.model import build_modules, load_configs

    modules = build_modules(load_configs(), seed=0, device="meta")  # shapes only: no memory, no time
    counts = {name: sum(parameter.numel() for parameter in module.parameters()) for name, module in modules.items()}
    assert counts == {"unet": 859_602_884, "vae": 83_653_863, "text_encoder": 123_060_480}


def test_report_renders_without_the_project_installed(tmp_path: Path) -> None:
    """The report runs in the harness environment (matplotlib, no lcm_runtime or lcm_export): it must
    render a committed results file with the project's modules unimportable."""
    results = sorted((REPO_ROOT / "benchmarks" / "results").glob("*.json"))[-1]
    page = tmp_path / "benchmarks.md"
    code = (
        "import sys\nfor name in ('lcm_export', 'lcm_runtime', 'openvino', 'torch'):\n    sys.modules[name] = None\n"
        "from benchmarks.report import main\nmain(sys.argv[1:])"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(results), "--docs", str(page)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    text = page.read_text()
    assert "## lcm-run cold start (CLI)" in text and "## Targets against openvino.genai" in text
