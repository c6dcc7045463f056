"""What one run of the command line sees of the world: its streams, variables, directory, clock.

`main(argv, env)` takes an `Environment`; tests pass a fake one (text buffers, a dict of
variables, a temporary directory, a fixed clock) instead of patching `sys` (the httpie design).
Standard library only: the console and the settings layer read from it, nothing here reads
them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or detached stream is no terminal
        return False


@dataclass(frozen=True)
class Environment:
    """The streams, their terminal flags, the variables, the directory and the clock of a run."""

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    stdin_isatty: bool = False
    stdout_isatty: bool = False
    stderr_isatty: bool = False
    environ: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = field(default_factory=Path.cwd)
    clock: Callable[[], datetime] = _utc_now

    @classmethod
    def from_process(cls) -> Environment:
        """The real process: sys streams, os.environ, the current directory, the wall clock."""
        return cls(
            stdin=sys.stdin,
            stdout=sys.stdout,
            stderr=sys.stderr,
            stdin_isatty=_isatty(sys.stdin),
            stdout_isatty=_isatty(sys.stdout),
            stderr_isatty=_isatty(sys.stderr),
            environ=os.environ,
            cwd=Path.cwd(),
        )
