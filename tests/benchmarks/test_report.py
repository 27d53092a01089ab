"""The report (report.py and its report_* modules) on fake results, a committed one without the project
installed, the results schema it insists on and the converter that brought the committed files to it.

Renders only: nothing here measures (tests/benchmarks/test_quick.py runs the harness end to end).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def fake_run(
    key: str, system: str, precision: str, seconds: float, timed: int = 3, rss_gib: float = 3.0, **fields: object
) -> dict:
    """An ok run as the harness stores it (the current schema): at the benchmarked size, one image per
    call, no deviation measured; `fields` (height, width, batch, variant, ...) override."""
    latencies = [seconds, seconds * 1.1, seconds * 0.9][:timed]
    return {
        "key": key,
        "system": system,
        "label": key,
        "precision": precision,
        "variant": "default",
        "environment": "lcm-runtime",
        "model": "bundle",
        "height": 512,
        "width": 512,
        "batch": 1,
        "timed_runs": timed,
        "status": "ok",
        "process": {"first_png_seconds": 20.0, "peak_rss_bytes": int(rss_gib * 2**30), "wall_seconds": 60.0},
        "worker": {
            "latencies_seconds": latencies,
            "load_seconds": 1.0,
            "png_write_seconds": 0.05,
            "precision_executed": {"unet": "bf16"},
            "stages": [{"text_encoder": 0.05, "unet": [2.0] * 4, "vae_decode": 6.0}] * timed,
        },
        "deviation_from_f32": None,
        **fields,
    }


def fake_results(runs: list[dict]) -> dict:
    from benchmarks.results_file import RESULTS_SCHEMA

    return {
        "schema": RESULTS_SCHEMA,
        "mode": "full",
        "date": "2026-01-01T00:00:00+00:00",
        "errors": [],
        "settings": {"runs": 3, "height": 512, "width": 512, "steps": 4, "guidance": 8.0, "seed": 0, "prompt": "p"},
        "machine": {
            "cpu_model": "CPU",
            "usable_cpus": 2,
            "flags": {"amx_bf16": True},
            "memory_bytes": 1 << 34,
            "hypervisor": False,
            "kernel": "6.1",
        },
        "openvino_version": "2026.4.0",
        "model": {
            "name": "m",
            "weights": "random",
            "bundles": {"bundle": {"path": "/b/bundle", "bytes": 1, "token_downsampling": 1}},
        },
        "flops": {"text_encoder": 13_000_000_000, "unet_step": 800_000_000_000, "vae_decode": 2_500_000_000_000},
        "matmul": {"peak_gops": {"f32": 190.0, "bf16": 390.0, "int8": 790.0}, "measurements": []},
        "runs": runs,
        "cold_start": [],
    }


def section(page: str, title: str) -> str:
    """One '## title' section of the page, up to the next one."""
    return page.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_report_renders_from_a_results_file(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    """One size, one image per call, no deviations: the tables of those are left out; a failed run says why."""
    from benchmarks.report import render

    results = fake_results(
        [
            fake_run("lcm-run", "lcm-run", "default", 14.0),
            fake_run("genai", "openvino.genai", "default", 15.4, rss_gib=4.0),
            {
                **fake_run("optimum", "optimum-intel", "default", 1.0),
                "label": "optimum-intel",
                "status": "failed",
                "reason": "boom",
            },
        ]
    )
    page = render(results, tmp_path / "r.json", tmp_path / "benchmarks.md").read_text()
    assert "**1.10×** faster than genai" in page
    assert "unet step | bf16" in page and "% of peak" in page
    assert "optimum-intel (default): failed" in page
    # 14/15.4 and 3/4 GiB; one UNet step of 2 s over 800 GFLOP at 790 GOP/s
    assert "| lcm-run | bf16 (default) | 0.91 (≤ 1.00: **met**) | – | 0.75 (≤ 0.60: not met) | 2.0× |" in page
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
        "| lcm-run-fast | TAESD decoder, int8 UNet, bf16 (default) | 0.39 (≤ 0.30: not met) | – | 0.38 | 3.9× |"
        in targets
    )
    assert "| lcm-run-f32 | bf16 | – | – | – | 2.0× |" in targets  # the fake ran bf16 whatever it asked
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


def test_interleaved_runs_compare_by_the_median_of_their_per_round_ratios(
    tmp_path: Path, benchmarks_package: ModuleType
) -> None:
    """A drift that slows both systems in one round cancels: the ratio is the median of the rounds' ratios
    (here 0.9 each round), not the ratio of the medians; runs measured apart keep the ratio of medians."""
    from benchmarks.readme_block import ratio_with_spread
    from benchmarks.report import render
    from benchmarks.report_metrics import genai_ratios, paired_ratio

    ours = fake_run("lcm-run", "lcm-run", "default", 10.0, interleaved_with=["genai"])
    genai = fake_run("genai", "openvino.genai", "default", 10.0, interleaved_with=["lcm-run"])
    ours["worker"]["latencies_seconds"] = [9.0, 18.0, 9.9]  # round 2 ran on a machine twice as slow
    genai["worker"]["latencies_seconds"] = [10.0, 20.0, 10.0]
    apart = fake_run("lcm-run-bf16", "lcm-run", "default", 5.0)
    results = fake_results([ours, genai, apart])
    paired = paired_ratio(ours, genai)
    assert paired["rounds"] == pytest.approx([0.9, 0.9, 0.99]) and paired["median"] == pytest.approx(0.9)
    assert genai_ratios(results, ours)["latency"] == pytest.approx(0.9)  # the medians' ratio would be 0.99
    assert paired_ratio(apart, genai) is None
    assert genai_ratios(results, apart)["latency"] == pytest.approx(5.0 / 10.0)
    assert ratio_with_spread(ours, genai) == "0.90× (0.90–0.99)"
    targets = section(
        render(results, tmp_path / "r.json", tmp_path / "benchmarks.md").read_text(), "Targets against openvino.genai"
    )
    assert "| lcm-run | bf16 (default) | 0.90 (≤ 1.00: **met**) | 0.90–0.99 (3 rounds) |" in targets
    assert "`genai`, `lcm-run`" in targets


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


def old_results_file(folder: Path) -> Path:
    """The latest committed results as a schema 1 file would have them: no shapes, no references."""
    from benchmarks import readme_block

    results = json.loads(readme_block.latest_results_file().read_text(encoding="utf-8"))
    results["schema"] = 1
    for run in results["runs"]:
        for field in ("height", "width", "batch", "timed_runs"):
            run.pop(field)
    path = folder / "old.json"
    path.write_text(json.dumps(results), encoding="utf-8")
    return path


def test_an_older_results_file_is_refused_in_one_line_naming_the_converter(
    tmp_path: Path, benchmarks_package: ModuleType
) -> None:
    from benchmarks import readme_block
    from benchmarks.report import main

    old = old_results_file(tmp_path)
    for refuse in (
        lambda: main([str(old), "--docs", str(tmp_path / "page.md")]),
        lambda: readme_block.expected_block(old),
    ):
        with pytest.raises(SystemExit) as refused:
            refuse()
        message = str(refused.value)
        assert "\n" not in message and str(old) in message and "schema 1" in message
        assert f"python -m benchmarks.convert_results {old}" in message
    assert not (tmp_path / "page.md").exists()

    unversioned = tmp_path / "unversioned.json"
    unversioned.write_text(json.dumps({"mode": "full", "date": "2026-01-01T00:00:00+00:00"}), encoding="utf-8")
    with pytest.raises(SystemExit, match="results schema None, older than"):
        main([str(unversioned), "--docs", str(tmp_path / "page.md")])

    from benchmarks.convert_results import main as convert

    convert([str(old)])  # what the message says to do
    main([str(old), "--docs", str(tmp_path / "page.md")])
    assert "## Latency per image" in (tmp_path / "page.md").read_text(encoding="utf-8")


def test_the_converter_leaves_the_committed_files_as_they_are(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    """Every committed results file is at the current schema, reads, and converts to itself: run again,
    the converter changes no byte, and a file labelled schema 1 but already complete comes back unchanged."""
    from benchmarks.convert_results import committed_files, convert, main
    from benchmarks.results_file import RESULTS_SCHEMA, read_results

    committed = committed_files()
    assert len(committed) >= 11 and any(path.parent.name == "checks" for path in committed)
    copies = []
    for path in committed:
        assert read_results(path)["schema"] == RESULTS_SCHEMA
        copies.append(tmp_path / f"{path.parent.name}-{path.name}")
        shutil.copyfile(path, copies[-1])
    main([str(copy) for copy in copies])
    for path, copy in zip(committed, copies, strict=True):
        assert copy.read_bytes() == path.read_bytes(), f"the converter changed {path.name}"
        results = json.loads(path.read_text(encoding="utf-8"))
        assert convert(results) is results
        assert convert({**results, "schema": 1}) == results, f"{path.name} is not a fixed point of the converter"


def test_the_converter_fills_what_the_old_harness_did(benchmarks_package: ModuleType) -> None:
    from benchmarks.convert_results import convert

    before_todo = {
        **fake_results([fake_run("lcm-run-int8", "lcm-run", "default", 9.0, model="bundle-int8")]),
        "schema": 1,
        "date": "2026-11-25T19:06:18+00:00",
    }
    for run in before_todo["runs"]:
        for field in ("height", "width", "batch", "timed_runs", "deviation_from_f32"):
            run.pop(field)
    before_todo["model"]["bundles"] = {"bundle-int8": {"path": "/b/bundle-int8", "bytes": 1}}
    before_todo["cold_start"] = [
        {"name": name, "status": "ok", "process": {"first_png_seconds": 8.0}, "stderr_summary": ""}
        for name in ("filled cache", "--fast, filled cache")
    ]
    converted = convert(before_todo)
    run = converted["runs"][0]
    assert (run["height"], run["width"], run["batch"], run["timed_runs"]) == (512, 512, 1, 3)
    assert run["model"] == "bundle-fast" and run["deviation_from_f32"] is None
    assert converted["model"]["bundles"] == {
        "bundle-fast": {"path": "/b/bundle-int8", "bytes": 1, "token_downsampling": 1}
    }  # INT8, before --fast pooled tokens
    assert [(entry["reference"], entry["first_png_runs"]) for entry in converted["cold_start"]] == [
        ("lcm-run", [8.0]),
        ("lcm-run-fast", [8.0]),
    ]
    assert "schema" in before_todo and before_todo["schema"] == 1  # the input is left alone

    with_todo = {**before_todo, "date": "2026-11-26T03:27:54+00:00"}
    with_todo["model"] = {
        "name": "m",
        "weights": "random",
        "configs_digest": "6566daa8c7128214",  # the benchmark model's, whose counts flops.json stores
        "bundles": {"bundle-fast": {"path": "/b/bundle-fast", "bytes": 1}, "bundle": {"path": "/b/b", "bytes": 1}},
    }
    with_todo["flops"] = {"text_encoder": 13298503680, "unet_step": 803273605120, "vae_decode": 2514518933504}
    converted = convert(with_todo)
    assert {kind: bundle["token_downsampling"] for kind, bundle in converted["model"]["bundles"].items()} == {
        "bundle-fast": 2,
        "bundle": 1,
    }
    assert converted["flops"]["unet_step_token_downsampling_2"] == 716451512320  # from flops.json
    with pytest.raises(ValueError, match="agrees"):
        convert({**with_todo, "flops": {**with_todo["flops"], "unet_step": 1}})


def test_the_harness_writes_the_current_schema(tmp_path: Path, benchmarks_package: ModuleType) -> None:
    from benchmarks.results_file import RESULTS_SCHEMA
    from benchmarks.run import Benchmark, Settings

    assert Benchmark(Settings(work_dir=tmp_path), print).results["schema"] == RESULTS_SCHEMA
