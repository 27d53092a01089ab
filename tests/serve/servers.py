"""Start a real `lcm-run serve` on a free loopback port and wait until it is healthy."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"  # servers in tests listen on loopback only
START_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen
    url: str
    log: Path
    api_key: str | None = None

    def client(self, **options) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers, **options)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def start_server(bundle: Path, log: Path, *options: str, api_key: str | None = None) -> RunningServer:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LCM_API_KEY", None)
    command = [sys.executable, "-m", "lcm_runtime.cli", "serve", "--model", str(bundle), "--host", HOST]
    command += ["--port", str(port), "--precision", "f32", *options]
    if api_key:
        command += ["--api-key", api_key]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    server = RunningServer(process, f"http://{HOST}:{port}", log, api_key)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"lcm-run serve exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"lcm-run serve was not healthy in {START_TIMEOUT} s:\n{log.read_text()}")
