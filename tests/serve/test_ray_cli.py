"""`lcm-run serve --ray`: the same server as a Ray Serve deployment on a local Ray instance the
command starts; answers through Ray's proxy; SIGTERM takes it down with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("ray")
from cli_helpers import assert_one_line_error, lcm_run
from servers import HOST, free_port


def test_lcm_run_serve_ray_serves_and_stops_on_sigterm(tiny_bundle_fp32, tmp_path):
    port = free_port()
    log = tmp_path / "serve-ray.log"
    command = [sys.executable, "-m", "lcm_runtime.cli", "serve", "--model", str(tiny_bundle_fp32), "--ray"]
    command += ["--host", HOST, "--port", str(port), "--precision", "f32", "--replicas", "1"]
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 240
        healthy = False
        while time.monotonic() < deadline and process.poll() is None and not healthy:
            try:
                healthy = httpx.get(f"http://{HOST}:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.5)
        assert healthy, log.read_text()
        body = {"prompt": "a red cube", "size": "64x64", "num_inference_steps": 1}
        answer = httpx.post(f"http://{HOST}:{port}/v1/images/generations", json=body, timeout=120)
        assert answer.status_code == 200 and answer.json()["data"][0]["b64_json"]
        bad = httpx.post(f"http://{HOST}:{port}/v1/images/generations", json={**body, "size": "7x7"}, timeout=60)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "size"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    assert code == 0, log.read_text()


def test_ray_options_without_ray_are_one_line_errors(tiny_bundle_fp32):
    result = lcm_run("serve", "--model", tiny_bundle_fp32, "--replicas", "2")
    assert_one_line_error(result, "--replicas", "--ray")
