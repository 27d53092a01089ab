"""Atomic bundle output: build in a staging folder beside OUT, rename into place when complete.

A failed or interrupted export (any exception, KeyboardInterrupt, SystemExit) leaves OUT
absent, or an existing OUT untouched, and no staging folder behind. The staging folder sits
in OUT's parent so the final rename is on one filesystem (atomic on POSIX for the new name).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lcm_runtime.errors import LCMError

STAGING_PREFIX = ".lcm-export-"


class OutputError(LCMError):
    """OUT cannot be written: exists without --force, not a folder, no space, no permission."""


def check_output(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputError(f"{out} already exists; pass --force to replace it or choose another OUT")
        if not out.is_dir():
            raise OutputError(f"{out} exists and is not a folder; remove it or choose another OUT")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise OutputError(f"the parent folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to {parent} (permission denied); choose another OUT")


def check_free_space(out: Path, needed_bytes: int) -> None:
    parent = Path(out).absolute().parent
    free = shutil.disk_usage(parent).free
    if free < needed_bytes:
        raise OutputError(
            f"not enough disk space in {parent}: the export needs about {human_size(needed_bytes)}, "
            f"{human_size(free)} free; free some space or choose another OUT"
        )


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GiB"


def no_space_error(out: Path) -> OutputError:
    parent = Path(out).absolute().parent
    return OutputError(f"no space left on the device of {parent} while writing the bundle; free some space or choose another OUT")


def is_no_space(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):  # OpenVINO reports ENOSPC as a plain RuntimeError
            return True
        error = error.__cause__ or error.__context__
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_staging(out: Path) -> None:
    """Remove staging folders for OUT left by exports that were killed (SIGKILL, power loss)."""
    for path in Path(out).parent.glob(f"{STAGING_PREFIX}{Path(out).name}.*"):
        pid = path.name[len(f"{STAGING_PREFIX}{Path(out).name}.") :].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)) and path.suffix in (".tmp", ".old"):
            if path.suffix == ".old" and not Path(out).exists():
                # Killed between the two renames: the backup is the previous OUT; put it back.
                os.rename(path, out)
            else:
                shutil.rmtree(path, ignore_errors=True)


@contextmanager
def staged_output(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it replaces OUT, otherwise it is removed."""
    out = Path(out).absolute()
    check_output(out, force)
    staging = out.parent / f"{STAGING_PREFIX}{out.name}.{os.getpid()}.tmp"
    backup = out.parent / f"{STAGING_PREFIX}{out.name}.{os.getpid()}.old"
    remove_abandoned_staging(out)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        try:
            yield staging
        except BaseException as error:
            if is_no_space(error) and not isinstance(error, LCMError):
                raise no_space_error(out) from None
            raise
        if out.exists():
            os.rename(out, backup)
            try:
                os.rename(staging, out)
            except BaseException:
                os.rename(backup, out)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
