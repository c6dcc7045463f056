"""Guards the acting commands call before touching anything: empty DB, wrong role.

Each has an explicit override (`--allow-empty-db`, `--force-role`) that the caller passes in.
"""

from __future__ import annotations

from collections.abc import Collection

from autopack.db.meta import RoleStamp
from autopack.errors import GuardError


def require_non_empty(runs: int, phases: int, *, display_url: str, allow_empty: bool) -> None:
    """Refuse a DB with 0 runs and 0 phases: most often the wrong DB, or a fresh one."""
    if runs == 0 and phases == 0 and not allow_empty:
        raise GuardError(
            f"{display_url} is empty (0 runs, 0 phases): probably not the database you meant.",
            hint="check --db/--database-url; seed it first, or pass --allow-empty-db",
        )


def require_role(
    stamp: RoleStamp, allowed: Collection[str], *, display_url: str, command: str, force: bool
) -> None:
    """Refuse a command that makes sense only on some roles (e.g. `seed` into a legacy DB)."""
    if stamp.role in allowed or force:
        return
    described = stamp.role if stamp.stamped else f"{stamp.role} (unstamped, assumed)"
    raise GuardError(
        f"{command} does not act on a {described} database: {display_url}.",
        hint=f"use a {' or '.join(sorted(allowed))} database, or pass --force-role if you are sure",
    )
