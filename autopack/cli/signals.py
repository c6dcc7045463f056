"""SIGTERM handled as Ctrl-C is: the same interruption, raised in the main thread."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from autopack.errors import Terminated


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Terminated` (a KeyboardInterrupt).

    Signal handlers can only be set from the main thread; elsewhere (autopack embedded in a
    threaded host) the host's handling stays as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
