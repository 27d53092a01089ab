"""How both CLIs (lcm-run, lcm-export) end: one line on stderr and an exit code, never a traceback
for the user's input or environment. Tracebacks of real bugs only with the debug variable set."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from .errors import LCMError, first_line

INTERRUPTED = 130


def run_app(
    app: Any,
    args: list[str],
    prog_name: str,
    interrupted_message: str,
    failure_message: str,
    debug_variable: str,
    describe: Callable[[LCMError], str] = str,
) -> None:
    """Run a typer app in non-standalone mode and turn every way it can end into an exit; ``describe``
    words the one line of the project's own errors (lcm-run adds its option to a Python argument's name)."""
    try:
        # Non-standalone typer returns 130 on Ctrl-C instead of raising KeyboardInterrupt.
        code = app(args=args, prog_name=prog_name, standalone_mode=False)
        if code == INTERRUPTED:
            raise KeyboardInterrupt
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except LCMError as error:
        _fail(f"error: {describe(error)}", error.exit_code)
    except KeyboardInterrupt:
        _fail(interrupted_message, INTERRUPTED)
    except SystemExit:
        raise
    except MemoryError:
        _fail("error: out of memory; close other programs, use smaller settings or a machine with more RAM", 1)
    except Exception as error:
        # Usage errors of typer's (vendored) click arrive here in non-standalone mode.
        format_message, exit_code = getattr(error, "format_message", None), getattr(error, "exit_code", None)
        if callable(format_message) and isinstance(exit_code, int):
            _fail(f"error: {format_message()} (see {prog_name} --help)", exit_code or 2)
        if os.environ.get(debug_variable):
            raise
        detail = first_line(error)
        _fail(
            f"error: {failure_message} ({type(error).__name__}: {detail}); "
            f"rerun with {debug_variable}=1 and report the traceback",
            1,
        )


def _fail(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)
