"""Errors slimkit raises for problems the user can fix.

The command line turns a :class:`SlimkitError` into one line ``error: ...`` and exit code 2;
any other exception is an internal failure (exit code 1).
"""

from __future__ import annotations


class SlimkitError(ValueError):
    """Bad input: a missing file, a corrupt file, an unknown name, an invalid setting.

    The message says what was wrong and, where it can, what to do about it.
    """
