"""Run one command in a fresh process and measure it from the outside.

Peak resident memory comes from the kernel's accounting of the child itself (wait4's ru_maxrss),
so it is exact, costs nothing while the child runs, and is not confused by the parent's own size.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class ProcessResult:
    command: list[str]
    returncode: int | None
    wall_seconds: float
    peak_rss_bytes: int
    timed_out: bool
    log: str  # path of the combined stdout/stderr
    first_png_seconds: float | None = None  # spawn -> first PNG written (its mtime)
    cpu_seconds: float = 0.0  # the child's own user + system time
    other_cpu_seconds: float | None = None  # CPU time the rest of the machine used meanwhile

    @property
    def others_share(self) -> float | None:
        """The fraction of the machine's CPU capacity others took during the run (0: quiet)."""
        if self.other_cpu_seconds is None or not self.wall_seconds:
            return None
        return self.other_cpu_seconds / (self.wall_seconds * (os.cpu_count() or 1))

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "others_share": self.others_share}

    def log_tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (/proc/stat), idle and iowait excluded."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_measured(
    command: list[str],
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    first_png: Path | None = None,
) -> ProcessResult:
    log.parent.mkdir(parents=True, exist_ok=True)
    timed_out = threading.Event()
    with open(log, "w", encoding="utf-8") as log_file:
        busy_before = machine_busy_seconds()
        spawned_epoch = time.time()
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(process.pid, 9)  # its own session: the worker and anything it started
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        busy_after = machine_busy_seconds()
    process.returncode = os.waitstatus_to_exitcode(status)
    first_png_seconds = None
    if first_png is not None and first_png.exists():
        first_png_seconds = first_png.stat().st_mtime - spawned_epoch
    return ProcessResult(
        command=[str(part) for part in command],
        returncode=process.returncode,
        wall_seconds=wall,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
        timed_out=timed_out.is_set(),
        log=str(log),
        first_png_seconds=first_png_seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        # Whatever the machine did besides our child (the parent's polling is negligible).
        other_cpu_seconds=(
            max(busy_after - busy_before - usage.ru_utime - usage.ru_stime, 0.0)
            if busy_before is not None and busy_after is not None
            else None
        ),
    )
