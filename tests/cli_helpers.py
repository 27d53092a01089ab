"""The one home of the helpers that drive lcm-run and lcm-export as a user would: a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any


def lcm_run(
    *args: Any, cwd: Any = None, env_extra: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LCM_CACHE_DIR": "off", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "lcm_runtime.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def lcm_export(
    *args: Any, env_extra: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "lcm_export.entry", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """lcm-run failed with exactly one line on stderr, no traceback, naming every one of ``words``."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def assert_one_line_export_error(returncode: int | None, stderr: str, *words: str) -> str:
    """lcm-export failed with exactly one ``error:`` line, the last on stderr (progress lines may come
    before it), no traceback, naming every one of ``words`` (case-insensitive)."""
    assert returncode != 0
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert stderr.strip().splitlines()[-1] == errors[0]
    for word in words:
        assert word.lower() in errors[0].lower(), (word, errors[0])
    return errors[0]
