"""The built-in seed runs: data files shipped in `autopack/seed/runs/`, read like user files."""

from __future__ import annotations

from importlib import resources
from typing import Final

from autopack.errors import ConfigError
from autopack.seed.files import parse_seed_text
from autopack.seed.model import SeedRunSpec
from autopack.text import closest

BUILTIN_RUNS: Final[tuple[str, ...]] = (
    "telemetry-collection-v4",
    "telemetry-collection-v5",
    "telemetry-balanced",
)
"""Every built-in seed run, in the order `autopack seed list` shows them."""

_DATA_PACKAGE: Final = "autopack.seed"
_DATA_DIR: Final = "runs"


def builtin_names() -> tuple[str, ...]:
    return BUILTIN_RUNS


def builtin_text(name: str) -> str:
    """The TOML text of a built-in seed run (raises ConfigError for an unknown name)."""
    require_builtin(name)
    return resources.files(_DATA_PACKAGE).joinpath(_DATA_DIR, f"{name}.toml").read_text("utf-8")


def require_builtin(name: str) -> str:
    if name in BUILTIN_RUNS:
        return name
    close = closest(name, BUILTIN_RUNS)
    guess = f"did you mean {close}? " if close else ""
    raise ConfigError(
        f"there is no built-in seed run named {name!r}.",
        hint=f"{guess}built-in runs: {', '.join(BUILTIN_RUNS)} (autopack seed list); "
        "or give your own with --file",
    )


def load_builtin(name: str, *, run_id: str | None = None) -> SeedRunSpec:
    """A built-in seed run as a spec; `run_id` replaces its run id (phase ids are kept)."""
    return parse_seed_text(
        builtin_text(name), fmt="toml", source=f"built-in seed run {name}", run_id=run_id
    )
