"""The server against the Python API on one bundle: request overhead (interleaved rounds), the first
image after `lcm-run serve` starts, throughput and latency under 1, 2, 4 and 8 concurrent clients,
and the server's resident memory as requests go by.

    python -m benchmarks.serve --bundle BUNDLE [--size 512] [--rounds 3]

Run it in the development environment with the [serve] extra, on a quiet machine, one heavy process
at a time. It writes benchmarks/results/serve/serve-<machine>-<UTC time>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from .machine import machine_facts, machine_slug

# Apart from the harness's results: its report reads every file in results/ as a full run.
RESULTS = Path(__file__).resolve().parent / "results" / "serve"
HOST = "127.0.0.1"
PROMPT = "a beautiful pink unicorn, 8k"

# The Python API side of each round, in its own process: load once, then one image per line read.
API_WORKER = textwrap.dedent(
    """
    import sys, time
    from lcm_runtime import LCMPipeline
    pipe = LCMPipeline.from_pretrained(sys.argv[1])
    size = int(sys.argv[2])
    pipe(sys.argv[3], height=size, width=size, generator=0)  # warm: compiled at this size
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        pipe(sys.argv[3], height=size, width=size, generator=int(line))
        print(time.perf_counter() - started, flush=True)
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


class Server:
    def __init__(self, bundle: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.spawned = time.perf_counter()
        command = [sys.executable, "-m", "lcm_runtime.cli", "serve", "--model", str(bundle)]
        command += ["--host", HOST, "--port", str(self.port), "--max-queue", "64", "--log-level", "warning"]
        self.process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 900) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"lcm-run serve exited {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - self.spawned
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SystemExit("lcm-run serve was not healthy in time")

    def generate(self, size: int, seed: int) -> float:
        started = time.perf_counter()
        body = {"prompt": PROMPT, "size": f"{size}x{size}", "seed": seed}
        answer = httpx.post(f"{self.url}/v1/images/generations", json=body, timeout=1800)
        answer.raise_for_status()
        return time.perf_counter() - started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=300)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--requests-per-level", type=int, default=8, help="requests per level (at least clients)")
    args = parser.parse_args(argv)
    logs = Path(__file__).resolve().parent / ".work" / "serve"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine_facts(), "bundle": str(args.bundle), "size": args.size}
    started_at = time.strftime("%Y-%m-%dT%H%MZ", time.gmtime())

    # 1. Start-up: the first run fills the compile cache; the second is what a restart costs.
    for label in ("empty-or-filled-cache", "filled-cache"):
        server = Server(args.bundle, logs / f"start-{label}.log")
        healthy = server.wait_healthy()
        first = server.generate(args.size, 0)
        results.setdefault("start", []).append(
            {"cache": label, "healthy_s": healthy, "first_image_s": time.perf_counter() - server.spawned}
        )
        print(f"start ({label}): healthy {healthy:.2f} s, first image {healthy + first:.2f} s", flush=True)
        if label == "filled-cache":
            break
        server.stop()

    # 2. Overhead: server request and Python API call in turns, same bundle, size and seeds.
    api = subprocess.Popen(
        [sys.executable, "-c", API_WORKER, str(args.bundle), str(args.size), PROMPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert api.stdout is not None and api.stdin is not None
    if api.stdout.readline().strip() != "ready":
        raise SystemExit("the API worker did not start")
    server.generate(args.size, 1)  # warm
    rounds = []
    for index in range(args.rounds):
        served = server.generate(args.size, 100 + index)
        api.stdin.write(f"{100 + index}\n")
        api.stdin.flush()
        direct = float(api.stdout.readline())
        rounds.append({"server_s": served, "api_s": direct, "ratio": served / direct})
        print(f"round {index + 1}: server {served:.2f} s, API {direct:.2f} s, {served / direct:.3f}x", flush=True)
    api.stdin.close()
    api.wait(timeout=60)
    ratios = [item["ratio"] for item in rounds]
    results["overhead"] = {
        "rounds": rounds,
        "median_ratio": statistics.median(ratios),
        "spread": [min(ratios), max(ratios)],
    }

    # 3. Concurrency: throughput and latency percentiles per number of clients.
    results["concurrency"] = []
    for clients in (int(value) for value in args.clients.split(",")):
        count = max(args.requests_per_level, clients)
        began = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(lambda seed: server.generate(args.size, seed), range(1000, 1000 + count)))
        seconds = time.perf_counter() - began
        level = {
            "clients": clients,
            "requests": count,
            "images_per_minute": 60 * count / seconds,
            "p50_s": percentile(latencies, 0.5),
            "p99_s": percentile(latencies, 0.99),
            "rss_mib": rss_mib(server.process.pid),
        }
        results["concurrency"].append(level)
        print(
            f"{clients} clients: {level['images_per_minute']:.2f} images/min, p50 {level['p50_s']:.2f} s, "
            f"p99 {level['p99_s']:.2f} s, RSS {level['rss_mib']:.0f} MiB",
            flush=True,
        )
    results["requests_served"] = 2 + args.rounds + sum(level["requests"] for level in results["concurrency"])
    results["rss_mib_at_end"] = rss_mib(server.process.pid)
    server.stop()

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"serve-{machine_slug(results['machine'])}-{started_at}.json"
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
