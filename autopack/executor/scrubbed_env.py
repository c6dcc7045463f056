"""The environment a child process gets: autopack's own, minus every secret.

Used for the verification child (the model's tests) and for git. A variable is a secret when
its name says so or its value is a URL carrying a password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

_SECRET_NAME_PARTS: Final = ("KEY", "TOKEN", "SECRET", "PASS", "CREDENTIAL", "AUTH", "DSN")
# autopack's own settings (database targets, the LLM endpoint) and libpq's (PGPASSFILE, …)
# say where the secrets are even when they hold none.
_PRIVATE_PREFIXES: Final = ("AUTOPACK_", "PG")
_URL_WITH_PASSWORD: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/@\s:]*:[^/@\s]+@")


def is_secret_variable(name: str, value: str) -> bool:
    """Whether an environment variable must not reach code the builder wrote.

    Its name contains KEY, TOKEN, SECRET, PASS (PASSWORD, PASSWD, PASSFILE), CREDENTIAL, AUTH
    or DSN (any case), it starts with AUTOPACK_ or PG, it is or ends in DATABASE_URL, or its
    value is a URL carrying a password (`scheme://user:pw@host`).
    """
    upper = name.upper()
    if any(part in upper for part in _SECRET_NAME_PARTS) or upper.endswith("DATABASE_URL"):
        return True
    if upper.startswith(_PRIVATE_PREFIXES):
        return True
    return _URL_WITH_PASSWORD.match(value) is not None


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the pytest child: `base` (default `os.environ`) minus secrets.

    `PYTHONDONTWRITEBYTECODE=1` is added so verification leaves no `__pycache__` behind.
    """
    source = os.environ if base is None else base
    env = {name: value for name, value in source.items() if not is_secret_variable(name, value)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


__all__ = ["child_environment", "is_secret_variable"]
