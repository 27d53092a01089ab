"""/proc/meminfo, read in one place (the runtime's memory policy and the benchmarks' machine facts)."""

from __future__ import annotations

MEMINFO = "/proc/meminfo"


def meminfo_bytes(field: str, path: str = MEMINFO) -> int | None:
    """One field of /proc/meminfo (e.g. "MemAvailable") in bytes, or None where there is none."""
    try:
        with open(path, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
