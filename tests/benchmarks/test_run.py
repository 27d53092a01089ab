"""The harness's own bookkeeping, without measuring anything."""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.measure import ProcessResult
from benchmarks.run import wait_for_file, without_group_cpu


def result(wall: float, cpu: float, other: float) -> ProcessResult:
    return ProcessResult(
        command=["worker"],
        returncode=0,
        wall_seconds=wall,
        peak_rss_bytes=1,
        timed_out=False,
        log="log",
        cpu_seconds=cpu,
        other_cpu_seconds=other,
    )


def test_members_of_an_interleaved_group_do_not_count_as_disturbance() -> None:
    """Two workers taking turns each see the other's CPU as "other processes"; over the group's window
    only what neither used is outside use, spread over each member's time."""
    members = {"a": result(100.0, 150.0, 60.0), "b": result(50.0, 40.0, 150.0)}
    adjusted = without_group_cpu(members, busy_before=1000.0, busy_after=1000.0 + 150.0 + 40.0 + 10.0, wall=100.0)
    assert adjusted["a"].other_cpu_seconds == pytest.approx(10.0)
    assert adjusted["b"].other_cpu_seconds == pytest.approx(5.0)
    assert adjusted["a"].cpu_seconds == 150.0  # only the outside share changes
    # Without machine counters the results stay as measured.
    assert without_group_cpu(members, None, 5.0, 100.0) == members


def test_a_paced_worker_stays_resident_until_the_parent_lets_it_exit(tmp_path: Path) -> None:
    """A worker that ends frees its memory while the next one in the round times its image; so a paced
    worker writes its result and then waits for the parent's exit file."""
    from benchmarks.workers import common

    pace, out_dir = tmp_path / "pace", tmp_path / "out"
    pace.mkdir()
    args = argparse.Namespace(out_dir=out_dir, runs=2, seed=0, batch=1, pace=pace)

    def setup(_args: argparse.Namespace) -> tuple[common.Generate, dict]:
        return (lambda seed: (Image.new("RGB", (8, 8)), {"unet": [0.0]})), {}

    worker = threading.Thread(target=common.run, args=(args, setup), daemon=True)
    worker.start()
    for index in range(args.runs):
        (pace / f"go-{index}").touch()
        assert wait_for_file(pace / f"done-{index}", worker, timeout=10.0)
    deadline = time.monotonic() + 10.0
    while not (out_dir / "result.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (out_dir / "result.json").exists()
    time.sleep(0.1)
    assert worker.is_alive()  # its result is written, and it still holds its models
    (pace / "exit").touch()
    worker.join(timeout=10.0)
    assert not worker.is_alive()
    assert len(json.loads((out_dir / "result.json").read_text())["latencies_seconds"]) == args.runs


def test_compared_systems_take_their_turns_next_to_each_other() -> None:
    """A round of the headline group lasts about a minute, longer than this VM's 20-40 s waves of speed:
    the systems a headline ratio compares must stand side by side in the turn order."""
    from benchmarks.systems import GENAI_BASELINE, INTERLEAVED, MEASUREMENTS, measurement_groups, select

    groups = [[member.key for member in group] for group in measurement_groups(list(MEASUREMENTS))]
    assert [group for group in groups if len(group) > 1] == [list(group) for group in INTERLEAVED]
    assert sorted(key for group in groups for key in group) == sorted(m.key for m in MEASUREMENTS)
    headline = groups[0]
    for compared in ("lcm-run", "lcm-run-fast"):
        assert abs(headline.index(compared) - headline.index(GENAI_BASELINE)) == 1, headline
    assert abs(headline.index("lcm-run") - headline.index("genai-reshape")) == 1
    # A partial selection keeps the group's order and leaves out what was not chosen.
    partial = measurement_groups(select(["lcm-run-fast", "genai", "optimum"]))
    assert [[member.key for member in group] for group in partial] == [["genai", "lcm-run-fast"], ["optimum"]]


def test_a_bundle_is_exported_again_when_the_export_code_or_its_options_change(tmp_path: Path, monkeypatch) -> None:
    """Reusing a bundle written by older export code would measure the old bundle under the new name."""
    from benchmarks import run as run_module
    from benchmarks.run import Benchmark, Settings

    exported: list[list[str]] = []

    def fake_export(command: list[str], *args: object, **kwargs: object) -> ProcessResult:
        out = Path(command[4])
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").write_text("{}")
        exported.append(command[6:])
        return result(1.0, 1.0, 0.0)

    monkeypatch.setattr(run_module, "run_measured", fake_export)
    code = ["digest-1"]
    monkeypatch.setattr(run_module, "export_code_digest", lambda: code[0])
    benchmark = Benchmark(Settings(work_dir=tmp_path), lambda message: None)
    benchmark.results["model"] = {}
    out = tmp_path / "bundle-fast"
    benchmark.export(tmp_path / "source", out, ["--fast"])
    benchmark.export(tmp_path / "source", out, ["--fast"])
    assert exported == [["--fast"]]  # the second is reused
    benchmark.export(tmp_path / "source", out, ["--fast", "--tiny-vae", "taesd"])
    code[0] = "digest-2"
    benchmark.export(tmp_path / "source", out, ["--fast", "--tiny-vae", "taesd"])
    assert exported == [["--fast"], ["--fast", "--tiny-vae", "taesd"], ["--fast", "--tiny-vae", "taesd"]]


def test_the_export_code_digest_covers_the_exporter_and_the_calibrations_runtime() -> None:
    from benchmarks.run import EXPORT_CODE, REPO_ROOT, export_code_digest

    assert all((REPO_ROOT / entry).exists() for entry in EXPORT_CODE)
    assert "export/lcm_export" in EXPORT_CODE and "runtime/lcm_runtime/denoise.py" in EXPORT_CODE
    assert len(export_code_digest()) == 16 and export_code_digest() == export_code_digest()
