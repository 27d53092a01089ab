"""Start the server: load the bundle, serve with uvicorn, and on SIGTERM or Ctrl-C stop taking
requests, finish the running image and exit 0."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from .app import create_app
from .engine import Engine
from .state import Settings


class Server(uvicorn.Server):
    """uvicorn's server, draining the engine's queue first when told to exit: queued requests are
    answered 503 at once, the running one finishes, then uvicorn closes its connections."""

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.engine.drain()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT shut down gracefully, and the process then exits 0: uvicorn's own
        version raises the signal again once shut down, which makes the exit status the signal's."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(
    engine: Engine,
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(message)s")
    engine.start()
    app = create_app(engine, settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.timeout) + 5,
        access_log=log_level == "debug",
    )
    Server(config, engine).run()
