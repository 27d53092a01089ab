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
    """An argument (size, steps, guidance, device, path...) is out of range."""

    exit_code = 2
