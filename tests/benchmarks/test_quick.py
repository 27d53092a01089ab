"""The benchmark harness end to end on the tiny model, so it never rots. Asserts nothing about speed.

`python -m benchmarks --quick` builds no environments: it runs the systems installed in this
python (lcm_runtime, openvino_genai, diffusers; optimum-intel is skipped when absent), each in
its own subprocess, on a tiny random model at 256x256 (the 768 and 1024 rows at half their size too).
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
    from benchmarks.systems import interleaved_group
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
    # The one-image recipe (docs/running.md) has the INT8 TAESD; the FP16 bundle has no TAESD.
    assert (
        bundles["bundle-one-shot"]["tiny_vae_precision"] == "int8-ptq"
        and bundles["bundle"]["tiny_vae_precision"] is None
    )
    assert set(results["matmul"]["peak_gops"]) == {"f32", "bf16", "int8"}
    starts = {start["name"]: start for start in results["cold_start"]}
    assert all(start["status"] == "ok" for start in starts.values()), starts
    assert {"empty cache", "filled cache", "bf16 weights, filled cache"} <= set(starts)
    assert starts["bf16 weights, filled cache"]["reference"] == "lcm-run-bf16"
    assert starts["filled cache"]["first_png_runs"] == [starts["filled cache"]["process"]["first_png_seconds"]]
    # Each cold start just before the warm measurement it is compared with (its group's first load),
    # nothing in between.
    progress = [line.split("] ", 1)[1] for line in completed.stdout.splitlines() if line.startswith("[")]
    steps = [line for line in progress if line.startswith(("lcm-run CLI cold start", "measuring "))]
    assert runs["lcm-run-one-shot"]["status"] == "ok", runs["lcm-run-one-shot"]
    for name, reference in (
        ("bf16 weights, filled cache", "lcm-run-bf16"),
        ("filled cache", "lcm-run"),
        ("bf16 + token downsampling + --vae tiny, filled cache", "lcm-run-one-shot"),
    ):
        after = steps[steps.index(f"lcm-run CLI cold start, {name}") + 1]
        assert after.split()[1] in interleaved_group(reference), steps

    # The headline systems took turns image by image, resident side by side: ratios per round.
    from benchmarks.report_metrics import genai_ratios, paired_ratio

    # --quick builds no INT8 bundle, so the --fast rows are skipped; --deep-cache 2 runs on its own bundle.
    assert set(runs["lcm-run"]["interleaved_with"]) == {"genai", "genai-reshape", "lcm-run-deep-cache"}
    line = "round 1 of 1: genai-reshape, lcm-run, genai, lcm-run-deep-cache"  # the group's order
    assert any(entry.startswith(line) for entry in progress), progress
    assert runs["lcm-run-deep-cache"]["status"] == "ok", runs["lcm-run-deep-cache"]
    assert runs["lcm-run-deep-cache"]["deviation_from_f32"]["max"] > 0  # DeepCache changes the image
    paired = paired_ratio(runs["lcm-run"], runs["genai"])
    lcm_run, genai = runs["lcm-run"]["worker"]["latencies_seconds"], runs["genai"]["worker"]["latencies_seconds"]
    assert paired["rounds"] == [lcm_run[0] / genai[0]]
    assert genai_ratios(results, runs["lcm-run"])["latency"] == paired["median"]
    assert paired_ratio(runs["lcm-run-1024"], runs["genai"]) is None  # measured apart
    # SD1.5 with a random LCM-LoRA fused (cfg guidance), at guidance 1.0 and 1.5, beside genai on that bundle.
    assert bundles["bundle-cfg"]["path"].endswith("bundle-cfg")
    for key in ("lcm-run-cfg", "lcm-run-cfg-1.5"):
        assert runs[key]["status"] == "ok", runs[key]
        assert set(runs[key]["interleaved_with"]) == {
            "genai-cfg",
            "genai-cfg-1.5",
            "lcm-run-cfg",
            "lcm-run-cfg-1.5",
        } - {key}

    assert runs["lcm-run-1024"]["worker"]["image_size"] == [512, 512]  # 1024 at half size, like 512 (256)
    assert runs["lcm-run-batch4"]["worker"]["images_per_call"] == 4
    assert runs["lcm-run-f32"]["deviation_from_f32"]["psnr_db"] == float("inf")  # the reference itself
    assert runs["lcm-run"]["deviation_from_f32"]["max"] >= 0
    assert runs["lcm-run-768"]["deviation_from_f32"] is None  # another size than the reference

    page = docs.read_text()
    assert "## Latency per image" in page and "lcm-run (API)" in page
    for title in (
        "Targets against openvino.genai",
        "SD1.5 + LCM-LoRA (cfg guidance)",
        "Memory by image size",
        "Batches",
        "Deviation from the f32 image",
    ):
        assert f"## {title}" in page
    assert "(1 round)" in page  # the per-round range of the interleaved rows


def test_results_file_names_carry_the_minute(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    """Two runs on one day must not overwrite each other's results."""
    from benchmarks.run import Settings, results_path

    settings = Settings(results_dir=tmp_path, machine="box")
    path = results_path(settings, {"date": "2026-11-25T20:10:59+00:00", "machine": {}})
    assert path == tmp_path / "box-2026-11-25T2010Z.json"


def test_partial_runs_stay_apart_from_the_full_ones(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    """--headline and --only runs never become the README's full run, nor rewrite its page."""
    from benchmarks.__main__ import HEADLINE_PAGE, parse_settings
    from benchmarks.run import Settings, results_path
    from benchmarks.systems import HEADLINE_KEYS

    results = {"date": "2026-11-25T20:10:59+00:00", "machine": {}}
    headline = parse_settings(["--headline", "--results-dir", str(tmp_path), "--machine", "box"])
    assert headline.only == list(HEADLINE_KEYS) and headline.docs_path == HEADLINE_PAGE
    assert results_path(headline, results) == tmp_path / "headline" / "box-2026-11-25T2010Z.json"
    check = parse_settings(
        ["--only", "lcm-run,genai", "--results-dir", str(tmp_path), "--work-dir", str(tmp_path), "--machine", "box"]
    )
    assert check.docs_path == tmp_path / "checks" / "benchmarks.md"
    assert results_path(check, results).parent == tmp_path / "checks"
    assert parse_settings([]).docs_path == Settings.docs_path  # a full run: docs/benchmarks.md


def test_benchmark_model_has_lcm_dreamshaper_v7_parameter_counts(benchmarks_package: ModuleType) -> None:
    """The random-weight model is only a valid stand-in if its architecture is exactly the real one."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from benchmarks.model import build_modules, load_configs

    modules = build_modules(load_configs(), seed=0, device="meta")  # shapes only: no memory, no time
    counts = {name: sum(parameter.numel() for parameter in module.parameters()) for name, module in modules.items()}
    assert counts == {"unet": 859_602_884, "vae": 83_653_863, "text_encoder": 123_060_480}


def test_size_batch_and_piece_rows_need_full(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    """A full run leaves the minutes-long size and batch rows, and --fast's pieces alone (four exports
    more), to --full (or --only naming them): without it their bundles are never exported."""
    from benchmarks.__main__ import parse_settings
    from benchmarks.run import Benchmark
    from benchmarks.systems import BUNDLE, BUNDLE_BF16, BUNDLE_ONE_SHOT, BUNDLE_TAESD, BUNDLE_TODO, BY_KEY

    paths = {BUNDLE: tmp_path}
    full_only = [key for key, measurement in BY_KEY.items() if measurement.full_only]
    assert set(full_only) == {
        "lcm-run-768",
        "genai-768",
        "lcm-run-1024",
        "genai-1024",
        "lcm-run-batch4",
        "genai-batch4",
        "lcm-run-one-shot",
        "lcm-run-bf16",
        "lcm-run-taesd",
        "lcm-run-todo",
    }
    pieces = {BUNDLE_BF16, BUNDLE_ONE_SHOT, BUNDLE_TAESD, BUNDLE_TODO}
    for argv, skipped in (([], True), (["--full"], False), (["--only", "lcm-run-1024"], False)):
        settings = parse_settings([*argv, "--work-dir", str(tmp_path)])
        benchmark = Benchmark(settings, lambda message: None)
        entry = benchmark.entry_for(BY_KEY["lcm-run-1024"], paths)
        assert ("--full" in entry.get("reason", "")) == skipped, (argv, entry)
        assert "reason" not in benchmark.entry_for(BY_KEY["lcm-run"], paths)
        exported = {measurement.model for measurement in benchmark.to_measure()}
        assert (not exported & pieces) == (argv != ["--full"]), (argv, exported)
