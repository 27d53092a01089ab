"""`lcm-run batch --ray`: the same job as a Ray Data pipeline on a local Ray instance the command
starts (2 CPUs, 2 actors): byte-identical PNGs and the same manifest as the local run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ray")
from cli_helpers import assert_one_line_error, lcm_run

ROWS = [
    {"prompt": "a red cube", "seed": 3},
    {"prompt": "a blue sphere", "num_images": 2},
    {"prompt": "a green cone", "steps": 1, "name": "cone"},
    {"prompt": "a yellow torus", "guidance": 4.0},
]
COMMON = ("--steps", "2", "--width", "64", "--height", "64", "--seed", "9", "--precision", "f32")


def manifest(folder: Path) -> dict[str, dict]:
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    return {record["file"]: record for record in map(json.loads, lines)}


def test_batch_on_ray_writes_the_local_runs_files_byte_for_byte(tiny_bundle_fp32, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    first = lcm_run("batch", prompts, "--model", tiny_bundle_fp32, "--output", local, *COMMON)
    assert first.returncode == 0, first.stderr
    env = {"RAY_ADDRESS": ""}
    second = lcm_run(
        "batch",
        prompts,
        "--model",
        tiny_bundle_fp32,
        "--output",
        on_ray,
        *COMMON,
        "--ray",
        "--workers",
        "2",
        env_extra=env,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr
    local_files = sorted(path.name for path in local.glob("*.png"))
    assert len(local_files) == 5 and local_files == sorted(path.name for path in on_ray.glob("*.png"))
    for name in local_files:
        assert (local / name).read_bytes() == (on_ray / name).read_bytes(), name
    drop = {"seconds"}
    expected = {file: {k: v for k, v in record.items() if k not in drop} for file, record in manifest(local).items()}
    actual = {file: {k: v for k, v in record.items() if k not in drop} for file, record in manifest(on_ray).items()}
    assert actual == expected
    verify = lcm_run("batch", "--verify", on_ray)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_ray_options_without_ray_are_one_line_errors(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    result = lcm_run("batch", prompts, "--output", tmp_path / "out", "--cpus-per-worker", "2")
    assert_one_line_error(result, "--cpus-per-worker", "--ray")
