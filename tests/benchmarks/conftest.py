"""Makes the benchmark harness importable for its tests."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def benchmarks_package() -> ModuleType:
    """benchmarks/ lives at the repository root, not in the installed package; and this test's own
    folder (tests/benchmarks, no __init__.py) would otherwise pass for it as a namespace package."""
    if sys.path[:1] != [str(REPO_ROOT)]:
        sys.path.insert(0, str(REPO_ROOT))
    if getattr(sys.modules.get("benchmarks"), "__file__", None) is None:
        sys.modules.pop("benchmarks", None)
    import benchmarks

    return benchmarks
