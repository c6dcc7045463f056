"""The errors autopack reports to an operator: one sentence, a hint, and an exit code.

Exit codes (docs/exit-codes.md): 0 ok; 1 the work ran and found failures or too little data;
2 refused (bad input, a guard tripped, the wrong DB); 70 a bug; 130 interrupted (Ctrl-C);
143 terminated (SIGTERM).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FOUND_PROBLEMS = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, docker, `timeout`), raised where Ctrl-C would be.

    A KeyboardInterrupt, so every path that cleans up after Ctrl-C (phases given back, the
    session marked interrupted, temporary files removed) does the same for SIGTERM; only the
    exit code differs.
    """


class AutopackError(Exception):
    """A failure the operator can act on. Rendered as one line plus a `hint:` line."""

    exit_code: int = EXIT_REFUSED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(AutopackError):
    """Settings or options are missing or contradictory."""


class TargetError(AutopackError):
    """No database, an ambiguous one, or one that cannot be opened as asked."""


class SchemaError(AutopackError):
    """The database lacks autopack's schema, or it does not match the code."""


class GuardError(AutopackError):
    """A safety guard refused to act (empty DB, wrong role)."""
