"""Atomic bundle output: build in a staging folder beside OUT, rename into place when complete.

A failed or interrupted export (any exception, KeyboardInterrupt, SystemExit) leaves OUT
absent, or an existing OUT untouched, and no staging folder behind. The staging folder sits
in OUT's parent so the final rename is on one filesystem (atomic on POSIX for the new name).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lcm_runtime.bundle import MANIFEST_FILE, MODEL_INDEX_FILE
from lcm_runtime.errors import LCMError

STAGING_PREFIX = ".lcm-export-"
# What staged_output names its folders, and nothing else: .lcm-export-<OUT name>.<pid>.tmp (or .old).
STAGING_PATTERN = re.compile(r"\.lcm-export-(?P<out>.+)\.(?P<pid>[1-9][0-9]{0,9})\.(?P<kind>tmp|old)")


class OutputError(LCMError):
    """OUT cannot be written: exists without --force, not a folder, no space, no permission."""


def check_output(out: Path, force: bool) -> None:
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputError(f"{out} already exists; pass --force to replace it or choose another OUT")
        if not out.is_dir():
            raise OutputError(f"{out} exists and is not a folder; remove it or choose another OUT")
        if not is_replaceable_model_folder(out):
            raise OutputError(
                f"{out} is not a model bundle (no manifest.json or model_index.json), and --force only replaces "
                "bundles; choose another OUT, or remove the folder yourself"
            )
    parent = out.absolute().parent
    if not parent.is_dir():
        raise OutputError(f"the parent folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to {parent} (permission denied); choose another OUT")


def is_replaceable_model_folder(folder: Path) -> bool:
    """Whether --force may delete ``folder``: empty, or a model bundle (lcm-export's, or optimum-cli's) that
    the export replaces with another. Any other folder may hold what a user made."""
    if os.path.lexists(folder / MANIFEST_FILE) or os.path.lexists(folder / MODEL_INDEX_FILE):
        return True
    return next(folder.iterdir(), None) is None


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
    return OutputError(
        f"no space left on the device of {parent} while writing the bundle; free some space or choose another OUT"
    )


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
    except (PermissionError, OverflowError):  # another user's process; a number no process can have: not ours
        return True
    return True


def remove_abandoned_staging(out: Path) -> list[str]:
    """Remove the staging folders in OUT's parent (for any OUT) left by exports that were killed.

    A folder counts only if its name is exactly staged_output's pattern and no process has its PID
    (SIGKILL, power loss, OOM killer). A backup (.old) whose OUT is gone is the previous bundle of an
    export killed between its two renames: it is put back instead. Returns one line per folder, to print.
    """
    parent = Path(out).absolute().parent
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    done = []
    for name in names:
        match = STAGING_PATTERN.fullmatch(name)
        path = parent / name
        if match is None or path.is_symlink() or not path.is_dir():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        target = parent / match["out"]
        if match["kind"] == "old" and not (target.exists() or target.is_symlink()):
            os.rename(path, target)
            done.append(f"restored {target.name} from {name}, its backup left by an interrupted export")
            continue
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            done.append(
                f"could not remove the stale staging folder {path} left by an interrupted export; remove it by hand"
            )
        else:
            done.append(f"removed a stale staging folder {name} left by an interrupted export")
    return done


@contextmanager
def staged_output(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it replaces OUT, otherwise it is removed."""
    out = Path(out).absolute()
    remove_abandoned_staging(out)  # first: a restored backup is an existing OUT, which needs --force
    check_output(out, force)
    staging = out.parent / f"{STAGING_PREFIX}{out.name}.{os.getpid()}.tmp"
    backup = out.parent / f"{STAGING_PREFIX}{out.name}.{os.getpid()}.old"
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


def clean_config(config_json: str) -> dict[str, Any]:
    """A component config as JSON data, minus where it was loaded from (an absolute path)."""
    data = json.loads(config_json)
    for key in ("_name_or_path", "_commit_hash", "_use_default_values"):
        data.pop(key, None)
    return data


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
