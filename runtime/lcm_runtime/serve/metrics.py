"""Prometheus metrics for GET /metrics, in a registry of each app's own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
REQUEST_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class Metrics:
    def __init__(self, queue_length: Callable[[], int], running: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        Gauge("lcm_queue_length", "Generations waiting for the model", registry=self.registry).set_function(
            queue_length
        )
        Gauge("lcm_running", "Generations running now (0 or 1)", registry=self.registry).set_function(running)
        self.images = Counter("lcm_images", "Images generated", registry=self.registry)
        self.requests = Counter(
            "lcm_requests", "Generation requests answered", ["api", "status"], registry=self.registry
        )
        self.errors = Counter("lcm_errors", "Requests answered with an error", ["status"], registry=self.registry)
        self.step_seconds = Histogram(
            "lcm_step_seconds", "Seconds per denoising step", buckets=STEP_BUCKETS, registry=self.registry
        )
        self.request_seconds = Histogram(
            "lcm_request_seconds",
            "Seconds from a generation request to its answer",
            ["api"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )

    def answered(self, api: str, status: int, seconds: float) -> None:
        self.requests.labels(api=api, status=str(status)).inc()
        self.request_seconds.labels(api=api).observe(seconds)
        if status >= 400:
            self.errors.labels(status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
