"""What the settings layer needs before (or without) loading pydantic-settings: the one flag
parser and where the settings file of a directory is."""

from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "autopack.toml"
PYPROJECT_FILE = "pyproject.toml"

_TRUE_VALUES = frozenset({"1", "true", "yes"})


def parse_flag(value: str | None) -> bool:
    """The one parser for boolean flags such as TELEMETRY_DB_ENABLED.

    `1`, `true` and `yes` in any case (and surrounding blanks) are on; anything else is off.
    The original accepted different spellings in different writers.
    """
    return value is not None and value.strip().lower() in _TRUE_VALUES


def config_file_in(cwd: Path) -> Path | None:
    """The one settings file read for `cwd`: autopack.toml, else pyproject.toml, else none.

    Only `cwd` itself: a file in a parent directory must never retarget a database.
    """
    for name in (CONFIG_FILE, PYPROJECT_FILE):
        if (cwd / name).is_file():
            return cwd / name
    return None
