"""User-facing errors: each carries one line that names the problem and the fix."""

from __future__ import annotations


class LCMError(Exception):
    """An error caused by the user's input or environment, not a bug.

    The CLI prints ``str(error)`` on one line and exits non-zero, without a traceback.
    """

    exit_code: int = 1


class BundleError(LCMError):
    """A bundle is missing, incomplete, corrupted or of an unknown format."""


class InputError(LCMError):
    """An argument (size, steps, guidance, device, path...) is out of range.

    ``argument`` names the Python argument at fault (``"strength"``), so that a front end (the CLI,
    the server) can add its own name for it.
    """

    exit_code = 2

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class NonFiniteError(LCMError):
    """A model produced NaN or infinity (usually reduced precision overflowing): no image is made."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message, or its type's name when it has none."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]
