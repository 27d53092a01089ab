"""A real `lcm-run serve` on the tiny bundle, on a free loopback port, for the server tests."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from servers import start_server  # noqa: E402  (tests/serve is on sys.path, like tests/ for cli_helpers)


@pytest.fixture(scope="session")
def server(tiny_bundle_fp32, tmp_path_factory):
    """One server for the session's read-mostly tests (its queue and settings are the defaults)."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    running = start_server(tiny_bundle_fp32, log, "--max-queue", "8")
    yield running
    running.stop()
