"""Start the server: load the bundle, serve with uvicorn, and on SIGTERM or Ctrl-C stop taking
requests, finish the running image and exit 0."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from ..errors import InputError
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
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C; ``on_listening`` runs once the port is bound, as the models load."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(message)s")
    listening = listening_socket(host, port)  # before the engine starts: a taken port is a one-line error
    if on_listening is not None:
        on_listening()
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
    Server(config, engine).run(sockets=[listening])


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to HOST:PORT for uvicorn, or InputError naming the option. uvicorn's own bind exits
    the process on failure, which, with OpenVINO compiling on the engine's thread, aborted (SIGABRT)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else str(error)
        raise InputError(f"--host {host!r} is not an address of this machine ({reason}); try 127.0.0.1") from None
    listening = socket.socket(family, kind, protocol)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restarts reuse the port at once
    try:
        listening.bind(address)
    except OSError as error:
        listening.close()
        if error.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is in use by another program; choose another --port") from None
        reason = f"cannot listen on {host}:{port} ({error.strerror})"
        raise InputError(f"{reason}; choose another --host or --port") from None
    listening.set_inheritable(True)
    return listening
