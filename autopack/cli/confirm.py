"""Asking before a command changes a database: `--yes` for scripts, a prompt on a terminal."""

from __future__ import annotations

from autopack import console
from autopack.errors import GuardError


def confirm_or_refuse(yes: bool, question: str) -> None:
    """Return if the operator agreed (or passed --yes); otherwise refuse (exit 2), unchanged.

    Without a terminal there is nobody to ask, so the change is refused rather than assumed.
    """
    if yes:
        return
    if not console.environment().stdin_isatty:
        raise GuardError(
            "this changes the database and no terminal is attached to confirm it.",
            hint="pass --yes to confirm in scripts",
        )
    if not console.confirm(question):
        raise GuardError("cancelled; nothing was changed.", hint="pass --yes to skip the question")
