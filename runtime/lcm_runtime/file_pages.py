"""Keep mapped model files out of the resident set.

OpenVINO maps the IR weights (.bin) and compiled-model cache blobs read-only and keeps the mapping
for as long as the compiled model lives, although the CPU plugin packs its own copy of the weights
while compiling and never reads the file again. Those file pages count in the process's resident
memory and doubled it (UNet: 1.7 GB of FP16 weights mapped beside 1.7 GB of packed bf16 ones).

MADV_DONTNEED on a read-only file mapping only unmaps pages from this process: the kernel's page
cache keeps them, and a later read faults them back in from it with the file's content, so dropping
is always safe. Done during compile (by a background thread) as well as after it, the file pages
never pile up, and the peak stays close to the packed weights alone. Linux only; elsewhere a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterable, Iterator

MADV_DONTNEED = 4
MAPS = "/proc/self/maps"


def _madvise() -> Callable[[int, int, int], int] | None:
    if not os.path.exists(MAPS):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_MADVISE = _madvise()


def file_mappings(folders: Iterable[str | os.PathLike[str]]) -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path) of this process's mappings of files inside these folders."""
    prefixes = tuple(os.path.join(os.path.realpath(folder), "") for folder in folders)
    if not prefixes:
        return []
    mappings = []
    try:
        with open(MAPS, encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                path = fields[5].rstrip("\n") if len(fields) == 6 else ""
                if path.startswith(prefixes):
                    start, end = (int(address, 16) for address in fields[0].split("-"))
                    mappings.append((start, end, fields[1], path))
    except OSError:
        return []
    return mappings


def read_only_mappings(folders: Iterable[str | os.PathLike[str]]) -> list[tuple[int, int]]:
    """Address ranges of read-only mappings of files inside these folders."""
    # Writable or private-copied pages may hold data the file does not: never drop those.
    return [(start, end) for start, end, permissions, _path in file_mappings(folders) if "w" not in permissions]


def release(folders: Iterable[str | os.PathLike[str]]) -> int:
    """Drop this process's resident pages of files mapped from these folders; returns bytes covered."""
    if _MADVISE is None:
        return 0
    covered = 0
    for start, end in read_only_mappings(folders):
        if _MADVISE(start, end - start, MADV_DONTNEED) == 0:
            covered += end - start
    return covered


@contextlib.contextmanager
def released_while_running(folders: Iterable[str | os.PathLike[str]], interval: float = 0.05) -> Iterator[None]:
    """Keep dropping these folders' file pages while the block runs (a compile), and once after it."""
    folders = [os.fspath(folder) for folder in folders]
    if _MADVISE is None or not folders:
        yield
        return
    done = threading.Event()

    def keep_releasing() -> None:
        while not done.wait(interval):
            release(folders)

    thread = threading.Thread(target=keep_releasing, name="lcm-release-file-pages", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        release(folders)
