"""What every route reads: the engine, the server's settings, the image store and the metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .engine import Engine, image_digest
from .http import ImageStore
from .metrics import Metrics

__all__ = ["ServerState", "Settings", "image_digest"]


@dataclass(frozen=True)
class Settings:
    api_key: str | None = None
    timeout: float = 600.0  # seconds a request may wait for its images, queue included
    max_body_bytes: int = 32 * 2**20
    cors_origins: tuple[str, ...] = ()


@dataclass
class ServerState:
    engine: Engine
    settings: Settings
    store: ImageStore = field(default_factory=ImageStore)
    started: int = field(default_factory=lambda: int(time.time()))
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.engine.queued, lambda: int(self.engine.running is not None))
        self.engine.on_step_seconds = self.metrics.step_seconds.observe
