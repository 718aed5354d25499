"""Errors a user can fix. The CLI prints them as one message (no traceback) and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """A problem with the user's input or environment, explained in the message."""

    exit_code = 2


class ConfigError(HarnessError):
    """An unknown or invalid configuration key or value."""


class DataError(HarnessError):
    """A dataset is missing, corrupt or in an unexpected format."""


class RunFailed(HarnessError):
    """A run started but could not finish; its record says why."""

    exit_code = 1


class UnknownNameError(ConfigError):
    """A name that is not in a registry (method, benchmark, head, config key, ...)."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = ""):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        message = f"unknown {kind} '{name}'. Valid {kind}s: {', '.join(valid) or '(none)'}."
        if close:
            message += f" Did you mean '{close[0]}'?"
        if hint:
            message += f" {hint}"
        super().__init__(message)
        self.name, self.valid, self.closest = name, valid, close[0] if close else None


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM (what SLURM and most schedulers send): handled like Ctrl-C."""
