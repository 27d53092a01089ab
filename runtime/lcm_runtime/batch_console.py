"""What `lcm-run batch` shows: a rich progress bar on stderr (images, rate, ETA), bad rows and failed
images as they come, then a one-screen summary on stdout. The job itself is batch.py's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .batch import Failure, JobRequest, Listener, Summary, run_job, verify_folder
from .batch_plan import BadRow
from .errors import LCMError

LISTED = 10  # reasons listed in a summary; the rest are counted


class RateColumn(ProgressColumn):
    """Images per minute, over rich's recent samples."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- images/min" if speed is None else f"{speed * 60:.1f} images/min")


class ConsoleListener(Listener):
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.bar: Any = None

    def say(self, message: str) -> None:
        target = self.progress.console if self.progress is not None else self.console
        target.print(message, markup=False, highlight=False, soft_wrap=True)

    def bad_row(self, bad: BadRow) -> None:
        self.say(f"skipped: PROMPTS {bad}")

    def loading(self, workers: int) -> None:
        self.say("loading the bundle" + (f" in {workers} processes" if workers > 1 else ""))

    def started(self, todo: int, skipped: int) -> None:
        if skipped:
            self.say(f"{skipped} images are already done (manifest and sha256 match): skipped")
        if not todo:
            return
        self.progress = Progress(
            TextColumn("images"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.bar = self.progress.add_task("images", total=todo)

    def image_done(self, record: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress.advance(self.bar)

    def image_failed(self, failure: Failure) -> None:
        self.say(f"failed: {failure.file} (PROMPTS {failure})")
        if self.progress is not None:
            self.progress.advance(self.bar)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def run(request: JobRequest) -> int:
    """Run the job with a progress bar, print its summary; the exit code (0, or 1: rows failed)."""
    console = Console(stderr=True)
    listener = ConsoleListener(console)
    try:
        summary = run_job(request, listener)
    finally:
        listener.close()
    for line in summary_lines(summary):
        typer.echo(line)
    return summary.exit_code


def summary_lines(summary: Summary) -> list[str]:
    failed_rows = len({failure.line for failure in summary.failures})
    lines = [
        f"lcm-run batch: {summary.folder}",
        f"images: {summary.planned} planned: {summary.made} made, {summary.skipped} already done, "
        f"{len(summary.failures)} failed",
    ]
    if summary.removed:
        lines.append(f"--restart removed the old job's {summary.removed} images")
    if summary.bad_rows:
        lines.append(f"bad rows: {len(summary.bad_rows)}, skipped (fix them and rerun: what is done is kept)")
        lines += [f"  line {bad.line}: {bad.reason}" for bad in summary.bad_rows[:LISTED]]
        if len(summary.bad_rows) > LISTED:
            lines.append(f"  ... and {len(summary.bad_rows) - LISTED} more")
    if summary.failures:
        lines.append(f"failed: {_count(len(summary.failures), 'image')} of {_count(failed_rows, 'row')}")
        reasons = Counter((failure.line, failure.reason) for failure in summary.failures)
        for (line, reason), count in list(reasons.items())[:LISTED]:
            lines.append(f"  line {line}{f' ({count} images)' if count > 1 else ''}: {reason}")
        if len(reasons) > LISTED:
            lines.append(f"  ... and {len(reasons) - LISTED} more")
    if summary.made:
        processes = f"{summary.workers} processes" if summary.workers > 1 else "1 process"
        lines.append(
            f"{summary.made} images in {summary.seconds:.1f} s: {summary.images_per_minute:.1f} images/min "
            f"(opening the bundle {summary.load_seconds:.1f} s of it; {processes})"
        )
    return lines


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def verify(folder: Path) -> None:
    """`lcm-run batch --verify DIR`: one line per problem, then a summary; an LCMError if any."""
    verified = verify_folder(folder)
    for problem in verified.problems:
        typer.echo(f"{problem.problem}: {problem.file}")
    planned = f"; the last run planned {verified.planned}" if verified.planned is not None else ""
    if verified.problems:
        raise LCMError(
            f"{len(verified.problems)} problem{'s' if len(verified.problems) > 1 else ''} in {folder} "
            f"({verified.good} of {verified.records} images in the "
            f"manifest match){planned}; rerun the job to redo missing or changed images"
        )
    typer.echo(f"ok: all {verified.records} images in {folder / 'manifest.jsonl'} match their sha256{planned}")
