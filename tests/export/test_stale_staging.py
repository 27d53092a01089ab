"""An export killed with SIGKILL leaves its staging folder; the next export beside it removes it and says so.

The unit tests pin what counts as stale (exactly staged_output's name pattern, a PID no process has);
the slow test kills real `lcm-export --tiny-random` processes at several points of the export.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lcm_export.writer import remove_abandoned_staging

STAGE_TIMEOUT = 240  # seconds to reach one kill point on a busy 2-core machine
EXPORT_TIMEOUT = 400


def dead_pid() -> int:
    """A PID that no process has any more (a child that has exited and been reaped)."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, timeout=60
    )
    return int(child.stdout)


def test_only_dead_exports_folders_of_the_exact_pattern_are_removed(tmp_path):
    gone = dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [f".lcm-export-other.{gone}.tmp", f".lcm-export-my.bundle.v2.{gone}.tmp"]  # any OUT, dots in names
        kept = [
            f".lcm-export-live.{sleeper.pid}.tmp",  # its export is still running
            f".lcm-export-mine.{os.getpid()}.tmp",  # this very process
            ".lcm-export-init.1.tmp",  # PID 1 is always alive
            f".lcm-export-x.{gone}.tmp.bak",  # not the pattern
            f".lcm-export-x.{gone}",
            f"lcm-export-x.{gone}.tmp",
            f".lcm-export-.{gone}.tmp",
            f".lcm-export-x.0{gone}.tmp",
            ".lcm-export-x.99999999999999999999.tmp",  # no process can have this PID
            f".lcm-export-x.{gone}.new",
            f"bundle.{gone}.tmp",
        ]
        for name in stale + kept:
            (tmp_path / name / "unet").mkdir(parents=True)
        (tmp_path / f".lcm-export-file.{gone}.tmp").write_text("a file, not a staging folder")
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / f".lcm-export-link.{gone}.tmp").symlink_to(tmp_path / "elsewhere")

        said = remove_abandoned_staging(tmp_path / "new-bundle")

        left = {path.name for path in tmp_path.iterdir()}
        assert left == set(kept) | {f".lcm-export-file.{gone}.tmp", "elsewhere", f".lcm-export-link.{gone}.tmp"}
        assert sorted(said) == sorted(
            f"removed a stale staging folder {name} left by an interrupted export" for name in stale
        )
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)


def test_a_backup_of_another_out_is_restored_not_removed(tmp_path):
    gone = dead_pid()
    backup = tmp_path / f".lcm-export-previous.{gone}.old"
    backup.mkdir()
    (backup / "manifest.json").write_text("{}")
    (tmp_path / "existing").mkdir()
    superseded = tmp_path / f".lcm-export-existing.{gone}.old"  # its OUT is back in place: only a leftover
    superseded.mkdir()
    said = remove_abandoned_staging(tmp_path / "unrelated")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["existing", "previous"]
    assert (tmp_path / "previous" / "manifest.json").read_text() == "{}"
    assert said == [
        f"removed a stale staging folder .lcm-export-existing.{gone}.old left by an interrupted export",
        f"restored previous from .lcm-export-previous.{gone}.old, its backup left by an interrupted export",
    ]


def test_a_missing_parent_is_no_error(tmp_path):
    assert remove_abandoned_staging(tmp_path / "no" / "such" / "bundle") == []


# --- real processes, really killed ---------------------------------------------------------------------


class Export:
    """`lcm-export --tiny-random OUT` in a subprocess, its stderr lines collected by a thread."""

    def __init__(self, out: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.out = out
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lcm_export.entry", "--tiny-random", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line)

    @property
    def staging(self) -> Path:
        return self.out.parent / f".lcm-export-{self.out.name}.{self.process.pid}.tmp"

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + STAGE_TIMEOUT
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"the export ended ({self.process.returncode}) before {what}: {self.stderr}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"no {what} within {STAGE_TIMEOUT} s: {self.stderr}")
            try:
                self.stderr.append(self.lines.get(timeout=0.01))
            except queue.Empty:
                pass

    def stage_done(self, prefix: str) -> bool:
        """Whether the progress line of a finished stage starting with ``prefix`` has been printed."""
        return any(line.strip().startswith(prefix) for line in self.stderr)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def finish(self) -> str:
        """Wait for the export to end by itself; all it wrote on stderr."""
        try:
            self.process.wait(timeout=EXPORT_TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self.reader.join(timeout=60)
        while not self.lines.empty():
            self.stderr.append(self.lines.get())
        return "".join(self.stderr)


def removed(staging_name: str) -> str:
    return f"removed a stale staging folder {staging_name} left by an interrupted export"


@pytest.mark.slow
def test_exports_killed_at_any_point_are_cleaned_up_by_the_next_export(tmp_path):
    pytest.importorskip("torch")
    parent = tmp_path / "artifacts"
    parent.mkdir()
    points = [
        ("a", "the staging folder appears", lambda export: export.staging.is_dir()),
        ("b", "the tokenizer is written", lambda export: export.stage_done("tokenizer")),
        ("c", "the UNet is converted", lambda export: export.stage_done("unet (")),
        (
            "final",
            "the manifest is written (the bundle is complete, not verified)",
            lambda export: export.stage_done("manifest"),
        ),
    ]
    previous = None  # the staging folder the last kill left
    for name, what, point in points:
        export = Export(parent / name)
        export.wait_for(lambda point=point, export=export: point(export), what)
        export.kill()
        assert export.process.returncode == -signal.SIGKILL
        # The kill landed mid-export: its staging folder stays behind and OUT was never created...
        assert export.staging.is_dir(), f"killed when {what}: no staging folder, nothing to test: {export.stderr}"
        assert not (parent / name).exists(), f"killed when {what}: OUT {name} appeared before the rename"
        # ... and this export (another OUT) removed the one the previous kill left, and said so.
        if previous is not None:
            assert removed(previous) in "".join(export.stderr), export.stderr
        assert sorted(path.name for path in parent.iterdir()) == [export.staging.name]
        previous = export.staging.name

    # A complete export to the OUT the last killed one had: the last stale folder is named and gone.
    again = Export(parent / "final")
    stderr = again.finish()
    assert again.process.returncode == 0, stderr
    assert removed(previous) in stderr, stderr
    assert sorted(path.name for path in parent.iterdir()) == ["final"]  # no staging folder, no partial OUT

    from lcm_runtime.bundle import read_manifest, verify_files

    assert verify_files(parent / "final", read_manifest(parent / "final")) == []
