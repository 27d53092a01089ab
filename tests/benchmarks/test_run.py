"""The harness's own bookkeeping, without measuring anything."""

from __future__ import annotations

import pytest

from benchmarks.measure import ProcessResult
from benchmarks.run import without_group_cpu


def result(wall: float, cpu: float, other: float) -> ProcessResult:
    return ProcessResult(
        command=["worker"],
        returncode=0,
        wall_seconds=wall,
        peak_rss_bytes=1,
        timed_out=False,
        log="log",
        cpu_seconds=cpu,
        other_cpu_seconds=other,
    )


def test_members_of_an_interleaved_group_do_not_count_as_disturbance() -> None:
    """Two workers taking turns each see the other's CPU as "other processes"; over the group's window
    only what neither used is outside use, spread over each member's time."""
    members = {"a": result(100.0, 150.0, 60.0), "b": result(50.0, 40.0, 150.0)}
    adjusted = without_group_cpu(members, busy_before=1000.0, busy_after=1000.0 + 150.0 + 40.0 + 10.0, wall=100.0)
    assert adjusted["a"].other_cpu_seconds == pytest.approx(10.0)
    assert adjusted["b"].other_cpu_seconds == pytest.approx(5.0)
    assert adjusted["a"].cpu_seconds == 150.0  # only the outside share changes
    # Without machine counters the results stay as measured.
    assert without_group_cpu(members, None, 5.0, 100.0) == members
